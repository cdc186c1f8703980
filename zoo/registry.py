"""The model registry: a table of named variants per family, and `create()`.

A family registers all its variants with one decorator on its model class:

    @register_model(family="vgg", paper=PAPER, input_size=(3, 224, 224), ...,
                    variants={"vgg16": Variant(VGGConfig(_D), num_params=138_357_544)})
    class VGG(ZooClassifier): ...

`create(name, **overrides)` looks the name up and calls ``cls(config, **overrides)``.
Overrides are checked against the constructor's keyword arguments before anything is
built, so a typo fails at once with the list of valid names.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from zoo.checks import check_int, check_layer, check_number
from zoo.errors import InvalidArgumentError, UnknownModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TASKS = ("classification", "segmentation")


@dataclass(frozen=True)
class Paper:
    """The publication a family comes from."""

    title: str
    year: int
    url: str
    authors: str = ""


@dataclass(frozen=True)
class Variant:
    """One row of a family's variant table.

    Args:
        config: the family's config object, passed to the class as its first argument.
        num_params: the reference parameter count with the default arguments.
        reference: where `num_params` comes from (e.g. ``"torchvision.models.vgg16"``).
        input_size: (C, H, W) override of the family's default input size.
        min_input_size: (H, W) override of the family's minimum input size.
        paper: override of the family's paper.
        notes: anything a user should know about this variant.
        torchvision: the name of torchvision's builder with the same layout (``"resnet50"``), if any:
            its weight files load (``weights="torchvision"`` downloads them), the tests compare outputs.
        timm: the name of timm's architecture with the same layout (``"convnext_xlarge"``), if any.
        weights: zoo's own published weights for this variant (see `PublishedWeights`).
    """

    config: Any
    num_params: int
    reference: str = ""
    input_size: tuple[int, int, int] | None = None
    min_input_size: tuple[int, int] | None = None
    paper: Paper | None = None
    notes: str = ""
    torchvision: str | None = None
    timm: str | None = None
    weights: tuple[PublishedWeights, ...] = ()


@dataclass(frozen=True)
class PublishedWeights:
    """Weights trained by a zoo recipe and published at a URL, fetched by ``weights="zoo:TAG"``.

    The file is downloaded through torch.hub (its cache and progress bar) and checked against
    `sha256` before it is used. The card (`zoo export RUN OUT --name TAG` writes one) says how
    the weights were made and how to preprocess images for them.

    Args:
        tag: the name after ``zoo:`` (the first one is the variant's default).
        url: where the ``.safetensors`` file is published.
        sha256: its full SHA-256 digest.
        card: the export card: recipe, dataset, metrics, mean/std, input size.
    """

    tag: str
    url: str
    sha256: str
    card: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelCard:
    """What the registry knows about a model before it is built.

    `num_params` is a reference number (from the paper or a reference library) that the
    tests check against the built model; `min_input_size` is checked against the
    convolution arithmetic of the built model and against torch itself.
    """

    name: str
    family: str
    task: str
    paper: Paper
    input_size: tuple[int, int, int]
    min_input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_params: int
    reference: str
    num_classes: int
    notes: str = ""
    torchvision: str | None = None
    timm: str | None = None
    weights: tuple[PublishedWeights, ...] = ()
    config: Any = field(default=None, repr=False, compare=False)

    def to_text(self) -> str:
        """The card as `zoo info` prints it (without the list of pretrained weights)."""
        p = self.paper
        lines = [
            f"{self.name}  ({self.family}, {self.task})",
            f"  paper:          {p.title} ({p.authors}, {p.year})",
            f"                  {p.url}",
            f"  input size:     {'x'.join(map(str, self.input_size))} (C x H x W); "
            f"minimum {self.min_input_size[0]}x{self.min_input_size[1]}",
            f"  normalisation:  mean {self.mean}, std {self.std}",
            f"  classes:        {self.num_classes}",
            f"  parameters:     {self.num_params:,} (reference: {self.reference})",
        ]
        if self.notes:
            lines.append(f"  notes:          {self.notes}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython and Jupyter show the text
        printer.text(self.to_text())

    def as_dict(self) -> dict[str, Any]:
        """The card as plain data (the config is left out)."""
        return {
            "name": self.name,
            "family": self.family,
            "task": self.task,
            "paper": {
                "title": self.paper.title,
                "year": self.paper.year,
                "url": self.paper.url,
                "authors": self.paper.authors,
            },
            "input_size": list(self.input_size),
            "min_input_size": list(self.min_input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "num_params": self.num_params,
            "reference": self.reference,
            "num_classes": self.num_classes,
            "notes": self.notes,
            "torchvision": self.torchvision,
            "timm": self.timm,
            "weights": [{"tag": w.tag, "url": w.url, "sha256": w.sha256} for w in self.weights],
        }


@dataclass(frozen=True)
class _Entry:
    card: ModelCard
    cls: type
    arguments: tuple[str, ...]


_REGISTRY: dict[str, _Entry] = {}
_T = TypeVar("_T", bound=type)


def _keyword_arguments(cls: type) -> tuple[str, ...]:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # drop self
    if not params or params[0].kind is inspect.Parameter.KEYWORD_ONLY:
        raise TypeError(f"{cls.__name__} must take its config as the first positional argument")
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        raise TypeError(f"{cls.__name__} must not take **kwargs: overrides are checked by name")
    return tuple(p.name for p in params[1:])


def register_model(
    *,
    family: str,
    paper: Paper,
    variants: dict[str, Variant],
    input_size: tuple[int, int, int],
    min_input_size: tuple[int, int],
    task: str = "classification",
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    num_classes: int = 1000,
) -> Callable[[_T], _T]:
    """Register every variant of a family on its model class.

    Raises:
        ValueError: a name is already registered, or the task is unknown.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")

    def decorate(cls: _T) -> _T:
        arguments = _keyword_arguments(cls)
        for name in variants:
            if name in _REGISTRY:
                raise ValueError(f"model {name!r} is already registered (family {_REGISTRY[name].card.family!r})")
        for name, v in variants.items():
            card = ModelCard(
                name=name,
                family=family,
                task=task,
                paper=v.paper or paper,
                input_size=v.input_size or input_size,
                min_input_size=v.min_input_size or min_input_size,
                mean=mean,
                std=std,
                num_params=v.num_params,
                reference=v.reference,
                num_classes=num_classes,
                notes=v.notes,
                torchvision=v.torchvision,
                timm=v.timm,
                weights=v.weights,
                config=v.config,
            )
            _REGISTRY[name] = _Entry(card, cls, arguments)
        return cls

    return decorate


def _lookup(name: str) -> _Entry:
    if not isinstance(name, str):
        raise InvalidArgumentError(f"a model name must be a string, got {type(name).__name__}")
    entry = _REGISTRY.get(name) or _REGISTRY.get(name.lower())
    if entry is not None:
        return entry
    close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "run `zoo list` to see them all."
    raise UnknownModelError(f"unknown model {name!r}; {hint}")


def create(name: str, *, weights: str | Path | None = None, **overrides: Any) -> Any:
    """Build the registered model `name`; `overrides` are its constructor's keyword arguments.

    `weights` loads pretrained weights (never running code): a path to a state dict, a
    safetensors file or a `zoo fit` checkpoint with zoo's, torchvision's or timm's key names; a
    URL; or ``"torchvision"`` / ``"torchvision:TAG"`` / ``"timm"`` / ``"timm:TAG"`` / ``"zoo:TAG"``,
    downloaded through that library's own machinery into its standard cache (see
    `zoo.weights.load_weights`). A `num_classes` other than the weights' keeps everything but
    the classifier, which starts fresh; an `in_channels` other than 3 adapts the first conv.
    The model's ``pretrained_cfg`` then says how to preprocess images for the weights.

    Examples:
        >>> m = create("lenet5", num_classes=10)
        >>> m.num_classes
        10

    Raises:
        UnknownModelError: the name is not registered (the message names the closest ones).
        InvalidArgumentError: an override the model does not take (the message lists the valid ones).
    """
    entry = _lookup(name)
    if weights is not None:  # a source name may set the flags its weights were trained with
        from zoo.weights import fetch, load_state_dict, parse_weights

        source, _ = parse_weights(weights)
        for key, value in getattr(entry.cls, "pretrained_defaults", {}).get(source, {}).items():
            overrides.setdefault(key, value)
    unknown = [k for k in overrides if k not in entry.arguments]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, entry.arguments, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise InvalidArgumentError(
            f"{name} got an unexpected argument {key!r}; {hint}valid arguments: {', '.join(entry.arguments)}, weights"
        )
    # the arguments every model shares are checked before anything is built (a big model takes seconds)
    if "in_channels" in overrides:
        check_int(overrides["in_channels"], "in_channels", name)
    if "num_classes" in overrides:
        check_int(overrides["num_classes"], "num_classes", name, minimum=0)
    for key in ("drop_rate", "drop_path_rate"):
        if overrides.get(key) is not None:
            check_number(overrides[key], key, name, below=1)
    for key in ("act_layer", "norm_layer"):
        check_layer(overrides.get(key), key, name)
    fetched = None
    if weights is not None:  # read (or download) before building: a big model takes seconds to build
        encoder = overrides.get("encoder") or getattr(entry.card.config, "encoder", None)
        cards = [entry.card] + ([_REGISTRY[encoder].card] if isinstance(encoder, str) and encoder in _REGISTRY else [])
        fetched = fetch(cards, weights)
    model = entry.cls(entry.card.config, **overrides)
    model.card = entry.card
    if fetched is not None:
        state_dict, label, model.pretrained_cfg = fetched
        load_state_dict(model, state_dict, label)
    return model


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def list_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """Registered names matching a shell-style `pattern` (and `task`), in natural order.

    Examples:
        >>> list_models("vgg1[16]")
        ['vgg11', 'vgg16']
    """
    if not isinstance(pattern, str):
        raise InvalidArgumentError(f"a model name pattern must be a string such as 'vgg*', got {pattern!r}")
    if task is not None and task not in TASKS:
        raise InvalidArgumentError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    names = [
        n
        for n, e in _REGISTRY.items()
        if fnmatch.fnmatchcase(n, pattern.lower()) and (task is None or e.card.task == task)
    ]
    return sorted(names, key=_natural_key)


def model_info(name: str) -> ModelCard:
    """The model card of `name` (see `ModelCard`)."""
    return _lookup(name).card


def model_class(name: str) -> type:
    """The class that builds `name`."""
    return _lookup(name).cls
