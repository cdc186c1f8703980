"""The Inception family: the Inception block, GoogLeNet and Inception-v3.

GoogLeNet: Szegedy et al., "Going Deeper with Convolutions", CVPR 2015,
https://arxiv.org/abs/1409.4842. Inception-v3: Szegedy et al., "Rethinking the Inception
Architecture for Computer Vision", CVPR 2016, https://arxiv.org/abs/1512.00567.

The blocks are reusable layers: `InceptionBlock` (GoogLeNet's module: parallel 1x1, 3x3,
5x5 and max-pool branches with 1x1 reductions, concatenated; its widths in the order of
the paper's Table 1), the Inception-v3 modules `InceptionA` (35x35), `InceptionB` (grid
reduction 35 -> 17), `InceptionC` (17x17, factorised 7x7), `InceptionD` (grid reduction
17 -> 8), `InceptionE` (8x8, expanded 3x3) and the auxiliary heads `GoogLeNetAux` and
`InceptionAux`, all built on `ConvNormAct`.

Three networks:

`googlenet` is the paper's network (Table 1, Figure 3): a true 5x5 branch, no batch norm
(the paper predates it; the convs have biases), the two local response normalisations of
Figure 3 (after the first max pool and after the 3x3 conv of the stem; size 5, alpha 1e-4,
beta 0.75, as in the reference Caffe model), 3x3/2 max pools with ceil rounding (Caffe's,
which gives the paper's 112 -> 56 -> 28 -> 14 -> 7), dropout 0.4 before the classifier and
0.7 in the auxiliary heads. 6,998,552 parameters without the auxiliary heads, 13,378,280
with them (no library ships this network: the count is Table 1's layers with conv biases;
the tests check Table 1's per-layer counts). Departures: the auxiliary heads pool
adaptively to 4x4 where the paper uses a 5x5/3 average pool (the same 4x4 grid at 224x224,
and any input size works); the final 7x7 average pool is a global average pool; the paper's
initialisation and training schedule (SGD, polyak averaging, photometric distortions) are
not part of the model.

`googlenet_tv` is the network torchvision ships (for the weights it ported): batch norm
(eps 1e-3, no conv bias) after every conv, no LRN, the "5x5" branch is a 3x3 conv (a known
quirk, https://github.com/pytorch/vision/issues/906, kept so its weights load), the max
pool before inception 5a is 2x2/2, dropout 0.2: 6,624,904 parameters without the auxiliary
heads, 13,004,888 with them.

`inception_v3` is the network Google released with the paper (TF-slim's, which torchvision
ports): 299x299 input, batch norm (eps 1e-3) after every conv, 27,161,264 parameters with
the auxiliary head, 23,834,568 without. It departs from the paper's Table 1, whose numbers
do not add up: the stem after the first pool is a 1x1 conv (80), a 3x3 conv (192) and a
3x3/2 max pool (Table 1: 3x3 (80), 3x3/2 (192), 3x3 (288)); the 35x35 modules keep a 5x5
branch beside the two stacked 3x3s; there are four 17x17 modules (Table 1 says five), each
grid reduction is a module of its own (Figure 10's pattern); the auxiliary head has batch
norm in its convs but not on its fully connected layer (the paper's "BN-auxiliary"). Its
auxiliary head pools with a 5x5/3 average pool as in the release; below a 17x17 map (inputs
under 299x299, where the release fails) it pools adaptively to the 5x5 grid its 5x5 conv
needs, so training with the head works at every input size the network takes.

Auxiliary heads (``aux_logits=True``, the default for both networks as in torchvision)
exist for training: in training mode the forward pass returns ``InceptionOutput(logits,
aux_logits)``, in eval mode (and always without the heads) the logits alone.
``transform_input=True`` maps an ImageNet-normalised input to the [-1, 1] scaling of
Google's released weights, as torchvision's flag does.

Initialisation: He (fan-out) normal for convs, N(0, 0.01) for linear layers, batch norm
1 and 0 (torchvision uses truncated normals).

Stages (a new one at every stride change; the stem's first conv is stage 0):
googlenet: conv1 (stride 2, 64), pool1-conv3 (4, 192), pool2-3b (8, 480), pool3-4e (16, 832),
pool4-5b (32, 1024). inception_v3: conv1a-2b (stride 2, 64), pool1-conv4a (4, 192),
pool2-mixed5d (8, 288), mixed6a-6e (16, 768), mixed7a-7c (32, 2048); its unpadded convs
make the maps a little smaller than input / stride (299 -> 147, 71, 35, 17, 8).

For 32x32 images, ``stem="cifar"`` (GoogLeNet) makes the first conv 3x3 at stride 1 so the
Inception modules run on 8x8, 4x4 and 2x2 maps instead of 4x4, 2x2 and 1x1; conv1 then has
another shape than in torchvision's ImageNet weights, which therefore do not load into it
(the error names conv1).

Smallest inputs (from the layers, by `zoo.arithmetic`): googlenet 31x31 (its last pool is
3x3), googlenet_tv 15x15, inception_v3 75x75; the same in training mode with the auxiliary
heads, which pool adaptively where the maps are small.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from torch import Tensor, nn

from zoo.arithmetic import LayerGeometry, module_chain
from zoo.checks import check_choice, check_int
from zoo.errors import ConfigurationError, InvalidArgumentError, WeightsError
from zoo.layers import ConvNormAct, GlobalAvgPool2d, LayerFactory
from zoo.models.base import HE_CONV_NORMAL_LINEAR, InceptionOutput, ZooClassifier
from zoo.models.inception_blocks import (
    BatchNorm2dEps3,
    GoogLeNetAux,
    InceptionA,
    InceptionAux,
    InceptionB,
    InceptionBlock,
    InceptionC,
    InceptionD,
    InceptionE,
    InputTransform,
    _Branches,
    _conv_map,
)
from zoo.registry import Paper, Variant, register_model

GOOGLENET_PAPER = Paper(
    "Going Deeper with Convolutions",
    2014,
    "https://arxiv.org/abs/1409.4842",
    "C. Szegedy, W. Liu, Y. Jia, P. Sermanet, S. Reed, D. Anguelov, D. Erhan, V. Vanhoucke, A. Rabinovich",
)
INCEPTION_V3_PAPER = Paper(
    "Rethinking the Inception Architecture for Computer Vision",
    2015,
    "https://arxiv.org/abs/1512.00567",
    "C. Szegedy, V. Vanhoucke, S. Ioffe, J. Shlens, Z. Wojna",
)

# --------------------------------------------------------------------------- shared network code


class _InceptionNet(ZooClassifier):
    """What GoogLeNet and Inception-v3 share: aux heads tapped inside stages, head, arithmetic."""

    aux_heads: nn.ModuleDict  # keyed by the name of the block they tap
    weight_init = HE_CONV_NORMAL_LINEAR
    head_drop: nn.Dropout

    def _check_flags(self, aux_logits: object, transform_input: object, in_channels: int) -> None:
        for name, value in (("aux_logits", aux_logits), ("transform_input", transform_input)):
            if not isinstance(value, bool):
                raise InvalidArgumentError(f"{name} must be True or False, got {value!r}")
        if transform_input and in_channels != 3:
            raise ConfigurationError(
                f"transform_input=True rescales ImageNet-normalised RGB images and needs in_channels=3, "
                f"got in_channels={in_channels}"
            )

    def forward(self, x: Tensor) -> Tensor | InceptionOutput:
        if not (self.training and len(self.aux_heads)):
            return self.forward_head(self.forward_features(x))
        self.check_input(x)
        aux = []
        for stage in self.stages:
            for name, layer in stage.named_children():
                x = layer(x)
                if name in self.aux_heads:
                    aux.append(self.aux_heads[name](x))
        return InceptionOutput(self.forward_head(x), tuple(aux))

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        for head in self.aux_heads.values():
            head.reset_classifier(num_classes)

    def spatial_chain(self) -> list[LayerGeometry]:
        """The main path: the stem's convs and pools, then each block's main branch."""
        chain = []
        for i, stage in enumerate(self.stages):
            for name, layer in stage.named_children():
                prefix = f"stages.{i}.{name}"
                if isinstance(layer, _Branches):
                    chain += layer.spatial_chain(prefix)
                else:
                    chain += module_chain(layer.named_modules(prefix=prefix))
        return chain

    def _stage_key_map(self, names: dict[str, str]) -> dict[str, str]:
        """Stage modules -> torchvision's top-level attributes; `names`: ours -> theirs where they differ."""
        key_map = {}
        for i, stage in enumerate(self.stages):
            for name, layer in stage.named_children():
                theirs = names.get(name, name)
                if isinstance(layer, ConvNormAct):
                    key_map.update(_conv_map(f"stages.{i}.{name}", theirs))
                elif isinstance(layer, _Branches):
                    for ours_rel, theirs_rel in layer.torchvision_key_map().items():
                        key_map[f"stages.{i}.{name}.{ours_rel}"] = f"{theirs}.{theirs_rel}"
        return key_map


# --------------------------------------------------------------------------- GoogLeNet

_G3 = ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64))
_G4 = (
    (192, 96, 208, 16, 48, 64),
    (160, 112, 224, 24, 64, 64),
    (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64),
    (256, 160, 320, 32, 128, 128),
)
_G5 = ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128))


@dataclass(frozen=True)
class GoogLeNetConfig:
    """A GoogLeNet: Table 1's widths and the choices that tell the paper's network from torchvision's.

    `blocks` holds, per group (3, 4, 5), the six widths of each Inception module in Table 1's
    order; modules are named inception3a, 3b, 4a, ...
    """

    blocks: tuple[tuple[tuple[int, int, int, int, int, int], ...], ...] = (_G3, _G4, _G5)
    stem_widths: tuple[int, int, int] = (64, 64, 192)  # conv1 7x7/2, conv2 1x1, conv3 3x3
    kernel_5x5: int = 5  # 3 in torchvision's port
    norm_layer: LayerFactory | None = None  # after every conv; None: the paper's (convs with bias)
    lrn: bool = True  # the paper's two local response normalisations in the stem
    last_pool_kernel: int = 3  # the max pool before inception 5a (2 in torchvision's port)
    drop_rate: float = 0.4  # before the classifier
    aux_drop_rate: float = 0.7
    aux_after: tuple[str, ...] = ("inception4a", "inception4d")


GOOGLENET_TV = GoogLeNetConfig(kernel_5x5=3, norm_layer=BatchNorm2dEps3, lrn=False, last_pool_kernel=2, drop_rate=0.2)


@register_model(
    family="inception",
    paper=GOOGLENET_PAPER,
    input_size=(3, 224, 224),
    min_input_size=(31, 31),
    variants={
        "googlenet": Variant(
            GoogLeNetConfig(),
            13_378_280,
            "the paper's Table 1 with conv biases (6,998,552 with aux_logits=False)",
            notes="the paper's network: true 5x5 branch, LRN, no batch norm; aux_logits=False for inference",
        ),
        "googlenet_tv": Variant(
            GOOGLENET_TV,
            13_004_888,
            "torchvision.models.googlenet() (6,624,904 with aux_logits=False, as its ImageNet weights ship)",
            min_input_size=(15, 15),
            torchvision="googlenet",
            notes="torchvision's port: batch norm, and a 3x3 conv in the '5x5' branch",
        ),
    },
)
class GoogLeNet(_InceptionNet):
    """GoogLeNet (Inception v1), the paper's network or torchvision's port (see the module docstring).

    Returns, in training mode with ``aux_logits=True``, ``InceptionOutput(logits, aux_logits)``
    where `aux_logits` holds the two auxiliary heads' logits (after inception 4a, then 4d);
    otherwise (eval mode, or ``aux_logits=False``) the logits Tensor (B, num_classes).

    Args:
        config: the network (see `GoogLeNetConfig`).
        in_channels: input image channels.
        num_classes: output classes; 0 returns the 1024-d pooled features.
        aux_logits: build the two auxiliary classifiers (used in training mode only).
        transform_input: rescale ImageNet-normalised input to [-1, 1] first (torchvision's flag).
        drop_rate: dropout before the classifier; None takes the config's (0.4 paper, 0.2 torchvision).
        act_layer: activation after every conv.
        stem: None keeps the ImageNet stem (a 7x7 conv at stride 2); ``"cifar"`` makes the first conv
            3x3 at stride 1, so that 32x32 images reach inception 3a at 8x8, 4a at 4x4 and 5a at 2x2
            (as 224x224 ImageNet images reach 28, 14 and 7) instead of 4, 2 and 1; stage strides
            1, 2, 4, 8, 16. (Dropping the first max pool too, as some CIFAR ports do, would run
            inception 3a at 16x16: four times the compute.)
    """

    # torchvision's ImageNet weights expect transform_input=True (its builder sets it with them)
    pretrained_defaults: ClassVar[dict[str, dict[str, Any]]] = {"torchvision": {"transform_input": True}}

    def __init__(
        self,
        config: GoogLeNetConfig,
        *,
        in_channels: int = 3,
        num_classes: int = 1000,
        aux_logits: bool = True,
        transform_input: bool = False,
        drop_rate: float | None = None,
        act_layer: LayerFactory = nn.ReLU,
        stem: str | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", "googlenet")
        cifar = check_choice(stem, "stem", (None, "cifar"), "googlenet") == "cifar"
        check_int(num_classes, "num_classes", "googlenet", minimum=0)
        self._check_flags(aux_logits, transform_input, in_channels)
        self.config = config
        self.aux_logits, self.transform_input = aux_logits, transform_input
        norm = config.norm_layer
        conv = partial(ConvNormAct, norm_layer=norm, act_layer=act_layer)

        def pool(k: int = 3) -> nn.MaxPool2d:
            return nn.MaxPool2d(k, 2, ceil_mode=True)

        def lrn() -> list[nn.Module]:
            return [nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)] if config.lrn else []

        s1, s2, s3 = config.stem_widths
        stem: list[tuple[str, nn.Module]] = [("transform_input", InputTransform())] if transform_input else []
        conv1 = conv(in_channels, s1, 3, 1) if cifar else conv(in_channels, s1, 7, 2)
        stem.append(("conv1", conv1))  # (B, 64, H/2, W/2); (B, 64, H, W) with the cifar stem
        stage1 = [("pool1", pool()), *(("lrn1", m) for m in lrn())]
        stage1 += [("conv2", conv(s1, s2, 1)), ("conv3", conv(s2, s3, 3)), *(("lrn2", m) for m in lrn())]
        stages = [stem, stage1]  # (B, 192, H/4, W/4)
        c = s3
        channels = [s1, s3]
        self.aux_heads = nn.ModuleDict()
        for g, group in enumerate(config.blocks):
            k = config.last_pool_kernel if g == len(config.blocks) - 1 else 3
            layers: list[tuple[str, nn.Module]] = [(f"pool{g + 2}", pool(k))]
            for j, widths in enumerate(group):
                name = f"inception{g + 3}{'abcdefgh'[j]}"
                block = InceptionBlock(c, *widths, kernel_5x5=config.kernel_5x5, norm_layer=norm, act_layer=act_layer)
                layers.append((name, block))
                c = block.out_channels
                if aux_logits and name in config.aux_after:
                    self.aux_heads[name] = GoogLeNetAux(
                        c, num_classes, drop_rate=config.aux_drop_rate, norm_layer=norm, act_layer=act_layer
                    )
            stages.append(layers)
            channels.append(c)
        self.stages = nn.ModuleList(nn.Sequential(OrderedDict(s)) for s in stages)
        self.stage_channels = tuple(channels)  # 64, 192, 480, 832, 1024
        first = 1 if cifar else 2
        self.stage_strides = tuple(first * 2**i for i in range(len(stages)))  # 2, 4, 8, 16, 32 (cifar: 1 ... 16)

        self.num_features = c
        self.global_pool = GlobalAvgPool2d()
        self.head_drop = nn.Dropout(config.drop_rate if drop_rate is None else drop_rate)
        self.reset_classifier(num_classes)
        self.init_weights()

    def torchvision_key_map(self) -> dict[str, str]:
        """Our module paths -> torchvision's ``GoogLeNet`` (the `googlenet_tv` layout only)."""
        c = self.config
        if c.lrn or c.norm_layer is None or c.kernel_5x5 != 3 or c.last_pool_kernel != 2:
            raise WeightsError(
                f"{self.model_name} is not torchvision's GoogLeNet layout (that is googlenet_tv: batch norm, "
                "3x3 convs in the '5x5' branches, no LRN); its weights do not fit this network"
            )
        key_map = self._stage_key_map({})  # our block names are torchvision's
        # mapped even without aux heads (aux_logits=False): a file's aux tensors are then left out
        for tap, theirs in zip(self.config.aux_after, ("aux1", "aux2"), strict=False):
            for ours_rel, theirs_rel in GoogLeNetAux.torchvision_key_map().items():
                key_map[f"aux_heads.{tap}.{ours_rel}"] = f"{theirs}.{theirs_rel}"
        key_map["fc"] = "fc"
        return key_map


# --------------------------------------------------------------------------- Inception-v3


@dataclass(frozen=True)
class InceptionV3Config:
    """Widths of Inception-v3: the stem and the per-module arguments of the 35x35 and 17x17 modules."""

    stem_widths: tuple[int, int, int, int, int] = (32, 32, 64, 80, 192)
    pool_features: tuple[int, ...] = (32, 64, 64)  # InceptionA modules, mixed5b, 5c, 5d
    channels_7x7: tuple[int, ...] = (128, 160, 160, 192)  # InceptionC modules, mixed6b-6e
    num_e_blocks: int = 2  # InceptionE modules, mixed7b, 7c


def _letters(first: str, n: int) -> str:
    return "".join(chr(ord(first) + i) for i in range(n))


@register_model(
    family="inception",
    paper=INCEPTION_V3_PAPER,
    input_size=(3, 299, 299),
    min_input_size=(75, 75),
    variants={
        "inception_v3": Variant(
            InceptionV3Config(),
            27_161_264,
            "torchvision.models.inception_v3 (aux_logits=True; 23,834,568 with aux_logits=False)",
            torchvision="inception_v3",
            notes="Google's released network (TF-slim), which departs from the paper's Table 1",
        )
    },
)
class InceptionV3(_InceptionNet):
    """Inception-v3 as Google released it and torchvision ports it (see the module docstring).

    Returns, in training mode with ``aux_logits=True``, ``InceptionOutput(logits, aux_logits)``
    where `aux_logits` is a one-tuple with the auxiliary head's logits (after mixed6e);
    otherwise (eval mode, or ``aux_logits=False``) the logits Tensor (B, num_classes).

    Args:
        config: the widths (see `InceptionV3Config`).
        in_channels: input image channels.
        num_classes: output classes; 0 returns the 2048-d pooled features.
        aux_logits: build the auxiliary classifier (used in training mode only).
        transform_input: rescale ImageNet-normalised input to [-1, 1] first (torchvision's flag).
        drop_rate: dropout before the classifier.
        norm_layer: norm after every conv (None gives convs with bias).
        act_layer: activation after every conv.
    """

    # torchvision's ImageNet weights expect transform_input=True (its builder sets it with them)
    pretrained_defaults: ClassVar[dict[str, dict[str, Any]]] = {"torchvision": {"transform_input": True}}

    def __init__(
        self,
        config: InceptionV3Config,
        *,
        in_channels: int = 3,
        num_classes: int = 1000,
        aux_logits: bool = True,
        transform_input: bool = False,
        drop_rate: float = 0.5,
        norm_layer: LayerFactory | None = BatchNorm2dEps3,
        act_layer: LayerFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", "inception_v3")
        check_int(num_classes, "num_classes", "inception_v3", minimum=0)
        self._check_flags(aux_logits, transform_input, in_channels)
        self.aux_logits, self.transform_input = aux_logits, transform_input
        conv = partial(ConvNormAct, norm_layer=norm_layer, act_layer=act_layer)
        blocks = partial(dict, norm_layer=norm_layer, act_layer=act_layer)
        w1, w2, w3, w4, w5 = config.stem_widths

        stem: list[tuple[str, nn.Module]] = [("transform_input", InputTransform())] if transform_input else []
        stem += [
            ("conv1a", conv(in_channels, w1, 3, 2, 0)),  # (B, 32, 149, 149) at 299
            ("conv2a", conv(w1, w2, 3, padding=0)),
            ("conv2b", conv(w2, w3, 3)),  # (B, 64, 147, 147)
        ]
        stage1 = [("pool1", nn.MaxPool2d(3, 2)), ("conv3b", conv(w3, w4, 1)), ("conv4a", conv(w4, w5, 3, padding=0))]
        # (B, 192, 71, 71)
        stage2: list[tuple[str, nn.Module]] = [("pool2", nn.MaxPool2d(3, 2))]
        c = w5
        for letter, pf in zip(_letters("b", len(config.pool_features)), config.pool_features, strict=True):
            stage2.append((f"mixed5{letter}", InceptionA(c, pf, **blocks())))
            c = stage2[-1][1].out_channels  # (B, 288, 35, 35)
        stage3: list[tuple[str, nn.Module]] = [("mixed6a", InceptionB(c, **blocks()))]
        c = stage3[-1][1].out_channels
        for letter, c7 in zip(_letters("b", len(config.channels_7x7)), config.channels_7x7, strict=True):
            stage3.append((f"mixed6{letter}", InceptionC(c, c7, **blocks())))
            c = stage3[-1][1].out_channels  # (B, 768, 17, 17)
        self.aux_heads = nn.ModuleDict()
        if aux_logits:
            self.aux_heads[stage3[-1][0]] = InceptionAux(c, num_classes, norm_layer=norm_layer, act_layer=act_layer)
        stage4: list[tuple[str, nn.Module]] = [("mixed7a", InceptionD(c, **blocks()))]
        c = stage4[-1][1].out_channels
        for letter in _letters("b", config.num_e_blocks):
            stage4.append((f"mixed7{letter}", InceptionE(c, **blocks())))
            c = stage4[-1][1].out_channels  # (B, 2048, 8, 8)
        stages = [stem, stage1, stage2, stage3, stage4]
        self.stages = nn.ModuleList(nn.Sequential(OrderedDict(s)) for s in stages)
        self.stage_channels = (w3, w5, *(s[-1][1].out_channels for s in stages[2:]))  # 64, 192, 288, 768, 2048
        self.stage_strides = (2, 4, 8, 16, 32)

        self.num_features = c
        self.global_pool = GlobalAvgPool2d()
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes)
        self.init_weights()

    def torchvision_key_map(self) -> dict[str, str]:
        """Our module paths -> torchvision's ``Inception3``."""
        names = {"conv1a": "Conv2d_1a_3x3", "conv2a": "Conv2d_2a_3x3", "conv2b": "Conv2d_2b_3x3"}
        names |= {"conv3b": "Conv2d_3b_1x1", "conv4a": "Conv2d_4a_3x3"}
        for stage in self.stages[2:]:
            names |= {name: f"Mixed_{name[5:]}" for name, _ in stage.named_children() if name.startswith("mixed")}
        key_map = self._stage_key_map(names)
        # the aux head taps the last 17x17 block (mixed6e); mapped even without it (aux_logits=False),
        # so that a file's aux tensors are then left out
        tap = list(self.stages[3].named_children())[-1][0]
        for ours_rel, theirs_rel in InceptionAux.torchvision_key_map().items():
            key_map[f"aux_heads.{tap}.{ours_rel}"] = f"AuxLogits.{theirs_rel}"
        key_map["fc"] = "fc"
        return key_map
