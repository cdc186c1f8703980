"""Counting on the meta device: MACs from the operators that run, fresh activation bytes, per-layer hooks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

aten = torch.ops.aten
_WEIGHT_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)
_SPATIAL_LAYERS = (nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)


# --------------------------------------------------------------------------- counting
#
# On the meta device most operators run Python meta kernels (decompositions), and the hot
# ones (convolution, batch norm, layer norm, the matrix products, GELU) cost more than the rest
# of a forward pass together; many sit behind torch's dynamo-disabling wrapper, which imports
# torch._dynamo (1-2 s) at its first call, or call torch._check, which imports sympy (0.4 s).
# Their outputs are simple, so `_fast` makes them directly (also elementwise arithmetic,
# pooling, concatenation, reductions, padding), where the layout is plain; every other operator
# runs its own meta kernel. tests/test_analysis.py checks that `_fast` gives the same shapes,
# strides and dtypes as torch for every registered model, and that comparing every model
# imports neither torch._dynamo nor sympy.


def _pairs(values: Sequence[int], n: int) -> list[int]:
    return list(values) * n if len(values) == 1 else list(values)


def _conv_shape(args: Sequence[Any]) -> tuple[int, ...] | None:
    """Output shape of ``aten.convolution`` (None where torch would raise: it then says why)."""
    x, w, _, stride, padding, dilation, transposed, output_padding, groups = args
    n = x.dim() - 2
    if n < 1 or w.dim() != x.dim() or groups < 1:
        return None
    stride, padding, dilation = _pairs(stride, n), _pairs(padding, n), _pairs(dilation, n)
    if transposed:
        if x.shape[1] != w.shape[0] or w.shape[0] % groups:
            return None
        op = _pairs(output_padding, n)
        channels = w.shape[1] * groups
        sizes = [
            (x.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (w.shape[2 + i] - 1) + op[i] + 1
            for i in range(n)
        ]
    else:
        if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
            return None
        channels = w.shape[0]
        sizes = [
            (x.shape[2 + i] + 2 * padding[i] - dilation[i] * (w.shape[2 + i] - 1) - 1) // stride[i] + 1
            for i in range(n)
        ]
    if min(sizes) < 1:
        return None
    return (x.shape[0], channels, *sizes)


def _matmul_shape(args: Sequence[Any]) -> tuple[int, ...] | None:
    a, b = args[-2], args[-1]
    if a.dim() != b.dim() or a.dim() not in (2, 3) or a.shape[-1] != b.shape[-2]:
        return None
    if a.dim() == 3 and a.shape[0] != b.shape[0]:
        return None
    return (*a.shape[:-1], b.shape[-1])


_UNARY = {
    aten.gelu.default,
    aten.tanh.default,
    aten.sigmoid.default,
    aten.silu.default,
    aten.hardswish.default,
    aten.neg.default,
    aten.pow.Tensor_Scalar,
}
_IN_PLACE = {aten.hardtanh_.default, aten.relu_.default, aten.silu_.default, aten.hardswish_.default}
_ELEMENTWISE = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.addcmul.default}
# pooling: (spatial dims, whether it has dilation and indices)
_POOL = {
    aten.max_pool2d_with_indices.default: (2, True),
    aten.avg_pool2d.default: (2, False),
    aten.avg_pool3d.default: (3, False),
}
# reductions, and the position of their dims argument
_REDUCE = {aten.mean.dim: 1, aten.sum.dim_IntList: 1, aten.linalg_vector_norm.default: 2}
_FILLED = {aten.zeros.default, aten.ones.default, aten.full.default}
_META = torch.device("meta")
_MATMUL = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}
_CONV = aten.convolution.default


def _empty(shape: Sequence[int], dtype: torch.dtype, channels_last: bool = False) -> Tensor:
    """A contiguous (or channels_last) meta tensor: ``torch.empty`` has a C++ meta kernel,
    ``new_empty``/``empty_like`` run Python."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=dtype, device="meta", memory_format=fmt)


def _like(x: Tensor) -> Tensor:
    """``torch.empty_like(x)`` for a dense meta tensor: same shape, strides and dtype."""
    return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")


def _dense(x: Tensor) -> bool:
    return x.is_contiguous() or _is_channels_last(x)


def _broadcast(*shapes: Sequence[int]) -> list[int] | None:
    """The shape `shapes` broadcast to, or None where they do not broadcast (torch then says why)."""
    out = [1] * max(len(s) for s in shapes)
    for shape in shapes:
        for i, n in enumerate(shape, start=len(out) - len(shape)):
            if n != out[i] and 1 not in (n, out[i]):
                return None
            out[i] = max(n, out[i])
    return out


def _fast(func: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """The output of a hot operator on meta tensors, or None to run the operator itself."""
    if func in _MATMUL:
        if kwargs.keys() - {"beta", "alpha"}:
            return None
        shape = _matmul_shape(args)
        return None if shape is None else _empty(shape, args[-1].dtype)
    if kwargs:
        return None
    if func is _CONV:
        shape = _conv_shape(args)
        return None if shape is None else _empty(shape, args[0].dtype)  # torch's meta conv is contiguous too
    if func is aten.native_batch_norm.default or func is aten._native_batch_norm_legit_no_training.default:
        x, weight = args[0], args[1]
        training = func is aten.native_batch_norm.default and args[5]
        if training or x.dim() < 2 or not _dense(x) or (weight is not None and weight.shape != (x.shape[1],)):
            return None
        return (_like(x), _empty((x.shape[1],), x.dtype), _empty((x.shape[1],), x.dtype))
    if func is aten.native_layer_norm.default:
        x, shape, weight = args[0], tuple(args[1]), args[2]
        axis = x.dim() - len(shape)
        if axis < 0 or tuple(x.shape[axis:]) != shape or (weight is not None and tuple(weight.shape) != shape):
            return None
        stats = (*x.shape[:axis], *([1] * len(shape)))
        return (_empty(x.shape, x.dtype), _empty(stats, x.dtype), _empty(stats, x.dtype))
    if func in _UNARY:
        return _like(args[0]) if args[0].is_floating_point() and _dense(args[0]) else None
    if func in _IN_PLACE:
        return args[0]
    if func is aten.add_.Tensor and isinstance(args[1], Tensor):  # in place: only if x keeps its shape
        return args[0] if _broadcast(args[0].shape, args[1].shape) == list(args[0].shape) else None
    if func in _ELEMENTWISE:
        return _elementwise(args)
    if func in _POOL:
        return _pool(args, *_POOL[func])
    if func is aten._adaptive_avg_pool2d.default or func is aten.upsample_nearest2d.default:
        x, size = args[0], args[1]
        scaled = len(args) > 2 and any(a is not None for a in args[2:])
        if scaled or x.dim() != 4 or not _dense(x) or min(size) < 1:
            return None
        return _empty_as(x, (*x.shape[:2], *size))
    if func in _REDUCE:
        return _reduce(args, _REDUCE[func])
    if func is aten.cat.default:
        return _cat(args)
    return _other(func, args)


def _other(func: Any, args: Sequence[Any]) -> Any:
    """The rarer operators whose meta kernels are Python (LRN's padding, LeNet's connection table, ...)."""
    x = args[0]
    if not isinstance(x, Tensor) or not x.is_contiguous():
        return None
    if func is aten.constant_pad_nd.default:  # (x, pad, value): pad pairs from the last dim backwards
        pad, shape = list(args[1]), list(x.shape)
        if len(pad) % 2 or len(pad) // 2 > x.dim():
            return None
        for i in range(len(pad) // 2):
            shape[-1 - i] += pad[2 * i] + pad[2 * i + 1]
        return _empty(shape, x.dtype) if min(shape, default=1) >= 1 else None
    if func is aten.index_select.default:  # (x, dim, index)
        dim, index = args[1], args[2]
        if index.dim() > 1 or index.dtype not in (torch.int64, torch.int32) or x.dim() == 0:
            return None
        shape = list(x.shape)
        shape[dim % x.dim()] = index.numel()
        return _empty(shape, x.dtype)
    if func is aten.scatter.src:  # (x, dim, index, src): x's shape
        return _empty(x.shape, x.dtype) if args[3].dtype == x.dtype and args[2].dim() == x.dim() else None
    if func is aten.sort.default:  # (x, dim=-1, descending=False): values and their positions
        return (_empty(x.shape, x.dtype), _empty(x.shape, torch.int64))
    return None


def _is_channels_last(t: Tensor) -> bool:
    """Stored as N, H, W, C (and not also as N, C, H, W: a map with 1x1 spatial size is both)."""
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _elementwise(args: Sequence[Any]) -> Tensor | None:
    """add/sub/mul/div/addcmul of floating tensors of one dtype and Python numbers, where the output's layout
    is plain: every operand contiguous, or the full-size ones channels_last and the others broadcast along one dim."""
    tensors = [a for a in args if isinstance(a, Tensor)]
    numbers = [a for a in args if not isinstance(a, Tensor)]
    if any(type(a) not in (int, float) for a in numbers) or not tensors:
        return None
    dtype = tensors[0].dtype
    if not dtype.is_floating_point or any(t.dtype != dtype or t.dim() == 0 for t in tensors):
        return None
    shape = _broadcast(*(t.shape for t in tensors))
    if shape is None:
        return None
    if all(t.is_contiguous() for t in tensors):
        return _empty(shape, dtype)
    full = [t for t in tensors if list(t.shape) == shape]
    rest = [t for t in tensors if list(t.shape) != shape]
    along_one_dim = all(t.is_contiguous() and t.numel() in t.shape for t in rest)
    if full and all(_is_channels_last(t) for t in full) and along_one_dim:
        return _empty(shape, dtype, channels_last=True)
    return None


def _empty_as(x: Tensor, shape: Sequence[int], dtype: torch.dtype | None = None) -> Tensor:
    """A meta tensor of `shape` in `x`'s memory format (channels_last or contiguous)."""
    return _empty(shape, dtype or x.dtype, channels_last=_is_channels_last(x))


def _pool(args: Sequence[Any], n: int, max_pool: bool) -> Any:
    """max_pool2d_with_indices (output, indices) / avg_pool2d / avg_pool3d of a dense tensor with a batch dim;
    None where torch refuses (it then says why) or the layout is not plain."""
    x = args[0]
    if x.dim() != n + 2 or not x.is_floating_point() or not _dense(x):  # channels_last: 4-D only
        return None
    defaults = [None, None, [], [0], [1], False] if max_pool else [None, None, [], [0], False, True, None]
    full = [*args, *defaults[len(args) :]]
    kernel, stride, padding = _pairs(full[1], n), _pairs(full[2] or full[1], n), _pairs(full[3], n)
    dilation, ceil_mode = (_pairs(full[4], n), full[5]) if max_pool else ([1] * n, full[4])
    if not len(kernel) == len(stride) == len(padding) == len(dilation) == n:
        return None
    if not max_pool and full[6] is not None:  # divisor_override
        return None
    sizes = []
    for size, k, st, p, d in zip(x.shape[2:], kernel, stride, padding, dilation, strict=True):
        span = d * (k - 1) + 1
        if min(k, st, d) < 1 or p < 0 or 2 * p > span or size + 2 * p < span:
            return None  # torch says why
        out = (size + 2 * p - span + (st - 1 if ceil_mode else 0)) // st + 1
        if ceil_mode and (out - 1) * st >= size + p:  # the last window must start inside the input
            out -= 1
        sizes.append(out)
    shape = (*x.shape[:2], *sizes)
    return (_empty_as(x, shape), _empty_as(x, shape, torch.int64)) if max_pool else _empty_as(x, shape)


def _reduce(args: Sequence[Any], at: int) -> Tensor | None:
    """mean / sum / a vector norm over dims of a floating tensor (torch's output is contiguous, whatever the input)."""
    x = args[0]
    if len(args) <= at or not x.is_floating_point() or x.dim() == 0:
        return None
    dims, keepdim = args[at], args[at + 1] if len(args) > at + 1 else False
    if not isinstance(dims, (list, tuple)) or not dims:
        return None
    axes = {d % x.dim() for d in dims}
    if len(axes) != len(dims):
        return None
    shape = [1 if i in axes else n for i, n in enumerate(x.shape) if keepdim or i not in axes]
    return _empty(shape, x.dtype)


def _cat(args: Sequence[Any]) -> Tensor | None:
    """Concatenation of same-rank floating tensors: channels_last if every input is, else contiguous."""
    tensors, dim = args[0], args[1] if len(args) > 1 else 0
    if not tensors or not all(isinstance(t, Tensor) for t in tensors):
        return None
    first = tensors[0]
    rank, dtype = first.dim(), first.dtype
    if rank == 0 or not dtype.is_floating_point:
        return None
    dim %= rank
    for t in tensors:
        if t.dim() != rank or t.dtype != dtype or any(t.shape[i] != first.shape[i] for i in range(rank) if i != dim):
            return None
        ordered = all(t.stride(i) >= t.stride(i + 1) for i in range(rank - 1)) and t.stride(-1) == 1
        if not (ordered or _is_channels_last(t)):
            return None  # another layout: torch decides
    shape = list(first.shape)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    return _empty(shape, dtype, channels_last=all(_is_channels_last(t) for t in tensors))


def _macs(func: Any, args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> int:
    """Multiply-accumulates of one operator: convolutions and matrix products (see the module docstring)."""
    if func is _CONV:
        x, w, transposed = args[0], args[1], args[6]
        # every output position (input position, for a transposed conv) takes one MAC per weight
        return x.shape[0] * math.prod((x if transposed else out).shape[2:]) * math.prod(w.shape)
    if func in _MATMUL:
        a, b = args[-2], args[-1]
        return math.prod(a.shape) * b.shape[-1]
    formula = flop_registry.get(func._overloadpacket)  # other products torch knows (attention, ...)
    return 0 if formula is None else formula(*args, **kwargs, out_val=out) // 2


class _Mode(TorchDispatchMode):
    """A dispatch mode that never runs under torch.compile: torch would otherwise wrap its
    ``__torch_dispatch__`` in a dynamo-disabling wrapper, which imports torch._dynamo (about a
    second) at the first operator and costs a little at every one."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False


def _filled(func: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> Tensor | None:
    """``torch.zeros``/``ones``/``full`` on the meta device (their meta kernels are Python), or None."""
    if kwargs.keys() - {"dtype", "device", "layout", "pin_memory"} or kwargs.get("layout") not in (None, torch.strided):
        return None
    dtype = kwargs.get("dtype")
    if dtype is None and func is aten.full.default:  # the fill value's type decides
        dtype = {bool: torch.bool, int: torch.int64, float: torch.get_default_dtype()}.get(type(args[1]))
    elif dtype is None:
        dtype = torch.get_default_dtype()
    return None if dtype is None else _empty(args[0], dtype)


class _SkipInit(_Mode):
    """While a model is built on the meta device: in-place initialisation (``normal_``, ``zero_``,
    ``trunc_normal_``'s steps, ...) has nothing to write, so it returns at once."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FILLED and kwargs.get("device") == _META:
            out = _filled(func, args, kwargs)  # zeros, ones, full: nothing to fill
            if out is not None:
                return out
        if args and isinstance(args[0], Tensor) and args[0].is_meta:
            if func._schema.is_mutable:
                return args[0]
            if all(a.is_meta for a in args if isinstance(a, Tensor)):
                out = _fast(func, args, kwargs)
                if out is not None:
                    return out
        return func(*args, **kwargs)


@dataclass
class _Call:
    """One call of a summary layer (`module` None: a skip crop seen at a concatenation)."""

    name: str
    module: nn.Module | None
    input_hw: tuple[int, int] | None = None
    output_shape: tuple[int, ...] = ()
    macs: int = 0
    note: str = ""


class _Run(_Mode):
    """Counts MACs and written bytes per operator, and which tensors (parameters) the forward reads.

    For `summary`, module hooks keep `modules` (the modules running, innermost last) and
    `rows` (the summary layers running); MACs go to the innermost row.
    """

    def __init__(self) -> None:
        super().__init__()
        self.modules: list[str] = []
        self.rows: list[_Call] = []
        self.calls: list[_Call] = []  # summary rows in execution order
        self.read: set[int] = set()  # id() of every tensor an operator took
        self.macs = 0
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = None
        if all(a.is_meta for a in args if isinstance(a, Tensor)):
            out = _fast(func, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        for a in args:
            if isinstance(a, Tensor):
                self.read.add(id(a))
        macs = _macs(func, args, kwargs, out)
        if macs:
            self.macs += macs
            if self.rows:
                self.rows[-1].macs += macs
        self.bytes += _fresh_bytes(func, out)
        if func is aten.cat.default and self.modules:
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            for t, note in _crops(args[0], dim):
                self.calls.append(_Call(self.modules[-1], None, output_shape=tuple(t.shape), note=note))
        return out


def _fresh_bytes(func: Any, out: Any) -> int:
    """Bytes of the floating-point result `func` allocated: 0 for a view or an in-place result.

    Only the first result counts: the others are by-products (BatchNorm's and LayerNorm's
    statistics, max pooling's indices), not feature maps.
    """
    t = out[0] if isinstance(out, (tuple, list)) and out else out
    if isinstance(t, Tensor) and func._schema.returns[0].alias_info is None and t.is_floating_point():
        return t.numel() * t.element_size()
    return 0


def _crops(tensors: Sequence[Tensor], dim: int) -> list[tuple[Tensor, str]]:
    """Skips cropped before a channel concatenation: views of a spatially larger feature map."""
    notes = []
    for t in tensors:
        base = t._base
        if t.dim() == 4 and dim in (1, -3) and base is not None and base.dim() == 4 and base.shape[-2:] != t.shape[-2:]:
            (bh, bw), (h, w) = base.shape[-2:], t.shape[-2:]
            side = f" ({(bh - h) // 2} px off each side)" if bh - h == bw - w and (bh - h) % 2 == 0 else ""
            notes.append((t, f"skip cropped {bh}x{bw} -> {h}x{w}{side} before concatenation"))
    return notes


def _is_row(module: nn.Module) -> bool:
    """A layer of the summary: no children, or parameters of its own (ConvNeXt's layer scale)."""
    return not any(True for _ in module.children()) or any(True for _ in module.parameters(recurse=False))


def _first_tensor(x: Any) -> Tensor | None:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (tuple, list)):
        for item in x:
            t = _first_tensor(item)
            if t is not None:
                return t
    return None


def _hooks(model: nn.Module, run: _Run) -> list[Any]:
    handles = []
    for name, module in model.named_modules():
        row = _is_row(module)

        def pre(m: nn.Module, args: tuple, *, _name: str = name, _row: bool = row) -> None:
            run.modules.append(_name or type(m).__name__)
            if _row:
                t = _first_tensor(args)
                hw = tuple(t.shape[-2:]) if t is not None and t.dim() == 4 else None
                call = _Call(run.modules[-1], m, hw)  # type: ignore[arg-type]
                run.calls.append(call)
                run.rows.append(call)

        def post(m: nn.Module, args: tuple, out: Any, *, _row: bool = row) -> None:
            run.modules.pop()
            if _row:
                call = run.rows.pop()
                t = _first_tensor(out)
                call.output_shape = tuple(t.shape) if t is not None else ()

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post, always_call=True))
    return handles


def _run(model: nn.Module, x: Tensor, state: dict[str, Tensor], *, meta_copy: bool, layers: bool) -> _Run:
    """Run `model` on `x` in eval mode without gradients, counting (see `_Run`)."""
    run = _Run()
    handles = _hooks(model, run) if layers else []
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with torch.no_grad(), run:
            if meta_copy:
                torch.func.functional_call(model, state, (x,))
            else:
                model(x)
    finally:
        for h in handles:
            h.remove()
        if was_training:
            model.train()
    return run
