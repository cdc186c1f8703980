"""Import weights from torchvision and timm, strictly, and read weight files safely.

Each family says how its modules correspond to the reference library's with a key
map, a method on the model class next to the layout it describes::

    def torchvision_key_map(self) -> dict[str, str]:
        return {"stages.0.0.conv": "features.0", ..., "fc": "classifier.6"}

Keys are module (or full parameter) paths; a state-dict key is translated by its
longest mapped prefix (``stages.0.0.conv.weight`` -> ``features.0.weight``). The import
is strict: every key of the zoo model must be found, every key of the source must be
used, every shape must agree; otherwise one `WeightsError` lists what did not fit.
The one exception is a target the key map wraps in `Reshape`: its tensors are reshaped
to the zoo model's shape when the number of elements agrees (timm stores ConvNeXt's
layer scale as (C,), torchvision and zoo as (C, 1, 1)). And a mapped module the zoo model
does not have (a feature extractor's removed head, `ZooModel.remove_head`, as in a U-Net's
encoder) leaves the source's tensors for it out.

Files are read with ``torch.load(weights_only=True)`` or as safetensors, so a weights
file never runs code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
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


def _convert(model: nn.Module, state_dict: Mapping[str, Tensor], key_map: Mapping[str, str], label: str) -> dict:
    name = getattr(model, "model_name", type(model).__name__)
    ours = model.state_dict()
    converted, missing, mismatched = {}, [], []
    used = set()
    for key, value in ours.items():
        theirs = _translate(key, key_map)
        if theirs is None or theirs not in state_dict:
            missing.append(f"{key} (<- {theirs})" if theirs and theirs != key else key)
            continue
        tensor = state_dict[theirs]
        used.add(theirs)
        if tuple(tensor.shape) != tuple(value.shape):
            if not (isinstance(theirs, Reshape) and tensor.numel() == value.numel()):
                mismatched.append(f"{theirs} {tuple(tensor.shape)} -> {key} {tuple(value.shape)}")
                continue
            tensor = tensor.reshape(value.shape)
        converted[key] = tensor
    # a mapped module the model was built without (the head of a feature extractor, see
    # ZooModel.remove_head) holds no tensors: the source's tensors for it are left out, by design
    prefixes = {".".join(k.split(".")[:i]) for k in ours for i in range(1, k.count(".") + 2)}
    dropped = tuple(f"{theirs}." for mine, theirs in key_map.items() if mine not in prefixes)
    unexpected = [k for k in state_dict if k not in used and not k.startswith(dropped)]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_listing(mismatched)}")
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if problems:
        raise WeightsError(
            f"{label} weights do not fit {name}: {'; '.join(problems)}. "
            "Check that both were built with the same variant, in_channels and num_classes."
        )
    return converted


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

    >>> import torchvision, zoo
    >>> ours = import_weights(zoo.create("alexnet"), torchvision.models.alexnet())
    """
    state_dict = source_weights.state_dict() if isinstance(source_weights, nn.Module) else source_weights
    model.load_state_dict(convert_state_dict(model, state_dict, source), strict=True)
    return model


def load_file(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from a ``.safetensors`` file or a torch file, never running code.

    A Lightning checkpoint of `zoo fit` gives its network's state dict (the ``net.`` prefix removed).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file as load_safetensors

            return load_safetensors(str(path))
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # every failure to read becomes one user-facing line
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in reason:  # torch's advice to retry unsafely is not ours to give
            reason = "the safe loader (weights_only=True) refused it"
        raise WeightsError(
            f"cannot read weights from {str(path)!r}: {reason[:200]}; the file is corrupt, truncated, "
            "or holds objects other than tensors (only plain state dicts are loaded, never code)"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]  # a Lightning checkpoint: zoo's tasks keep the network as `net`
        if data and all(k.startswith("net.") for k in data):
            data = {k.removeprefix("net."): v for k, v in data.items()}
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise WeightsError(f"{str(path)!r} does not hold a state dict (a mapping of names to tensors)")
    return data


def torchvision_cache_path(model: nn.Module) -> Path:
    """Where torchvision keeps the default ImageNet weights of this model (the torch hub cache); nothing downloads."""
    card = getattr(model, "card", None)
    reference = card.reference if card is not None else ""
    match = re.match(r"torchvision\.models\.(\w+)", reference)
    if match is None:
        name = getattr(model, "model_name", type(model).__name__)
        raise WeightsError(f"{name} has no torchvision weights; pass weights=PATH to a file of your own")
    import torchvision

    url = torchvision.models.get_model_weights(match.group(1)).DEFAULT.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not path.is_file():
        raise WeightsError(
            f"no torchvision weights for {card.name} on disk: looked for {path}; zoo never downloads, "
            f"so fetch {url} there yourself (or pass weights=PATH)"
        )
    return path


def load_weights(model: nn.Module, weights: str | Path) -> nn.Module:
    """Load a weights file into `model`, strictly; returns the model.

    `weights` is a path (zoo's own keys, or torchvision's / timm's, translated by the family's
    key map) or ``"torchvision"`` for torchvision's default weights already in the torch hub cache.
    """
    path = torchvision_cache_path(model) if str(weights) == "torchvision" else Path(weights)
    state_dict = load_file(path)
    ours = model.state_dict()
    if set(state_dict) & set(ours):  # zoo's own layout
        model.load_state_dict(_convert(model, state_dict, {k: k for k in ours}, f"the {str(path)!r}"))
        return model
    errors = []
    for source in SOURCES:
        if hasattr(model, f"{source}_key_map"):
            try:
                model.load_state_dict(convert_state_dict(model, state_dict, source))
                return model
            except WeightsError as e:
                errors.append(e)
    if errors:
        raise errors[0]
    name = getattr(model, "model_name", type(model).__name__)
    raise WeightsError(f"the weights in {str(path)!r} do not fit {name}: none of their keys are the model's")


def save_file(weights: nn.Module | Mapping[str, Tensor], path: str | Path) -> Path:
    """Write a model's (or a state dict's) tensors to `path`: safetensors for ``.safetensors``, else torch.save.

    >>> import tempfile, zoo
    >>> path = save_file(zoo.create("lenet5"), Path(tempfile.mkdtemp()) / "lenet5.safetensors")
    >>> print(", ".join(sorted(load_file(path))[:2]))
    fc.bias, fc.weight
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise WeightsError(f"cannot write {str(path)!r}: the folder {str(path.parent)!r} does not exist")
    state = weights.state_dict() if isinstance(weights, nn.Module) else dict(weights)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file as save_safetensors

            save_safetensors(state, str(path))
        else:
            torch.save(state, path)
    except OSError as e:
        raise WeightsError(f"cannot write {str(path)!r}: {e.strerror or e}") from None
    return path
