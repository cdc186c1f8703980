"""The Inception family's blocks: GoogLeNet's module, the Inception-v3 modules and the auxiliary heads.

The networks that use them (`googlenet`, `googlenet_tv`, `inception_v3`) and the family's
notes on where they depart from the papers are in `zoo.models.inception`.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.arithmetic import LayerGeometry, module_chain
from zoo.layers import ConvNormAct, GlobalAvgPool2d, LayerFactory, make_act
from zoo.registry import IMAGENET_MEAN, IMAGENET_STD

#: batch norm as Google's released Inception models (and torchvision's ports) use it
BatchNorm2dEps3 = partial(nn.BatchNorm2d, eps=1e-3)


# --------------------------------------------------------------------------- blocks


class _Branches(nn.Module):
    """A module of parallel branches whose outputs are concatenated along the channels.

    `main_path` names the children, in order, whose convs and pools make the spatial
    chain of the block: the branch with the largest receptive field, which is also the
    one that constrains the input size.
    """

    main_path: tuple[str, ...]
    out_channels: int

    def spatial_chain(self, prefix: str = "") -> list[LayerGeometry]:
        """The convs and pools of the block's main path (see `zoo.arithmetic`)."""
        dot = f"{prefix}." if prefix else ""
        chain = []
        for name in self.main_path:
            chain += module_chain(getattr(self, name).named_modules(prefix=dot + name))
        return chain


def _classifier(in_features: int, num_classes: int) -> nn.Module:
    """The last linear layer, N(0, 0.01)-initialised; Identity for ``num_classes=0``."""
    if not num_classes:
        return nn.Identity()
    fc = nn.Linear(in_features, num_classes)
    nn.init.normal_(fc.weight, 0, 0.01)
    nn.init.zeros_(fc.bias)
    return fc


def _conv_map(ours: str, theirs: str) -> dict[str, str]:
    """One `ConvNormAct` -> one torchvision ``BasicConv2d`` (``conv`` + ``bn``)."""
    return {f"{ours}.conv": f"{theirs}.conv", f"{ours}.norm": f"{theirs}.bn"}


class InceptionBlock(_Branches):
    """GoogLeNet's Inception module: 1x1, 3x3 and 5x5 convs and a 3x3 max pool in parallel.

    The widths are the columns of the paper's Table 1, in its order; the output has
    ``ch1x1 + ch3x3 + ch5x5 + pool_proj`` channels at the input's size.

    Args:
        in_channels: input channels.
        ch1x1: "#1x1", the 1x1 branch.
        ch3x3red: "#3x3 reduce", the 1x1 conv in front of the 3x3.
        ch3x3: "#3x3".
        ch5x5red: "#5x5 reduce", the 1x1 conv in front of the 5x5.
        ch5x5: "#5x5".
        pool_proj: "pool proj", the 1x1 conv after the 3x3 max pool.
        kernel_5x5: kernel of the "5x5" branch (3 reproduces torchvision's GoogLeNet).
        norm_layer: norm after every conv (None, the paper's, gives convs with bias).
        act_layer: activation after every conv.
    """

    main_path = ("branch_5x5",)

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        *,
        kernel_5x5: int = 5,
        norm_layer: LayerFactory | None = None,
        act_layer: LayerFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        conv = partial(ConvNormAct, norm_layer=norm_layer, act_layer=act_layer)
        self.branch_1x1 = conv(in_channels, ch1x1, 1)
        self.branch_3x3 = nn.Sequential(conv(in_channels, ch3x3red, 1), conv(ch3x3red, ch3x3, 3))
        self.branch_5x5 = nn.Sequential(conv(in_channels, ch5x5red, 1), conv(ch5x5red, ch5x5, kernel_5x5))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv(in_channels, pool_proj, 1))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch_1x1(x), self.branch_3x3(x), self.branch_5x5(x), self.branch_pool(x)], 1)

    @staticmethod
    def torchvision_key_map() -> dict[str, str]:
        """Our parameter paths -> torchvision's ``Inception`` (relative to the block)."""
        return {
            **_conv_map("branch_1x1", "branch1"),
            **_conv_map("branch_3x3.0", "branch2.0"),
            **_conv_map("branch_3x3.1", "branch2.1"),
            **_conv_map("branch_5x5.0", "branch3.0"),
            **_conv_map("branch_5x5.1", "branch3.1"),
            **_conv_map("branch_pool.1", "branch4.1"),
        }


class InceptionA(_Branches):
    """Inception-v3's 35x35 module (Mixed_5b-d): 1x1, 5x5, double 3x3 and average-pool branches.

    Output: 224 + `pool_features` channels at the input's size.

    Args:
        in_channels: input channels.
        pool_features: width of the 1x1 conv after the average pool.
        norm_layer, act_layer: after every conv.
    """

    main_path = ("branch_3x3dbl",)

    def __init__(
        self,
        in_channels: int,
        pool_features: int,
        *,
        norm_layer: LayerFactory | None = BatchNorm2dEps3,
        act_layer: LayerFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        conv = partial(ConvNormAct, norm_layer=norm_layer, act_layer=act_layer)
        self.branch_1x1 = conv(in_channels, 64, 1)
        self.branch_5x5 = nn.Sequential(conv(in_channels, 48, 1), conv(48, 64, 5))
        self.branch_3x3dbl = nn.Sequential(conv(in_channels, 64, 1), conv(64, 96, 3), conv(96, 96, 3))
        self.branch_pool = nn.Sequential(nn.AvgPool2d(3, 1, 1), conv(in_channels, pool_features, 1))
        self.out_channels = 64 + 64 + 96 + pool_features

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch_1x1(x), self.branch_5x5(x), self.branch_3x3dbl(x), self.branch_pool(x)], 1)

    @staticmethod
    def torchvision_key_map() -> dict[str, str]:
        return {
            **_conv_map("branch_1x1", "branch1x1"),
            **_conv_map("branch_5x5.0", "branch5x5_1"),
            **_conv_map("branch_5x5.1", "branch5x5_2"),
            **_conv_map("branch_3x3dbl.0", "branch3x3dbl_1"),
            **_conv_map("branch_3x3dbl.1", "branch3x3dbl_2"),
            **_conv_map("branch_3x3dbl.2", "branch3x3dbl_3"),
            **_conv_map("branch_pool.1", "branch_pool"),
        }


class InceptionB(_Branches):
    """Inception-v3's grid reduction 35x35 -> 17x17 (Mixed_6a): stride-2 3x3, double 3x3 and max pool.

    Output: 480 + `in_channels` channels, (H - 3) // 2 + 1 wide (unpadded, stride 2).

    Args:
        in_channels: input channels.
        norm_layer, act_layer: after every conv.
    """

    main_path = ("branch_3x3dbl",)

    def __init__(
        self, in_channels: int, *, norm_layer: LayerFactory | None = BatchNorm2dEps3, act_layer: LayerFactory = nn.ReLU
    ) -> None:
        super().__init__()
        conv = partial(ConvNormAct, norm_layer=norm_layer, act_layer=act_layer)
        self.branch_3x3 = conv(in_channels, 384, 3, 2, 0)
        self.branch_3x3dbl = nn.Sequential(conv(in_channels, 64, 1), conv(64, 96, 3), conv(96, 96, 3, 2, 0))
        self.branch_pool = nn.MaxPool2d(3, 2)
        self.out_channels = 384 + 96 + in_channels

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch_3x3(x), self.branch_3x3dbl(x), self.branch_pool(x)], 1)

    @staticmethod
    def torchvision_key_map() -> dict[str, str]:
        return {
            **_conv_map("branch_3x3", "branch3x3"),
            **_conv_map("branch_3x3dbl.0", "branch3x3dbl_1"),
            **_conv_map("branch_3x3dbl.1", "branch3x3dbl_2"),
            **_conv_map("branch_3x3dbl.2", "branch3x3dbl_3"),
        }


class InceptionC(_Branches):
    """Inception-v3's 17x17 module (Mixed_6b-e): 7x7 convs factorised into 1x7 and 7x1.

    Output: 768 channels at the input's size.

    Args:
        in_channels: input channels.
        channels_7x7: width inside the factorised 7x7 branches.
        norm_layer, act_layer: after every conv.
    """

    main_path = ("branch_7x7dbl",)

    def __init__(
        self,
        in_channels: int,
        channels_7x7: int,
        *,
        norm_layer: LayerFactory | None = BatchNorm2dEps3,
        act_layer: LayerFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        conv = partial(ConvNormAct, norm_layer=norm_layer, act_layer=act_layer)
        c7 = channels_7x7
        self.branch_1x1 = conv(in_channels, 192, 1)
        self.branch_7x7 = nn.Sequential(conv(in_channels, c7, 1), conv(c7, c7, (1, 7)), conv(c7, 192, (7, 1)))
        self.branch_7x7dbl = nn.Sequential(
            conv(in_channels, c7, 1),
            conv(c7, c7, (7, 1)),
            conv(c7, c7, (1, 7)),
            conv(c7, c7, (7, 1)),
            conv(c7, 192, (1, 7)),
        )
        self.branch_pool = nn.Sequential(nn.AvgPool2d(3, 1, 1), conv(in_channels, 192, 1))
        self.out_channels = 4 * 192

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch_1x1(x), self.branch_7x7(x), self.branch_7x7dbl(x), self.branch_pool(x)], 1)

    @staticmethod
    def torchvision_key_map() -> dict[str, str]:
        key_map = {**_conv_map("branch_1x1", "branch1x1"), **_conv_map("branch_pool.1", "branch_pool")}
        for i in range(3):
            key_map.update(_conv_map(f"branch_7x7.{i}", f"branch7x7_{i + 1}"))
        for i in range(5):
            key_map.update(_conv_map(f"branch_7x7dbl.{i}", f"branch7x7dbl_{i + 1}"))
        return key_map


class InceptionD(_Branches):
    """Inception-v3's grid reduction 17x17 -> 8x8 (Mixed_7a): stride-2 3x3, 7x7-then-3x3 and max pool.

    Output: 512 + `in_channels` channels, (H - 3) // 2 + 1 wide (unpadded, stride 2).

    Args:
        in_channels: input channels.
        norm_layer, act_layer: after every conv.
    """

    main_path = ("branch_7x7x3",)

    def __init__(
        self, in_channels: int, *, norm_layer: LayerFactory | None = BatchNorm2dEps3, act_layer: LayerFactory = nn.ReLU
    ) -> None:
        super().__init__()
        conv = partial(ConvNormAct, norm_layer=norm_layer, act_layer=act_layer)
        self.branch_3x3 = nn.Sequential(conv(in_channels, 192, 1), conv(192, 320, 3, 2, 0))
        self.branch_7x7x3 = nn.Sequential(
            conv(in_channels, 192, 1), conv(192, 192, (1, 7)), conv(192, 192, (7, 1)), conv(192, 192, 3, 2, 0)
        )
        self.branch_pool = nn.MaxPool2d(3, 2)
        self.out_channels = 320 + 192 + in_channels

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch_3x3(x), self.branch_7x7x3(x), self.branch_pool(x)], 1)

    @staticmethod
    def torchvision_key_map() -> dict[str, str]:
        key_map = {**_conv_map("branch_3x3.0", "branch3x3_1"), **_conv_map("branch_3x3.1", "branch3x3_2")}
        for i in range(4):
            key_map.update(_conv_map(f"branch_7x7x3.{i}", f"branch7x7x3_{i + 1}"))
        return key_map


class InceptionE(_Branches):
    """Inception-v3's 8x8 module (Mixed_7b-c): 3x3 branches split into parallel 1x3 and 3x1 convs.

    Output: 2048 channels at the input's size.

    Args:
        in_channels: input channels.
        norm_layer, act_layer: after every conv.
    """

    # The 1x3 and 3x1 convs run side by side; chaining both gives each axis its larger
    # receptive field and changes no size (both are "same" padded).
    main_path = ("branch_3x3dbl", "branch_3x3dbl_a", "branch_3x3dbl_b")

    def __init__(
        self, in_channels: int, *, norm_layer: LayerFactory | None = BatchNorm2dEps3, act_layer: LayerFactory = nn.ReLU
    ) -> None:
        super().__init__()
        conv = partial(ConvNormAct, norm_layer=norm_layer, act_layer=act_layer)
        self.branch_1x1 = conv(in_channels, 320, 1)
        self.branch_3x3 = conv(in_channels, 384, 1)
        self.branch_3x3_a = conv(384, 384, (1, 3))
        self.branch_3x3_b = conv(384, 384, (3, 1))
        self.branch_3x3dbl = nn.Sequential(conv(in_channels, 448, 1), conv(448, 384, 3))
        self.branch_3x3dbl_a = conv(384, 384, (1, 3))
        self.branch_3x3dbl_b = conv(384, 384, (3, 1))
        self.branch_pool = nn.Sequential(nn.AvgPool2d(3, 1, 1), conv(in_channels, 192, 1))
        self.out_channels = 320 + 4 * 384 + 192

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch_3x3(x)
        b3dbl = self.branch_3x3dbl(x)
        # one concatenation, in torchvision's channel order (it concatenates twice)
        return torch.cat(
            [
                self.branch_1x1(x),
                self.branch_3x3_a(b3),
                self.branch_3x3_b(b3),
                self.branch_3x3dbl_a(b3dbl),
                self.branch_3x3dbl_b(b3dbl),
                self.branch_pool(x),
            ],
            1,
        )

    @staticmethod
    def torchvision_key_map() -> dict[str, str]:
        return {
            **_conv_map("branch_1x1", "branch1x1"),
            **_conv_map("branch_3x3", "branch3x3_1"),
            **_conv_map("branch_3x3_a", "branch3x3_2a"),
            **_conv_map("branch_3x3_b", "branch3x3_2b"),
            **_conv_map("branch_3x3dbl.0", "branch3x3dbl_1"),
            **_conv_map("branch_3x3dbl.1", "branch3x3dbl_2"),
            **_conv_map("branch_3x3dbl_a", "branch3x3dbl_3a"),
            **_conv_map("branch_3x3dbl_b", "branch3x3dbl_3b"),
            **_conv_map("branch_pool.1", "branch_pool"),
        }


class GoogLeNetAux(nn.Module):
    """GoogLeNet's auxiliary classifier: pool to 4x4, 1x1 conv (128), fc (1024), dropout, fc.

    Args:
        in_channels: channels of the tapped feature map.
        num_classes: output classes; 0 returns the 1024-d hidden features.
        drop_rate: dropout before the last layer (the paper's 0.7).
        norm_layer, act_layer: after the conv (and the activation after the hidden fc).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        drop_rate: float = 0.7,
        norm_layer: LayerFactory | None = None,
        act_layer: LayerFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.conv = ConvNormAct(in_channels, 128, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.act = make_act(act_layer)
        self.dropout = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc2 = _classifier(1024, num_classes)

    @staticmethod
    def torchvision_key_map() -> dict[str, str]:
        """Our parameter paths -> torchvision's GoogLeNet ``InceptionAux`` (relative to the head)."""
        return {**_conv_map("conv", "conv"), "fc1": "fc1", "fc2": "fc2"}

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(self.pool(x)).flatten(1)  # (B, 2048)
        return self.fc2(self.dropout(self.act(self.fc1(x))))


class InceptionAux(nn.Module):
    """Inception-v3's auxiliary classifier: 5x5/3 average pool, 1x1 conv (128), 5x5 conv (768), fc.

    A map smaller than 17x17 (too small for the 5x5/3 pool to leave the 5x5 grid the
    5x5 conv needs) is pooled adaptively to 5x5 instead, so the head works at any size.

    Args:
        in_channels: channels of the tapped feature map.
        num_classes: output classes; 0 returns the 768-d pooled features.
        norm_layer, act_layer: after both convs.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        norm_layer: LayerFactory | None = BatchNorm2dEps3,
        act_layer: LayerFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        self.conv0 = ConvNormAct(in_channels, 128, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.conv1 = ConvNormAct(128, 768, 5, padding=0, norm_layer=norm_layer, act_layer=act_layer)
        self.pool = GlobalAvgPool2d()
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = _classifier(768, num_classes)

    @staticmethod
    def torchvision_key_map() -> dict[str, str]:
        """Our parameter paths -> torchvision's Inception-v3 ``InceptionAux`` (relative to the head)."""
        return {**_conv_map("conv0", "conv0"), **_conv_map("conv1", "conv1"), "fc": "fc"}

    def forward(self, x: Tensor) -> Tensor:
        # the release's 5x5/3 pool ((B, C, 5, 5) at 17x17), adaptive to 5x5 on smaller maps
        small = x.shape[-2] < 17 or x.shape[-1] < 17
        x = F.adaptive_avg_pool2d(x, 5) if small else F.avg_pool2d(x, 5, 3)
        x = self.conv1(self.conv0(x))  # (B, 768, 1, 1) at 17x17
        return self.fc(self.pool(x))


class InputTransform(nn.Module):
    """Map an ImageNet-normalised RGB input to the [-1, 1] scaling of Google's released weights.

    ``x * std / 0.5 + (mean - 0.5) / 0.5`` per channel: undo the ImageNet normalisation
    and normalise with mean 0.5, std 0.5 (torchvision's ``transform_input``).
    """

    def __init__(self) -> None:
        super().__init__()
        # constants in double precision, then float32: torchvision's numbers to the bit
        scale = torch.tensor([s / 0.5 for s in IMAGENET_STD]).view(1, 3, 1, 1)
        shift = torch.tensor([(m - 0.5) / 0.5 for m in IMAGENET_MEAN]).view(1, 3, 1, 1)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift  # not addcmul: a fused multiply-add rounds differently
