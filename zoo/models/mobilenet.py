"""MobileNetV2: Sandler, Howard, Zhu, Zhmoginov & Chen, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018, https://arxiv.org/abs/1801.04381.

The block is an inverted residual with a linear bottleneck: a 1x1 conv expands the narrow
input t times (t = 6), a 3x3 depthwise conv (one filter per channel, ``groups=channels``)
filters it spatially, and a 1x1 conv projects it back to a narrow output with no activation
after it (the "linear bottleneck": a ReLU on the narrow map would destroy information). The
shortcut joins the narrow ends where the shapes agree (stride 1, same width). Activations
are ReLU6. The network is the paper's Table 2: a 3x3 stride-2 conv of 32 filters, seventeen
blocks in seven rows (t, c, n, s), a 1x1 conv to 1280 channels, global average pool, linear.

`mobilenet_v2` is built exactly as torchvision builds it, so its weights load one to one and
the parameter counts agree. The width multiplier (`width_mult`, the paper's alpha) scales every
width and rounds it to a multiple of 8 (never more than 10% down), as the paper's TensorFlow code
and torchvision do; as the paper says, a multiplier below 1 leaves the last conv at 1280 channels.
``zoo.create("mobilenet_v2", width_mult=1.4)`` is torchvision's ``mobilenet_v2(width_mult=1.4)``
(6,108,776 parameters; 0.5 gives 1,968,680). Where this departs from the paper:
- Dropout 0.2 before the classifier (`drop_rate`), as torchvision and the paper's
  TensorFlow code (keep probability 0.8); the paper does not mention it.
- The classifier is a linear layer after the global average pool, where the paper's Table 2
  writes a 1x1 conv on the pooled 1x1 map: the same operation.

Stages (`forward_stages`, `stage_strides`): each stage ends where the next block halves the
grid: the stem and the first block (stride 2, 16 channels at width 1), then 24 (4), 32 (8),
the 64- and 96-channel rows (16), and the 160- and 320-channel rows with the 1x1 conv to
1280 channels (32), so `forward_features` is the 1280-channel map, as in timm. Every conv is
padded to keep the grid, so the network takes inputs down to 1x1.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import Tensor, nn

from zoo.checks import check_int, check_number
from zoo.errors import ConfigurationError
from zoo.layers import ConvNormAct, GlobalAvgPool2d, LayerFactory
from zoo.models.base import HE_CONV_NORMAL_LINEAR, ZooClassifier
from zoo.registry import Paper, Variant, register_model

PAPER = Paper(
    "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
    2018,
    "https://arxiv.org/abs/1801.04381",
    "M. Sandler, A. Howard, M. Zhu, A. Zhmoginov, L.-C. Chen",
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """`value` rounded to the nearest multiple of `divisor` (at least `divisor`), never more than 10% below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    """1x1 expansion (left out when t = 1), 3x3 depthwise conv with the stride, linear 1x1 projection, shortcut.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the depthwise conv (1 or 2).
        expand_ratio: t, the expansion of the hidden width (``round(in_channels * t)``).
        norm_layer, act_layer: as `ConvNormAct` (the projection has no activation).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expand_ratio: float,
        *,
        norm_layer: LayerFactory | None = nn.BatchNorm2d,
        act_layer: LayerFactory | None = nn.ReLU6,
    ) -> None:
        super().__init__()
        hidden = round(in_channels * expand_ratio)
        self.expand = (
            ConvNormAct(in_channels, hidden, 1, norm_layer=norm_layer, act_layer=act_layer)
            if expand_ratio != 1
            else None
        )
        self.depthwise = ConvNormAct(
            hidden, hidden, 3, stride, groups=hidden, norm_layer=norm_layer, act_layer=act_layer
        )
        self.project = ConvNormAct(hidden, out_channels, 1, norm_layer=norm_layer, act_layer=None)  # linear
        self.use_shortcut = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.expand is None else self.expand(x)  # (B, t * C_in, H, W)
        out = self.project(self.depthwise(out))  # (B, C_out, H / stride, W / stride)
        return x + out if self.use_shortcut else out


_TABLE_2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


@dataclass(frozen=True)
class MobileNetV2Config:
    """One row of the variant table: the paper's Table 2 at width 1."""

    blocks: tuple[tuple[int, int, int, int], ...] = _TABLE_2  # rows (t, c, n, s): expansion, width, repeats, stride
    stem_width: int = 32
    head_width: int = 1280  # the last 1x1 conv
    round_to: int = 8  # widths are multiples of this after the width multiplier


@register_model(
    family="mobilenet",
    paper=PAPER,
    input_size=(3, 224, 224),
    min_input_size=(1, 1),
    variants={
        "mobilenet_v2": Variant(
            MobileNetV2Config(), 3_504_872, "torchvision.models.mobilenet_v2", torchvision="mobilenet_v2"
        ),
    },
)
class MobileNetV2(ZooClassifier):
    """MobileNetV2: a strided stem, inverted residual blocks, a 1x1 conv to 1280 channels, pool, linear.

    Args:
        config: the variant (see `MobileNetV2Config`).
        in_channels: input image channels.
        num_classes: output classes; 0 returns the pooled features.
        width_mult: the width multiplier (the paper's alpha, 0.35 to 1.4 in its experiments).
        drop_rate: dropout before the final linear layer.
        norm_layer: normalisation after every conv.
        act_layer: activation after every conv but the projections.
    """

    weight_init = HE_CONV_NORMAL_LINEAR  # He (fan-out) convs, N(0, 0.01) linear layer: torchvision's policy

    def __init__(
        self,
        config: MobileNetV2Config,
        *,
        in_channels: int = 3,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        drop_rate: float = 0.2,
        norm_layer: LayerFactory | None = nn.BatchNorm2d,
        act_layer: LayerFactory | None = nn.ReLU6,
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", "mobilenet_v2")
        check_int(num_classes, "num_classes", "mobilenet_v2", minimum=0)
        check_number(drop_rate, "drop_rate", "mobilenet_v2", below=1)
        if check_number(width_mult, "width_mult", "mobilenet_v2") == 0:
            raise ConfigurationError(
                f"mobilenet_v2: width_mult must be a number > 0 (1.0: the paper's), got {width_mult!r}"
            )
        if not config.blocks or any(len(row) != 4 for row in config.blocks):
            raise ConfigurationError(f"mobilenet_v2: blocks must be rows of (t, c, n, s), got {config.blocks!r}")
        for t, c, n, s in config.blocks:
            check_number(t, "each expansion t", "mobilenet_v2")
            for v, name in ((c, "each width c"), (n, "each repeat count n"), (s, "each stride s")):
                check_int(v, name, "mobilenet_v2")

        def width(c: int) -> int:
            return make_divisible(c * width_mult, config.round_to)

        c = width(config.stem_width)
        layers: list[tuple[str, nn.Module]] = [
            ("stem", ConvNormAct(in_channels, c, 3, 2, norm_layer=norm_layer, act_layer=act_layer))
        ]
        stages, channels, strides, stride = [], [], [], 2
        num_blocks = 0
        for t, c_row, n, s in config.blocks:
            for j in range(n):
                block_stride = s if j == 0 else 1
                if block_stride > 1:  # a new grid: the blocks so far make a stage
                    stages.append(nn.Sequential(OrderedDict(layers)))
                    channels.append(c)
                    strides.append(stride)
                    layers, stride = [], stride * block_stride
                out = width(c_row)
                block = InvertedResidual(c, out, block_stride, t, norm_layer=norm_layer, act_layer=act_layer)
                layers.append((str(num_blocks), block))  # numbered through the network, as torchvision's
                num_blocks += 1
                c = out
        self.num_features = make_divisible(config.head_width * max(1.0, width_mult), config.round_to)
        layers.append(("head", ConvNormAct(c, self.num_features, 1, norm_layer=norm_layer, act_layer=act_layer)))
        stages.append(nn.Sequential(OrderedDict(layers)))  # (B, 1280, H/32, W/32)
        channels.append(self.num_features)
        strides.append(stride)
        self.stages = nn.ModuleList(stages)
        self.stage_channels = tuple(channels)
        self.stage_strides = tuple(strides)

        self.global_pool = GlobalAvgPool2d()
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes)
        self.init_weights()

    def _blocks(self) -> list[tuple[str, InvertedResidual]]:
        """The module path of every block and the block, in order."""
        return [(f"stages.{s}.{n}", m) for s, stage in enumerate(self.stages) for n, m in stage.named_children()
                if isinstance(m, InvertedResidual)]  # fmt: skip

    def torchvision_key_map(self) -> dict[str, str]:
        """Our module paths -> torchvision's ``features.N`` (stem 0, blocks 1-17, last conv 18) and ``classifier.1``."""
        blocks = self._blocks()
        last = len(blocks) + 1
        key_map = {
            "stages.0.stem.conv": "features.0.0",
            "stages.0.stem.norm": "features.0.1",
            f"stages.{len(self.stages) - 1}.head.conv": f"features.{last}.0",
            f"stages.{len(self.stages) - 1}.head.norm": f"features.{last}.1",
            "fc": "classifier.1",
        }
        for i, (ours, block) in enumerate(blocks):
            theirs = f"features.{i + 1}.conv"
            k = 0
            if block.expand is not None:
                key_map[f"{ours}.expand.conv"], key_map[f"{ours}.expand.norm"] = f"{theirs}.0.0", f"{theirs}.0.1"
                k = 1
            key_map[f"{ours}.depthwise.conv"] = f"{theirs}.{k}.0"
            key_map[f"{ours}.depthwise.norm"] = f"{theirs}.{k}.1"
            key_map[f"{ours}.project.conv"] = f"{theirs}.{k + 1}"
            key_map[f"{ours}.project.norm"] = f"{theirs}.{k + 2}"
        return key_map
