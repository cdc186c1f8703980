"""Export: one model per family goes through torch.export and torch.jit.trace and matches eager.

The models come from the registry: the smallest of every family at its smallest valid input,
plus the cases whose input checks or layers differ (a fixed-size LeNet, the padded U-Net at an
odd size, Inception-v3's unpadded convs, ...). Strict export (``strict=True``, traced by
TorchDynamo) runs in the default suite on the smallest model of each kind of input check
(classifier of any size, classifier of one size, segmenter with valid sizes), and on every
registered model with ``-m slow``.

torch.jit.script is not supported (the contract's typed ModuleList loops and Python-level input
checks are outside TorchScript); torch.jit.trace is, and the input checks are skipped while tracing
because a trace is specialised to its example input.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import zoo
from zoo.models.base import ZooSegmenter


def _smallest(names) -> list[str]:
    """The model with the fewest parameters of each family among `names`."""
    best: dict[str, str] = {}
    for name in names:
        card = zoo.model_info(name)
        if card.family not in best or card.num_params < zoo.model_info(best[card.family]).num_params:
            best[card.family] = name
    return sorted(best.values())


SPECIAL = {  # input checks or layers the smallest of their family does not have
    "lenet5": (32, 32),
    "vgg11_bn": (32, 32),
    "resnet18": (64, 64),
    "googlenet": (64, 64),
    "inception_v3": (75, 75),
    "convnext_tiny": (32, 32),
    "unet": (188, 188),
    "unet_padded": (32, 48),
    "unet_resnet18": (64, 32),
}
CASES = {name: zoo.model_info(name).min_input_size for name in _smallest(zoo.list_models())} | {
    k: v for k, v in SPECIAL.items() if k in zoo.list_models()
}


def _kinds() -> list[str]:
    """The smallest model of each kind of input check: any size, one size, a segmenter's valid sizes."""
    found: dict[str, str] = {}
    for name in sorted(zoo.list_models(), key=lambda n: zoo.model_info(n).num_params):
        with torch.device("meta"):
            model = zoo.create(name)
        kind = "segmenter" if isinstance(model, ZooSegmenter) else "any" if model.fixed_input_size is None else "one"
        found.setdefault(kind, name)
        if len(found) == 3:
            break
    return [found["any"], found["one"], found["segmenter"]]


def _input(model: torch.nn.Module, size: tuple[int, int], batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, model.in_channels, *size)


@pytest.mark.parametrize(("name", "size"), CASES.items())
def test_export_and_trace_match_eager(name, size):
    torch.manual_seed(0)
    model = zoo.create(name).eval()
    x = _input(model, size)
    with torch.no_grad():
        expected = model(x)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), expected, rtol=1e-5, atol=1e-5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace is deprecated in favour of export
            traced = torch.jit.trace(model, x)
        torch.testing.assert_close(traced(x), expected, rtol=1e-5, atol=1e-5)


def test_every_family_is_exported():
    families = {zoo.model_info(n).family for n in zoo.list_models()}
    assert {zoo.model_info(n).family for n in CASES} == families and len(families) >= 10


def _strict(name: str) -> None:
    """Strict export (TorchDynamo traces the forward and the input checks): the same outputs, no warning,
    and a wrong input still fails with the model's own one-line message."""
    torch.manual_seed(0)
    model = zoo.create(name).eval()
    card = zoo.model_info(name)
    size = card.input_size[1:] if model.fixed_input_size is not None else card.min_input_size
    x = _input(model, size, batch=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. dynamo's "side effects happened in the model.forward"
        exported = torch.export.export(model, (x,), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-5, atol=1e-5)
    wrong = torch.randn(1, model.in_channels + 1, *size)
    with pytest.raises(Exception, match=f"{name} expects {model.in_channels} input channel"):
        torch.export.export(model, (wrong,), strict=True)


@pytest.mark.parametrize("name", _kinds())
def test_strict_export_of_each_kind_of_input_check(name):
    _strict(name)


def test_the_kinds_are_three_different_checks():
    free, fixed, segmenter = (zoo.create(n) for n in _kinds())
    assert free.fixed_input_size is None and not isinstance(free, ZooSegmenter)
    assert fixed.fixed_input_size is not None
    assert isinstance(segmenter, ZooSegmenter)


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.list_models())
def test_strict_export_of_every_model(name):
    _strict(name)
