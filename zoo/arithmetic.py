"""Convolution arithmetic: output sizes, padding rules, receptive fields, minimum inputs.

Everything here is plain integer arithmetic on one spatial axis at a time, so it runs
without building a model or allocating a tensor. The formulas are the ones torch uses
(Dumoulin & Visin, "A guide to convolution arithmetic for deep learning", 2016,
https://arxiv.org/abs/1603.07285):

    conv / pool:     out = floor((n + 2p - d(k-1) - 1) / s) + 1
    pool, ceil_mode: out = ceil((n + 2p - d(k-1) - 1) / s) + 1, minus one if the last
                     window would start in the right padding
    transposed conv: out = (n - 1)s - 2p + d(k-1) + output_padding + 1

An impossible configuration raises `ConfigurationError` (a `ValueError`) that states
the numbers. With ``exact=True`` a configuration whose stride silently drops border
rows or columns also raises: input 10, kernel 3, stride 2, padding 0 uses rows 0..8
and never reads row 9.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import nn

from zoo.errors import ConfigurationError

CONV = "conv"
POOL = "pool"
CONV_TRANSPOSE = "conv_transpose"


def _check_ints(**values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigurationError(f"{name} must be an integer, got {v!r}")
    for name in ("size", "kernel", "stride", "dilation"):
        if name in values and values[name] < 1:
            raise ConfigurationError(f"{name} must be at least 1, got {values[name]}")
    for name in ("padding", "output_padding"):
        if name in values and values[name] < 0:
            raise ConfigurationError(f"{name} must be non-negative, got {values[name]}")


def _dropped(size: int, span: int, stride: int, what: str) -> None:
    rest = (size - span) % stride
    if rest:
        raise ConfigurationError(
            f"{what}: stride {stride} leaves the last {rest} row(s)/column(s) of the padded input "
            f"({size}) unused; choose an input size or padding that makes "
            f"(padded input - effective kernel) = {size - span} a multiple of {stride}"
        )


def conv_output_size(
    size: int,
    kernel: int,
    stride: int = 1,
    padding: int | str = 0,
    dilation: int = 1,
    *,
    exact: bool = False,
) -> int:
    """Output size of a convolution along one axis.

    `padding` may be an int, ``"valid"`` (0) or ``"same"`` (stride 1 only, as in torch).

    Examples:
        >>> conv_output_size(224, 7, stride=2, padding=3)
        112
        >>> conv_output_size(2, 3)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        zoo.errors.ConfigurationError: conv: the kernel does not fit: input 2 with padding 0 is 2 wide, ...
    """
    padding = resolve_padding(padding, kernel, stride, dilation)
    _check_ints(size=size, kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    span = dilation * (kernel - 1) + 1
    padded = size + 2 * padding
    if padded < span:
        raise ConfigurationError(
            f"conv: the kernel does not fit: input {size} with padding {padding} is {padded} wide, "
            f"kernel {kernel} (dilation {dilation}) spans {span}"
        )
    if exact:
        _dropped(padded, span, stride, f"conv (input {size}, kernel {kernel}, padding {padding})")
    return (padded - span) // stride + 1


def pool_output_size(
    size: int,
    kernel: int,
    stride: int | None = None,
    padding: int = 0,
    dilation: int = 1,
    *,
    ceil_mode: bool = False,
    exact: bool = False,
) -> int:
    """Output size of a max or average pooling along one axis (`stride` defaults to `kernel`).

    Examples:
        >>> pool_output_size(112, 3, stride=2, padding=1)
        56
        >>> pool_output_size(55, 3, stride=2, ceil_mode=True)
        27
    """
    stride = kernel if stride is None else stride
    _check_ints(size=size, kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    span = dilation * (kernel - 1) + 1
    if padding > kernel // 2:
        raise ConfigurationError(
            f"pool: padding {padding} is more than half the kernel {kernel}; torch allows at most {kernel // 2}"
        )
    padded = size + 2 * padding
    if exact and not ceil_mode and padded >= span:
        _dropped(padded, span, stride, f"pool (input {size}, kernel {kernel}, padding {padding})")
    out = _pool_out(size, span, stride, padding, ceil_mode=ceil_mode)
    if out < 1:
        raise ConfigurationError(
            f"pool: the window does not fit: input {size} with padding {padding} is {padded} wide, "
            f"kernel {kernel} (dilation {dilation}) spans {span}"
        )
    return out


def _pool_out(size: int, span: int, stride: int, padding: int, *, ceil_mode: bool) -> int:
    out = (size + 2 * padding - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:  # the last window would start in the padding
        out -= 1
    return out


def conv_transpose_output_size(
    size: int,
    kernel: int,
    stride: int = 1,
    padding: int = 0,
    output_padding: int = 0,
    dilation: int = 1,
) -> int:
    """Output size of a transposed convolution along one axis.

    Examples:
        >>> conv_transpose_output_size(28, 2, stride=2)
        56
    """
    _check_ints(
        size=size, kernel=kernel, stride=stride, padding=padding, output_padding=output_padding, dilation=dilation
    )
    if output_padding >= max(stride, dilation):
        raise ConfigurationError(
            f"conv_transpose: output_padding {output_padding} must be smaller than the stride ({stride}) "
            f"or the dilation ({dilation})"
        )
    out = (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
    if out < 1:
        raise ConfigurationError(
            f"conv_transpose: input {size}, kernel {kernel}, stride {stride}, padding {padding} "
            f"gives output size {out}; reduce the padding"
        )
    return out


def same_padding(kernel: int, dilation: int = 1) -> int:
    """The symmetric padding that keeps the size at stride 1: d(k-1)/2.

    Raises for an even effective kernel, which needs uneven padding (one more on one side).
    """
    _check_ints(kernel=kernel, dilation=dilation)
    span = dilation * (kernel - 1)
    if span % 2:
        raise ConfigurationError(
            f"kernel {kernel} with dilation {dilation} has no symmetric 'same' padding "
            f"(it needs {span // 2} on one side and {span // 2 + 1} on the other); pass padding explicitly"
        )
    return span // 2


def resolve_padding(padding: int | str, kernel: int, stride: int = 1, dilation: int = 1) -> int:
    """Turn ``"same"`` / ``"valid"`` into an int (as torch, "same" requires stride 1)."""
    if padding == "valid":
        return 0
    if padding == "same":
        if stride != 1:
            raise ConfigurationError(
                f"padding='same' needs stride 1 (got stride {stride}), as in torch; pass padding explicitly"
            )
        return same_padding(kernel, dilation)
    if isinstance(padding, str):
        raise ConfigurationError(f"padding must be an int, 'same' or 'valid', got {padding!r}")
    return padding


# --------------------------------------------------------------------------- layers


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


@dataclass(frozen=True)
class LayerGeometry:
    """The spatial arithmetic of one conv, pool or transposed conv layer, per axis (H, W)."""

    name: str
    kind: str  # CONV, POOL or CONV_TRANSPOSE
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False
    output_padding: tuple[int, int] = (0, 0)

    def output_size(self, size: Sequence[int], *, exact: bool = False) -> tuple[int, int]:
        """(H, W) after this layer; raises `ConfigurationError` naming the layer if it cannot be applied."""
        try:
            return tuple(self._axis(size[i], i, exact) for i in range(2))  # type: ignore[return-value]
        except ConfigurationError as e:
            raise ConfigurationError(f"{self.name}: {e}") from None

    def _axis(self, n: int, i: int, exact: bool) -> int:
        k, s, p, d = self.kernel[i], self.stride[i], self.padding[i], self.dilation[i]
        if self.kind == CONV:
            return conv_output_size(n, k, s, p, d, exact=exact)
        if self.kind == POOL:
            return pool_output_size(n, k, s, p, d, ceil_mode=self.ceil_mode, exact=exact)
        return conv_transpose_output_size(n, k, s, p, self.output_padding[i], d)


def layer_geometry(name: str, module: nn.Module) -> LayerGeometry | None:
    """The geometry of a torch layer, or None for a layer that does not change the spatial grid."""
    if isinstance(module, nn.ConvTranspose2d):
        return LayerGeometry(
            name,
            CONV_TRANSPOSE,
            _pair(module.kernel_size),
            _pair(module.stride),
            _pair(module.padding),
            _pair(module.dilation),
            output_padding=_pair(module.output_padding),
        )
    if isinstance(module, nn.Conv2d):
        k, d = _pair(module.kernel_size), _pair(module.dilation)
        if module.padding == "same":
            pad = tuple(same_padding(k[i], d[i]) for i in range(2))
        elif module.padding == "valid":
            pad = (0, 0)
        else:
            pad = _pair(module.padding)
        return LayerGeometry(name, CONV, k, _pair(module.stride), pad, d)  # type: ignore[arg-type]
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)):
        k = _pair(module.kernel_size)
        stride = module.stride if module.stride is not None else module.kernel_size
        padding = getattr(module, "padding", 0)
        dilation = getattr(module, "dilation", 1)
        return LayerGeometry(name, POOL, k, _pair(stride), _pair(padding), _pair(dilation), module.ceil_mode)
    return None


def module_chain(modules: Iterable[tuple[str, nn.Module]]) -> list[LayerGeometry]:
    """The geometries of the spatial layers among `modules` (e.g. ``model.named_modules()``), in order."""
    chain = []
    for name, m in modules:  # (a loop, not a comprehension with `:=`: strict torch.export traces this)
        g = layer_geometry(name, m)
        if g is not None:
            chain.append(g)
    return chain


def output_sizes(chain: Sequence[LayerGeometry], size: Sequence[int], *, exact: bool = False) -> list[tuple[int, int]]:
    """The (H, W) after every layer of a chain, for an input of `size` (H, W)."""
    sizes = []
    hw = (int(size[0]), int(size[1]))
    for layer in chain:
        hw = layer.output_size(hw, exact=exact)
        sizes.append(hw)
    return sizes


def collapse_point(chain: Sequence[LayerGeometry], size: Sequence[int]) -> tuple[str, str] | None:
    """The first layer of `chain` that cannot take an input of `size`, with the reason; None if all can."""
    hw = (int(size[0]), int(size[1]))
    for layer in chain:
        try:
            hw = layer.output_size(hw)
        except ConfigurationError as e:
            return layer.name, str(e)
    return None


def _min_axis_input(chain: Sequence[LayerGeometry], axis: int) -> int:
    need = 1  # every layer must produce at least one row
    for layer in reversed(chain):
        k, s, p, d = layer.kernel[axis], layer.stride[axis], layer.padding[axis], layer.dilation[axis]
        span = d * (k - 1) + 1
        if layer.kind == CONV_TRANSPOSE:
            op = layer.output_padding[axis]
            # smallest n with (n-1)s - 2p + span + op >= need
            need = max(1, -(-(need - span - op + 2 * p) // s) + 1)
        elif layer.kind == POOL and layer.ceil_mode:
            # ceil_mode has no closed-form inverse; the answer is within a stride of the floor one
            n = max(1, (need - 1) * s + span - 2 * p - s)
            while _pool_out(n, span, s, p, ceil_mode=True) < need:
                n += 1
            need = n
        else:
            # smallest n with floor((n + 2p - span) / s) + 1 >= need and n + 2p >= span
            need = max(1, (need - 1) * s + span - 2 * p)
    return need


def min_input_size(chain: Sequence[LayerGeometry]) -> tuple[int, int]:
    """The smallest (H, W) that every layer of a chain can take.

    Examples:
        >>> from torch import nn
        >>> min_input_size(module_chain([("pool", nn.MaxPool2d(2)), ("conv", nn.Conv2d(1, 1, 3))]))
        (6, 6)
    """
    return (_min_axis_input(chain, 0), _min_axis_input(chain, 1))


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field after one layer, per axis (H, W).

    `size`: how many input pixels one output pixel sees; `jump`: the distance in input
    pixels between neighbouring outputs (the cumulative stride); `start`: the input
    coordinate of the centre of the first output's field (negative when it lies in the padding).
    """

    name: str
    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[float, float]


def receptive_fields(chain: Sequence[LayerGeometry]) -> list[ReceptiveField]:
    """Receptive field, jump and start after every layer of a chain of convs and pools.

    Examples:
        >>> from torch import nn
        >>> fields = receptive_fields(module_chain([("c1", nn.Conv2d(1, 1, 3)), ("c2", nn.Conv2d(1, 1, 3))]))
        >>> tuple(r.size[0] for r in fields)
        (3, 5)
    """
    size, jump, start = [1, 1], [1, 1], [0.0, 0.0]
    out = []
    for layer in chain:
        if layer.kind == CONV_TRANSPOSE:
            raise ConfigurationError(f"{layer.name}: receptive fields through a transposed conv are not defined here")
        for i in range(2):
            span = layer.dilation[i] * (layer.kernel[i] - 1) + 1
            start[i] += ((span - 1) / 2 - layer.padding[i]) * jump[i]
            size[i] += (span - 1) * jump[i]
            jump[i] *= layer.stride[i]
        out.append(ReceptiveField(layer.name, (size[0], size[1]), (jump[0], jump[1]), (start[0], start[1])))
    return out


def total_stride(chain: Sequence[LayerGeometry]) -> tuple[int, int]:
    """The product of the strides of a chain (the output stride)."""
    return (math.prod([g.stride[0] for g in chain]), math.prod([g.stride[1] for g in chain]))


# --------------------------------------------------------------------------- valid input sizes


def misfit(chain: Sequence[LayerGeometry], size: int, axis: int = 0) -> tuple[str, int] | None:
    """The first layer of `chain` that cannot take `size` exactly along `axis`, with the size it would get.

    "Exactly" as in ``output_sizes(..., exact=True)``: every layer produces at least one row and
    no stride drops one. An unpadded U-Net needs this of every 2x2 max pool (an even input),
    or its cropped skip connections would not line up. None if every layer fits.

    Examples:
        >>> misfit(unet_chain(4), 570)
        ('down.2.pool', 279)
    """
    n = size
    for layer in chain:
        try:
            n = layer._axis(n, axis, True)
        except ConfigurationError:
            return layer.name, n
    return None


def nearest_valid_sizes(chain: Sequence[LayerGeometry], size: int, axis: int = 0) -> tuple[int | None, int | None]:
    """The nearest sizes at or below and at or above `size` that every layer of `chain` takes exactly.

    None where there is none (below the smallest valid size). The valid sizes of a chain
    repeat with the product of its strides, so one period up and down is searched.

    Examples:
        >>> nearest_valid_sizes(unet_chain(4), 570)  # the paper's U-Net takes 188 + 16k
        (556, 572)
        >>> nearest_valid_sizes(unet_chain(4), 100)
        (None, 188)
    """
    period = math.prod([g.stride[axis] for g in chain])  # (lists: strict torch.export traces this)
    below = next((n for n in range(size, max(size - period, 0), -1) if misfit(chain, n, axis) is None), None)
    start = max(size, _min_axis_input(chain, axis))
    above = next((n for n in range(start, start + period) if misfit(chain, n, axis) is None), None)
    return below, above


def nearest_multiples(size: int, multiple: int, minimum: int = 1) -> tuple[int | None, int]:
    """The nearest multiples of `multiple` at or below and at or above `size`, from `minimum` on.

    Examples:
        >>> nearest_multiples(100, 32)
        (96, 128)
        >>> nearest_multiples(20, 32, minimum=32)
        (None, 32)
    """
    below = size // multiple * multiple
    above = max(-(-size // multiple), -(-minimum // multiple)) * multiple
    return (below if below >= max(minimum, 1) else None), above


def unet_chain(depth: int = 4, num_convs: int = 2, kernel: int = 3, padding: int = 0) -> list[LayerGeometry]:
    """The main path of a U-Net as a chain: `depth` times (`num_convs` convs, a 2x2 max pool), the
    bottom convs, then `depth` times (a 2x2 up-convolution, `num_convs` convs), and the 1x1 head.

    The skip connections are cropped to the up-sampled map, so they do not change its size;
    the layer names are those of `zoo.models.unet.UNet`. The paper's network is ``unet_chain(4)``.
    """

    def convs(prefix: str) -> list[LayerGeometry]:
        k, p = (kernel, kernel), (padding, padding)
        return [LayerGeometry(f"{prefix}.conv{j + 1}.conv", CONV, k, (1, 1), p) for j in range(num_convs)]

    chain: list[LayerGeometry] = []
    for level in range(depth + 1):
        if level:
            chain.append(LayerGeometry(f"down.{level}.pool", POOL, (2, 2), (2, 2), (0, 0)))
        chain += convs(f"down.{level}")
    for level in range(depth):
        chain.append(LayerGeometry(f"up.{level}.up", CONV_TRANSPOSE, (2, 2), (2, 2), (0, 0)))
        chain += convs(f"up.{level}")
    chain.append(LayerGeometry("head", CONV, (1, 1), (1, 1), (0, 0)))
    return chain


def unet_output_size(size: int, depth: int = 4, num_convs: int = 2, kernel: int = 3, padding: int = 0) -> int:
    """Output size of a U-Net (see `unet_chain`) along one axis; the input must fit it exactly.

    For the paper's network (unpadded 3x3 convs, depth 4) the valid inputs are 188 + 16k and
    the output is the input less 184: each level loses 4 pixels per conv pair at its own scale.

    Examples:
        >>> unet_output_size(572)
        388
        >>> unet_output_size(256, padding=1)
        256
    """
    chain = unet_chain(depth, num_convs, kernel, padding)
    bad = misfit(chain, size)
    if bad is not None:
        below, above = nearest_valid_sizes(chain, size)
        raise ConfigurationError(
            f"a U-Net of depth {depth} cannot take an input of size {size}: layer {bad[0]} would get {bad[1]}; "
            f"the nearest valid sizes are {below} (below) and {above} (above)"
        )
    return output_sizes(chain, (size, size), exact=True)[-1][0]
