"""U-Net: Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015, https://arxiv.org/abs/1505.04597.

Three kinds of U-Net, all segmenters (`zoo.models.base.ZooSegmenter`): ``forward(x)`` returns
per-pixel logits (B, num_classes, H_out, W_out), ``output_size((H, W))`` says how large, and
an input size the network cannot take raises `InputShapeError` naming the nearest valid sizes.
For images of any size, `zoo.segment(model, image)` tiles them (the paper's overlap-tile
strategy), or create the model with ``pad_input=True`` to mirror-pad and crop back.

``unet`` is the paper's network (its Fig. 1), exactly: 1 input channel, 2 classes, a
contracting path of four levels of two unpadded 3x3 convs + ReLU and a 2x2 max pool
(64, 128, 256, 512 filters), two 3x3 convs of 1024 at the bottom, and an expansive path of
2x2 up-convolutions that halve the channels, each concatenated with the centre crop of the
contracting path's map at that level and followed by two unpadded 3x3 convs; a 1x1 conv
gives the class scores. 31,030,658 parameters; a 572x572 input gives 388x388 logits. The
unpadded convs make the output smaller than the input (by 184 pixels) and restrict the
input to 188 + 16k pixels, so that every max pool sees an even size
(`zoo.arithmetic.unet_chain`, `unet_output_size`, `nearest_valid_sizes`). Where the code
departs from the paper, or fills in what it leaves open:
- The paper puts drop-out layers "at the end of the contracting path" without a rate;
  ``drop_rate`` (default 0: off) puts one dropout after the bottom convs.
- The output is logits: the paper's pixel-wise softmax and weighted cross-entropy (and its
  elastic-deformation augmentation) belong to training, not to the network.
- The skip maps are concatenated before the up-sampled maps (the paper does not say which
  comes first; any order is equivalent up to a permutation of the next conv's filters).
- Weights start as in the paper: Gaussian with standard deviation sqrt(2/N), N the inputs
  of one unit (He initialisation, fan-in); biases zero.
- The card normalises with mean 0.5 and std 0.5 (scaling [0, 1] to [-1, 1]); the paper
  does not say how it normalised its images.

``unet_padded`` is the U-Net people train today: every 3x3 conv padded by 1 (zeros), so the
output is the size of the input, which must be a multiple of 2**depth; batch norm after
every conv (``batch_norm=False`` gives the paper's conv + bias + ReLU); any ``in_channels``,
``num_classes``, ``depth`` and base ``width`` (level i has width * 2**i filters). Both
networks take ``upsample="transpose"`` (the paper's 2x2 up-convolution) or ``"bilinear"``:
bilinear interpolation x2 then a 1x1 conv that halves the channels as the up-convolution
does, so the two differ only in how they up-sample.

``unet_resnet18``, ``unet_resnet34``, ``unet_resnet50``, ``unet_vgg16_bn``,
``unet_convnext_tiny``: a zoo classifier as the encoder (``model.encoder``, built with
``num_classes=0`` and its head removed by the contract's ``remove_head()``, so that only
the stages remain), and its family's weight import works on it as on the classifier:
``zoo.weights.import_weights(model.encoder, torchvision.models.resnet34(...))``. Any
registered classifier can be the encoder: ``zoo.create("unet_resnet34", encoder="resnet50")``
(the card then still describes the row's encoder). The decoder is built from the encoder's
``stage_channels`` and ``stage_strides`` and fed by its ``forward_stages`` only (no surgery,
no names): starting from the deepest stage, each decoder block up-samples (nearest, or
bilinear) to the size of the next shallower stage, concatenates that stage's map, and applies
two 3x3 conv + batch norm + ReLU; when the shallowest stage is below full resolution
(ResNet's stem at stride 2, ConvNeXt's at 4) one more block without a skip up-samples to the
input's size; a 3x3 conv gives the logits. Decoder widths default to 256, 128, 64, 32, 16 (as
many as there are blocks). With a ResNet encoder this is segmentation_models_pytorch's
``Unet`` block for block, with the same parameter count. The input must be a multiple of the
encoder's total stride (its last stage stride). `freeze_encoder()` stops training the encoder.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.arithmetic import LayerGeometry, misfit, nearest_multiples, nearest_valid_sizes, unet_chain, unet_output_size
from zoo.checks import check_bool, check_choice, check_int, check_number
from zoo.errors import ConfigurationError, InvalidArgumentError
from zoo.layers import ConvNormAct, LayerFactory
from zoo.models.base import WeightInit, ZooSegmenter, he_normal
from zoo.registry import Paper, Variant, create, model_class, model_info, register_model

PAPER = Paper(
    "U-Net: Convolutional Networks for Biomedical Image Segmentation",
    2015,
    "https://arxiv.org/abs/1505.04597",
    "O. Ronneberger, P. Fischer, T. Brox",
)
UPSAMPLE = ("transpose", "bilinear")
INTERPOLATE = ("nearest", "bilinear")


def _resize(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    return F.interpolate(x, size=size, mode=mode, align_corners=False if mode == "bilinear" else None)


def _center_crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    top, left = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


# --------------------------------------------------------------------------- the paper's U-Net and the padded one


@dataclass(frozen=True)
class UNetConfig:
    """A U-Net row: padded or unpadded 3x3 convs, and the defaults of the arguments that differ."""

    padded: bool  # 3x3 convs padded by 1 (output size = input size) or unpadded (the paper)
    in_channels: int = 1
    num_classes: int = 2
    batch_norm: bool = False


class UpBlock(nn.Module):
    """Up-sample x2 halving the channels, concatenate the (centre-cropped) skip map, two 3x3 convs."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        padding: int,
        upsample: str,
        norm_layer: LayerFactory | None,
        act_layer: LayerFactory | None,
    ) -> None:
        super().__init__()
        if upsample == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, out_channels, 1),
            )
        kw = {"padding": padding, "norm_layer": norm_layer, "act_layer": act_layer}
        self.conv1 = ConvNormAct(2 * out_channels, out_channels, 3, **kw)
        self.conv2 = ConvNormAct(out_channels, out_channels, 3, **kw)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)  # (B, C/2, 2H, 2W)
        x = torch.cat([_center_crop(skip, (x.shape[-2], x.shape[-1])), x], dim=1)  # (B, C, 2H, 2W)
        return self.conv2(self.conv1(x))


_PAPER_NOTES = (
    "the paper's network (Fig. 1). Valid input sizes: 188 + 16k (188, 204, ..., 556, 572, ...), so that "
    "every 2x2 max pool sees an even size; output size = input size - 184 (572 -> 388). zoo.segment(model, "
    "image) segments any image in overlapping tiles, mirroring the border as the paper does."
)
_PADDED_NOTES = (
    "padded 3x3 convs and batch norm: output size = input size, for inputs that are multiples of 16 "
    "(2**depth); pad_input=True takes any size (mirror padding, cropped back)."
)


@register_model(
    family="unet",
    paper=PAPER,
    task="segmentation",
    input_size=(1, 572, 572),
    min_input_size=(188, 188),
    mean=(0.5,),
    std=(0.5,),
    num_classes=2,
    variants={
        "unet": Variant(
            UNetConfig(padded=False),
            31_030_658,
            "Ronneberger et al. 2015, Fig. 1 (no library has it; 31,030,658 counts the paper's layers)",
            notes=_PAPER_NOTES,
        ),
    },
)
@register_model(
    family="unet",
    paper=PAPER,
    task="segmentation",
    input_size=(3, 256, 256),
    min_input_size=(16, 16),
    num_classes=2,
    variants={
        "unet_padded": Variant(
            UNetConfig(padded=True, in_channels=3, batch_norm=True),
            31_037_698,
            "zoo (counted): the paper's widths with padded convs and batch norm, 3 input channels",
            notes=_PADDED_NOTES,
        ),
    },
)
class UNet(ZooSegmenter):
    """The U-Net of the paper (unpadded) or its padded form (output the size of the input).

    Args:
        config: the row (see `UNetConfig`).
        in_channels: input image channels (None: the row's, 1 for ``unet``, 3 for ``unet_padded``).
        num_classes: output channels, one logit per class and pixel (None: the row's, 2).
        depth: how many times the contracting path halves the grid (the paper: 4).
        width: filters at the first level, doubled at every level below (the paper: 64).
        batch_norm: batch norm after every conv, which then has no bias (None: the row's).
        upsample: ``"transpose"`` (a 2x2 up-convolution, the paper's) or ``"bilinear"``
            (bilinear interpolation, then a 1x1 conv that halves the channels).
        drop_rate: dropout at the end of the contracting path (after the bottom convs).
        pad_input: take inputs of any size: mirror-pad to the nearest larger valid size and crop
            the logits back to the input's size (see `ZooSegmenter`); off, such inputs raise.
        act_layer: activation after every 3x3 conv.
    """

    weight_init = WeightInit(conv=he_normal("fan_in"), conv_types=(nn.Conv2d, nn.ConvTranspose2d))  # the paper's

    def __init__(
        self,
        config: UNetConfig,
        *,
        in_channels: int | None = None,
        num_classes: int | None = None,
        depth: int = 4,
        width: int = 64,
        batch_norm: bool | None = None,
        upsample: str = "transpose",
        drop_rate: float = 0.0,
        pad_input: bool = False,
        act_layer: LayerFactory | None = nn.ReLU,
    ) -> None:
        super().__init__()
        owner = "unet"
        in_channels = config.in_channels if in_channels is None else in_channels
        num_classes = config.num_classes if num_classes is None else num_classes
        batch_norm = config.batch_norm if batch_norm is None else batch_norm
        self.in_channels = check_int(in_channels, "in_channels", owner)
        self.num_classes = check_int(num_classes, "num_classes", owner)
        self.depth = check_int(depth, "depth", owner)
        check_int(width, "width", owner)
        check_bool(batch_norm, "batch_norm", owner)
        self.pad_input = check_bool(pad_input, "pad_input", owner)
        check_choice(upsample, "upsample", UPSAMPLE, owner)
        check_number(drop_rate, "drop_rate", owner, below=1)
        self.padded = config.padded
        self.padding = 1 if config.padded else 0
        norm = nn.BatchNorm2d if batch_norm else None
        widths = [width * 2**level for level in range(depth + 1)]  # 64, 128, 256, 512, 1024

        self.down = nn.ModuleList()
        c = in_channels
        for level, w in enumerate(widths):
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            if level:
                layers["pool"] = nn.MaxPool2d(2, 2)
            layers["conv1"] = ConvNormAct(c, w, 3, padding=self.padding, norm_layer=norm, act_layer=act_layer)
            layers["conv2"] = ConvNormAct(w, w, 3, padding=self.padding, norm_layer=norm, act_layer=act_layer)
            self.down.append(nn.Sequential(layers))
            c = w
        self.drop = nn.Dropout(drop_rate)
        self.up = nn.ModuleList(
            UpBlock(widths[level + 1], widths[level], padding=self.padding, upsample=upsample, norm_layer=norm,
                    act_layer=act_layer)
            for level in reversed(range(depth))
        )  # fmt: skip
        self.head = nn.Conv2d(width, num_classes, 1)
        self.init_weights()

    def forward_logits(self, x: Tensor) -> Tensor:
        skips = []
        for level in self.down:
            x = level(x)  # (B, width * 2**i, ~H / 2**i, ~W / 2**i)
            skips.append(x)
        x = self.drop(skips.pop())  # the bottom of the U
        for up in self.up:
            x = up(x, skips.pop())
        return self.head(x)  # (B, num_classes, H_out, W_out)

    # ------------------------------------------------------------------ sizes
    def spatial_chain(self) -> list[LayerGeometry]:
        """The main path (the skip crops do not change it); bilinear up-sampling counts as a 2x2 up-convolution."""
        return unet_chain(self.depth, 2, 3, self.padding)

    def nearest_valid_sizes(self, size: int, axis: int = 0) -> tuple[int | None, int | None]:
        return nearest_valid_sizes(self.spatial_chain(), size, axis)

    def _size_problem(self, size: int, axis: int) -> str:
        if self.padded:
            return f"it is not a multiple of {2**self.depth} (2**depth: the input is halved {self.depth} times)"
        layer, n = misfit(self.spatial_chain(), size, axis) or ("", 0)
        return f"the max pool {layer} would get {n}, an odd size, and the cropped skip connections would not line up"

    def _output_axis(self, size: int, axis: int) -> int:
        return unet_output_size(size, self.depth, 2, 3, self.padding)


# --------------------------------------------------------------------------- U-Nets on zoo encoders


@dataclass(frozen=True)
class EncoderUNetConfig:
    """A U-Net row on a zoo encoder: the registered classifier to build it from."""

    encoder: str


class DecoderBlock(nn.Module):
    """Up-sample to the skip's size, concatenate the skip (if any), two 3x3 conv + norm + activation."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        *,
        upsample: str,
        norm_layer: LayerFactory | None,
        act_layer: LayerFactory | None,
    ) -> None:
        super().__init__()
        self.upsample = upsample  # "nearest" or "bilinear" interpolation
        self.conv1 = ConvNormAct(
            in_channels + skip_channels, out_channels, 3, norm_layer=norm_layer, act_layer=act_layer
        )
        self.conv2 = ConvNormAct(out_channels, out_channels, 3, norm_layer=norm_layer, act_layer=act_layer)

    def forward(self, x: Tensor, skip: Tensor | None, size: tuple[int, int]) -> Tensor:
        x = _resize(x, size, self.upsample)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


def _default_decoder_widths(n: int) -> tuple[int, ...]:
    return tuple(max(256 >> i, 16) for i in range(n))  # 256, 128, 64, 32, 16, 16, ...


def _encoder_row(
    encoder: str, num_params: int, reference: str, notes: str, min_input_size: tuple[int, int] | None = None
) -> Variant:
    return Variant(EncoderUNetConfig(encoder), num_params, reference, min_input_size=min_input_size, notes=notes)


def _smp(encoder: str) -> str:
    return (
        f"segmentation_models_pytorch.Unet({encoder!r}, classes=2) has the same count (0.6.0; "
        "the same decoder, block for block)"
    )


_ENCODER_NOTES = (
    "encoder: zoo's {encoder} (model.encoder; import its family's weights into it); decoder from its stages, as "
    "segmentation_models_pytorch's Unet. Input sizes: multiples of {stride} (the encoder's total stride) from "
    "{minimum}; output size = input size."
)


@register_model(
    family="unet",
    paper=PAPER,
    task="segmentation",
    input_size=(3, 224, 224),
    min_input_size=(32, 32),
    num_classes=2,
    variants={
        "unet_resnet18": _encoder_row(
            "resnet18", 14_328_354, _smp("resnet18"), _ENCODER_NOTES.format(encoder="resnet18", stride=32, minimum=32)
        ),
        "unet_resnet34": _encoder_row(
            "resnet34", 24_436_514, _smp("resnet34"), _ENCODER_NOTES.format(encoder="resnet34", stride=32, minimum=32)
        ),
        "unet_resnet50": _encoder_row(
            "resnet50", 32_521_250, _smp("resnet50"), _ENCODER_NOTES.format(encoder="resnet50", stride=32, minimum=32)
        ),
        "unet_vgg16_bn": _encoder_row(
            "vgg16_bn",
            18_642_434,
            "zoo (counted): the vgg16_bn stages (14,723,136) and a decoder of 4 blocks",
            _ENCODER_NOTES.format(encoder="vgg16_bn", stride=16, minimum=16),
            min_input_size=(16, 16),
        ),
        "unet_convnext_tiny": _encoder_row(
            "convnext_tiny",
            31_922_210,
            "zoo (counted): the convnext_tiny stages (27,818,592) and a decoder of 4 blocks",
            _ENCODER_NOTES.format(encoder="convnext_tiny", stride=32, minimum=32),
        ),
    },
)
class EncoderUNet(ZooSegmenter):
    """A U-Net whose contracting path is a zoo classifier (``model.encoder``) and whose decoder follows its stages.

    Args:
        config: the row (see `EncoderUNetConfig`).
        encoder: any registered classifier name (None: the row's); it is built with
            ``num_classes=0`` and these `in_channels`.
        in_channels: input image channels.
        num_classes: output channels, one logit per class and pixel.
        decoder_widths: the width of each decoder block, deepest first; one per block (the
            encoder's stages less one, plus one when its shallowest stage is below full
            resolution). None: 256, 128, 64, 32, 16, as many as needed.
        batch_norm: batch norm after every decoder conv (which then has no bias).
        upsample: how the decoder up-samples: ``"nearest"`` (segmentation_models_pytorch's) or ``"bilinear"``.
        pad_input: take inputs of any size: mirror-pad to the next multiple of the total stride
            and crop the logits back (see `ZooSegmenter`); off, such inputs raise.
        act_layer: activation after every decoder conv.
        output_stride: the encoder's total stride, for encoders that dilate instead (the
            ResNets: 32, 16, 8 or 4; see `zoo.models.resnet`). None: the encoder's own (32).
            The decoder then has the same blocks, and those whose skip has the deepest
            stage's resolution concatenate without up-sampling; input sizes are multiples of
            `output_stride`.
    """

    def __init__(
        self,
        config: EncoderUNetConfig,
        *,
        encoder: str | None = None,
        in_channels: int = 3,
        num_classes: int = 2,
        decoder_widths: tuple[int, ...] | None = None,
        batch_norm: bool = True,
        upsample: str = "nearest",
        pad_input: bool = False,
        act_layer: LayerFactory | None = nn.ReLU,
        output_stride: int | None = None,
    ) -> None:
        super().__init__()
        owner = "unet"
        name = config.encoder if encoder is None else encoder
        if not isinstance(name, str):
            raise InvalidArgumentError(f"{owner}: encoder must be a registered model name, got {name!r}")
        task = model_info(name).task  # an unknown name raises here, with the closest names
        if task != "classification":
            raise ConfigurationError(
                f"{owner}: the encoder must be a classifier (zoo.list_models(task='classification')); "
                f"{name!r} is a {task} model"
            )
        self.in_channels = check_int(in_channels, "in_channels", owner)
        self.num_classes = check_int(num_classes, "num_classes", owner)
        check_bool(batch_norm, "batch_norm", owner)
        self.pad_input = check_bool(pad_input, "pad_input", owner)
        self.upsample = check_choice(upsample, "upsample", INTERPOLATE, owner)

        self.encoder_name = name
        dilation = {}
        if output_stride is not None:
            if "output_stride" not in inspect.signature(model_class(name)).parameters:
                raise ConfigurationError(
                    f"{owner}: encoder {name} has no output_stride (it cannot dilate instead of striding); "
                    "the ResNet encoders have one"
                )
            dilation = {"output_stride": output_stride}
        self.encoder = create(name, in_channels=in_channels, num_classes=0, **dilation)
        self.encoder.remove_head()  # the decoder reads forward_stages only; the pools and norms of the head go
        channels, strides = tuple(self.encoder.stage_channels), tuple(self.encoder.stage_strides)
        skips = channels[-2::-1] + ((0,) if strides[0] > 1 else ())  # deepest first; 0: up to full size, no skip
        if decoder_widths is None:
            decoder_widths = _default_decoder_widths(len(skips))
        decoder_widths = tuple(decoder_widths)
        if len(decoder_widths) != len(skips) or not all(isinstance(w, int) and w > 0 for w in decoder_widths):
            raise ConfigurationError(
                f"{owner}: encoder {name} (stage strides {strides}) needs {len(skips)} decoder widths (positive ints), "
                f"got decoder_widths={decoder_widths!r}"
            )
        norm = nn.BatchNorm2d if batch_norm else None
        ins = (channels[-1], *decoder_widths[:-1])
        self.decoder = nn.ModuleList(
            DecoderBlock(i, s, o, upsample=self.upsample, norm_layer=norm, act_layer=act_layer)
            for i, s, o in zip(ins, skips, decoder_widths, strict=True)
        )
        self.head = nn.Conv2d(decoder_widths[-1], num_classes, 3, padding=1)
        self.total_stride = strides[-1]
        self.final_resize = strides[0] == 1  # otherwise the last block up-samples to the input's size
        self.encoder_frozen = False
        WeightInit(conv=he_normal("fan_out")).apply(self.decoder, self.head)  # the encoder keeps its own

    def forward_logits(self, x: Tensor) -> Tensor:
        stages = self.encoder.forward_stages(x)  # shallowest first
        y = stages[-1]
        skips = stages[-2::-1]
        for i, block in enumerate(self.decoder):
            skip = skips[i] if i < len(skips) else None
            target = skip if skip is not None else x
            y = block(y, skip, (target.shape[-2], target.shape[-1]))
        if self.final_resize:  # a full-resolution first stage may still have lost a border (LeNet's unpadded conv)
            y = _resize(y, (x.shape[-2], x.shape[-1]), self.upsample)
        return self.head(y)  # (B, num_classes, H, W)

    # ------------------------------------------------------------------ training the decoder alone
    def freeze_encoder(self) -> None:
        """Train the decoder only: the encoder's parameters get ``requires_grad=False`` and the encoder
        stays in eval mode (batch norm uses and keeps its running statistics, dropout is off), even
        under ``model.train()``, until `unfreeze_encoder`. Give the optimizer the parameters that
        still require gradients."""
        self.encoder_frozen = True
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    def unfreeze_encoder(self) -> None:
        """Train the encoder again (``requires_grad=True``, and the model's train/eval mode)."""
        self.encoder_frozen = False
        self.encoder.requires_grad_(True)
        self.encoder.train(self.training)

    def train(self, mode: bool = True) -> EncoderUNet:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    # ------------------------------------------------------------------ sizes
    def spatial_chain(self) -> list[LayerGeometry]:
        """The encoder's main path (the decoder's convs are padded and keep the size)."""
        return [replace(g, name=f"encoder.{g.name}") for g in self.encoder.spatial_chain()]

    @property
    def min_input_size(self) -> tuple[int, int]:
        """The encoder's minimum, rounded up to a multiple of its total stride."""
        s = self.total_stride
        mh, mw = self.encoder.min_input_size
        return -(-mh // s) * s, -(-mw // s) * s

    def nearest_valid_sizes(self, size: int, axis: int = 0) -> tuple[int | None, int | None]:
        fixed = self.encoder.fixed_input_size  # LeNet's classifier fixes its input, and its stages follow
        if fixed is not None:
            return (fixed[axis] if size >= fixed[axis] else None), (fixed[axis] if size <= fixed[axis] else None)
        return nearest_multiples(size, self.total_stride, self.min_input_size[axis])

    def _size_problem(self, size: int, axis: int) -> str:
        if self.encoder.fixed_input_size is not None:
            fh, fw = self.encoder.fixed_input_size
            return f"its encoder {self.encoder_name} takes exactly {fh}x{fw}"
        return f"it is not a multiple of {self.total_stride}, the total stride of its encoder {self.encoder_name}"
