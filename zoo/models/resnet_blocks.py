"""ResNet's blocks: the basic block, the bottleneck, their pre-activation forms, and the two kinds of shortcut.

The networks built from them (ResNet, ResNeXt, Wide ResNet, the CIFAR ResNets, the
pre-activation ResNets) and the family's notes on where they depart from the papers are in
`zoo.models.resnet`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from zoo.errors import ConfigurationError
from zoo.layers import ConvNormAct, LayerFactory, NormActConv, make_act, stochastic_depth

SHORTCUTS = ("A", "B")


class ZeroPadShortcut(nn.Module):
    """The paper's option A shortcut: keep every `stride`-th pixel, then append zero channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ConfigurationError(
                f"a zero-padding (option A) shortcut cannot go from {in_channels} to fewer ({out_channels}) "
                "channels; use shortcut='B'"
            )
        self.stride = stride
        self.extra = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # zeros after the last channel

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra}"


def _shortcut(
    in_channels: int, out_channels: int, stride: int, kind: str, norm_layer: LayerFactory | None
) -> nn.Module | None:
    """None (the identity) where shapes agree; otherwise option A or B."""
    if stride == 1 and in_channels == out_channels:
        return None
    if kind == "A":
        return ZeroPadShortcut(in_channels, out_channels, stride)
    return ConvNormAct(in_channels, out_channels, 1, stride, norm_layer=norm_layer, act_layer=None)


class _ResidualBlock(nn.Module):
    """What the two block types share: the shortcut, stochastic depth, the add and the last activation."""

    expansion: int
    num_convs: int
    downsample: nn.Module | None
    drop_path: nn.Module
    act: nn.Module

    def _finish(self, out: Tensor, x: Tensor) -> Tensor:
        out = self.drop_path(out)  # Identity without stochastic depth
        out += x if self.downsample is None else self.downsample(x)  # in place: no extra copy
        return self.act(out)

    def last_norm(self) -> nn.Module | None:
        """The norm layer right before the addition."""
        return getattr(getattr(self, f"conv{self.num_convs}"), "norm", None)

    def zero_init_last(self) -> None:
        """Start the residual branch at zero, so that the block starts as the identity (``zero_init_residual``)."""
        norm = self.last_norm()
        if norm is not None and getattr(norm, "weight", None) is not None:
            nn.init.zeros_(norm.weight)


class BasicBlock(_ResidualBlock):
    """Two 3x3 convs and a shortcut (the paper's Figure 2, left); the first conv carries the stride.

    Args:
        in_channels: input channels.
        planes: the width of both convs (the output width: ``expansion`` is 1).
        stride: stride of the first conv (and of the shortcut).
        groups, width_per_group: must be 1 and 64 (a basic block has no grouped form).
        shortcut: "A" (zero padding) or "B" (1x1 projection) where shapes change.
        norm_layer, act_layer: as `ConvNormAct`.
        drop_path_rate: probability of dropping the residual branch per sample while training.
        dilation: dilation of the 3x3 convs (padded to keep the grid).
        first_dilation: dilation of the first 3x3 conv (default `dilation`): the first block of a
            dilated stage keeps the previous stage's, as in torchvision and timm.
    """

    expansion = 1
    num_convs = 2

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        *,
        groups: int = 1,
        width_per_group: int = 64,
        shortcut: str = "B",
        norm_layer: LayerFactory | None = nn.BatchNorm2d,
        act_layer: LayerFactory | None = nn.ReLU,
        drop_path_rate: float = 0.0,
        dilation: int = 1,
        first_dilation: int | None = None,
    ) -> None:
        super().__init__()
        if groups != 1 or width_per_group != 64:
            raise ConfigurationError(
                f"BasicBlock takes only groups=1 and width_per_group=64 (got {groups} and {width_per_group}); "
                "use Bottleneck for grouped (ResNeXt) or wide blocks"
            )
        first = dilation if first_dilation is None else first_dilation
        self.conv1 = ConvNormAct(
            in_channels, planes, 3, stride, dilation=first, norm_layer=norm_layer, act_layer=act_layer
        )
        self.conv2 = ConvNormAct(planes, planes, 3, dilation=dilation, norm_layer=norm_layer, act_layer=None)
        self.downsample = _shortcut(in_channels, planes, stride, shortcut, norm_layer)
        self.drop_path = stochastic_depth(drop_path_rate)
        self.act = make_act(act_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self._finish(self.conv2(self.conv1(x)), x)


class Bottleneck(_ResidualBlock):
    """1x1 reduce, 3x3 (grouped for ResNeXt, carrying the stride: "v1.5"), 1x1 expand by 4, and a shortcut.

    Args:
        in_channels: input channels.
        planes: the block's nominal width; the output has ``4 * planes`` channels.
        stride: stride of the 3x3 conv (and of the shortcut).
        groups: groups of the 3x3 conv (ResNeXt's cardinality).
        width_per_group: the inner width is ``planes * width_per_group / 64 * groups``
            (64 and 1 give ``planes``; 128 gives the wide ResNet's doubled width).
        shortcut: "A" (zero padding) or "B" (1x1 projection) where shapes change.
        norm_layer, act_layer: as `ConvNormAct`.
        drop_path_rate: probability of dropping the residual branch per sample while training.
        dilation: dilation of the 3x3 conv (padded to keep the grid).
        first_dilation: the 3x3 conv's dilation in place of `dilation` when given: the first block
            of a dilated stage keeps the previous stage's, as in torchvision and timm.
    """

    expansion = 4
    num_convs = 3

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        *,
        groups: int = 1,
        width_per_group: int = 64,
        shortcut: str = "B",
        norm_layer: LayerFactory | None = nn.BatchNorm2d,
        act_layer: LayerFactory | None = nn.ReLU,
        drop_path_rate: float = 0.0,
        dilation: int = 1,
        first_dilation: int | None = None,
    ) -> None:
        super().__init__()
        width = planes * width_per_group // 64 * groups
        d = dilation if first_dilation is None else first_dilation
        out_channels = planes * self.expansion
        self.conv1 = ConvNormAct(in_channels, width, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.conv2 = ConvNormAct(
            width, width, 3, stride, dilation=d, groups=groups, norm_layer=norm_layer, act_layer=act_layer
        )
        self.conv3 = ConvNormAct(width, out_channels, 1, norm_layer=norm_layer, act_layer=None)
        self.downsample = _shortcut(in_channels, out_channels, stride, shortcut, norm_layer)
        self.drop_path = stochastic_depth(drop_path_rate)
        self.act = make_act(act_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self._finish(self.conv3(self.conv2(self.conv1(x))), x)


def _preact_shortcut(in_channels: int, out_channels: int, stride: int, kind: str) -> nn.Module | None:
    """None (the identity) where shapes agree; otherwise option A, or B as a bare 1x1 conv (no norm:
    the next block's pre-activation normalises the sum)."""
    if stride == 1 and in_channels == out_channels:
        return None
    if kind == "A":
        return ZeroPadShortcut(in_channels, out_channels, stride)
    return ConvNormAct(in_channels, out_channels, 1, stride, bias=False, norm_layer=None, act_layer=None)


class _PreActBlock(_ResidualBlock):
    """What the pre-activation blocks share (He, Zhang, Ren & Sun, "Identity Mappings in Deep Residual
    Networks", ECCV 2016): every conv is a `NormActConv` (norm, activation, conv); nothing follows
    the addition, so the shortcut path is a pure identity from block to block. Where the shape
    changes, the shortcut starts from the first norm and activation's output, as the residual
    branch does (the paper's code and timm's ``resnetv2``); elsewhere it is the block's input.
    """

    def forward(self, x: Tensor) -> Tensor:
        first = self.conv1
        pre = first.preactivate(x)
        shortcut = x if self.downsample is None else self.downsample(pre)
        out = first.conv(pre)
        for k in range(2, self.num_convs + 1):
            out = getattr(self, f"conv{k}")(out)
        out = self.drop_path(out)
        out += shortcut
        return out

    def last_norm(self) -> nn.Module | None:
        return None  # the last conv's norm comes before it, not before the addition

    def zero_init_last(self) -> None:
        nn.init.zeros_(getattr(self, f"conv{self.num_convs}").conv.weight)  # as timm's resnetv2


class PreActBasicBlock(_PreActBlock):
    """Two norm-activation-3x3-conv units and a shortcut; the first conv carries the stride.

    The arguments are `BasicBlock`'s.
    """

    expansion = 1
    num_convs = 2

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        *,
        groups: int = 1,
        width_per_group: int = 64,
        shortcut: str = "B",
        norm_layer: LayerFactory | None = nn.BatchNorm2d,
        act_layer: LayerFactory | None = nn.ReLU,
        drop_path_rate: float = 0.0,
        dilation: int = 1,
        first_dilation: int | None = None,
    ) -> None:
        super().__init__()
        if groups != 1 or width_per_group != 64:
            raise ConfigurationError(
                f"PreActBasicBlock takes only groups=1 and width_per_group=64 (got {groups} and {width_per_group}); "
                "use PreActBottleneck for grouped or wide blocks"
            )
        first = dilation if first_dilation is None else first_dilation
        kw = {"norm_layer": norm_layer, "act_layer": act_layer}
        self.conv1 = NormActConv(in_channels, planes, 3, stride, dilation=first, **kw)
        self.conv2 = NormActConv(planes, planes, 3, dilation=dilation, **kw)
        self.downsample = _preact_shortcut(in_channels, planes, stride, shortcut)
        self.drop_path = stochastic_depth(drop_path_rate)


class PreActBottleneck(_PreActBlock):
    """Norm-activation before each of the 1x1 reduce, the 3x3 (carrying the stride) and the 1x1 expand by 4.

    The arguments are `Bottleneck`'s.
    """

    expansion = 4
    num_convs = 3

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        *,
        groups: int = 1,
        width_per_group: int = 64,
        shortcut: str = "B",
        norm_layer: LayerFactory | None = nn.BatchNorm2d,
        act_layer: LayerFactory | None = nn.ReLU,
        drop_path_rate: float = 0.0,
        dilation: int = 1,
        first_dilation: int | None = None,
    ) -> None:
        super().__init__()
        width = planes * width_per_group // 64 * groups
        d = dilation if first_dilation is None else first_dilation
        out_channels = planes * self.expansion
        kw = {"norm_layer": norm_layer, "act_layer": act_layer}
        self.conv1 = NormActConv(in_channels, width, 1, **kw)
        self.conv2 = NormActConv(width, width, 3, stride, dilation=d, groups=groups, **kw)
        self.conv3 = NormActConv(width, out_channels, 1, **kw)
        self.downsample = _preact_shortcut(in_channels, out_channels, stride, shortcut)
        self.drop_path = stochastic_depth(drop_path_rate)
