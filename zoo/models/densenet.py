"""DenseNet: Huang, Liu, van der Maaten & Weinberger, "Densely Connected Convolutional Networks",
CVPR 2017, https://arxiv.org/abs/1608.06993.

Inside a dense block every layer takes the concatenation of the block's input and of every
earlier layer's output, and adds `growth_rate` new channels; between blocks a transition
(batch norm, ReLU, 1x1 conv halving the channels, 2x2 average pool) halves the grid. The
ImageNet networks DenseNet-121, -169 and -201 are the paper's DenseNet-BC (Table 1): each
layer is a pre-activation bottleneck, BN-ReLU-1x1 conv to ``bn_size * growth_rate`` (4k)
channels, then BN-ReLU-3x3 conv to `growth_rate` (k = 32) channels, built here from
`NormActConv`; the transitions compress by 0.5.

They are built exactly as torchvision builds them, so its weights load one to one and the
parameter counts agree. Where this departs from the paper or torchvision:
- The paper applies dropout 0.2 after each conv only in its CIFAR networks without data
  augmentation; the ImageNet networks have none. `layer_drop_rate` (torchvision's
  ``drop_rate``) puts dropout after each dense layer, 0 by default; `drop_rate` is the
  house's dropout before the classifier (0 by default; torchvision has none).
- The final batch norm and ReLU (torchvision's ``features.norm5`` and the ReLU in its
  ``forward``) close the last stage, so `forward_features` returns the normalised map, as
  timm's DenseNet does; the head is a global average pool and one linear layer.
- ``memory_efficient=True`` recomputes each layer's concatenation, norm and 1x1 conv in the
  backward pass instead of storing them (gradient checkpointing, Pleiss et al. 2017,
  "Memory-Efficient Implementation of DenseNets", https://arxiv.org/abs/1707.06990), as
  torchvision's option of the same name: the same results, less memory, slower training.
- DenseNet-161 (k = 48) is not registered;
  ``DenseNet(DenseNetConfig((6, 12, 36, 24), growth_rate=48, stem_width=96))`` builds it.

Weights: torchvision's current key names (``denselayer1.norm1``) and the older ones of its
published files (``denselayer1.norm.1``, from before module names could not hold a dot,
which torchvision renames as it loads them) both load.

Stages (`forward_stages`, `stage_strides`): the stem (7x7 conv, batch norm, ReLU) at stride
2, then the 3x3 max pool and dense block 1 (stride 4), and transition i and dense block
i + 1 for the others (8, 16, 32). The smallest input is 29x29: the third transition's 2x2
pool must find a 2x2 map.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from zoo.checks import check_bool, check_int, check_number
from zoo.layers import ConvNormAct, GlobalAvgPool2d, LayerFactory, NormActConv, make_act
from zoo.models.base import WeightInit, ZooClassifier, he_normal
from zoo.registry import Paper, Variant, register_model

PAPER = Paper(
    "Densely Connected Convolutional Networks",
    2017,
    "https://arxiv.org/abs/1608.06993",
    "G. Huang, Z. Liu, L. van der Maaten, K. Q. Weinberger",
)


def _zero_bias(m: nn.Module) -> None:
    nn.init.zeros_(m.bias)


class DenseLayer(nn.Module):
    """One pre-activation bottleneck layer: BN-ReLU-1x1 conv to ``bn_size * growth_rate``, BN-ReLU-3x3 conv.

    Args:
        in_channels: channels of the concatenated input.
        growth_rate: the new channels it outputs (the paper's k).
        bn_size: the bottleneck's width in multiples of `growth_rate`.
        drop_rate: dropout on its output while training.
        memory_efficient: recompute the concatenation and the bottleneck in the backward pass.
        norm_layer, act_layer: as `NormActConv`.
    """

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        bn_size: int = 4,
        *,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
        norm_layer: LayerFactory | None = nn.BatchNorm2d,
        act_layer: LayerFactory | None = nn.ReLU,
    ) -> None:
        super().__init__()
        width = bn_size * growth_rate
        self.conv1 = NormActConv(in_channels, width, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.conv2 = NormActConv(width, growth_rate, 3, norm_layer=norm_layer, act_layer=act_layer)
        self.drop_rate = drop_rate
        self.memory_efficient = memory_efficient

    def _bottleneck(self, *features: Tensor) -> Tensor:
        return self.conv1(torch.cat(features, 1))  # (B, bn_size * k, H, W)

    def forward(self, features: list[Tensor]) -> Tensor:
        if self.memory_efficient and torch.is_grad_enabled() and any(f.requires_grad for f in features):
            out = checkpoint(self._bottleneck, *features, use_reentrant=False)
        else:
            out = self._bottleneck(*features)
        out = self.conv2(out)  # (B, k, H, W)
        return F.dropout(out, self.drop_rate, self.training) if self.drop_rate > 0 else out


class DenseBlock(nn.ModuleList):
    """Dense layers, each fed the concatenation of the block's input and every earlier layer's output."""

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self:
            features.append(layer(features))
        return torch.cat(features, 1)  # (B, C_in + len(self) * k, H, W)


@dataclass(frozen=True)
class DenseNetConfig:
    """One row of the variant table (DenseNet-BC: bottleneck layers, compression 0.5)."""

    depths: tuple[int, ...]  # dense layers per block (torchvision's block_config)
    growth_rate: int = 32  # k
    stem_width: int = 64  # channels of the 7x7 stem conv (2k)
    bn_size: int = 4  # the bottleneck is bn_size * k wide


def _tv(name: str, config: DenseNetConfig, num_params: int) -> Variant:
    return Variant(config, num_params, f"torchvision.models.{name}", torchvision=name)


@register_model(
    family="densenet",
    paper=PAPER,
    input_size=(3, 224, 224),
    min_input_size=(29, 29),
    variants={
        "densenet121": _tv("densenet121", DenseNetConfig((6, 12, 24, 16)), 7_978_856),
        "densenet169": _tv("densenet169", DenseNetConfig((6, 12, 32, 32)), 14_149_480),
        "densenet201": _tv("densenet201", DenseNetConfig((6, 12, 48, 32)), 20_013_928),
    },
)
class DenseNet(ZooClassifier):
    """A densely connected network: stem, dense blocks joined by transitions, final norm, pool, linear.

    Args:
        config: the variant (see `DenseNetConfig`).
        in_channels: input image channels.
        num_classes: output classes; 0 returns the pooled features.
        drop_rate: dropout before the final linear layer.
        layer_drop_rate: dropout after each dense layer (torchvision's ``drop_rate``).
        memory_efficient: trade compute for memory in training (gradient checkpointing of each
            layer's concatenation and bottleneck); the results are the same.
        norm_layer: normalisation (before every conv in the blocks and transitions, after the stem).
        act_layer: activation after every norm.
    """

    # He (fan-in) convs and torch's default linear weights with a zero bias: torchvision's policy
    weight_init = WeightInit(conv=he_normal("fan_in"), linear=_zero_bias)

    def __init__(
        self,
        config: DenseNetConfig,
        *,
        in_channels: int = 3,
        num_classes: int = 1000,
        drop_rate: float = 0.0,
        layer_drop_rate: float = 0.0,
        memory_efficient: bool = False,
        norm_layer: LayerFactory = nn.BatchNorm2d,
        act_layer: LayerFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", "densenet")
        check_int(num_classes, "num_classes", "densenet", minimum=0)
        check_number(drop_rate, "drop_rate", "densenet", below=1)
        check_number(layer_drop_rate, "layer_drop_rate", "densenet", below=1)
        check_bool(memory_efficient, "memory_efficient", "densenet")
        for name in ("growth_rate", "stem_width", "bn_size"):
            check_int(getattr(config, name), name, "densenet")
        for d in config.depths:
            check_int(d, "each depth", "densenet")
        check_int(len(config.depths), "the number of blocks (len(depths))", "densenet")

        c = config.stem_width
        stem = ConvNormAct(in_channels, c, 7, 2, norm_layer=norm_layer, act_layer=act_layer)
        stages = [nn.Sequential(OrderedDict(stem=stem))]  # (B, 2k, H/2, W/2)
        channels, strides, stride = [c], [2], 2
        for i, depth in enumerate(config.depths):
            if i == 0:
                first: tuple[str, nn.Module] = ("pool", nn.MaxPool2d(3, 2, 1))
            else:
                transition = nn.Sequential(
                    OrderedDict(
                        conv=NormActConv(c, c // 2, 1, norm_layer=norm_layer, act_layer=act_layer),  # compression 0.5
                        pool=nn.AvgPool2d(2, 2),
                    )
                )
                first, c = ("transition", transition), c // 2
            block = DenseBlock(
                DenseLayer(
                    c + j * config.growth_rate,
                    config.growth_rate,
                    config.bn_size,
                    drop_rate=layer_drop_rate,
                    memory_efficient=memory_efficient,
                    norm_layer=norm_layer,
                    act_layer=act_layer,
                )
                for j in range(depth)
            )
            c += depth * config.growth_rate
            layers = [first, ("block", block)]
            if i == len(config.depths) - 1:  # torchvision's norm5 and the ReLU of its forward
                layers += [("norm", norm_layer(c)), ("act", make_act(act_layer))]
            stages.append(nn.Sequential(OrderedDict(layers)))  # (B, c, H/stride, W/stride)
            stride *= 2
            channels.append(c)
            strides.append(stride)
        self.stages = nn.ModuleList(stages)
        self.stage_channels = tuple(channels)
        self.stage_strides = tuple(strides)

        self.num_features = c
        self.global_pool = GlobalAvgPool2d()
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes)
        self.init_weights()

    def torchvision_key_map(self, legacy: bool = False) -> dict[str, str]:
        """Our module paths -> torchvision's ``features.conv0``, ``features.denseblockI.denselayerJ.norm1``, ...

        `legacy`: the names of torchvision's published files (``norm.1``, ``conv.1``, ...), which its
        builders rename as they load them.
        """
        sep = "." if legacy else ""
        key_map = {"stages.0.stem.conv": "features.conv0", "stages.0.stem.norm": "features.norm0", "fc": "classifier"}
        for i, stage in enumerate(self.stages):
            if i == 0:
                continue
            if "transition" in stage._modules:
                key_map[f"stages.{i}.transition.conv.norm"] = f"features.transition{i - 1}.norm"
                key_map[f"stages.{i}.transition.conv.conv"] = f"features.transition{i - 1}.conv"
            for j in range(len(stage.block)):
                ours, theirs = f"stages.{i}.block.{j}", f"features.denseblock{i}.denselayer{j + 1}"
                for k in (1, 2):
                    key_map[f"{ours}.conv{k}.norm"] = f"{theirs}.norm{sep}{k}"
                    key_map[f"{ours}.conv{k}.conv"] = f"{theirs}.conv{sep}{k}"
        key_map[f"stages.{len(self.stages) - 1}.norm"] = f"features.norm{len(self.stages)}"
        return key_map

    def legacy_layouts(self) -> dict[str, dict[str, str]]:
        """Older key layouts that still load (see `zoo.weights.layouts`): torchvision's published files."""
        return {"torchvision (published files)": self.torchvision_key_map(legacy=True)}
