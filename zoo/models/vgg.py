"""VGG: Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015, https://arxiv.org/abs/1409.1556.

Configurations A (vgg11), B (vgg13), D (vgg16) and E (vgg19) of the paper's Table 1,
with or without batch norm, built exactly as torchvision builds them so that its
weights load one to one and the parameter counts agree.

Where this departs from the paper:
- The `_bn` variants add batch norm after every conv (the paper predates batch norm);
  like torchvision they keep the conv bias in front of the norm.
- An adaptive average pool to 7x7 sits before the classifier (torchvision's), so inputs
  other than 224x224 work; at 224 it is the identity. The paper instead turns the
  fully connected layers into convolutions for dense evaluation.
- Configuration C (1x1 convs in the last three stages) and the paper's LRN variant
  (A-LRN) are not included, as in torchvision.

Stages: stage i (i >= 1) is a 2x2 max pool followed by the convs of one width, so the
stage outputs have strides 1, 2, 4, 8, 16 (the last pool belongs to the head).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from zoo.checks import check_int
from zoo.layers import ConvNormAct, LayerFactory, make_act
from zoo.models.base import HE_CONV_NORMAL_LINEAR, ZooClassifier
from zoo.registry import Paper, Variant, register_model

PAPER = Paper(
    "Very Deep Convolutional Networks for Large-Scale Image Recognition",
    2014,
    "https://arxiv.org/abs/1409.1556",
    "K. Simonyan, A. Zisserman",
)


@dataclass(frozen=True)
class VGGConfig:
    """A VGG column of Table 1: an int is a 3x3 conv of that width, "M" a 2x2 max pool."""

    layers: tuple[int | str, ...]
    batch_norm: bool = False
    hidden: int = 4096  # width of the two hidden fully connected layers
    pool_size: int = 7  # the adaptive pool before the classifier


_A = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
_B = (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
_E = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def _stage_widths(layers: tuple[int | str, ...]) -> tuple[list[list[int]], bool]:
    """Split a column at its pools: the conv widths of each stage, and whether a pool ends it."""
    stages: list[list[int]] = [[]]
    for v in layers:
        if v == "M":
            stages.append([])
        else:
            stages[-1].append(int(v))
    final_pool = not stages[-1]
    if final_pool:
        stages.pop()
    return stages, final_pool


def _tv(name: str, config: VGGConfig, num_params: int) -> Variant:
    """A row that is torchvision's builder of the same name (its parameter count, its weights)."""
    return Variant(config, num_params, f"torchvision.models.{name}", torchvision=name)


@register_model(
    family="vgg",
    paper=PAPER,
    input_size=(3, 224, 224),
    min_input_size=(32, 32),
    variants={
        "vgg11": _tv("vgg11", VGGConfig(_A), 132_863_336),
        "vgg11_bn": _tv("vgg11_bn", VGGConfig(_A, batch_norm=True), 132_868_840),
        "vgg13": _tv("vgg13", VGGConfig(_B), 133_047_848),
        "vgg13_bn": _tv("vgg13_bn", VGGConfig(_B, batch_norm=True), 133_053_736),
        "vgg16": _tv("vgg16", VGGConfig(_D), 138_357_544),
        "vgg16_bn": _tv("vgg16_bn", VGGConfig(_D, batch_norm=True), 138_365_992),
        "vgg19": _tv("vgg19", VGGConfig(_E), 143_667_240),
        "vgg19_bn": _tv("vgg19_bn", VGGConfig(_E, batch_norm=True), 143_678_248),
    },
)
class VGG(ZooClassifier):
    """VGG network (any column of the paper's Table 1).

    Args:
        config: the column (see `VGGConfig`).
        in_channels: input image channels.
        num_classes: output classes; 0 returns the 4096-d pre-logits features.
        drop_rate: dropout after each hidden fully connected layer.
        act_layer: activation after every conv and hidden linear layer.
    """

    weight_init = HE_CONV_NORMAL_LINEAR

    def __init__(
        self,
        config: VGGConfig,
        *,
        in_channels: int = 3,
        num_classes: int = 1000,
        drop_rate: float = 0.5,
        act_layer: LayerFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", "vgg")
        check_int(num_classes, "num_classes", "vgg", minimum=0)
        widths, final_pool = _stage_widths(config.layers)
        norm = nn.BatchNorm2d if config.batch_norm else None
        stages = []
        c = in_channels
        for i, stage_widths in enumerate(widths):
            layers: list[nn.Module] = [nn.MaxPool2d(2, 2)] if i > 0 else []
            for w in stage_widths:
                layers.append(ConvNormAct(c, w, 3, padding=1, bias=True, norm_layer=norm, act_layer=act_layer))
                c = w
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.stage_channels = tuple(s[-1] for s in widths)
        self.stage_strides = tuple(2**i for i in range(len(widths)))

        self.head_pool = nn.MaxPool2d(2, 2) if final_pool else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(config.pool_size)
        self.num_features = config.hidden
        self.pre_logits = nn.Sequential(
            nn.Linear(c * config.pool_size**2, config.hidden),
            make_act(act_layer),
            nn.Dropout(drop_rate),
            nn.Linear(config.hidden, config.hidden),
            make_act(act_layer),
            nn.Dropout(drop_rate),
        )
        self.reset_classifier(num_classes)
        self.init_weights()

    def torchvision_key_map(self) -> dict[str, str]:
        """Our module paths -> torchvision's (``features.N`` counts every conv, norm, ReLU and pool)."""
        key_map, index = {}, 0
        for s, stage in enumerate(self.stages):
            for j, layer in enumerate(stage):
                if isinstance(layer, ConvNormAct):
                    key_map[f"stages.{s}.{j}.conv"] = f"features.{index}"
                    if hasattr(layer, "norm"):
                        key_map[f"stages.{s}.{j}.norm"] = f"features.{index + 1}"
                index += len(layer) if isinstance(layer, ConvNormAct) else 1
        key_map.update({"pre_logits.0": "classifier.0", "pre_logits.3": "classifier.3", "fc": "classifier.6"})
        return key_map

    def head_features(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.head_pool(x)).flatten(1)  # (B, 512 * 7 * 7)
        return self.pre_logits(x)
