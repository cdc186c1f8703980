"""Import weights from torchvision and timm, strictly, and read weight files safely.

Each family says how its modules correspond to the reference library's with a key
map, a method on the model class next to the layout it describes::

    def torchvision_key_map(self) -> dict[str, str]:
        return {"stages.0.0.conv": "features.0", ..., "fc": "classifier.6"}

Keys are module (or full parameter) paths; a state-dict key is translated by its
longest mapped prefix (``stages.0.0.conv.weight`` -> ``features.0.weight``). The import
is strict: every key of the zoo model must be found, every key of the source must be
used, every shape must agree; otherwise one `WeightsError` lists what did not fit.

Files are read with ``torch.load(weights_only=True)`` or as safetensors, so a weights
file never runs code.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from zoo.errors import WeightsError

SOURCES = ("torchvision", "timm")


def _translate(key: str, key_map: Mapping[str, str]) -> str | None:
    parts = key.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in key_map:
            return ".".join([key_map[prefix], *parts[cut:]])
    return None


def _listing(keys: list[str], limit: int = 5) -> str:
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def convert_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "torchvision") -> dict:
    """Translate a reference library's `state_dict` into the zoo model's key names, checking everything.

    Raises:
        WeightsError: the model has no key map for `source`, or keys are missing, left over or mis-shaped.
    """
    if source not in SOURCES:
        raise WeightsError(f"unknown weights source {source!r}; expected one of {', '.join(SOURCES)}")
    name = getattr(model, "model_name", type(model).__name__)
    get_map = getattr(model, f"{source}_key_map", None)
    if get_map is None:
        raise WeightsError(f"{name} has no {source} counterpart to import weights from")
    key_map = get_map()
    ours = model.state_dict()
    converted, missing, mismatched = {}, [], []
    used = set()
    for key, value in ours.items():
        theirs = _translate(key, key_map)
        if theirs is None or theirs not in state_dict:
            missing.append(f"{key} (<- {theirs})" if theirs else key)
            continue
        tensor = state_dict[theirs]
        used.add(theirs)
        if tuple(tensor.shape) != tuple(value.shape):
            mismatched.append(f"{theirs} {tuple(tensor.shape)} -> {key} {tuple(value.shape)}")
            continue
        converted[key] = tensor
    unexpected = [k for k in state_dict if k not in used]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_listing(mismatched)}")
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if problems:
        raise WeightsError(
            f"{source} weights do not fit {name}: {'; '.join(problems)}. "
            "Check that both models were built with the same variant, in_channels and num_classes."
        )
    return converted


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

    A Lightning checkpoint's ``state_dict`` entry is returned as is.
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
        raise WeightsError(
            f"cannot read weights from {str(path)!r}: {reason[:200]}; the file is corrupt, truncated, "
            "or holds objects other than tensors (only plain state dicts are loaded, never code)"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise WeightsError(f"{str(path)!r} does not hold a state dict (a mapping of names to tensors)")
    return data
