"""Weight files: read safely (weights_only / safetensors), write, and export a `zoo fit` run with its card."""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.errors import WeightsError


def load_file(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from a ``.safetensors`` file or a torch file, never running code.

    A Lightning checkpoint of `zoo fit` gives its network's state dict (the ``net.`` prefix removed).
    A torch file in the zip format (torch.save's since 1.6) is memory-mapped (copy on write), so
    its tensors are read from the file's pages as they are copied into the model instead of into
    memory first (``create("convnext_xlarge", weights=FILE)``, 1.4 GB: 3.9 s instead of 5.0 s).
    """
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"weights {str(path)!r} is a folder; pass the weights file inside it (.pth, .safetensors)")
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file as load_safetensors

            return load_safetensors(str(path))
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:  # every failure to read becomes one user-facing line
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in reason:  # torch's advice to retry unsafely is not ours to give
            reason = "the safe loader (weights_only=True) refused it"
        elif isinstance(e, (KeyError, EOFError)) or len(reason) < 8:  # pickle's bare "101" for a text file
            reason = "it is not a torch or safetensors file"
        raise WeightsError(
            f"cannot read weights from {str(path)!r}: {reason[:200]}; the file is corrupt, truncated, "
            "or holds objects other than tensors (only plain state dicts are loaded, never code)"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]  # a Lightning checkpoint: zoo's tasks keep the network as `net`
        if data and all(k.startswith("net.") for k in data):
            data = {k.removeprefix("net."): v for k, v in data.items()}
    if isinstance(data, dict) and isinstance(data.get("model"), dict) and len(data) <= 4:
        data = data["model"]  # the {"model": state_dict, ...} of torchvision's and timm's training scripts
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise WeightsError(f"{str(path)!r} does not hold a state dict (a mapping of names to tensors)")
    return data


def save_file(weights: nn.Module | Mapping[str, Tensor], path: str | Path) -> Path:
    """Write a model's (or a state dict's) tensors to `path`: safetensors for ``.safetensors``, else torch.save.

    Examples:
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


def _run_files(source: Path) -> tuple[Path, Path | None]:
    """The checkpoint and the run folder of `source`: a run folder (its best checkpoint) or a file."""
    if source.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (source / "checkpoints" / name).is_file():
                return source / "checkpoints" / name, source
        raise WeightsError(f"no checkpoints/best.ckpt or last.ckpt in {str(source)!r}; give a zoo fit run folder")
    run = source.parent.parent if source.parent.name == "checkpoints" else None
    return source, run if run is not None and (run / "config.yaml").is_file() else None


def export_card(source: str | Path) -> dict[str, Any]:
    """What a `zoo fit` run says about its network: model, recipe, data, test metrics, preprocessing."""
    ckpt, run = _run_files(Path(source))
    card: dict[str, Any] = {"checkpoint": str(ckpt)}
    try:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception:  # a plain weights file: nothing more to say than its tensors
        checkpoint = {}
    if isinstance(checkpoint, dict):
        hparams = checkpoint.get("hyper_parameters") or {}
        card |= {k: hparams[k] for k in ("model", "num_classes", "in_channels", "model_args") if k in hparams}
        card["epochs_trained"] = checkpoint.get("epoch")
        for value in checkpoint.values():  # the data module's preprocessing record (ImageFolderDataModule)
            if isinstance(value, dict) and isinstance(value.get("preprocessing"), dict):
                card["preprocessing"] = value["preprocessing"]
                card |= {
                    k: value["preprocessing"][k] for k in ("mean", "std", "classes") if k in value["preprocessing"]
                }
    if run is not None:
        import yaml

        config = yaml.safe_load((run / "config.yaml").read_text()) or {}
        logger = (config.get("trainer") or {}).get("logger") or {}
        card["recipe"] = (logger.get("init_args") or {}).get("name") if isinstance(logger, dict) else None
        data = config.get("data") or {}
        card["data"] = {"class_path": data.get("class_path"), "root": (data.get("init_args") or {}).get("root")}
        if (run / "metrics.json").is_file():
            metrics = json.loads((run / "metrics.json").read_text())
            card["metrics"] = {k: v for k, v in metrics.items() if k.startswith(("test/", "val/"))}
    return card


def export_weights(source: str | Path, output: str | Path | None = None, *, name: str | None = None) -> Path:
    """Write a `zoo fit` run's network as safetensors, with a JSON card beside it; returns the weights' path.

    `source` is a run folder (``runs/RECIPE/version_N``: its best checkpoint) or a checkpoint
    or weights file. With `name`, the files are ``NAME.safetensors`` and ``NAME.json`` (in the
    current folder unless `output` is a folder); otherwise `output` names the weights file. The
    card holds the model, the recipe, the dataset, the test metrics, the preprocessing and the
    file's sha256: what `zoo.registry.PublishedWeights` needs to publish it, and what
    ``create(model, weights=FILE)`` reads into ``model.pretrained_cfg``.
    """
    if output is None and name is None:
        raise WeightsError("give an output file (OUT.safetensors) or --name NAME")
    out = Path(output) if output is not None else Path(".")
    if name is not None:
        out = (out if out.is_dir() or output is None else out.parent) / f"{name}.safetensors"
    ckpt, _ = _run_files(Path(source))
    path = save_file(load_file(ckpt), out)
    if path.suffix != ".safetensors":
        return path
    card = {"name": name or path.stem, **export_card(source), "file": path.name}
    card["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(card, indent=2, default=str) + "\n")
    return path
