"""Key maps: translate a reference library's state dict into zoo's names, strictly (see the package docstring)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor, nn

from zoo.errors import WeightsError

SOURCES = ("torchvision", "timm")


class Reshape(str):
    """A key-map target whose tensors may be reshaped to the zoo model's shape (same number of elements).

    ``{"stages.0.blocks.0.layer_scale": Reshape("stages.0.blocks.0.gamma")}`` loads timm's (C,)
    layer scale into a (C, 1, 1) parameter; without `Reshape` a shape difference is an error.
    """


def _translate(key: str, key_map: Mapping[str, str]) -> str | None:
    parts = key.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in key_map:
            target = key_map[prefix]
            joined = ".".join([target, *parts[cut:]])
            return Reshape(joined) if isinstance(target, Reshape) else joined
    return None


def _listing(keys: list[str], limit: int = 5) -> str:
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


@dataclass
class _Fit:
    """How a state dict fits a model under one layout (key map): what converts, and what does not."""

    layout: str
    converted: dict[str, Tensor]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]]  # ours, theirs, their shape, ours
    dropped: list[str]  # source keys of modules the model was built without (a removed head)
    state_dict: Mapping[str, Tensor] = field(default_factory=dict, repr=False)

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def size(self) -> int:
        """How far from fitting: the number of keys that do not."""
        return len(self.missing) + len(self.unexpected) + len(self.mismatched)

    def problems(self) -> str:
        problems = []
        if self.mismatched:
            shapes = [f"{theirs} {s_theirs} -> {ours} {s_ours}" for ours, theirs, s_theirs, s_ours in self.mismatched]
            problems.append(f"{len(shapes)} shape mismatch(es): {_listing(shapes)}")
        if self.missing:
            problems.append(f"{len(self.missing)} missing key(s): {_listing(self.missing)}")
        if self.unexpected:
            problems.append(f"{len(self.unexpected)} unexpected key(s): {_listing(self.unexpected)}")
        return "; ".join(problems)


def _match(model: nn.Module, state_dict: Mapping[str, Tensor], key_map: Mapping[str, str], layout: str) -> _Fit:
    ours = model.state_dict()
    fit = _Fit(layout, {}, [], [], [], [], state_dict)
    used = set()
    for key, value in ours.items():
        theirs = _translate(key, key_map)
        if theirs is None or theirs not in state_dict:
            fit.missing.append(f"{key} (<- {theirs})" if theirs and theirs != key else key)
            continue
        tensor = state_dict[theirs]
        used.add(theirs)
        if tuple(tensor.shape) != tuple(value.shape):
            if not (isinstance(theirs, Reshape) and tensor.numel() == value.numel()):
                fit.mismatched.append((key, str(theirs), tuple(tensor.shape), tuple(value.shape)))
                continue
            tensor = tensor.reshape(value.shape)
        fit.converted[key] = tensor
    # a mapped module the model was built without (the head of a feature extractor, see
    # ZooClassifier.remove_head; aux heads with aux_logits=False; num_classes=0) holds no tensors:
    # the source's tensors for it are left out, by design
    prefixes = {".".join(k.split(".")[:i]) for k in ours for i in range(1, k.count(".") + 2)}
    dropped = tuple(f"{theirs}." for mine, theirs in key_map.items() if mine not in prefixes)
    for k in state_dict:
        if k not in used:
            (fit.dropped if k.startswith(dropped) else fit.unexpected).append(k)
    return fit


def _convert(model: nn.Module, state_dict: Mapping[str, Tensor], key_map: Mapping[str, str], label: str) -> dict:
    fit = _match(model, state_dict, key_map, label)
    if not fit.exact:
        name = getattr(model, "model_name", type(model).__name__)
        raise WeightsError(
            f"{label} weights do not fit {name}: {fit.problems()}. "
            "Check that both were built with the same variant, in_channels and num_classes."
        )
    return fit.converted


def convert_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "torchvision") -> dict:
    """Translate a reference library's `state_dict` into the zoo model's key names, checking everything.

    Raises:
        WeightsError: the model has no key map for `source`, or keys are missing, left over or mis-shaped.
    """
    if source not in SOURCES:
        raise WeightsError(f"unknown weights source {source!r}; expected one of {', '.join(SOURCES)}")
    get_map = getattr(model, f"{source}_key_map", None)
    if get_map is None:
        name = getattr(model, "model_name", type(model).__name__)
        raise WeightsError(f"{name} has no {source} counterpart to import weights from")
    return _convert(model, state_dict, get_map(), source)


def import_weights(model: nn.Module, source_weights: Mapping[str, Tensor] | nn.Module, source: str = "torchvision"):
    """Load a torchvision or timm model (or its state dict) into the matching zoo model; returns the model.

    Examples:
        >>> import torchvision, zoo
        >>> ours = import_weights(zoo.create("alexnet"), torchvision.models.alexnet())
    """
    state_dict = source_weights.state_dict() if isinstance(source_weights, nn.Module) else source_weights
    model.load_state_dict(convert_state_dict(model, state_dict, source), strict=True)
    return model
