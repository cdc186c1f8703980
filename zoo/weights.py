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

import hashlib
import json
import logging
import os
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.errors import WeightsError

SOURCES = ("torchvision", "timm")
OFFLINE_VARIABLES = ("ZOO_OFFLINE", "HF_HUB_OFFLINE")
TORCHVISION_URL = "https://download.pytorch.org/models/"
logger = logging.getLogger("zoo")


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
    # ZooModel.remove_head; aux heads with aux_logits=False; num_classes=0) holds no tensors:
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
    if path.is_dir():
        raise WeightsError(f"weights {str(path)!r} is a folder; pass the weights file inside it (.pth, .safetensors)")
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


# --------------------------------------------------------------------------- layouts


def layouts(model: nn.Module) -> dict[str, dict[str, str]]:
    """Every key layout the model knows: zoo's own, and its references' (the model card's fields)."""
    from zoo.models.base import RemovedHead

    ours = {k: k for k in model.state_dict()}
    # a head the model was built without (num_classes=0, remove_head) leaves a file's head tensors out
    ours |= {n: n for n, m in model.named_modules() if n and isinstance(m, (nn.Identity, RemovedHead))}
    found = {"zoo": ours}
    card = getattr(model, "card", None)
    for source in SOURCES:
        get_map = getattr(model, f"{source}_key_map", None)
        if get_map is None or (card is not None and getattr(card, source) is None):
            continue
        try:
            found[source] = get_map()
        except WeightsError:  # a configuration (e.g. stem="cifar") that has left the reference's layout
            continue
    return found


def adapt_input_conv(weight: Tensor, in_channels: int) -> Tensor:
    """A first-conv weight (O, I, kH, kW) for `in_channels` inputs, from one trained on I (RGB: 3).

    One channel: the sum over the trained channels (a grey image x gives what the RGB network gave
    for (x, x, x)). More or fewer: the trained channels repeated in turn, scaled by I / in_channels so
    that the response to equal inputs keeps its size. timm's ``adapt_input_conv`` does the same.
    """
    trained = weight.shape[1]
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // trained)
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (trained / in_channels)


def _first_conv(model: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return f"{name}.weight"
    return None


def _classifier_modules(model: nn.Module) -> set[str]:
    """The module paths of the model's classifiers: its ``fc`` and every linear layer with `num_classes` outputs."""
    num_classes, fc = getattr(model, "num_classes", None), getattr(model, "fc", None)
    return {
        name
        for name, m in model.named_modules()
        if m is fc or (isinstance(m, nn.Linear) and m.out_features == num_classes)  # the aux heads' too
    }


def _adapt(model: nn.Module, fit: _Fit) -> list[str] | None:
    """Complete `fit.converted` for a new head or input channels, as fine-tuning expects; None if it cannot.

    A classifier whose output size is the model's `num_classes` keeps the model's fresh
    initialisation; a first conv whose input channels are the model's `in_channels` is adapted
    from the trained ones (`adapt_input_conv`). Any other difference is a misfit.
    """
    num_classes, in_channels = getattr(model, "num_classes", None), getattr(model, "in_channels", None)
    first_conv, state, notes = _first_conv(model), model.state_dict(), []
    classifiers = _classifier_modules(model)
    head = []
    for described in fit.missing:  # weights without a classifier (timm's feature-only tags)
        ours = described.split(" ")[0]
        if ours.rsplit(".", 1)[0] not in classifiers:
            return None
        fit.converted[ours] = state[ours]
        head.append((ours, 0))
    if fit.unexpected:
        return None
    for ours, theirs, s_theirs, s_ours in fit.mismatched:
        if ours.rsplit(".", 1)[0] in classifiers and s_ours[:1] == (num_classes,) and s_ours[1:] == s_theirs[1:]:
            fit.converted[ours] = state[ours]
            head.append((ours, s_theirs[0]))
        elif ours == first_conv and len(s_ours) == 4 and s_ours[1] == in_channels and s_ours[2:] == s_theirs[2:]:
            fit.converted[ours] = adapt_input_conv(fit.state_dict[theirs], in_channels)
            how = "summed" if in_channels == 1 else "repeated and scaled"
            notes.append(f"the first conv ({ours.removesuffix('.weight')}) {how} from {s_theirs[1]} input channels")
        else:
            return None
    if head:
        modules = sorted({k.rsplit(".", 1)[0] for k, _ in head})
        theirs = f"the weights have {head[-1][1]}" if head[-1][1] else "the weights have no classifier"
        notes.insert(0, f"the classifier ({', '.join(modules)}) starts fresh for {num_classes} classes ({theirs})")
    return notes


def load_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], label: str = "the") -> str:
    """Load `state_dict` in whichever layout of the model fits it exactly; returns the layout's name.

    Every layout the model knows is tried (`layouts`). One that fits exactly is loaded. Failing that,
    one whose only differences are the classifier's size (a different `num_classes`: the head starts
    fresh) or the first conv's input channels (a different `in_channels`: `adapt_input_conv`) is
    loaded, with one log line that says so. A U-Net on a zoo encoder takes its encoder's weights
    (the decoder starts fresh). Otherwise the error names the closest layout and what differs.
    """
    name = getattr(model, "model_name", type(model).__name__)
    layout, notes = _load(model, state_dict, label)
    if notes:
        logger.warning("zoo: %s: loaded %s weights (%s layout); %s", name, label, layout, "; ".join(notes))
    return layout


def _load(model: nn.Module, state_dict: Mapping[str, Tensor], label: str) -> tuple[str, list[str]]:
    """`load_state_dict` without the log line: the layout and what was adapted, in words."""
    fits = sorted((_match(model, state_dict, m, layout) for layout, m in layouts(model).items()), key=lambda f: f.size)
    for fit in fits:
        notes = [] if fit.exact else _adapt(model, fit)
        if notes is not None:
            model.load_state_dict(fit.converted, strict=True)
            if fit.dropped:
                modules = sorted({k.rsplit(".", 1)[0] for k in fit.dropped})
                notes.append(
                    f"left out {len(fit.dropped)} tensor(s) of modules it does not have ({_listing(modules, 3)})"
                )
            return fit.layout, notes
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, nn.Module) and hasattr(encoder, "stage_channels"):
        try:
            layout, notes = _load(encoder, state_dict, label)
        except WeightsError:
            pass
        else:
            return layout, ["into its encoder; the decoder starts fresh", *notes]
    name = getattr(model, "model_name", type(model).__name__)
    closest = fits[0]
    raise WeightsError(
        f"{label} weights do not fit {name}: the closest layout, {closest.layout}'s, differs by {closest.problems()}. "
        "Check that both were built with the same variant and options"
    )


# --------------------------------------------------------------------------- sources


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
