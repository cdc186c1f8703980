"""The model contract every zoo classifier follows (timm's, plus stage information).

- ``forward(x) == forward_head(forward_features(x))``
- ``forward_features(x)``: the last stage's feature map (B, C, H, W);
  ``forward_stages(x)``: every stage's output, shallowest first (a U-Net decoder's skips);
  ``forward_head(features, pre_logits=False)``: pool and classify.
- ``in_channels``, ``num_classes``, ``num_features`` (the width of the pre-logits
  vector), ``stage_channels`` and ``stage_strides`` (one entry per stage),
  ``reset_classifier(num_classes)``; ``num_classes=0`` makes `forward` return the
  pre-logits features.
- The input is checked at the start of `forward_features` / `forward_stages`: a 4-D
  floating-point tensor with ``in_channels`` channels and at least ``min_input_size``
  pixels, which is computed from the model's own layers by `zoo.arithmetic`.

A family builds ``self.stages`` (an `nn.ModuleList` run one after the other) and the
head, and overrides `spatial_chain` when its main path is not simply every conv and
pool in registration order (branches, shortcuts). The head is shared: `forward_head` runs
`head_features` (by default ``global_pool`` then ``head_drop``; a family with more, such as
ConvNeXt's norm or VGG's MLP, overrides it) and then ``fc``, which `reset_classifier` builds
with `make_classifier` (a linear layer unless the family initialises or shapes it otherwise).

The segmenters (`ZooSegmenter`, the U-Nets) share the input checks and arithmetic
(`ZooNetwork`) but not the classifier contract: ``forward(x)`` returns per-pixel logits
(B, num_classes, H_out, W_out), ``output_size((H, W))`` says how large, and an input size
the network cannot take exactly is an error that names the nearest valid sizes, unless
the model was created with ``pad_input=True``.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from zoo.arithmetic import LayerGeometry, collapse_point, min_input_size, module_chain, output_sizes
from zoo.checks import check_int
from zoo.errors import ConfigurationError, InputShapeError
from zoo.layers import mirror_pad


class InceptionOutput(NamedTuple):
    """What a classifier with auxiliary heads returns in training mode (GoogLeNet, Inception-v3).

    A shared type of the model contract: the training task adds the auxiliary losses for any
    model that returns it, whatever its family.
    """

    logits: Tensor
    aux_logits: tuple[Tensor, ...]  # one per auxiliary head, shallowest first


# --------------------------------------------------------------------------- initialisation
LayerInit = Callable[[nn.Module], None]


def _zero_bias(m: nn.Module) -> None:
    if m.bias is not None:
        nn.init.zeros_(m.bias)


def he_normal(mode: str = "fan_out") -> LayerInit:
    """He et al.'s normal initialisation for ReLU networks (`mode` "fan_out" as torchvision, "fan_in" as the
    U-Net paper's std sqrt(2/N)); bias zero."""

    def init(m: nn.Module) -> None:
        nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
        _zero_bias(m)

    return init


def normal(std: float) -> LayerInit:
    """N(0, std^2) weights, bias zero."""

    def init(m: nn.Module) -> None:
        nn.init.normal_(m.weight, 0, std)
        _zero_bias(m)

    return init


def trunc_normal(std: float) -> LayerInit:
    """Truncated normal weights (std `std`, cut at +-2, as timm's and the ConvNeXt paper's code), bias zero."""

    def init(m: nn.Module) -> None:
        nn.init.trunc_normal_(m.weight, std=std)
        _zero_bias(m)

    return init


def fan_in_uniform(scale: float) -> LayerInit:
    """Weights and bias uniform in +-scale / fan_in (LeCun et al. 1998's rule, scale 2.4)."""

    def init(m: nn.Module) -> None:
        bound = scale / m.weight[0].numel()
        nn.init.uniform_(m.weight, -bound, bound)
        nn.init.uniform_(m.bias, -bound, bound)

    return init


@dataclass(frozen=True)
class WeightInit:
    """A family's initialisation policy: one rule for its convolutions, one for its linear layers.

    `apply` visits the modules in registration order (so a seed gives the same weights every
    time); a rule of None keeps torch's default for that layer type, and norm layers keep
    torch's 1 and 0. A family states its policy once, as the class attribute ``weight_init``;
    `make_classifier` initialises a new last layer with the same linear rule.
    """

    conv: LayerInit | None = None
    linear: LayerInit | None = None
    conv_types: tuple[type[nn.Module], ...] = (nn.Conv2d,)

    def apply(self, *modules: nn.Module) -> None:
        for module in modules:
            for m in module.modules():
                if isinstance(m, self.conv_types):
                    if self.conv is not None:
                        self.conv(m)
                elif isinstance(m, nn.Linear) and self.linear is not None:
                    self.linear(m)


#: He (fan-out) convs and N(0, 0.01) linear layers: torchvision's VGG and GoogLeNet/Inception-v3
HE_CONV_NORMAL_LINEAR = WeightInit(conv=he_normal("fan_out"), linear=normal(0.01))


def _lazy_compiler_disable(fn: Any) -> Any:
    """`torch.compiler.disable(fn)`, without importing torch._dynamo (about a second) before it is needed.

    Nothing can be compiling while torch._dynamo is not imported, so until then `fn` runs as it
    is; afterwards through `torch.compiler.disable(fn)`, made once.
    """
    disabled = None

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        nonlocal disabled
        if "torch._dynamo" not in sys.modules or torch.compiler.is_exporting():
            return fn(*args, **kwargs)  # an export traces it instead (strict export cannot skip a function)
        if disabled is None:
            disabled = torch.compiler.disable(fn)
        return disabled(*args, **kwargs)

    return inner


class ZooNetwork(nn.Module):
    """What every zoo network shares: `in_channels`, the input checks and the arithmetic behind them."""

    in_channels: int
    #: models with a flatten before the classifier take exactly one size
    fixed_input_size: tuple[int, int] | None = None
    #: what the loaded pretrained weights need (mean, std, crop size, ...; see zoo.weights.load_weights)
    pretrained_cfg: dict | None = None
    #: the family's initialisation (torch's defaults unless a family states its own)
    weight_init: WeightInit = WeightInit()

    def init_weights(self) -> None:
        """Initialise every layer by the family's `weight_init` policy."""
        self.weight_init.apply(self)

    # ------------------------------------------------------------------ arithmetic
    def spatial_chain(self) -> list[LayerGeometry]:
        """The convs and pools of the main path, in order (see `zoo.arithmetic`)."""
        return module_chain(self.named_modules())

    @property
    def min_input_size(self) -> tuple[int, int]:
        """The smallest (H, W) every layer of the model can take."""
        cached = self.__dict__.get("_min_input_size")
        if cached is None:
            cached = self.fixed_input_size or min_input_size(self.spatial_chain())
            if not torch.compiler.is_compiling():  # a strict export would report the write as a side effect
                self.__dict__["_min_input_size"] = cached
        return cached

    @property
    def model_name(self) -> str:
        card = self.__dict__.get("card")
        return card.name if card is not None else type(self).__name__

    # run eagerly under torch.compile: a break before the first op costs nothing, and the
    # checks (and their errors) stay exactly as without compile. Disabled lazily, so that
    # `import zoo` does not import torch._dynamo (see `_lazy_compiler_disable`).
    @_lazy_compiler_disable
    def check_input(self, x: Tensor) -> None:
        """Raise `InputShapeError` with one clear line if the model cannot take `x`."""
        if torch.jit.is_tracing():  # a trace is specialised to its example input anyway
            return
        self._check_tensor(x)
        self._check_size(x.shape[-2], x.shape[-1])
        if self.training and x.shape[0] == 1:
            self._check_single_sample_batch_norm(x.shape[-2], x.shape[-1])

    def _check_single_sample_batch_norm(self, h: int, w: int) -> None:
        """In training mode, batch norm needs more than one value per channel: a batch of one
        image fails at the first batch norm whose map is 1x1. Name that layer (found once per
        input size from the per-layer shapes of `zoo.analysis.summary`) instead of torch's error."""
        cache = self.__dict__.setdefault("_single_sample_bn", {})
        if (h, w) not in cache:
            cache[(h, w)] = None
            # only where the main path reaches a 1x1 map (the arithmetic says so at once) is a layer looked for
            smallest = min((a * b for a, b in output_sizes(self.spatial_chain(), (h, w))), default=h * w)
            has_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.modules())
            if smallest == 1 and has_norm:
                from zoo.analysis import summary

                rows = summary(self, (self.in_channels, h, w)).layers
                cache[(h, w)] = next(
                    (r.name for r in rows if "BatchNorm" in r.type and math.prod(r.output_shape[2:]) == 1), None
                )
        layer = cache[(h, w)]
        if layer is not None:
            raise InputShapeError(
                f"{self.model_name} in training mode with a batch of 1 image of {h}x{w}: batch norm {layer} sees a "
                "1x1 map, one value per channel, from which it cannot take batch statistics; train with batches of "
                "at least 2 (or larger images), or call model.eval() to predict"
            )

    def _check_tensor(self, x: Tensor) -> None:
        """Rank, dtype and channels."""
        name = self.model_name
        if not isinstance(x, Tensor):
            raise InputShapeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            fix = " Add a batch dimension: x.unsqueeze(0)." if x.dim() == 3 else ""
            raise InputShapeError(
                f"{name} expects a 4-D tensor (batch, channels, height, width), "
                f"got a {x.dim()}-D tensor of shape {tuple(x.shape)}.{fix}"
            )
        if not x.is_floating_point():
            raise InputShapeError(
                f"{name} expects a floating-point tensor, got {x.dtype}; convert it with x.float() "
                "(and scale/normalise images as the model card says)"
            )
        weight = next(self.parameters(), None)
        if weight is not None and x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise InputShapeError(
                f"{name} has {weight.dtype} weights and got a {x.dtype} input; convert the input with "
                f"x.to({weight.dtype}) (or the model with model.to({x.dtype}))"
            )
        if x.shape[1] != self.in_channels:
            raise InputShapeError(
                f"{name} expects {self.in_channels} input channel(s), got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}); create it with in_channels={x.shape[1]} or convert the images"
            )

    def _check_size(self, h: int, w: int) -> None:
        """The spatial size: at least `min_input_size`, or exactly `fixed_input_size`."""
        name = self.model_name
        if self.fixed_input_size is not None:
            fh, fw = self.fixed_input_size
            if (h, w) != (fh, fw):
                raise InputShapeError(
                    f"{name} takes exactly {fh}x{fw} inputs (its classifier has a fixed size), got {h}x{w}; "
                    f"resize or pad the input, or create it with input_size={h}"
                )
            return
        self._check_min_size(h, w, "resize or pad the input")

    def _check_min_size(self, h: int, w: int, advice: str | Callable[[], str]) -> None:
        """The one message for an input below `min_input_size`: where the map collapses, then `advice`
        (or what the function `advice` returns: made only for the message)."""
        mh, mw = self.min_input_size
        if h < mh or w < mw:
            where = collapse_point(self.spatial_chain(), (h, w))
            at = f": the feature map collapses at {where[0]}" if where else ""
            advice = advice if isinstance(advice, str) else advice()
            raise InputShapeError(f"{self.model_name} needs an input of at least {mh}x{mw}, got {h}x{w}{at}; {advice}")


class ZooClassifier(ZooNetwork):
    """Base class of the zoo classifiers: the forward contract (the input checks are `ZooNetwork`'s)."""

    num_classes: int
    num_features: int
    stage_channels: tuple[int, ...]
    stage_strides: tuple[int, ...]
    stages: nn.ModuleList

    # ------------------------------------------------------------------ contract
    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """The output of every stage, shallowest first."""
        self.check_input(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's feature map."""
        self.check_input(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def head_features(self, x: Tensor) -> Tensor:
        """The pre-logits vector (B, num_features) of a feature map: by default global pool, then dropout.

        A family whose head has more (ConvNeXt's norm, VGG's and AlexNet's MLP) says so here.
        """
        return self.head_drop(self.global_pool(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool and classify a feature map (`pre_logits=True` stops before the last linear layer)."""
        x = self.head_features(x)  # (B, num_features)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def make_classifier(self, num_classes: int) -> nn.Module:
        """The last layer for `num_classes` (> 0) outputs: a linear layer, initialised by the family's policy."""
        fc = nn.Linear(self.num_features, num_classes)
        if self.weight_init.linear is not None:
            self.weight_init.linear(fc)
        return fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last layer with a new one for `num_classes` (0: return pre-logits features)."""
        self.num_classes = check_int(num_classes, "num_classes", self.model_name, minimum=0)
        self.fc = self.make_classifier(num_classes) if num_classes else nn.Identity()

    def remove_head(self) -> None:
        """Keep only what `forward_stages` needs, to serve as a feature extractor (a U-Net's encoder).

        Every child module other than `stages` (the head's pools, norms and linear layers, auxiliary
        heads) becomes a `RemovedHead`, which holds no parameters and raises if called: `forward`
        and `forward_head` stop working, `forward_stages` and `forward_features` work as before.
        Importing weights still works; the source's head tensors are left out (`zoo.weights`).
        """
        for name, child in list(self.named_children()):
            if child is not self.stages:
                setattr(self, name, RemovedHead(self.model_name, name))
        self.__dict__.pop("_min_input_size", None)  # the head's pools no longer limit the input


class RemovedHead(nn.Module):
    """What `ZooClassifier.remove_head` leaves in place of a head module: no parameters, an error if called."""

    def __init__(self, model_name: str, name: str) -> None:
        super().__init__()
        self.model_name, self.name = model_name, name

    def forward(self, *args: object) -> None:
        raise ConfigurationError(
            f"{self.model_name} has no {self.name}: its head was removed (remove_head) to use it as a feature "
            "extractor; call forward_stages or forward_features"
        )

    def extra_repr(self) -> str:
        return f"removed {self.name!r}"


class ZooSegmenter(ZooNetwork):
    """Base class of the zoo segmenters: per-pixel logits, the input sizes they take, and optional padding.

    The contract: ``forward(x)`` returns logits (B, num_classes, H_out, W_out) with
    ``(H_out, W_out) == output_size((H, W))``; `in_channels`, `num_classes`, `min_input_size`
    (the smallest valid size), `nearest_valid_sizes`. An input the network cannot take exactly
    raises `InputShapeError` naming the nearest valid sizes. With ``pad_input=True`` any size
    is taken instead: the input is mirrored at the bottom and right (and, for a network whose
    output is smaller than its input, by half the difference all round) to the smallest valid
    size whose output covers it, and the logits are cropped back to the input's size.

    A subclass implements `forward_logits` (the network on an input of a valid size),
    `nearest_valid_sizes`, `_size_problem`, and `_output_axis` if its output is not the
    size of its input. Its output must be centred on its input (the unpadded U-Net's is).
    """

    num_classes: int
    pad_input: bool = False

    def forward_logits(self, x: Tensor) -> Tensor:
        """The network on an input of a valid size, without checks or padding."""
        raise NotImplementedError

    def nearest_valid_sizes(self, size: int, axis: int = 0) -> tuple[int | None, int | None]:
        """The nearest valid input sizes at or below and at or above `size` along `axis` (0: H, 1: W)."""
        raise NotImplementedError

    def _size_problem(self, size: int, axis: int) -> str:
        """Why `size` (at least the minimum, but not valid) cannot be taken, in a few words."""
        raise NotImplementedError

    def _output_axis(self, size: int, axis: int) -> int:
        """The output size along `axis` for a valid input `size`."""
        return size

    def valid_sizes_rule(self, axis: int = 0) -> str:
        """The valid input sizes along `axis` in words, e.g. ``"188 + 16k"`` or ``"multiples of 32"``."""
        first = self.min_input_size[axis]
        following = self.nearest_valid_sizes(first + 1, axis)[1]
        if following is None:
            return f"only {first}"
        step = following - first
        if first % step:
            return f"{first} + {step}k"
        return f"multiples of {step}" + (f" from {first}" if first != step else "")

    def output_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """(H_out, W_out) of the logits for an input of `input_size` (H, W); raises for an invalid size."""
        h, w = input_size
        if self.pad_input:
            return h, w
        self._check_size(h, w)
        return self._output_axis(h, 0), self._output_axis(w, 1)

    def forward(self, x: Tensor) -> Tensor:
        if not self.pad_input:
            self.check_input(x)
            return self.forward_logits(x)
        if not torch.jit.is_tracing():
            self._check_tensor(x)
        h, w = x.shape[-2], x.shape[-1]
        (top, bottom), (left, right) = self._extension(h, 0), self._extension(w, 1)
        logits = self.forward_logits(mirror_pad(x, (left, right, top, bottom)))
        return logits[..., :h, :w]

    def _extension(self, size: int, axis: int) -> tuple[int, int]:
        """The mirror padding (before, after) that takes `size` to the smallest valid size whose output covers it."""
        padded = self.nearest_valid_sizes(size, axis)[1]
        while padded is not None and self._output_axis(padded, axis) < size:
            padded = self.nearest_valid_sizes(padded + 1, axis)[1]
        if padded is None:
            raise InputShapeError(
                f"{self.model_name} cannot be padded to take {size} pixels: its valid sizes are "
                f"{self.valid_sizes_rule(axis)}; crop or resize the input"
            )
        before = (padded - self._output_axis(padded, axis)) // 2  # output pixel j sits over input pixel j + before
        return before, padded - size - before

    def _check_size(self, h: int, w: int) -> None:
        name = self.model_name
        fix = (
            "crop or pad the input, segment it in tiles with zoo.segment(model, image), "
            "or create the model with pad_input=True"
        )
        mh, mw = self.min_input_size
        self._check_min_size(h, w, lambda: f"valid sizes are {self.valid_sizes_rule()}, the smallest {mh}x{mw}; {fix}")
        for axis, size, what in ((0, h, "height"), (1, w, "width")):
            below, above = self.nearest_valid_sizes(size, axis)
            if below != size:
                near = " and ".join(str(n) for n in (below, above) if n is not None)
                raise InputShapeError(
                    f"{name} cannot take an input {what} of {size} (input {h}x{w}): {self._size_problem(size, axis)}; "
                    f"the nearest valid {what}s: {near} ({self.valid_sizes_rule(axis)}); {fix}"
                )


#: the names of the two base classes before they said what they are (kept for code that uses them)
ZooModule = ZooNetwork
ZooModel = ZooClassifier
