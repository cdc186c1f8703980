"""Convolution arithmetic: worked examples, error messages, and a property test against torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from zoo import arithmetic as A
from zoo.errors import ConfigurationError


def test_worked_example_cross_correlation():
    """4x5 input * 3x3 kernel (cross-correlation, what nn.Conv2d computes): 66 first, full valid output."""
    x = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 2, 3], [2, 5, 9, 9, 5], [4, 8, 8, 2, 1]], dtype=torch.float64)
    k = torch.tensor([[1, 1, 1], [2, 1, 2], [3, 2, 1]], dtype=torch.float64)
    out = F.conv2d(x[None, None], k[None, None])[0, 0]
    assert out[0, 0].item() == 66
    assert out.tolist() == [[66, 77, 86], [84, 96, 79]]
    assert (A.conv_output_size(4, 3), A.conv_output_size(5, 3)) == (2, 3)
    # by hand: the sum of elementwise products of the first window
    assert (x[:3, :3] * k).sum().item() == 66


def test_worked_example_checkerboard_padding_1_stride_2():
    """Products, not the window sum: [[1, 2], [2, 4]] (a copied tutorial's [[1, 3], [2, 5]] is wrong)."""
    x = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.float64)
    k = torch.tensor([[1, 1, 1], [0, 0, 0], [1, 1, 1]], dtype=torch.float64)
    out = F.conv2d(x[None, None], k[None, None], stride=2, padding=1)[0, 0]
    assert out.tolist() == [[1, 2], [2, 4]]
    assert A.conv_output_size(4, 3, stride=2, padding=1) == 2


def test_output_size_formulas():
    assert A.conv_output_size(224, 11, stride=4, padding=2) == 55
    assert A.conv_output_size(32, 3, padding="same") == 32
    assert A.conv_output_size(32, 5, padding="valid") == 28
    assert A.conv_output_size(32, 3, dilation=2, padding=2) == 32
    assert A.pool_output_size(55, 3, stride=2) == 27
    assert A.pool_output_size(112, 3, stride=2, ceil_mode=True) == 56
    assert A.pool_output_size(5, 2, ceil_mode=True) == 3
    assert A.conv_transpose_output_size(28, 2, stride=2) == 56
    assert A.conv_transpose_output_size(7, 3, stride=2, padding=1, output_padding=1) == 14


def test_kernel_that_does_not_fit_states_the_numbers():
    with pytest.raises(ValueError, match="input 2 with padding 0 is 2 wide, kernel 3 .* spans 3"):
        A.conv_output_size(2, 3)


def test_exact_mode_catches_dropped_border():
    assert A.conv_output_size(10, 3, stride=2) == 4  # silently ignores row 9
    with pytest.raises(ConfigurationError, match="stride 2 leaves the last 1 row"):
        A.conv_output_size(10, 3, stride=2, exact=True)
    assert A.conv_output_size(11, 3, stride=2, exact=True) == 5
    with pytest.raises(ConfigurationError, match="leaves the last 1"):
        A.pool_output_size(5, 2, exact=True)


def test_same_and_valid_padding():
    assert A.same_padding(3) == 1 and A.same_padding(7) == 3 and A.same_padding(3, dilation=2) == 2
    with pytest.raises(ConfigurationError, match="no symmetric 'same' padding"):
        A.same_padding(4)
    with pytest.raises(ConfigurationError, match="needs stride 1"):
        A.conv_output_size(32, 3, stride=2, padding="same")
    with pytest.raises(ConfigurationError, match="'same' or 'valid'"):
        A.conv_output_size(32, 3, padding="full")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 0, "kernel": 3}, "size must be at least 1"),
        ({"size": 8, "kernel": 0}, "kernel must be at least 1"),
        ({"size": 8, "kernel": 3, "stride": 0}, "stride must be at least 1"),
        ({"size": 8, "kernel": 3, "padding": -1}, "padding must be non-negative"),
        ({"size": 8.0, "kernel": 3}, "size must be an integer"),
    ],
)
def test_invalid_numbers(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        A.conv_output_size(**kwargs)


def test_pool_padding_limit_and_transposed_output_padding():
    with pytest.raises(ConfigurationError, match="more than half the kernel"):
        A.pool_output_size(8, 2, padding=2)
    with pytest.raises(ConfigurationError, match="output_padding 2 must be smaller"):
        A.conv_transpose_output_size(8, 3, stride=2, output_padding=2)


def test_receptive_field_jump_and_start():
    chain = A.module_chain(
        [("c1", nn.Conv2d(1, 1, 3, padding=1)), ("p1", nn.MaxPool2d(2)), ("c2", nn.Conv2d(1, 1, 3, padding=1))]
    )
    rf = A.receptive_fields(chain)
    assert [r.size[0] for r in rf] == [3, 4, 8]
    assert [r.jump[0] for r in rf] == [1, 2, 2]
    assert [r.start[0] for r in rf] == [0.0, 0.5, 0.5]
    assert A.total_stride(chain) == (2, 2)


def test_receptive_field_of_vgg16_and_alexnet():
    import zoo

    assert A.receptive_fields(zoo.create("vgg16").spatial_chain())[-1].size == (212, 212)
    alex = A.receptive_fields(zoo.create("alexnet").spatial_chain())
    assert alex[-1].size == (195, 195) and alex[-1].jump == (32, 32)


def test_min_input_size_and_collapse_point():
    import zoo

    chain = zoo.create("alexnet").spatial_chain()
    assert A.min_input_size(chain) == (63, 63)
    assert A.collapse_point(chain, (63, 63)) is None
    name, reason = A.collapse_point(chain, (32, 32))
    assert name == "head_pool" and "does not fit" in reason
    assert A.output_sizes(chain, (224, 224))[-1] == (6, 6)


# ------------------------------------------------------------------ property tests against torch

sizes = st.integers(1, 40)
kernels = st.integers(1, 7)
strides = st.integers(1, 4)
paddings = st.integers(0, 4)
dilations = st.integers(1, 3)


def _torch_size(module: nn.Module, n: int) -> int | None:
    """torch's own answer, on a real (tiny) tensor: meta kernels skip some of torch's checks."""
    try:
        return module(torch.zeros(1, 1, n, 1)).shape[2]
    except RuntimeError:
        return None


def _ours(fn, *args, **kwargs) -> int | None:
    try:
        return fn(*args, **kwargs)
    except ConfigurationError:
        return None


@settings(max_examples=300, deadline=None)
@given(n=sizes, k=kernels, s=strides, p=paddings, d=dilations)
def test_conv_formula_equals_torch(n, k, s, p, d):
    conv = nn.Conv2d(1, 1, (k, 1), (s, 1), (p, 0), (d, 1))
    assert _ours(A.conv_output_size, n, k, s, p, d) == _torch_size(conv, n)


@settings(max_examples=300, deadline=None)
@given(n=sizes, k=kernels, s=strides, p=paddings, d=dilations, ceil=st.booleans())
def test_max_pool_formula_equals_torch(n, k, s, p, d, ceil):
    pool = nn.MaxPool2d((k, 1), (s, 1), (p, 0), (d, 1), ceil_mode=ceil)
    assert _ours(A.pool_output_size, n, k, s, p, d, ceil_mode=ceil) == _torch_size(pool, n)


@settings(max_examples=200, deadline=None)
@given(n=sizes, k=kernels, s=strides, p=paddings, ceil=st.booleans())
def test_avg_pool_formula_equals_torch(n, k, s, p, ceil):
    pool = nn.AvgPool2d((k, 1), (s, 1), (p, 0), ceil_mode=ceil)
    assert _ours(A.pool_output_size, n, k, s, p, 1, ceil_mode=ceil) == _torch_size(pool, n)


@settings(max_examples=300, deadline=None)
@given(n=sizes, k=kernels, s=strides, p=paddings, op=st.integers(0, 3), d=dilations)
def test_conv_transpose_formula_equals_torch(n, k, s, p, op, d):
    conv = nn.ConvTranspose2d(1, 1, (k, 1), (s, 1), (p, 0), (op, 0), dilation=(d, 1))
    expected = _torch_size(conv, n)
    assert _ours(A.conv_transpose_output_size, n, k, s, p, op, d) == expected


@settings(max_examples=150, deadline=None)
@given(
    layers=st.lists(
        st.tuples(st.sampled_from(["conv", "max", "avg"]), kernels, strides, st.integers(0, 2), st.booleans()),
        min_size=1,
        max_size=5,
    )
)
def test_min_input_size_equals_torch(layers):
    """The smallest input a random chain takes is exactly where torch starts to accept it."""
    modules = []
    for i, (kind, k, s, p, ceil) in enumerate(layers):
        if kind == "conv":
            m = nn.Conv2d(1, 1, k, s, p)
        else:
            p = min(p, k // 2)
            m = (nn.MaxPool2d if kind == "max" else nn.AvgPool2d)(k, s, p, ceil_mode=ceil)
        modules.append((str(i), m))
    net = nn.Sequential(*(m for _, m in modules))
    h, _ = A.min_input_size(A.module_chain(modules))

    def runs(n: int) -> bool:
        try:
            net(torch.zeros(1, 1, n, n))
            return True
        except RuntimeError:
            return False

    assert runs(h)
    assert h == 1 or not runs(h - 1)
