"""SegNet: Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation", IEEE TPAMI 39(12), 2017 (arXiv 2015),
https://arxiv.org/abs/1511.00561.

A segmenter (`zoo.models.base.ZooSegmenter`): ``forward(x)`` returns per-pixel logits
(B, num_classes, H, W), the size of the input. The encoder is the 13 convolutions of VGG16
(``vgg16_bn``'s: 3x3 conv + batch norm + ReLU), in five levels, each ending in a 2x2 max pool
that keeps the position of every maximum (``return_indices=True``). The decoder mirrors it: each
level max-unpools with its encoder level's indices (`zoo.layers.MaxUnpool`: every value back at
the position its maximum came from, zeros elsewhere; nothing learnt) and then densifies the sparse
map with 3x3 conv + batch norm + ReLU layers, the last one of each level narrowing the channels to
the next level's (512, 512, 512 | 512, 512, 256 | 256, 256, 128 | 128, 64 | 64, then a 3x3 conv
to the classes). There are no skip connections: only the indices cross from encoder to decoder.

The layout is the authors' Caffe model (SegNet-Tutorial, ``Models/segnet_train.prototxt``): every
conv has a bias and is followed by batch norm, the pools are 2x2 stride 2 in ceil mode, and the
last decoder conv (``conv1_1_D``) gives the class scores directly, with no norm or ReLU; the
paper's "soft-max classifier" is the softmax of the loss. For 11 classes this is 29,449,355
parameters, counted from that model (no library has SegNet to compare with). The encoder alone,
vgg16_bn's ``features``, is 14,723,136: the paper's "14.7M" for its encoder (Section 3, against
VGG16's 134M with the fully connected layers); the paper's own figure for the whole network was
not checked here (the paper could not be read offline).

Where this departs from the paper, or fills in what it leaves open:
- ``num_classes`` defaults to 11, the CamVid road-scene classes of the paper's Section 4.1; the
  void label is left out of the loss (the Caffe model's ``ignore_label: 11``), not a class.
  The default input is CamVid's 3x360x480, as in the paper.
- The pools run in ceil mode as Caffe's do, so odd sizes lose no row: at 360x480 the maps are
  180x240, 90x120, 45x60, 23x30 and 12x15, and every unpool is given the size its pool saw
  (the Caffe model's ``upsample_h: 23``). So every size is valid, down to 1x1 (a ceil-mode pool
  keeps at least one row), and the output is the input's size.
  torchvision's VGG pools in floor mode; at even sizes the two are the same.
- The encoder's weights import from torchvision's ``vgg16_bn``
  (``zoo.weights.import_weights(model.encoder, torchvision.models.vgg16_bn(weights=...))``; its
  classifier is left out). The paper initialises the encoder from ImageNet VGG16 and the decoder
  with He et al.'s method; here every conv starts with He's normal initialisation (fan-out).
- The card normalises with ImageNet's mean and std (for vgg16_bn's weights); the paper
  uses local contrast normalisation of the input in its Caffe model.
- The decoder's ReLU and batch-norm order is conv, norm, ReLU, as in the Caffe model.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from zoo.arithmetic import CONV_TRANSPOSE, LayerGeometry, module_chain
from zoo.checks import check_bool, check_int
from zoo.layers import ConvNormAct, LayerFactory, MaxUnpool
from zoo.models.base import WeightInit, ZooSegmenter, he_normal
from zoo.registry import Paper, Variant, register_model

PAPER = Paper(
    "SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image Segmentation",
    2017,
    "https://arxiv.org/abs/1511.00561",
    "V. Badrinarayanan, A. Kendall, R. Cipolla",
)


@dataclass(frozen=True)
class SegNetConfig:
    """The encoder's levels: the widths of the 3x3 convs before each 2x2 max pool (VGG16's by default)."""

    levels: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class EncoderLevel(nn.Module):
    """3x3 conv + BN + ReLU layers, then a 2x2 max pool that also returns where each maximum was."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], act_layer: LayerFactory | None) -> None:
        super().__init__()
        chans = (in_channels, *widths)
        self.convs = nn.Sequential(
            *(ConvNormAct(chans[i], chans[i + 1], 3, bias=True, act_layer=act_layer) for i in range(len(widths)))
        )
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True, return_indices=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        x = self.convs(x)
        size = (x.shape[-2], x.shape[-1])
        x, indices = self.pool(x)  # (B, C, ceil(H/2), ceil(W/2))
        return x, indices, size


class DecoderLevel(nn.Module):
    """Max-unpool with the encoder level's indices, then 3x3 conv + BN + ReLU layers (the last sets the width)."""

    def __init__(self, widths: tuple[int, ...], act_layer: LayerFactory | None, *, classes: int | None = None) -> None:
        super().__init__()
        self.unpool = MaxUnpool(2, 2)
        layers = [
            ConvNormAct(widths[i], widths[i + 1], 3, bias=True, act_layer=act_layer) for i in range(len(widths) - 1)
        ]
        if classes is not None:  # the network's last conv: class scores, no norm, no activation
            layers[-1] = ConvNormAct(widths[-2], classes, 3, norm_layer=None, act_layer=None)
        self.convs = nn.Sequential(*layers)

    def forward(self, x: Tensor, indices: Tensor, size: tuple[int, int]) -> Tensor:
        return self.convs(self.unpool(x, indices, size))  # (B, C', H, W)


class SegNetEncoder(nn.Module):
    """SegNet's encoder: the VGG16-BN levels; returns the last pooled map and every level's indices and size."""

    def __init__(self, in_channels: int, config: SegNetConfig, act_layer: LayerFactory | None) -> None:
        super().__init__()
        levels, c = [], in_channels
        for widths in config.levels:
            levels.append(EncoderLevel(c, tuple(widths), act_layer))
            c = widths[-1]
        self.levels = nn.ModuleList(levels)

    def forward(self, x: Tensor) -> tuple[Tensor, list[tuple[Tensor, tuple[int, int]]]]:
        pooled = []
        for level in self.levels:
            x, indices, size = level(x)
            pooled.append((indices, size))
        return x, pooled

    def torchvision_key_map(self) -> dict[str, str]:
        """Our module paths -> torchvision's VGG (``features.N`` counts every conv, norm, ReLU and pool).

        vgg16_bn's ``classifier`` has no counterpart here; mapped to itself, it is left out on import.
        """
        key_map, index = {"classifier": "classifier"}, 0
        for s, level in enumerate(self.levels):
            for j in range(len(level.convs)):
                key_map[f"levels.{s}.convs.{j}.conv"] = f"features.{index}"
                key_map[f"levels.{s}.convs.{j}.norm"] = f"features.{index + 1}"
                index += 3  # conv, norm, ReLU
            index += 1  # the pool
        return key_map


_NOTES = (
    "the paper's SegNet (the authors' Caffe model): the VGG16-BN encoder, a mirrored decoder that max-unpools "
    "with the encoder's pooling indices, 11 CamVid classes at 360x480. Every input size is valid (ceil-mode pools, "
    "unpools to the size each pool saw); the output is the input's size. Encoder weights: "
    "zoo.weights.import_weights(model.encoder, torchvision.models.vgg16_bn(weights=...))."
)


@register_model(
    family="segnet",
    paper=PAPER,
    task="segmentation",
    input_size=(3, 360, 480),
    min_input_size=(1, 1),
    num_classes=11,
    variants={
        "segnet": Variant(
            SegNetConfig(),
            29_449_355,
            "counted from the authors' Caffe model (SegNet-Tutorial, Models/segnet_train.prototxt), 11 classes",
            notes=_NOTES,
        ),
    },
)
class SegNet(ZooSegmenter):
    """SegNet (the paper's network, or another `SegNetConfig`).

    Args:
        config: the encoder's levels (see `SegNetConfig`); the decoder mirrors them.
        in_channels: input image channels.
        num_classes: output channels, one logit per class and pixel (the paper: 11 CamVid classes).
        pad_input: accepted for the segmenter contract; every size is valid, so nothing is ever
            padded.
        act_layer: the activation after every conv but the last.
    """

    weight_init = WeightInit(conv=he_normal("fan_out"))

    def __init__(
        self,
        config: SegNetConfig,
        *,
        in_channels: int = 3,
        num_classes: int = 11,
        pad_input: bool = False,
        act_layer: LayerFactory | None = nn.ReLU,
    ) -> None:
        super().__init__()
        owner = "segnet"
        self.in_channels = check_int(in_channels, "in_channels", owner)
        self.num_classes = check_int(num_classes, "num_classes", owner)
        self.pad_input = check_bool(pad_input, "pad_input", owner)
        for widths in config.levels:
            for w in widths:
                check_int(w, "every width", owner)
        self.encoder = SegNetEncoder(self.in_channels, config, act_layer)
        # the decoder mirrors the encoder: level i goes from its encoder level's last width back to
        # the width that level received (VGG16: 512->512->512->512, ..., 64->64->classes)
        inputs = (self.in_channels, *(widths[-1] for widths in config.levels[:-1]))
        decoder = []
        for i in reversed(range(len(config.levels))):
            widths = tuple(reversed(config.levels[i]))
            decoder.append(DecoderLevel((*widths, inputs[i]), act_layer, classes=num_classes if i == 0 else None))
        self.decoder = nn.ModuleList(decoder)
        self.init_weights()

    def forward_logits(self, x: Tensor) -> Tensor:
        x, pooled = self.encoder(x)  # (B, 512, H/32, W/32) and each level's indices and size
        for level, (indices, size) in zip(self.decoder, reversed(pooled), strict=True):
            x = level(x, indices, size)
        return x  # (B, num_classes, H, W)

    # ------------------------------------------------------------------ sizes
    def spatial_chain(self) -> list[LayerGeometry]:
        """Every conv and pool in order, each unpool as a 2x2 stride-2 up-sampling (a transposed conv's geometry)."""
        chain = []
        for name, module in self.named_modules():
            if isinstance(module, MaxUnpool):
                k, s = module.kernel_size, module.stride
                chain.append(LayerGeometry(name, CONV_TRANSPOSE, (k, k), (s, s), (0, 0)))
            else:
                chain.extend(module_chain([(name, module)]))
        return chain

    def nearest_valid_sizes(self, size: int, axis: int = 0) -> tuple[int | None, int | None]:
        minimum = self.min_input_size[axis]
        return (size, size) if size >= minimum else (None, minimum)

    def _size_problem(self, size: int, axis: int) -> str:
        return f"it is below the minimum {self.min_input_size[axis]}"
