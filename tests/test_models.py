"""Registry-wide tests: every registered model honours the contract of DESIGN.md.

Classifiers and segmenters share the card, parameter-count and input-check tests; each
task then has its own contract (logits (B, num_classes) vs per-pixel logits).
"""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.arithmetic import collapse_point
from zoo.errors import InputShapeError
from zoo.models.base import ZooSegmenter

from helpers import random_model

ALL = zoo.list_models()
CLASSIFIERS = zoo.list_models(task="classification")
SEGMENTERS = zoo.list_models(task="segmentation")
# Models above this many parameters get their default-size forward on the meta device only
# (shape arithmetic without the cost); everything else runs on real tensors.
BIG = 100_000_000
# Segmenters whose default-size forward costs seconds on a CPU; tests/test_unet.py runs it once.
EXPENSIVE = {"unet"}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.create(name, **kw)


@pytest.fixture(scope="module", params=CLASSIFIERS)
def built(request):
    """(name, model): each classifier is built once for the tests below; above `BIG` parameters with
    random weights tiled from one vector (`random_model`) instead of the family's initialisation
    (seconds for ConvNeXt V2-H), which the smaller models of every family run."""
    name = request.param
    return name, build(name) if zoo.model_info(name).num_params <= BIG else random_model(name)


@pytest.fixture(scope="module", params=SEGMENTERS)
def built_segmenter(request):
    """(name, model): each segmenter is built once for the tests below."""
    return request.param, build(request.param)


@pytest.mark.parametrize("name", ALL)
def test_parameter_count_matches_reference(name):
    card = zoo.model_info(name)
    with torch.device("meta"):
        model = zoo.create(name)
    assert n_params(model) == card.num_params, f"{name}: built {n_params(model):,}, reference {card.num_params:,}"


@pytest.mark.parametrize("name", ALL)
def test_card_is_complete(name):
    card = zoo.model_info(name)
    assert card.name == name
    assert card.paper.title and card.paper.url.startswith("http") and 1980 < card.paper.year < 2030
    assert card.task in ("classification", "segmentation")
    c, h, w = card.input_size
    assert len(card.mean) == len(card.std) == c
    assert card.min_input_size[0] <= h and card.min_input_size[1] <= w
    assert card.reference


def test_min_input_size_matches_arithmetic_and_torch(built):
    """The card's minimum is what the arithmetic derives from the model, and torch agrees at min and min - 1."""
    name, model = built
    card = zoo.model_info(name)
    assert model.min_input_size == card.min_input_size
    if model.fixed_input_size is not None:
        return
    mh, mw = card.min_input_size
    chain = model.spatial_chain()
    assert collapse_point(chain, (mh, mw)) is None
    assert collapse_point(chain, (mh - 1, mw)) is not None
    # torch itself (checks bypassed, meta device: no compute) fails one pixel below the minimum
    with torch.device("meta"):
        meta = zoo.create(name).eval()
    meta.check_input = lambda x: None
    meta(torch.empty(1, card.input_size[0], mh, mw, device="meta"))
    with pytest.raises(RuntimeError):
        meta(torch.empty(1, card.input_size[0], mh - 1, mw, device="meta"))


def test_forward_backward_at_min_size(built):
    name, model = built
    card = zoo.model_info(name)
    model.train()
    x = torch.randn(2, card.input_size[0], *model.min_input_size)
    out = model(x)
    logits = out if isinstance(out, torch.Tensor) else out[0]
    assert logits.shape == (2, card.num_classes)
    loss = sum(o.float().pow(2).mean() for o in ([out] if isinstance(out, torch.Tensor) else _flat(out)))
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    if no_grad:
        # A norm's bias whose shift a training-mode batch norm downstream subtracts again (MobileNetV2's
        # linear projections: 1x1 conv, then batch norm) has a zero gradient in training only; in eval
        # mode (running statistics) it moves the output, and every parameter must do so in one mode.
        model.zero_grad(set_to_none=True)
        model.eval()
        model(x[:1]).float().pow(2).mean().backward()
        params = dict(model.named_parameters())
        no_grad = [n for n in no_grad if params[n].grad is None or not params[n].grad.any()]
    assert not no_grad, f"{name}: parameters without gradient: {no_grad[:5]}"
    model.zero_grad(set_to_none=True)


def _flat(out):
    for o in out:
        if isinstance(o, torch.Tensor):
            yield o
        else:
            yield from _flat(o)


def test_forward_at_default_size(built):
    name, model = built
    card = zoo.model_info(name)
    model.eval()
    if card.num_params > BIG:
        with torch.device("meta"):
            meta = zoo.create(name).eval()
        out = meta(torch.empty(1, *card.input_size, device="meta"))
    else:
        with torch.no_grad():
            out = model(torch.randn(1, *card.input_size))
        assert torch.isfinite(out).all()
    assert out.shape == (1, card.num_classes)


def test_contract(built):
    name, model = built
    card = zoo.model_info(name)
    model.eval()
    c, h, w = card.input_size
    x = torch.randn(2, c, *model.min_input_size) if card.num_params > BIG else torch.randn(2, c, h, w)
    with torch.no_grad():
        stages = model.forward_stages(x)
        features = model.forward_features(x)
        out = model(x)
        assert torch.equal(features, stages[-1])
        assert torch.allclose(out, model.forward_head(features), atol=1e-6)
        pre = model.forward_head(features, pre_logits=True)
    assert pre.shape == (2, model.num_features)
    assert model.in_channels == c and model.num_classes == card.num_classes
    assert len(stages) == len(model.stage_channels) == len(model.stage_strides)
    assert [s.shape[1] for s in stages] == list(model.stage_channels)
    assert list(model.stage_strides) == sorted(model.stage_strides)


def test_stage_strides(built):
    """stage_strides is the input/output size ratio of each stage (on a large input, where borders do not matter)."""
    name, model = built
    card = zoo.model_info(name)
    size = (8192, 8192)  # free on the meta device; unpadded convs (Inception-v3) shrink maps by a few pixels
    with torch.device("meta"):
        meta = zoo.create(name).eval()
    meta.check_input = lambda x: None  # the stages of fixed-size models (LeNet) take any size
    stages = meta.forward_stages(torch.empty(1, card.input_size[0], *size, device="meta"))
    assert [round(size[0] / s.shape[-2]) for s in stages] == list(model.stage_strides)
    assert [round(size[1] / s.shape[-1]) for s in stages] == list(model.stage_strides)


def test_reset_classifier_and_features(built):
    name, model = built
    card = zoo.model_info(name)
    model.eval()
    x = torch.randn(2, card.input_size[0], *model.min_input_size)
    model.reset_classifier(0)
    try:
        with torch.no_grad():
            assert model(x).shape == (2, model.num_features)
        model.reset_classifier(7)
        with torch.no_grad():
            assert model(x).shape == (2, 7)
        assert model.num_classes == 7
    finally:
        model.reset_classifier(card.num_classes)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_any_in_channels_and_num_classes(name):
    card = zoo.model_info(name)
    with torch.device("meta"):
        model = zoo.create(name, in_channels=5, num_classes=3).eval()
    out = model(torch.empty(2, 5, *card.input_size[1:], device="meta"))
    assert out.shape == (2, 3)
    with torch.device("meta"):
        features = zoo.create(name, num_classes=0).eval()(torch.empty(1, *card.input_size, device="meta"))
    assert features.ndim == 2


def test_input_errors(built):
    _check_input_errors(*built)


def _check_input_errors(name, model):
    card = zoo.model_info(name)
    c = card.input_size[0]
    mh, mw = model.min_input_size
    with pytest.raises(InputShapeError, match=f"at least {mh}x{mw}|exactly {mh}x{mw}"):
        model(torch.randn(1, c, mh - 1, mw - 1))
    with pytest.raises(InputShapeError, match=f"expects {c} input channel"):
        model(torch.randn(1, c + 1, mh, mw))
    with pytest.raises(InputShapeError, match="4-D tensor.*unsqueeze"):
        model(torch.randn(c, mh, mw))
    with pytest.raises(InputShapeError, match="floating-point"):
        model(torch.zeros(1, c, mh, mw, dtype=torch.uint8))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [0, -3, 2.5, "3", True])
def test_bad_channel_and_class_arguments(name, bad):
    with pytest.raises(zoo.ZooError, match="in_channels must be"):
        zoo.create(name, in_channels=bad)
    if bad != 0:
        with pytest.raises(zoo.ZooError, match="num_classes must be"):
            zoo.create(name, num_classes=bad)


# --------------------------------------------------------------------------- segmenters


def test_segmenter_input_errors(built_segmenter):
    name, model = built_segmenter
    _check_input_errors(name, model)
    c = model.in_channels
    mh, mw = model.min_input_size
    above = model.nearest_valid_sizes(mh + 1)[1]
    if above is not None and above > mh + 1:  # a size between two valid ones names both
        with pytest.raises(
            InputShapeError, match=f"input height of {mh + 1} .*nearest valid heights: {mh} and {above}"
        ):
            model(torch.randn(1, c, mh + 1, mw))
        with pytest.raises(InputShapeError, match=f"input width of {mw + 1} .*nearest valid widths: {mw} and {above}"):
            model.output_size((mh, mw + 1))


def test_segmenter_min_input_size(built_segmenter):
    """The card's minimum is the model's, the smallest valid size, and torch runs there."""
    name, model = built_segmenter
    card = zoo.model_info(name)
    assert model.min_input_size == card.min_input_size
    mh, mw = card.min_input_size
    assert model.nearest_valid_sizes(mh, 0) == (mh, mh) and model.nearest_valid_sizes(mw, 1) == (mw, mw)
    assert model.nearest_valid_sizes(mh - 1, 0) == (None, mh)
    with torch.device("meta"):
        meta = zoo.create(name).eval()
    out = meta(torch.empty(1, card.input_size[0], mh, mw, device="meta"))
    assert out.shape == (1, card.num_classes, *model.output_size((mh, mw)))


def test_segmenter_forward_backward_at_min_size(built_segmenter):
    name, model = built_segmenter
    card = zoo.model_info(name)
    model.train()
    size = model.min_input_size
    out = model(torch.randn(2, card.input_size[0], *size))
    assert out.shape == (2, card.num_classes, *model.output_size(size))
    out.float().pow(2).mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not no_grad, f"{name}: parameters without gradient: {no_grad[:5]}"
    model.zero_grad(set_to_none=True)


def test_segmenter_forward_at_default_size(built_segmenter):
    name, model = built_segmenter
    card = zoo.model_info(name)
    model.eval()
    expected = (1, card.num_classes, *model.output_size(card.input_size[1:]))
    if card.num_params > BIG or name in EXPENSIVE:
        with torch.device("meta"):
            meta = zoo.create(name).eval()
        out = meta(torch.empty(1, *card.input_size, device="meta"))
    else:
        with torch.no_grad():
            out = model(torch.randn(1, *card.input_size))
        assert torch.isfinite(out).all()
    assert out.shape == expected


def test_segmenter_contract(built_segmenter):
    name, model = built_segmenter
    card = zoo.model_info(name)
    assert isinstance(model, ZooSegmenter)
    assert model.in_channels == card.input_size[0] and model.num_classes == card.num_classes
    assert not model.pad_input  # padding is never the default: an invalid size raises
    # the valid sizes repeat: the next valid size after any valid one is one step on
    mh = model.min_input_size[0]
    step = model.nearest_valid_sizes(mh + 1)[1] - mh
    for k in range(4):
        v = mh + k * step
        assert model.nearest_valid_sizes(v) == (v, v)
        assert model.nearest_valid_sizes(v + 1) == ((v, v + step) if step > 1 else (v + 1, v + 1))


@pytest.mark.parametrize("name", SEGMENTERS)
def test_segmenter_any_in_channels_and_num_classes(name):
    card = zoo.model_info(name)
    with torch.device("meta"):
        model = zoo.create(name, in_channels=5, num_classes=3).eval()
    out = model(torch.empty(2, 5, *card.input_size[1:], device="meta"))
    assert out.shape == (2, 3, *model.output_size(card.input_size[1:]))
    with pytest.raises(zoo.ZooError, match="num_classes must be"):
        zoo.create(name, num_classes=0)


@pytest.mark.parametrize("name", SEGMENTERS)
def test_segmenter_pad_input_takes_any_size(name):
    card = zoo.model_info(name)
    with torch.device("meta"):
        model = zoo.create(name, pad_input=True).eval()
    h, w = (m + 1 for m in model.min_input_size)
    out = model(torch.empty(1, card.input_size[0], h, w, device="meta"))
    assert out.shape == (1, card.num_classes, h, w) and model.output_size((h, w)) == (h, w)
