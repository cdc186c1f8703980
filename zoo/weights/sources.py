"""Where weights come from: files, URLs, torchvision, timm (the Hugging Face Hub) and zoo's own, via their caches."""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.errors import WeightsError
from zoo.weights.files import load_file
from zoo.weights.keymaps import SOURCES
from zoo.weights.layouts import load_state_dict

OFFLINE_VARIABLES = ("ZOO_OFFLINE", "HF_HUB_OFFLINE")
TORCHVISION_URL = "https://download.pytorch.org/models/"


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)


def _download(url: str, what: str, sha256: str | None = None) -> Path:
    """The file at `url` in torch.hub's cache (``<hub>/checkpoints``), downloaded and hash-checked if not there.

    The hash is `sha256` (the full digest) or, as torchvision names its files, the hex digits after
    the last ``-`` of the file name (``resnet18-f37072fd.pth``): a file that does not match is not kept.
    """
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name
    if path.is_file():
        return path
    fetch = f"fetch {url} into {path}"
    if _offline():
        raise WeightsError(
            f"{what} are not in the cache and downloads are off ({'/'.join(OFFLINE_VARIABLES)}): {fetch}"
        )
    match = torch.hub.HASH_REGEX.search(path.name)
    prefix = sha256 or (match.group(1) if match else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix, progress=sys.stderr.isatty())
    except RuntimeError as e:
        if "invalid hash" not in str(e):
            raise
        raise WeightsError(f"the file downloaded from {url} does not match its sha256 {prefix}, so it was not kept; "
                           f"try again, or {fetch} yourself") from None  # fmt: skip
    except (OSError, ValueError) as e:  # URLError, HTTPError, timeouts, refused connections
        reason = getattr(e, "reason", None) or e
        raise WeightsError(f"cannot download {what} ({reason}); {fetch} yourself, or pass weights=PATH") from None
    return path


def _mirrored(url: str) -> str:
    mirror = os.environ.get("ZOO_TORCHVISION_MIRROR", "").strip()
    if mirror and url.startswith(TORCHVISION_URL):
        return mirror.rstrip("/") + "/" + url.removeprefix(TORCHVISION_URL)
    return url


def cards_of(model: nn.Module) -> list[Any]:
    """The model cards whose weights fit `model`: its own, then its encoder's (a U-Net on a zoo encoder)."""
    found = [getattr(model, "card", None), getattr(getattr(model, "encoder", None), "card", None)]
    return [card for card in found if card is not None]


def _reference(cards: Sequence[Any], source: str) -> str:
    """The name of the counterpart in `source` (a U-Net on a zoo encoder: its encoder's)."""
    for card in cards:
        if getattr(card, source, None):
            return getattr(card, source)
    name = cards[0].name if cards else "this model"
    has = [s for s in SOURCES if cards and getattr(cards[0], s, None)]
    hint = f"it has {' and '.join(has)} weights" if has else "pass weights=PATH to a file of your own"
    raise WeightsError(f"{name} has no {source} counterpart, so there are no {source} weights for it; {hint}")


def _torchvision_enum(reference: str) -> Any:
    import torchvision

    return torchvision.models.get_model_weights(reference)


def _torchvision(cards: Sequence[Any], tag: str | None) -> tuple[Path, dict[str, Any]]:
    reference = _reference(cards, "torchvision")
    enum = _torchvision_enum(reference)
    try:
        entry = enum.DEFAULT if tag is None else enum[tag.split(".")[-1]]
    except KeyError:
        raise WeightsError(f"torchvision has no weights {tag!r} for {reference}; "
                           f"it has {', '.join(w.name for w in enum)}") from None  # fmt: skip
    url = _mirrored(entry.url)
    path = _download(url, f"torchvision's {reference} weights ({entry.name})")
    return path, {**_torchvision_cfg(entry), "url": url, "file": str(path)}


def _torchvision_cfg(entry: Any) -> dict[str, Any]:
    transform = entry.transforms()
    metrics = next(iter(entry.meta.get("_metrics", {}).items()), (None, {}))
    return {
        "source": "torchvision",
        "tag": entry.name,
        "num_classes": len(entry.meta.get("categories") or ()) or None,  # VGG16's IMAGENET1K_FEATURES has none
        "categories": list(entry.meta.get("categories") or ()),
        "mean": tuple(transform.mean),
        "std": tuple(transform.std),
        "crop_size": transform.crop_size[0],
        "resize_size": transform.resize_size[0],
        "interpolation": transform.interpolation.value,
        "accuracy": {"dataset": metrics[0], "top1": metrics[1].get("acc@1"), "top5": metrics[1].get("acc@5")},
        "recipe": entry.meta.get("recipe"),
    }


def _timm_cfg(cfg: Any) -> dict[str, Any]:
    crop = cfg.input_size[-1]
    return {
        "source": "timm",
        "tag": cfg.tag,
        "num_classes": cfg.num_classes,
        "categories": None,
        "mean": tuple(cfg.mean),
        "std": tuple(cfg.std),
        "crop_size": crop,
        "resize_size": int(crop / cfg.crop_pct),
        "interpolation": cfg.interpolation,
        "accuracy": None,  # timm keeps its results tables outside the package
        "hf_hub_id": cfg.hf_hub_id,
    }


def _timm(cards: Sequence[Any], tag: str | None) -> tuple[Path, dict[str, Any]]:
    import timm

    reference = _reference(cards, "timm")
    try:
        cfg = timm.models.get_pretrained_cfg(reference if tag is None else f"{reference}.{tag}")
    except RuntimeError:
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{reference}.*")]
        raise WeightsError(f"timm has no weights {tag!r} for {reference}; it has {', '.join(tags) or 'none'}")
    info = _timm_cfg(cfg)
    what = f"timm's {reference}.{cfg.tag} weights"
    if not cfg.hf_hub_id:
        path = _download(cfg.url, what)
        return path, {**info, "url": cfg.url, "file": str(path)}
    path = _hf_download(cfg.hf_hub_id, what)
    return path, {**info, "file": str(path)}


def _hf_download(repo: str, what: str) -> Path:
    """A timm weights file from the Hugging Face Hub, through huggingface_hub's cache (and its checks)."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    reason = ""
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            return Path(hf_hub_download(repo, filename, local_files_only=_offline()))
        except LocalEntryNotFoundError:  # not cached, and offline or the Hub out of reach
            reason = "downloads are off" if _offline() else "the Hugging Face Hub cannot be reached"
        except EntryNotFoundError:  # (remote) the repository has the other file
            continue
        except (HfHubHTTPError, OSError) as e:
            reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            break
    url = f"{constants.ENDPOINT}/{repo}/resolve/main/model.safetensors"
    raise WeightsError(
        f"cannot get {what}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {reason or 'not found'}; "
        f"on a machine with internet run `hf download {repo}` (or fetch {url}) and copy the cache folder here"
    )


def _zoo(cards: Sequence[Any], tag: str | None) -> tuple[Path, dict[str, Any]]:
    published = cards[0].weights if cards else ()
    name = cards[0].name if cards else "this model"
    entry = published[0] if published and tag is None else next((w for w in published if w.tag == tag), None)
    if entry is None:
        have = f"it has {', '.join(w.tag for w in published)}" if published else "none are published yet"
        raise WeightsError(
            f"no zoo weights{' ' + tag if tag else ''} for {name}: {have}; train them with a recipe (zoo fit)"
        )
    path = _download(entry.url, f"zoo's {name} weights ({entry.tag})", sha256=entry.sha256)
    return path, {"source": "zoo", "tag": entry.tag, "url": entry.url, "file": str(path), **entry.card}


SOURCE_LOADERS = {"torchvision": _torchvision, "timm": _timm, "zoo": _zoo}


def parse_weights(weights: object) -> tuple[str, str | None]:
    """``(source, tag)`` of a `weights` argument; `tag` is the URL or the path for ``"url"`` and ``"file"``.

    Examples:
        >>> parse_weights("torchvision:IMAGENET1K_V2")
        ('torchvision', 'IMAGENET1K_V2')
        >>> parse_weights("timm")
        ('timm', None)
    """
    if isinstance(weights, os.PathLike):
        return "file", os.fspath(weights)
    if not isinstance(weights, str) or not weights.strip():
        raise WeightsError(
            f"weights must be a file path, a URL or a source name ('torchvision', 'torchvision:TAG', 'timm', "
            f"'timm:TAG', 'zoo:TAG'), got {weights!r}"
        )
    source, colon, tag = weights.partition(":")
    if source in SOURCE_LOADERS:
        return source, (tag or None) if colon else None
    if weights.startswith(("http://", "https://")):
        return "url", weights
    return "file", weights


def fetch(cards: Sequence[Any], weights: str | Path) -> tuple[dict[str, Tensor], str, dict[str, Any] | None]:
    """The state dict that `weights` names for a model (its `cards_of`), a label for messages, and what is known of it.

    The third item becomes the model's ``pretrained_cfg`` (see `load_weights`): None for a plain file.
    """
    source, tag = parse_weights(weights)
    if source == "file":
        path, cfg = Path(tag), _card_beside(Path(tag))
        return load_file(path), f"the {str(path)!r}", cfg
    if source == "url":
        path = _download(tag, f"the weights at {tag}")
        return load_file(path), f"the {tag!r}", {"source": "url", "url": tag, "file": str(path)}
    path, cfg = SOURCE_LOADERS[source](cards, tag)
    return load_file(path), f"{source}'s {cfg['tag']}", cfg


def _card_beside(path: Path) -> dict[str, Any] | None:
    """The JSON card `zoo export --name` writes next to a weights file (``NAME.json``), if there is one."""
    card = path.with_suffix(".json")
    if not card.is_file():
        return None
    try:
        data = json.loads(card.read_text())
    except (OSError, ValueError):
        return None
    return {**data, "source": "file", "file": str(path)} if isinstance(data, dict) else None


def load_weights(model: nn.Module, weights: str | Path) -> nn.Module:
    """Load `weights` into `model`; returns the model, with ``model.pretrained_cfg`` set.

    `weights` is a file (``.pth``, ``.safetensors``, a `zoo fit` checkpoint; zoo's key names,
    torchvision's or timm's: the layout that fits is found, see `load_state_dict`), a URL
    (downloaded into torch.hub's cache and hash-checked), or a source: ``"torchvision"``,
    ``"torchvision:TAG"`` (any of torchvision's weight names for the model, e.g. ``IMAGENET1K_V2``),
    ``"timm"``, ``"timm:TAG"`` (e.g. ``fb_in22k``), ``"zoo:TAG"``. Downloads go through torch.hub
    and huggingface_hub, into their standard caches, with their hash checks and progress bars;
    with ``ZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` nothing is downloaded and a missing file is an
    error that says what to fetch and where to put it.

    ``model.pretrained_cfg`` then says what the weights need: mean, std, crop and resize sizes,
    interpolation, the class names and published accuracy when the library has them.
    """
    state_dict, label, cfg = fetch(cards_of(model), weights)
    load_state_dict(model, state_dict, label)
    model.pretrained_cfg = cfg
    return model


def list_weights(name: str) -> list[dict[str, Any]]:
    """Every pretrained weights `weights=` can fetch for the registered model `name`, with what is known of them."""
    from zoo.registry import model_info

    card = model_info(name)
    found: list[dict[str, Any]] = []
    if card.torchvision:
        enum = _torchvision_enum(card.torchvision)
        for entry in enum:
            default = " (default)" if entry is enum.DEFAULT else ""
            found.append(
                {**_torchvision_cfg(entry), "weights": f"torchvision:{entry.name}{default}", "categories": None}
            )
    if card.timm:
        import timm

        default = timm.models.get_pretrained_cfg(card.timm)
        for full in timm.list_pretrained(f"{card.timm}.*"):
            cfg = timm.models.get_pretrained_cfg(full)
            if cfg is not None and (cfg.hf_hub_id or cfg.url):
                mark = " (default)" if default is not None and cfg.tag == default.tag else ""
                found.append({**_timm_cfg(cfg), "weights": f"timm:{cfg.tag}{mark}"})
    for entry in card.weights:
        found.append({"source": "zoo", "tag": entry.tag, "weights": f"zoo:{entry.tag}", **entry.card})
    return found
