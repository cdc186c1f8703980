"""MobileNetV2: torchvision parity at every width multiplier (parameters, outputs, stages), the blocks, the options.

The registered variant's parameter count, MACs against torchvision's metadata and weight files
are checked by the registry-wide tests (test_models, test_analysis, test_weights_files).
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import zoo
from zoo.errors import ConfigurationError
from zoo.models.mobilenet import InvertedResidual, make_divisible
from zoo.weights import import_weights

from helpers import randomise_norms

WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.4)  # the paper's multipliers (Table 6, Figure 5)


@pytest.mark.parametrize("width_mult", WIDTHS)
def test_parameter_counts_equal_torchvisions_at_every_width(width_mult):
    with torch.device("meta"):
        ours = zoo.create("mobilenet_v2", width_mult=width_mult)
        theirs = torchvision.models.mobilenet_v2(width_mult=width_mult)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert ours.num_features == (1280 if width_mult <= 1 else make_divisible(1280 * width_mult))


@pytest.mark.parametrize("width_mult", [0.5, 1.0])
def test_outputs_and_stages_equal_torchvisions_after_import(width_mult):
    torch.manual_seed(0)
    theirs = torchvision.models.mobilenet_v2(width_mult=width_mult).eval()
    randomise_norms(theirs)
    ours = import_weights(zoo.create("mobilenet_v2", width_mult=width_mult), theirs).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max() <= 1e-5
        stages = ours.forward_stages(x)
        y, expected = x, []
        for cut in ((0, 2), (2, 4), (4, 7), (7, 14), (14, 19)):  # the block that halves the grid starts a stage
            y = theirs.features[cut[0] : cut[1]](y)
            expected.append(y)
    assert ours.stage_strides == (2, 4, 8, 16, 32)
    for s, e in zip(stages, expected, strict=True):
        assert s.shape == e.shape
        assert (s - e).abs().max() <= 1e-5


def test_blocks_are_inverted_residuals_with_depthwise_convs():
    model = zoo.create("mobilenet_v2")
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17
    theirs = torchvision.models.mobilenet_v2()
    assert [b.use_shortcut for b in blocks] == [b.use_res_connect for b in theirs.features[1:18]]
    for b in blocks:
        dw = b.depthwise.conv
        assert dw.groups == dw.in_channels == dw.out_channels and isinstance(b.depthwise.act, nn.ReLU6)
        assert not hasattr(b.project, "act")  # the linear bottleneck
    assert blocks[0].expand is None and blocks[1].expand.conv.out_channels == 6 * 16  # t = 1, then t = 6


def test_initialisation_is_torchvisions_policy():
    """He normal (fan-out) convs, N(0, 0.01) classifier with zero bias, batch norm 1 and 0."""
    torch.manual_seed(0)
    model = zoo.create("mobilenet_v2")
    head = model.stages[-1].head.conv  # 320 -> 1280: fan-out 1280
    assert head.weight.std().item() == pytest.approx((2 / 1280) ** 0.5, rel=0.02)
    assert model.fc.weight.std().item() == pytest.approx(0.01, rel=0.02) and not model.fc.bias.any()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.weight.eq(1).all() and not m.bias.any() for m in norms)


def test_drop_rate_is_torchvisions_dropout():
    torch.manual_seed(0)
    theirs = torchvision.models.mobilenet_v2()
    ours = import_weights(zoo.create("mobilenet_v2"), theirs)
    assert ours.head_drop.p == 0.2
    x = torch.randn(2, 3, 32, 32)
    outs = []
    for model in (theirs, ours):
        torch.manual_seed(1)
        outs.append(model(x))
    assert (outs[0] - outs[1]).abs().max() <= 1e-5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width_mult": 0}, "width_mult must be a number > 0"),
        ({"width_mult": -1.0}, "width_mult must be a number >= 0"),
        ({"width_mult": "1.4"}, "width_mult must be a number"),
        ({"drop_rate": 1.0}, r"drop_rate must be a number in \[0, 1\)"),
    ],
)
def test_bad_arguments_are_one_line(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        zoo.create("mobilenet_v2", **kwargs)


def test_width_multiplier_weights_do_not_load_into_another_width():
    theirs = torchvision.models.mobilenet_v2()
    with pytest.raises(Exception, match="shape mismatch"):
        import_weights(zoo.create("mobilenet_v2", width_mult=0.5), theirs)
