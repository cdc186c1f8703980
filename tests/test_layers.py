"""Shared blocks: ConvNormAct options, gated convolution, and the pooling layers on the worked example."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from zoo.arithmetic import min_input_size, module_chain, receptive_fields
from zoo.errors import ConfigurationError
from zoo.layers import ConvNormAct, GatedConv2d, GlobalAvgPool2d, GlobalMaxPool2d, L2Pool2d, NormActConv

X = torch.tensor([[1, 2, 3, 0], [4, 5, 6, 1], [3, 4, 7, 2], [1, 2, 1, 0]], dtype=torch.float32)[None, None]


def test_max_pool_worked_example():
    assert nn.MaxPool2d(2, 2)(X)[0, 0].tolist() == [[5, 6], [4, 7]]


def test_average_pool_worked_example():
    assert nn.AvgPool2d(2, 2)(X)[0, 0].tolist() == [[3, 2.5], [2.5, 2.5]]


def test_l2_pool_worked_example():
    expected = torch.tensor([[math.sqrt(46), math.sqrt(46)], [math.sqrt(30), math.sqrt(54)]])
    torch.testing.assert_close(L2Pool2d(2, 2)(X)[0, 0], expected)


def test_global_pools():
    assert GlobalAvgPool2d()(X).tolist() == [[2.625]]
    assert GlobalMaxPool2d()(X).tolist() == [[7.0]]
    assert GlobalAvgPool2d(flatten=False)(X).shape == (1, 1, 1, 1)
    assert GlobalMaxPool2d(flatten=False)(X).shape == (1, 1, 1, 1)


def test_conv_norm_act_defaults():
    m = ConvNormAct(3, 8)
    assert [name for name, _ in m.named_children()] == ["conv", "norm", "act"]
    assert m.conv.padding == (1, 1) and m.conv.bias is None
    assert isinstance(m.norm, nn.BatchNorm2d) and isinstance(m.act, nn.ReLU) and m.act.inplace
    assert m(torch.randn(2, 3, 9, 9)).shape == (2, 8, 9, 9)


def test_conv_norm_act_drops_layers_and_keeps_bias_without_norm():
    m = ConvNormAct(3, 8, norm_layer=None, act_layer=None)
    assert [name for name, _ in m.named_children()] == ["conv"]
    assert m.conv.bias is not None
    assert ConvNormAct(3, 8, bias=True).conv.bias is not None


def test_conv_norm_act_injectable_norm_and_act():
    m = ConvNormAct(4, 8, norm_layer=partial(nn.GroupNorm, 2), act_layer=nn.GELU)
    assert isinstance(m.norm, nn.GroupNorm) and m.norm.num_groups == 2 and isinstance(m.act, nn.GELU)
    m(torch.randn(1, 4, 5, 5))


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_padding_modes(mode):
    m = ConvNormAct(1, 1, 3, padding_mode=mode, norm_layer=None, act_layer=None)
    nn.init.ones_(m.conv.weight)
    nn.init.zeros_(m.conv.bias)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = m(x)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="constant" if mode == "zeros" else mode)
    torch.testing.assert_close(out, torch.nn.functional.avg_pool2d(padded, 3, 1) * 9)


def test_dilation_groups_and_pointwise():
    assert ConvNormAct(4, 4, 3, dilation=2)(torch.randn(1, 4, 10, 10)).shape == (1, 4, 10, 10)
    dw = ConvNormAct(4, 8, 3, groups=4)
    assert dw.conv.weight.shape == (8, 1, 3, 3)
    pw = ConvNormAct(4, 8, 1)
    assert pw.conv.weight.shape == (8, 4, 1, 1) and pw.conv.padding == (0, 0)
    assert ConvNormAct(4, 8, (1, 7)).conv.padding == (0, 3)
    assert ConvNormAct(4, 8, 3, stride=2)(torch.randn(1, 4, 10, 10)).shape == (1, 8, 5, 5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_channels": 0, "out_channels": 4}, "in_channels must be a positive integer, got 0"),
        ({"in_channels": 4, "out_channels": 2.0}, "out_channels must be a positive integer"),
        ({"in_channels": 4, "out_channels": 6, "groups": 4}, "groups=4 must divide"),
        ({"in_channels": 4, "out_channels": 4, "padding_mode": "mirror"}, "padding_mode must be one of"),
        ({"in_channels": 4, "out_channels": 4, "kernel_size": 2}, "no symmetric 'same' padding"),
    ],
)
def test_conv_norm_act_errors(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        ConvNormAct(**kwargs)


def test_norm_act_conv_is_the_pre_activation_order():
    """norm -> act -> conv, the norm over the input channels, no conv bias by default; the same output by hand."""
    torch.manual_seed(0)
    layer = NormActConv(4, 6, 3, stride=2)
    assert [name for name, _ in layer.named_children()] == ["norm", "act", "conv"]
    assert layer.norm.num_features == 4 and layer.conv.bias is None and layer.conv.padding == (1, 1)
    with torch.no_grad():
        layer.norm.weight.uniform_(0.5, 1.5), layer.norm.bias.uniform_(-1, 1)
    x = torch.randn(2, 4, 9, 9)
    layer.train()
    by_hand = nn.functional.conv2d(
        torch.relu(nn.functional.batch_norm(x, None, None, layer.norm.weight, layer.norm.bias, training=True)),
        layer.conv.weight,
        stride=2,
        padding=1,
    )
    torch.testing.assert_close(layer(x), by_hand)
    assert layer(x).shape == (2, 6, 5, 5)


def test_norm_act_conv_arithmetic_and_errors():
    """The arithmetic sees its conv as ConvNormAct's (dilation counted); its argument errors name it."""
    pre, post = NormActConv(3, 8, 3, stride=2, dilation=2), ConvNormAct(3, 8, 3, stride=2, dilation=2)
    chain_pre, chain_post = module_chain(pre.named_modules()), module_chain(post.named_modules())
    assert [(g.kernel, g.stride, g.padding, g.dilation) for g in chain_pre] == [
        (g.kernel, g.stride, g.padding, g.dilation) for g in chain_post
    ]
    assert receptive_fields(chain_pre) == receptive_fields(chain_post) and receptive_fields(chain_pre)[-1].size == (
        5,
        5,
    )
    assert min_input_size(chain_pre) == min_input_size(chain_post)
    with pytest.raises(ConfigurationError, match="NormActConv: groups=3 must divide"):
        NormActConv(4, 6, 3, groups=3)
    layer = NormActConv(4, 6, 1, norm_layer=None, act_layer=None, bias=True)
    assert [name for name, _ in layer.named_children()] == ["conv"] and layer.conv.bias is not None


def test_gated_conv_is_feature_times_sigmoid_gate():
    torch.manual_seed(0)
    g = GatedConv2d(3, 5, act_layer=None)
    x = torch.randn(2, 3, 8, 8)
    expected = g.feature(x) * torch.sigmoid(g.gate(x))
    torch.testing.assert_close(g(x), expected)
    assert g(x).shape == (2, 5, 8, 8)
    elu = GatedConv2d(3, 5)
    torch.testing.assert_close(elu(x), nn.functional.elu(elu.feature(x)) * torch.sigmoid(elu.gate(x)))
    # a gate driven far negative closes the output
    nn.init.constant_(g.gate.bias, -1e4)
    assert g(x).abs().max() == 0


def test_stochastic_depth_drops_whole_samples_and_rescales_the_rest():
    """Per sample: all zeros or the input / (1 - rate), in training only; Identity at rate 0."""
    from zoo.layers import stochastic_depth

    assert isinstance(stochastic_depth(0.0), nn.Identity)
    layer = stochastic_depth(0.5).train()
    torch.manual_seed(0)
    x = torch.rand(64, 3, 4, 4) + 0.1
    y = layer(x)
    dropped = (y == 0).flatten(1).all(1)
    kept = torch.isclose(y, x / 0.5).flatten(1).all(1)
    assert bool((dropped ^ kept).all()) and 10 < int(dropped.sum()) < 54
    assert torch.equal(layer.eval()(x), x)


def test_max_unpool_puts_values_back_at_their_argmax_positions():
    """The worked 4x4 example: each window's maximum returns to where it was, every other cell is 0."""
    from zoo.layers import MaxUnpool

    pooled, indices = nn.MaxPool2d(2, 2, return_indices=True)(X)
    assert pooled[0, 0].tolist() == [[5, 6], [4, 7]]
    assert indices[0, 0].tolist() == [[5, 6], [9, 10]]  # row-major positions in the 4x4 map
    out = MaxUnpool(2)(pooled, indices, (4, 4))
    assert out[0, 0].tolist() == [[0, 0, 0, 0], [0, 5, 6, 0], [0, 4, 7, 0], [0, 0, 0, 0]]
    assert torch.equal(out, nn.MaxUnpool2d(2)(pooled, indices))  # torch's layer agrees
    # an odd size comes back exactly: a 5x5 map pooled in ceil mode to 3x3, unpooled to 5x5
    odd = torch.arange(25.0).reshape(1, 1, 5, 5)
    pooled, indices = nn.MaxPool2d(2, 2, ceil_mode=True, return_indices=True)(odd)
    out = MaxUnpool(2)(pooled, indices, (5, 5))
    assert out.shape == (1, 1, 5, 5)
    assert torch.equal(out[out != 0], pooled.flatten())  # every maximum, in order, nowhere else
    assert out[0, 0, 4].tolist() == [0, 21, 0, 23, 24]  # the ceil-mode windows of the last row
    with pytest.raises(ConfigurationError, match="indices .* must have the input's shape"):
        MaxUnpool(2)(pooled, indices[..., :2], (5, 5))
