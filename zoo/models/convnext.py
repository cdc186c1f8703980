"""ConvNeXt: Liu, Mao, Wu, Feichtenhofer, Darrell & Xie, "A ConvNet for the 2020s", CVPR 2022,
https://arxiv.org/abs/2201.03545.

A ResNet "modernised" step by step towards a Swin Transformer: a 4x4 stride-4 "patchify"
stem, stage depths 1:1:3:1, an inverted bottleneck block with a 7x7 depthwise conv, one
LayerNorm and one GELU per block, separate 2x2 stride-2 downsampling convs between
stages, layer scale and stochastic depth. Tiny, Small, Base and Large are built exactly as
torchvision builds them (same parameters, shapes, permutes and memory layout, so its
weights load one to one and it runs as fast); XLarge as timm builds it. Both libraries'
weights import through `torchvision_key_map` / `timm_key_map` (`zoo.weights.import_weights`).

The block, in the order it runs::

    x -> 7x7 depthwise conv -> permute to (B, H, W, C) -> LayerNorm -> Linear C->4C -> GELU
      -> Linear 4C->C -> permute to (B, C, H, W) -> * layer scale -> drop path -> + x

Where this departs from the paper or the references:
- `convnext_xlarge` is trained in the paper only with ImageNet-22K pre-training; here, as
  in timm, it has an ordinary 1000-class head.
- `drop_path_rate` defaults to 0 (as in timm). The paper trains on ImageNet-1K with 0.1 /
  0.4 / 0.5 / 0.5 for T / S / B / L (torchvision's builders default to these); set it in
  the training recipe. The rate grows linearly from 0 at the first block to
  `drop_path_rate` at the last, as in the paper.
- The layer scale is a (C, 1, 1) parameter named ``layer_scale`` (torchvision's shape);
  timm stores (C,) ``gamma``, which the timm key map reshapes on import.
- The head is global average pool -> LayerNorm -> dropout (`drop_rate`, 0 by default, as in
  timm; the paper and torchvision have none) -> Linear.

Stages: stage 0 is the stem and the first stage's blocks (stride 4); stages 1-3 are a
downsampling layer (LayerNorm, 2x2 stride-2 conv) and blocks (strides 8, 16, 32). The
smallest input is 32x32, where the last stage is 1x1.

ConvNeXt V2: Woo, Debnath, Hu, Chen, Liu, Kweon & Xie, "ConvNeXt V2: Co-designing and Scaling
ConvNets with Masked Autoencoders", CVPR 2023, https://arxiv.org/abs/2301.00808. The same network
with one change in the block: global response normalisation (GRN) after the MLP's GELU, and no
layer scale (the rows' config says ``grn=True, layer_scale_init_value=None``)::

    x -> 7x7 depthwise conv -> permute -> LayerNorm -> Linear C->4C -> GELU -> GRN
      -> Linear 4C->C -> permute -> drop path -> + x

GRN (the paper's Eq. 1-3) takes each channel's L2 norm over the spatial axes, divides it by the
mean of those norms over the channels, and adds ``gamma * (x * that) + beta`` to x; gamma and
beta start at zero, so GRN starts as the identity. The rows ``convnextv2_atto`` ... ``_base``
are timm's ``convnextv2_*`` exactly (parameters; outputs after `timm_key_map`). timm names
GRN's parameters ``mlp.grn.weight`` / ``mlp.grn.bias`` of shape (4C,) (the original
checkpoints' ``grn.gamma`` / ``grn.beta`` are (1, 1, 1, 4C)); the key map takes either shape.
timm's atto ... nano run the MLP as 1x1 convs on (B, C, H, W) maps (``conv_mlp``); here every
size runs the linear-layer form, with the same parameters and outputs equal to < 1e-5.
Every size of timm's ``convnextv2_*`` list is a row, up to ``convnextv2_huge`` (660,289,640
parameters, the largest network here; its file is 2.6 GB in float32).
The V2 paper pre-trains with a fully convolutional masked autoencoder (FCMAE, sparse
convolutions); that is training, not the network, and is not here.

For 32x32 images, ``stem="cifar"`` patchifies 2x2 patches (stride 2) instead of 4x4, so the
stages run on 16, 8, 4 and 2 pixel maps (as 224x224 images give 56, 28, 14 and 7) instead of
8, 4, 2 and 1, at about four times the compute; the smallest input is then 16x16. The stem
conv then has another shape than in the released weights, which do not load into it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from zoo.checks import check_choice, check_int, check_number
from zoo.errors import ConfigurationError
from zoo.layers import ConvNormAct, GlobalAvgPool2d, LayerFactory, make_act, stochastic_depth
from zoo.models.base import WeightInit, ZooClassifier, trunc_normal
from zoo.registry import Paper, Variant, register_model
from zoo.weights import Reshape

PAPER = Paper(
    "A ConvNet for the 2020s",
    2022,
    "https://arxiv.org/abs/2201.03545",
    "Z. Liu, H. Mao, C.-Y. Wu, C. Feichtenhofer, T. Darrell, S. Xie",
)
PAPER_V2 = Paper(
    "ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders",
    2023,
    "https://arxiv.org/abs/2301.00808",
    "S. Woo, S. Debnath, R. Hu, X. Chen, Z. Liu, I. S. Kweon, S. Xie",
)
ROW = "row"  # layer_scale_init_value's default: the config row's value


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map, as in torchvision's and timm's ConvNeXt.

    Written here rather than imported from timm: ``import timm`` also imports torchvision
    and torch._dynamo, over a second that every ``create("convnext_*")`` would pay.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


@dataclass(frozen=True)
class ConvNeXtConfig:
    """Blocks per stage and the width (channels) of each stage."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    kernel_size: int = 7  # the depthwise conv (the paper's Section 2.5 compares 3 to 11)
    mlp_ratio: int = 4  # the inverted bottleneck's expansion
    grn: bool = False  # global response normalisation after the MLP's activation (ConvNeXt V2)
    layer_scale_init_value: float | None = 1e-6  # the default layer scale; None: none (ConvNeXt V2)


class GlobalResponseNorm(nn.Module):
    """Global response normalisation (ConvNeXt V2, Eq. 1-3) of a channels-last (B, H, W, C) map.

    ``x + weight * (x * N(x)) + bias``, where N(x) is each channel's L2 norm over H and W divided
    by the mean of those norms over the channels. `weight` (the paper's gamma) and `bias` (beta)
    are (C,) and start at zero: the layer starts as the identity.

    Args:
        dim: channels (the last axis).
        eps: added to the mean norm (the paper's 1e-6).
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        norms = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)  # (B, 1, 1, C)
        relative = norms / (norms.mean(dim=-1, keepdim=True) + self.eps)  # divisive normalisation over channels
        return x + torch.addcmul(self.bias, self.weight, x * relative)


class ConvNeXtBlock(nn.Module):
    """One ConvNeXt block: depthwise conv, LayerNorm, MLP, layer scale, drop path, residual.

    Args:
        dim: channels in and out.
        kernel_size: the depthwise conv's kernel (odd; padded to keep the size).
        mlp_ratio: hidden width of the MLP, in multiples of `dim`.
        layer_scale_init_value: initial value of the per-channel scale of the residual
            branch; None or 0 leaves the scale out.
        drop_path: probability of dropping the residual branch per sample in training.
        act_layer: the MLP's activation.
        grn: global response normalisation after the activation (ConvNeXt V2).
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        mlp_ratio: int = 4,
        *,
        layer_scale_init_value: float | None = 1e-6,
        drop_path: float = 0.0,
        act_layer: LayerFactory = nn.GELU,
        grn: bool = False,
    ) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = make_act(act_layer)
        self.grn = GlobalResponseNorm(mlp_ratio * dim) if grn else nn.Identity()
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)
        if layer_scale_init_value:
            self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init_value)))
        else:
            self.register_parameter("layer_scale", None)
        self.drop_path = stochastic_depth(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.conv_dw(x).permute(0, 2, 3, 1)  # (B, H, W, C): LayerNorm and Linear act on the last axis
        x = self.fc2(self.grn(self.act(self.fc1(self.norm(x))))).permute(0, 3, 1, 2)  # (B, C, H, W), a view
        if self.layer_scale is not None:
            x = self.layer_scale * x
        x = self.drop_path(x)
        x += shortcut  # in place into the branch's fresh output, as torchvision: no extra tensor
        return x


_T = ConvNeXtConfig((3, 3, 9, 3), (96, 192, 384, 768))
_S = ConvNeXtConfig((3, 3, 27, 3), (96, 192, 384, 768))
_B = ConvNeXtConfig((3, 3, 27, 3), (128, 256, 512, 1024))
_L = ConvNeXtConfig((3, 3, 27, 3), (192, 384, 768, 1536))
_XL = ConvNeXtConfig((3, 3, 27, 3), (256, 512, 1024, 2048))


def _v2(depths: tuple[int, ...], widths: tuple[int, ...]) -> ConvNeXtConfig:
    return ConvNeXtConfig(depths, widths, grn=True, layer_scale_init_value=None)


def _v2_row(config: ConvNeXtConfig, num_params: int, timm_name: str, notes: str = "") -> Variant:
    return Variant(config, num_params, f"timm.models.{timm_name}", paper=PAPER_V2, timm=timm_name, notes=notes)


@register_model(
    family="convnext",
    paper=PAPER,
    input_size=(3, 224, 224),
    min_input_size=(32, 32),
    variants={
        "convnext_tiny": Variant(
            _T, 28_589_128, "torchvision.models.convnext_tiny", torchvision="convnext_tiny", timm="convnext_tiny"
        ),
        "convnext_small": Variant(
            _S, 50_223_688, "torchvision.models.convnext_small", torchvision="convnext_small", timm="convnext_small"
        ),
        "convnext_base": Variant(
            _B, 88_591_464, "torchvision.models.convnext_base", torchvision="convnext_base", timm="convnext_base"
        ),
        "convnext_large": Variant(
            _L, 197_767_336, "torchvision.models.convnext_large", torchvision="convnext_large", timm="convnext_large"
        ),
        "convnext_xlarge": Variant(
            _XL,
            350_196_968,
            "timm.models.convnext_xlarge",
            timm="convnext_xlarge",
            notes="The paper trains XLarge only with ImageNet-22K pre-training; here it has a 1000-class head.",
        ),
        "convnextv2_atto": _v2_row(_v2((2, 2, 6, 2), (40, 80, 160, 320)), 3_708_400, "convnextv2_atto"),
        "convnextv2_femto": _v2_row(_v2((2, 2, 6, 2), (48, 96, 192, 384)), 5_233_240, "convnextv2_femto"),
        "convnextv2_pico": _v2_row(_v2((2, 2, 6, 2), (64, 128, 256, 512)), 9_066_280, "convnextv2_pico"),
        "convnextv2_nano": _v2_row(_v2((2, 2, 8, 2), (80, 160, 320, 640)), 15_623_800, "convnextv2_nano"),
        "convnextv2_tiny": _v2_row(_v2(_T.depths, _T.widths), 28_635_496, "convnextv2_tiny"),
        "convnextv2_small": _v2_row(
            _v2(_S.depths, _S.widths),
            50_318_440,
            "convnextv2_small",
            notes="timm defines convnextv2_small but publishes no weights for it (the V2 authors released none).",
        ),
        "convnextv2_base": _v2_row(_v2(_B.depths, _B.widths), 88_717_800, "convnextv2_base"),
        "convnextv2_large": _v2_row(_v2(_L.depths, _L.widths), 197_956_840, "convnextv2_large"),
        "convnextv2_huge": _v2_row(_v2(_L.depths, (352, 704, 1408, 2816)), 660_289_640, "convnextv2_huge"),
    },
)
class ConvNeXt(ZooClassifier):
    """ConvNeXt (any row of the variant table, or your own `ConvNeXtConfig`).

    Args:
        config: depths and widths of the stages (see `ConvNeXtConfig`).
        in_channels: input image channels.
        num_classes: output classes; 0 returns the pooled, normalised features.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth of the last block; it grows linearly from 0 at the
            first block (the paper trains T/S/B/L on ImageNet-1K with 0.1/0.4/0.5/0.5).
        layer_scale_init_value: initial per-channel scale of every residual branch; ``"row"``
            (the default) takes the config's (the paper's 1e-6; none for ConvNeXt V2); None or 0
            leaves layer scale out.
        act_layer: the activation inside every block's MLP.
        stem: None for the 4x4 stride-4 patchify stem; ``"cifar"`` for 2x2 patches at stride 2.
    """

    weight_init = WeightInit(conv=trunc_normal(0.02), linear=trunc_normal(0.02))  # the paper's code

    def __init__(
        self,
        config: ConvNeXtConfig,
        *,
        in_channels: int = 3,
        num_classes: int = 1000,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float | str | None = ROW,
        act_layer: LayerFactory = nn.GELU,
        stem: str | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", "convnext")
        patch = 2 if check_choice(stem, "stem", (None, "cifar"), "convnext") == "cifar" else 4
        depths, widths = tuple(config.depths), tuple(config.widths)
        if not depths or len(depths) != len(widths):
            raise ConfigurationError(
                f"convnext: depths and widths need one entry per stage, got {len(depths)} and {len(widths)}"
            )
        for d, w in zip(depths, widths, strict=True):
            check_int(d, "every depth", "convnext")
            check_int(w, "every width", "convnext")
        kernel_size = check_int(config.kernel_size, "kernel_size", "convnext")
        if kernel_size % 2 == 0:
            raise ConfigurationError(f"convnext: kernel_size must be odd to keep the size, got {kernel_size}")
        mlp_ratio = check_int(config.mlp_ratio, "mlp_ratio", "convnext")
        self.drop_rate = check_number(drop_rate, "drop_rate", "convnext", below=1)
        drop_path_rate = check_number(drop_path_rate, "drop_path_rate", "convnext", below=1)
        if layer_scale_init_value == ROW:
            layer_scale_init_value = config.layer_scale_init_value
        if layer_scale_init_value is not None:
            layer_scale_init_value = check_number(layer_scale_init_value, "layer_scale_init_value", "convnext")

        # stochastic depth grows linearly with the block index, from 0 to drop_path_rate
        total = sum(depths)
        rates = iter([drop_path_rate * i / max(total - 1, 1) for i in range(total)])
        stages = []
        for i, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            if i == 0:  # the "patchify" stem: non-overlapping 4x4 (cifar: 2x2) patches
                first = ConvNormAct(
                    in_channels, width, patch, patch, 0, bias=True, norm_layer=LayerNorm2d, act_layer=None
                )  # (B, C0, H/4, W/4)
                name = "stem"
            else:
                first = nn.Sequential(
                    OrderedDict(norm=LayerNorm2d(widths[i - 1]), conv=nn.Conv2d(widths[i - 1], width, 2, 2))
                )  # (B, Ci, H/2^(i+2), W/2^(i+2))
                name = "downsample"
            blocks = [
                ConvNeXtBlock(
                    width,
                    kernel_size,
                    mlp_ratio,
                    layer_scale_init_value=layer_scale_init_value,
                    drop_path=next(rates),
                    act_layer=act_layer,
                    grn=bool(config.grn),
                )
                for _ in range(depth)
            ]
            stages.append(nn.Sequential(OrderedDict([(name, first), ("blocks", nn.Sequential(*blocks))])))
        self.stages = nn.ModuleList(stages)
        self.stage_channels = widths
        self.stage_strides = tuple(patch * 2**i for i in range(len(widths)))

        self.global_pool = GlobalAvgPool2d()
        self.num_features = widths[-1]
        self.head_norm = nn.LayerNorm(self.num_features, eps=1e-6)
        self.head_drop = nn.Dropout(self.drop_rate)
        self.reset_classifier(num_classes)
        self.init_weights()

    def _blocks(self) -> Iterator[tuple[int, int]]:
        """(stage, block) indices of every block."""
        for s, stage in enumerate(self.stages):
            for j in range(len(stage.blocks)):
                yield s, j

    def torchvision_key_map(self) -> dict[str, str]:
        """Our module paths -> torchvision's (``features`` alternates blocks and downsampling layers)."""
        key_map = {
            "stages.0.stem.conv": "features.0.0",
            "stages.0.stem.norm": "features.0.1",
            "head_norm": "classifier.0",
            "fc": "classifier.2",
        }
        for s in range(1, len(self.stages)):
            key_map[f"stages.{s}.downsample.norm"] = f"features.{2 * s}.0"
            key_map[f"stages.{s}.downsample.conv"] = f"features.{2 * s}.1"
        for s, j in self._blocks():
            ours, theirs = f"stages.{s}.blocks.{j}", f"features.{2 * s + 1}.{j}"
            key_map.update(
                {
                    f"{ours}.conv_dw": f"{theirs}.block.0",
                    f"{ours}.norm": f"{theirs}.block.2",
                    f"{ours}.fc1": f"{theirs}.block.3",
                    f"{ours}.fc2": f"{theirs}.block.5",
                    f"{ours}.layer_scale": f"{theirs}.layer_scale",
                }
            )
        return key_map

    def timm_key_map(self) -> dict[str, str]:
        """Our module paths -> timm's ``ConvNeXt`` (convnext_atto ... convnext_xlarge, convnextv2_*).

        timm's layer scale is (C,) ``gamma``, and its small models (atto to nano) use 1x1
        convs in place of the MLP's linear layers: both are reshaped on import, as GRN's
        weight and bias are (timm's are (4C,), the original V2 checkpoints' (1, 1, 1, 4C)).
        """
        key_map = {
            "stages.0.stem.conv": "stem.0",
            "stages.0.stem.norm": "stem.1",
            "head_norm": "head.norm",
            "fc": "head.fc",
        }
        for s in range(1, len(self.stages)):
            key_map[f"stages.{s}.downsample.norm"] = f"stages.{s}.downsample.0"
            key_map[f"stages.{s}.downsample.conv"] = f"stages.{s}.downsample.1"
        for s, j in self._blocks():
            block = f"stages.{s}.blocks.{j}"
            key_map.update(
                {
                    f"{block}.conv_dw": f"{block}.conv_dw",
                    f"{block}.norm": f"{block}.norm",
                    f"{block}.fc1": Reshape(f"{block}.mlp.fc1"),
                    f"{block}.fc2": Reshape(f"{block}.mlp.fc2"),
                    f"{block}.layer_scale": Reshape(f"{block}.gamma"),
                    f"{block}.grn": Reshape(f"{block}.mlp.grn"),  # (4C,), or the original (1, 1, 1, 4C)
                }
            )
        return key_map

    def head_features(self, x: Tensor) -> Tensor:
        return self.head_drop(self.head_norm(self.global_pool(x)))  # (B, C)
