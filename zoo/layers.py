"""Shared building blocks of every family.

`ConvNormAct` is the workhorse; the rest are the layers the CNN literature teaches:
gated convolution (Yu et al., "Free-Form Image Inpainting with Gated Convolution",
ICCV 2019, https://arxiv.org/abs/1806.03589), L2-norm pooling, global average and max
pooling, and max-unpooling (SegNet's upsampling). Norm and activation layers are passed as classes
(or `functools.partial`),
never as strings; passing ``None`` leaves the layer out.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cache
from typing import Any

import torch
from torch import Tensor, nn

from zoo.arithmetic import same_padding
from zoo.checks import check_int
from zoo.errors import ConfigurationError

LayerFactory = Callable[..., nn.Module]
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _pair(v: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (v, v) if isinstance(v, int) else tuple(v)
    if len(pair) != 2:
        raise ConfigurationError(f"{name} must be an int or a pair of ints, got {v!r}")
    return pair  # type: ignore[return-value]


@cache
def _takes_inplace(factory: LayerFactory) -> bool:
    try:
        return "inplace" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def make_act(act_layer: LayerFactory | None) -> nn.Module:
    """An activation instance (in place where the class allows it), or Identity for None."""
    if act_layer is None:
        return nn.Identity()
    return act_layer(inplace=True) if _takes_inplace(act_layer) else act_layer()


def _conv(
    owner: str,
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int],
    padding: int | tuple[int, int] | None,
    dilation: int | tuple[int, int],
    groups: int,
    *,
    bias: bool,
    padding_mode: str,
) -> nn.Conv2d:
    """The checked convolution of `ConvNormAct` ("same" padding when `padding` is None)."""
    check_int(in_channels, "in_channels", owner)
    check_int(out_channels, "out_channels", owner)
    check_int(groups, "groups", owner)
    if in_channels % groups or out_channels % groups:
        raise ConfigurationError(
            f"{owner}: groups={groups} must divide in_channels ({in_channels}) and out_channels ({out_channels})"
        )
    if padding_mode not in PADDING_MODES:
        raise ConfigurationError(f"padding_mode must be one of {', '.join(PADDING_MODES)}, got {padding_mode!r}")
    k, d = _pair(kernel_size, "kernel_size"), _pair(dilation, "dilation")
    if padding is None:
        padding = (same_padding(k[0], d[0]), same_padding(k[1], d[1]))
    return nn.Conv2d(in_channels, out_channels, k, stride, padding, d, groups, bias=bias, padding_mode=padding_mode)


class ConvNormAct(nn.Sequential):
    """Convolution, then normalisation, then activation; children ``conv``, ``norm``, ``act``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: int or (kH, kW); 1 gives a pointwise (1x1) conv.
        stride: int or pair.
        padding: int or pair; None (default) pads "same" for odd kernels, d(k-1)/2.
        dilation: int or pair.
        groups: channel groups (``groups=in_channels`` is a depthwise conv).
        bias: conv bias; None (default) means a bias exactly when there is no norm layer.
        norm_layer: a class or partial called with the channel count; None drops it.
        act_layer: a class or partial (built in place when it can be); None drops it.
        padding_mode: "zeros", "reflect", "replicate" or "circular".
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        *,
        bias: bool | None = None,
        norm_layer: LayerFactory | None = nn.BatchNorm2d,
        act_layer: LayerFactory | None = nn.ReLU,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.conv = _conv(
            type(self).__name__,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias=norm_layer is None if bias is None else bias,
            padding_mode=padding_mode,
        )
        if norm_layer is not None:
            self.norm = norm_layer(out_channels)
        if act_layer is not None:
            self.act = make_act(act_layer)


class NormActConv(ConvNormAct):
    """The pre-activation form of `ConvNormAct`: normalisation, activation, then the convolution.

    Children ``norm``, ``act``, ``conv``, in the order of He et al.'s "Identity Mappings in
    Deep Residual Networks" (2016) and of DenseNet's layers. The arguments are `ConvNormAct`'s;
    the norm layer normalises the `in_channels` it receives, and the conv has a bias only when
    asked (``bias=True``): what follows it (the next norm, or the residual sum) needs none.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *args: Any,
        bias: bool = False,
        norm_layer: LayerFactory | None = nn.BatchNorm2d,
        act_layer: LayerFactory | None = nn.ReLU,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, out_channels, *args, bias=bias, norm_layer=None, act_layer=None, **kwargs)
        conv = self._modules.pop("conv")  # re-registered last: an nn.Sequential runs its children in order
        if norm_layer is not None:
            self.norm = norm_layer(in_channels)
        if act_layer is not None:
            self.act = make_act(act_layer)
        self.conv = conv

    def preactivate(self, x: Tensor) -> Tensor:
        """The input after the norm and the activation, before the conv.

        A pre-activation ResNet's projection shortcut starts here (`zoo.models.resnet_blocks`).
        """
        for name, module in self.named_children():
            if name != "conv":
                x = module(x)
        return x


def stochastic_depth(rate: float) -> nn.Module:
    """Stochastic depth (Huang et al. 2016): drop a residual branch per sample with probability `rate`
    while training, scaling the kept ones by 1 / (1 - rate); Identity for rate 0.

    torchvision's `StochasticDepth` ("row" mode: per sample) does exactly this, as timm's DropPath
    does; torchvision's is used since it needs no timm import.
    """
    if rate <= 0:
        return nn.Identity()
    from torchvision.ops import StochasticDepth  # lazily: `import zoo` imports torch only

    return StochasticDepth(rate, "row")


class GatedConv2d(nn.Module):
    """Gated convolution (Yu et al. 2019): ``act(feature(x)) * sigmoid(gate(x))``.

    Two convolutions of the same shape; the gate learns, per pixel and channel, how much
    of the feature to let through (the paper's remedy for holes in inpainting).

    Args:
        in_channels: input channels; `out_channels`, `kernel_size`, `stride`, `padding` and
            `dilation` are as in `ConvNormAct` and apply to both convolutions.
        act_layer: the activation of the feature branch (the paper's phi, ELU in its
            experiments); None gives the plain product.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        *,
        act_layer: LayerFactory | None = nn.ELU,
    ) -> None:
        super().__init__()
        if padding is None:
            padding = same_padding(kernel_size, dilation)
        self.feature = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation)
        self.gate = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation)
        self.act = make_act(act_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.feature(x)) * torch.sigmoid(self.gate(x))


class L2Pool2d(nn.LPPool2d):
    """L2-norm pooling: the square root of the sum of squares in each window."""

    def __init__(
        self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None, ceil_mode: bool = False
    ) -> None:
        super().__init__(2, kernel_size, stride, ceil_mode)


class GlobalAvgPool2d(nn.Module):
    """Mean over the spatial axes: (B, C, H, W) -> (B, C), or (B, C, 1, 1) with ``flatten=False``."""

    def __init__(self, flatten: bool = True) -> None:
        super().__init__()
        self.flatten = flatten

    def forward(self, x: Tensor) -> Tensor:
        return x.mean((-2, -1), keepdim=not self.flatten)


class GlobalMaxPool2d(nn.Module):
    """Max over the spatial axes: (B, C, H, W) -> (B, C), or (B, C, 1, 1) with ``flatten=False``."""

    def __init__(self, flatten: bool = True) -> None:
        super().__init__()
        self.flatten = flatten

    def forward(self, x: Tensor) -> Tensor:
        return x.amax((-2, -1), keepdim=not self.flatten)


def _reflected(n: int, before: int, after: int, device: torch.device) -> Tensor:
    index = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(index)
    period = 2 * (n - 1)  # reflection without repeating the edge: 0 1 2 3 2 1 0 1 ...
    index = torch.remainder(index, period)
    return torch.where(index < n, index, period - index)


def mirror_pad(x: Tensor, pad: tuple[int, int, int, int]) -> Tensor:
    """Pad the last two axes by mirroring, as often as needed: `pad` is (left, right, top, bottom) as in F.pad.

    The border is reflected without repeating the edge pixel (torch's ``"reflect"``), but
    unlike ``F.pad(mode="reflect")`` a pad may exceed the input: the mirroring repeats
    (numpy's ``np.pad(mode="reflect")``). This is how the U-Net paper extrapolates the missing
    context at the image border for overlap-tile inference.
    """
    left, right, top, bottom = pad
    if min(pad) < 0:
        raise ConfigurationError(f"mirror_pad: pads must be non-negative, got {pad}")
    if not any(pad):
        return x
    h, w = x.shape[-2], x.shape[-1]
    x = x.index_select(-2, _reflected(h, top, bottom, x.device))
    return x.index_select(-1, _reflected(w, left, right, x.device))


class MaxUnpool(nn.Module):
    """Max-unpooling (SegNet's upsampling): each value goes back to the position its max-pool took it
    from (the pool's ``return_indices=True`` indices), zeros everywhere else.

    `forward(x, indices, size)` takes the pooled map, its indices and the (H, W) of the map the
    pool saw, so odd sizes come back exactly (a 2x2 pool takes 45 rows to 22 or 23; without `size`
    the unpool could only guess 44 or 46).

    Args:
        kernel_size: the pool's window.
        stride: the pool's stride (None: `kernel_size`, as for the pool).
    """

    def __init__(self, kernel_size: int = 2, stride: int | None = None) -> None:
        super().__init__()
        self.kernel_size = check_int(kernel_size, "kernel_size", "MaxUnpool")
        self.stride = self.kernel_size if stride is None else check_int(stride, "stride", "MaxUnpool")

    def forward(self, x: Tensor, indices: Tensor, size: tuple[int, int]) -> Tensor:
        if not torch.jit.is_tracing() and indices.shape != x.shape:  # (a trace is specialised to its input)
            raise ConfigurationError(
                f"MaxUnpool: the indices {tuple(indices.shape)} must have the input's shape {tuple(x.shape)}; "
                "pass the indices the matching max-pool returned (return_indices=True)"
            )
        # a scatter into the flattened plane: what nn.MaxUnpool2d computes, but ONNX exports it (ScatterElements)
        b, c = x.shape[0], x.shape[1]
        out = x.new_zeros(b, c, size[0] * size[1]).scatter(2, indices.flatten(2), x.flatten(2))
        return out.view(b, c, size[0], size[1])  # (B, C, H, W)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"
