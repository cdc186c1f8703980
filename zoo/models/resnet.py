"""ResNet: He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
https://arxiv.org/abs/1512.03385; with the ResNeXt (Xie et al., "Aggregated Residual
Transformations for Deep Neural Networks", CVPR 2017, https://arxiv.org/abs/1611.05431)
and wide (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016,
https://arxiv.org/abs/1605.07146) bottleneck variants.

Two kinds of network, both rows of one variant table:

The ImageNet networks (`resnet18` ... `resnet152`, `resnext50_32x4d`, `wide_resnet50_2`)
are built as torchvision builds them, so its weights load one to one and the parameter
counts agree. Where they depart from the paper:
- The bottleneck puts the stride of a downsampling block in its 3x3 conv ("ResNet v1.5",
  torchvision's choice); the paper (and Caffe's original models) put it in the first 1x1
  conv, which then throws away three quarters of its input. v1.5 is about 0.5% more
  accurate on ImageNet and costs about 6% more compute (4.1 vs 3.9 GMACs for ResNet-50).
  BasicBlock networks (18, 34) are unaffected.
- Shortcuts are the paper's option B: identity where shapes agree, a 1x1 conv (stride 2
  where the grid halves) plus batch norm where they do not.
- The head is a global average pool and one linear layer as in the paper, with an
  optional dropout in between (`drop_rate`, default 0: the paper has none).
- `resnext50_32x4d` is the ResNeXt paper's ResNeXt-50 (32x4d) in its grouped-conv form
  (template (c) of its Figure 3), with the v1.5 stride as above; `wide_resnet50_2` is the
  WRN paper's ImageNet network WRN-50-2-bottleneck (the 3x3 and inner 1x1 widths doubled),
  not its CIFAR WRN-d-k networks.
- `zero_init_residual=True` (off by default, as in torchvision) starts the last batch
  norm of every block at zero (Goyal et al. 2017, "Accurate, Large Minibatch SGD"), so
  that every block starts as the identity; `drop_path_rate` adds stochastic depth (Huang
  et al. 2016), rising linearly from 0 at the first block to the rate at the last, with
  timm's DropPath. Neither is in the paper.

The CIFAR networks of the paper's section 4.2 (`resnet20`, `resnet32`, `resnet44`,
`resnet56`, `resnet110`, depth 6n + 2): a 3x3 conv of 16 filters at stride 1, three
stages of n basic blocks with 16, 32 and 64 filters on 32x32, 16x16 and 8x8 maps, a
global average pool and a 10-way linear layer. Every shortcut is the identity (option A):
where a stage halves the grid and doubles the width, the shortcut takes every second
pixel and appends zero channels, so it has no parameters. The paper's counts are 0.27M,
0.46M, 0.66M, 0.85M and 1.7M; ours are exact (resnet20: 269,722). Departures: the card
normalises each channel with CIFAR-10's mean and std, where the paper subtracts the
per-pixel mean only; the zero channels are appended after the existing ones (the paper
does not say where; any placement is equivalent up to a permutation of the learned
filters).

The pre-activation networks (`preact_resnet18` ... `preact_resnet152`; He, Zhang, Ren & Sun,
"Identity Mappings in Deep Residual Networks", ECCV 2016, https://arxiv.org/abs/1603.05027) move
each block's batch norm and ReLU in front of its convs (`PreActBasicBlock`, `PreActBottleneck`,
built from the shared `NormActConv`) and leave nothing after the addition, so that the shortcuts
form a clean identity path through the whole network. They are timm's ``resnetv2_18`` ...
``resnetv2_152`` exactly (parameters; outputs after `timm_key_map`), and differ from the v1
networks above in three places besides the blocks: the stem is a bare 7x7 conv (no norm, no
bias; the first block's norm and ReLU follow it), a projection shortcut is a bare 1x1 conv that
starts from the block's pre-activated input (the norm and ReLU shared with the residual branch),
and one more batch norm and ReLU follow the last block (``stages.4.final``), before the pool.
Departures from the paper: it reports ImageNet results for ResNet-152 and -200 only (the other
depths are timm's, trained by timm); the bottleneck strides in its 3x3 conv (timm's choice, as
for the v1 networks above); in ResNet-18/34, whose first block has no projection, the first
shortcut starts from the max pool's output, not from an activated one (the paper puts an
activation right after its first conv, before the first split). ``zero_init_residual`` zeroes
each block's last conv (its norm is before it). torchvision has no pre-activation ResNet, so
their weights come from timm.

Stages (`forward_stages`, `stage_strides`): for the ImageNet networks, the stem
(7x7 conv, batch norm, ReLU, stride 2, 64 channels), then max pool + layer1 (stride 4),
layer2 (8), layer3 (16), layer4 (32) - the stem is a stage of its own because it is the
only output at stride 2, which a U-Net decoder wants as its shallowest skip. For the CIFAR
networks the stem is at stride 1, the same as the first stage, so it is the first layer
of that stage: stage1 (stride 1, 16 channels), stage2 (2, 32), stage3 (4, 64).
``stem="cifar"`` gives an ImageNet network the CIFAR networks' stem (3x3 conv at stride 1,
no max pool): its stages then run at strides 1, 2, 4, 8 on 32x32 images instead of
collapsing to 1x1 (the stem is then the first layer of stage 1, as in the CIFAR networks).
Every conv is padded to keep the grid, so both kinds take inputs down to 1x1 (in training
mode batch norm needs more than one value per channel there: a batch of at least 2).

Dilation (`output_stride`, for dense prediction: Chen et al., "DeepLab", 2016,
https://arxiv.org/abs/1606.00915; Yu & Koltun, "Multi-Scale Context Aggregation by Dilated
Convolutions", 2016): ``output_stride=16`` or ``8`` keeps the last one or two stages at the
stride before them and dilates their 3x3 convs by 2 per stride given up (2, then 4), exactly
as torchvision's ``replace_stride_with_dilation`` ([False, False, True] and [False, True, True]):
the first block of a dilated stage keeps the previous dilation in its first 3x3 conv, its
shortcut becomes a stride-1 1x1 conv, and the weights are the same tensors, so every weights
file loads. The receptive field stays the same (427 for ResNet-50), the maps grow (28x28 at
224 for stride 8) and so does the compute (ResNet-50: 4.09, 6.21 and 19.08 GMACs at 32, 16
and 8). torchvision refuses dilation in basic blocks (ResNet-18/34); zoo dilates both of
their 3x3 convs as timm does.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace

from torch import nn

from zoo.arithmetic import LayerGeometry, module_chain
from zoo.checks import check_int, check_number
from zoo.errors import ConfigurationError, WeightsError
from zoo.layers import ConvNormAct, GlobalAvgPool2d, LayerFactory, make_act
from zoo.models.base import WeightInit, ZooClassifier, he_normal
from zoo.models.resnet_blocks import (
    SHORTCUTS,
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    _PreActBlock,
    _ResidualBlock,
)
from zoo.registry import Paper, Variant, register_model
from zoo.weights import Reshape

PAPER = Paper(
    "Deep Residual Learning for Image Recognition",
    2015,
    "https://arxiv.org/abs/1512.03385",
    "K. He, X. Zhang, S. Ren, J. Sun",
)
RESNEXT_PAPER = Paper(
    "Aggregated Residual Transformations for Deep Neural Networks",
    2017,
    "https://arxiv.org/abs/1611.05431",
    "S. Xie, R. Girshick, P. Dollar, Z. Tu, K. He",
)
PREACT_PAPER = Paper(
    "Identity Mappings in Deep Residual Networks",
    2016,
    "https://arxiv.org/abs/1603.05027",
    "K. He, X. Zhang, S. Ren, J. Sun",
)
WRN_PAPER = Paper("Wide Residual Networks", 2016, "https://arxiv.org/abs/1605.07146", "S. Zagoruyko, N. Komodakis")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class ResNetConfig:
    """One row of the variant table.

    `widths` are the blocks' nominal widths per stage (a bottleneck outputs 4x); the first
    stage keeps the stem's grid, every later one halves it in its first block.
    """

    block: type[_ResidualBlock]  # BasicBlock, Bottleneck, or their pre-activation forms
    depths: tuple[int, ...]  # blocks per stage
    widths: tuple[int, ...] = (64, 128, 256, 512)
    groups: int = 1  # of the bottleneck's 3x3 conv (ResNeXt cardinality)
    width_per_group: int = 64
    stem_width: int = 64
    stem_kernel: int = 7
    stem_stride: int = 2
    stem_pool: bool = True  # a 3x3 stride-2 max pool after the stem
    shortcut: str = "B"  # "A": parameter-free zero padding; "B": 1x1 projection where shapes change
    num_classes: int = 1000  # the default of the dataset the variant was designed for


def _imagenet(
    block: type[_ResidualBlock], depths: tuple[int, ...], groups: int = 1, width_per_group: int = 64
) -> ResNetConfig:
    return ResNetConfig(block, depths, groups=groups, width_per_group=width_per_group)


def _cifar(n: int) -> ResNetConfig:
    """The paper's 6n+2-layer CIFAR-10 network."""
    return ResNetConfig(
        BasicBlock,
        (n, n, n),
        (16, 32, 64),
        stem_width=16,
        stem_kernel=3,
        stem_stride=1,
        stem_pool=False,
        shortcut="A",
        num_classes=10,
    )


def _tv(name: str, config: ResNetConfig, num_params: int, paper: Paper | None = None) -> Variant:
    return Variant(config, num_params, f"torchvision.models.{name}", paper=paper, torchvision=name, timm=name)


def _preact(name: str, block: type[_ResidualBlock], depths: tuple[int, ...], num_params: int) -> Variant:
    timm_name = name.replace("preact_resnet", "resnetv2_")
    return Variant(_imagenet(block, depths), num_params, f"timm.models.{timm_name}", paper=PREACT_PAPER, timm=timm_name)


def _paper(config: ResNetConfig, num_params: int, table_count: str) -> Variant:
    return Variant(config, num_params, f"He et al. 2015, section 4.2 and Table 6 ({table_count} parameters)")


@register_model(
    family="resnet",
    paper=PAPER,
    input_size=(3, 32, 32),
    min_input_size=(1, 1),
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
    num_classes=10,
    variants={
        "resnet20": _paper(_cifar(3), 269_722, "0.27M"),
        "resnet32": _paper(_cifar(5), 464_154, "0.46M"),
        "resnet44": _paper(_cifar(7), 658_586, "0.66M"),
        "resnet56": _paper(_cifar(9), 853_018, "0.85M"),
        "resnet110": _paper(_cifar(18), 1_727_962, "1.7M"),
    },
)
@register_model(
    family="resnet",
    paper=PAPER,
    input_size=(3, 224, 224),
    min_input_size=(1, 1),
    variants={
        "resnet18": _tv("resnet18", _imagenet(BasicBlock, (2, 2, 2, 2)), 11_689_512),
        "resnet34": _tv("resnet34", _imagenet(BasicBlock, (3, 4, 6, 3)), 21_797_672),
        "resnet50": _tv("resnet50", _imagenet(Bottleneck, (3, 4, 6, 3)), 25_557_032),
        "resnet101": _tv("resnet101", _imagenet(Bottleneck, (3, 4, 23, 3)), 44_549_160),
        "resnet152": _tv("resnet152", _imagenet(Bottleneck, (3, 8, 36, 3)), 60_192_808),
        "resnext50_32x4d": _tv(
            "resnext50_32x4d", _imagenet(Bottleneck, (3, 4, 6, 3), 32, 4), 25_028_904, RESNEXT_PAPER
        ),
        "wide_resnet50_2": _tv(
            "wide_resnet50_2", _imagenet(Bottleneck, (3, 4, 6, 3), width_per_group=128), 68_883_240, WRN_PAPER
        ),
        "preact_resnet18": _preact("preact_resnet18", PreActBasicBlock, (2, 2, 2, 2), 11_687_720),
        "preact_resnet34": _preact("preact_resnet34", PreActBasicBlock, (3, 4, 6, 3), 21_795_880),
        "preact_resnet50": _preact("preact_resnet50", PreActBottleneck, (3, 4, 6, 3), 25_549_352),
        "preact_resnet101": _preact("preact_resnet101", PreActBottleneck, (3, 4, 23, 3), 44_541_480),
        "preact_resnet152": _preact("preact_resnet152", PreActBottleneck, (3, 8, 36, 3), 60_185_128),
    },
)
class ResNet(ZooClassifier):
    """A residual network: stem, stages of basic or bottleneck blocks, global average pool, linear.

    Args:
        config: the variant (see `ResNetConfig`).
        in_channels: input image channels.
        num_classes: output classes; None takes the variant's (1000 for ImageNet, 10 for
            the CIFAR networks); 0 returns the pooled features.
        drop_rate: dropout before the final linear layer.
        drop_path_rate: stochastic depth of the last block (linearly less before it).
        stem: None keeps the variant's stem; ``"cifar"`` makes it a 3x3 conv at stride 1 with
            no max pool, so that 32x32 images keep their grid (the usual CIFAR adaptation of
            the ImageNet networks; torchvision weights no longer fit).
        zero_init_residual: start the last norm of every block at zero (each block starts as the identity).
        output_stride: the stride of the last stage; None keeps the variant's (32 for the ImageNet
            networks). 16 or 8 (any stride a stage reaches) trades the stride of the later stages
            for dilation (torchvision's ``replace_stride_with_dilation``): the feature maps stay
            larger and the weights are the same.
        norm_layer: normalisation after every conv (None: none, and the convs get biases).
        act_layer: activation inside the blocks and after each addition.
    """

    weight_init = WeightInit(conv=he_normal("fan_out"))  # as torchvision; the linear layer keeps torch's default

    def __init__(
        self,
        config: ResNetConfig,
        *,
        in_channels: int = 3,
        num_classes: int | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        zero_init_residual: bool = False,
        stem: str | None = None,
        output_stride: int | None = None,
        norm_layer: LayerFactory | None = nn.BatchNorm2d,
        act_layer: LayerFactory | None = nn.ReLU,
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", "resnet")
        if stem == "cifar":
            config = replace(config, stem_kernel=3, stem_stride=1, stem_pool=False)
        elif stem is not None:
            raise ConfigurationError(f"resnet: stem must be None (the variant's) or 'cifar', got {stem!r}")
        _check_config(config)
        num_classes = config.num_classes if num_classes is None else num_classes
        check_int(num_classes, "num_classes", "resnet", minimum=0)
        check_number(drop_rate, "drop_rate", "resnet", below=1)
        check_number(drop_path_rate, "drop_path_rate", "resnet", below=1)
        # The torchvision layout: a stride-2 stem of its own and projection shortcuts.
        self._torchvision_layout = config.stem_stride > 1 and config.shortcut == "B"
        self._preact = issubclass(config.block, _PreActBlock)

        stages, channels, strides = _build_stages(
            config, in_channels, norm_layer, act_layer, drop_path_rate, output_stride
        )
        self.stages = nn.ModuleList(stages)
        self.stage_channels = tuple(channels)
        self.stage_strides = tuple(strides)

        self.num_features = channels[-1]
        self.global_pool = GlobalAvgPool2d()
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        self.init_weights()
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, _ResidualBlock):
                    m.zero_init_last()

    def spatial_chain(self) -> list[LayerGeometry]:
        """The main path only: stem conv, max pool, then every block's convs (no shortcut convs)."""
        return module_chain((n, m) for n, m in self.named_modules() if "downsample" not in n.split("."))

    def torchvision_key_map(self) -> dict[str, str]:
        """Our module paths -> torchvision's ``conv1``, ``bn1``, ``layerN.i.convK/bnK/downsample.0/1``, ``fc``."""
        if self._preact:
            raise WeightsError(
                f"{self.model_name} has no torchvision counterpart: torchvision has no pre-activation ResNet "
                "(timm's resnetv2_* are)"
            )
        if not self._torchvision_layout:
            raise WeightsError(
                f"{self.model_name} has no torchvision counterpart: torchvision's ResNets have a stride-2 stem "
                "and projection (option B) shortcuts"
            )
        key_map = {"stages.0.stem.conv": "conv1", "stages.0.stem.norm": "bn1", "fc": "fc"}
        for ours, layer, n, block in self._blocks():
            theirs = f"layer{layer + 1}.{n}"
            for k in range(1, block.num_convs + 1):
                key_map[f"{ours}.conv{k}.conv"] = f"{theirs}.conv{k}"
                key_map[f"{ours}.conv{k}.norm"] = f"{theirs}.bn{k}"
            if block.downsample is not None:
                key_map[f"{ours}.downsample.conv"] = f"{theirs}.downsample.0"
                key_map[f"{ours}.downsample.norm"] = f"{theirs}.downsample.1"
        return key_map

    def timm_key_map(self) -> dict[str, str]:
        """timm's ResNets are named as torchvision's; its pre-activation ``resnetv2_*`` as below.

        ``stem.conv``, ``stages.N.blocks.i.normK/convK/downsample.conv``, the final ``norm``, and
        the classifier ``head.fc``, a 1x1 conv in timm (``Reshape``: (classes, C, 1, 1) -> (classes, C)).
        """
        if not self._preact:
            return self.torchvision_key_map()
        if not self._torchvision_layout:
            raise WeightsError(
                f"{self.model_name} has no timm counterpart: timm's resnetv2_* have a stride-2 stem and projection "
                "(option B) shortcuts"
            )
        key_map = {"stages.0.stem.conv": "stem.conv", f"stages.{len(self.stages) - 1}.final.norm": "norm"}
        key_map["fc"] = Reshape("head.fc")
        for ours, layer, n, block in self._blocks():
            theirs = f"stages.{layer}.blocks.{n}"
            for k in range(1, block.num_convs + 1):
                key_map[f"{ours}.conv{k}.conv"] = f"{theirs}.conv{k}"
                key_map[f"{ours}.conv{k}.norm"] = f"{theirs}.norm{k}"
            if block.downsample is not None:
                key_map[f"{ours}.downsample.conv"] = f"{theirs}.downsample.conv"
        return key_map

    def _blocks(self) -> Iterator[tuple[str, int, str, _ResidualBlock]]:
        """(our module path, the index among the stages that hold blocks, the block's name, the block)."""
        layer = 0
        for s, stage in enumerate(self.stages):
            blocks = [(n, m) for n, m in stage.named_children() if isinstance(m, _ResidualBlock)]
            for n, block in blocks:
                yield f"stages.{s}.{n}", layer, n, block
            layer += bool(blocks)


def _check_config(config: ResNetConfig) -> None:
    if not (isinstance(config.block, type) and issubclass(config.block, _ResidualBlock)):
        raise ConfigurationError(f"resnet: block must be BasicBlock or Bottleneck, got {config.block!r}")
    if not config.depths or len(config.depths) != len(config.widths):
        raise ConfigurationError(
            f"resnet: depths {config.depths} and widths {config.widths} must be non-empty and of the same length"
        )
    for d in config.depths:
        check_int(d, "each depth", "resnet")
    for w in config.widths:
        check_int(w, "each width", "resnet")
    for name in ("groups", "width_per_group", "stem_width", "stem_kernel", "stem_stride", "num_classes"):
        check_int(getattr(config, name), name, "resnet", minimum=0 if name == "num_classes" else 1)
    if config.shortcut not in SHORTCUTS:
        raise ConfigurationError(
            f"resnet: shortcut must be 'A' (zero padding) or 'B' (projection), got {config.shortcut!r}"
        )


def _build_stages(
    config: ResNetConfig,
    in_channels: int,
    norm_layer: LayerFactory | None,
    act_layer: LayerFactory | None,
    drop_path_rate: float,
    output_stride: int | None = None,
) -> tuple[list[nn.Sequential], list[int], list[int]]:
    """The stages (stem, optional max pool, then the blocks), with their output channels and strides.

    A stage that would take the stride past `output_stride` keeps it and doubles the dilation
    instead; its first block keeps the previous dilation in its first 3x3 conv (torchvision's
    ``replace_stride_with_dilation``, timm's ``output_stride``).
    """
    first = config.stem_stride * (2 if config.stem_pool else 1)  # the stride of the first block stage
    reachable = [first * 2**i for i in range(len(config.depths))]
    if output_stride is None:
        output_stride = reachable[-1]
    if isinstance(output_stride, bool) or output_stride not in reachable:
        raise ConfigurationError(
            f"resnet: output_stride must be one of {', '.join(map(str, reachable))} (the strides its stages reach; "
            f"below {reachable[-1]} the later stages dilate instead), got {output_stride!r}"
        )
    preact = issubclass(config.block, _PreActBlock)
    stem = ConvNormAct(  # pre-activation: a bare conv (the first block's norm and activation follow it)
        in_channels,
        config.stem_width,
        config.stem_kernel,
        config.stem_stride,
        bias=False if preact else None,
        norm_layer=None if preact else norm_layer,
        act_layer=None if preact else act_layer,
    )
    stages: list[nn.Sequential] = []
    channels: list[int] = []
    strides: list[int] = []
    stride = config.stem_stride
    pending: list[tuple[str, nn.Module]] = [("stem", stem)]
    if config.stem_stride > 1:  # a new stride: the stem is a stage of its own
        stages.append(nn.Sequential(OrderedDict(pending)))  # (B, stem_width, H/stride, W/stride)
        channels.append(config.stem_width)
        strides.append(stride)
        pending = []
    if config.stem_pool:
        pending.append(("pool", nn.MaxPool2d(3, 2, 1)))
        stride *= 2

    num_blocks = sum(config.depths)
    block_index = 0
    c = config.stem_width
    dilation = 1
    for i, (depth, width) in enumerate(zip(config.depths, config.widths, strict=True)):
        layers, pending = pending, []
        previous_dilation, stage_stride = dilation, 2 if i > 0 else 1
        if stride * stage_stride > output_stride:  # (B, c, H/output_stride, W/output_stride) from here on
            dilation, stage_stride = dilation * stage_stride, 1
        for j in range(depth):
            block_stride = stage_stride if j == 0 else 1
            rate = drop_path_rate * block_index / max(num_blocks - 1, 1)
            block = config.block(
                c,
                width,
                block_stride,
                groups=config.groups,
                width_per_group=config.width_per_group,
                shortcut=config.shortcut,
                norm_layer=norm_layer,
                act_layer=act_layer,
                drop_path_rate=rate,
                dilation=dilation,
                first_dilation=previous_dilation if j == 0 else dilation,
            )
            layers.append((str(j), block))
            c = width * config.block.expansion
            stride *= block_stride
            block_index += 1
        if preact and i == len(config.depths) - 1:  # the sums are normalised once more, before the head
            final = [("norm", norm_layer(c))] if norm_layer is not None else []
            layers.append(("final", nn.Sequential(OrderedDict([*final, ("act", make_act(act_layer))]))))
        stages.append(nn.Sequential(OrderedDict(layers)))  # (B, c, H/stride, W/stride)
        channels.append(c)
        strides.append(stride)
    return stages, channels, strides
