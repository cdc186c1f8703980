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
# ones (convolution, batch norm, layer norm, the matrix products, GELU) cost more than the rest of
# a forward pass together. Their outputs are simple, so `_fast` makes them directly; every
# other operator runs its own meta kernel. tests/test_analysis.py checks that `_fast`
# gives the same shapes, strides and dtypes as torch for every registered model.


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


_UNARY = {aten.gelu.default, aten.tanh.default, aten.sigmoid.default, aten.silu.default, aten.hardswish.default}
_MATMUL = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}
_CONV = aten.convolution.default


def _fast(func: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """The output of a hot operator on meta tensors, or None to run the operator itself."""
    if func in _MATMUL:
        if kwargs.keys() - {"beta", "alpha"}:
            return None
        shape = _matmul_shape(args)
        return None if shape is None else torch.empty(shape, dtype=args[-1].dtype, device="meta")
    if kwargs:
        return None
    if func is _CONV:
        shape = _conv_shape(args)
        return None if shape is None else args[0].new_empty(shape)  # torch's meta conv is contiguous too
    if func is aten.native_batch_norm.default or func is aten._native_batch_norm_legit_no_training.default:
        x, weight = args[0], args[1]
        training = func is aten.native_batch_norm.default and args[5]
        if training or x.dim() < 2 or (weight is not None and weight.shape != (x.shape[1],)):
            return None
        return (torch.empty_like(x), x.new_empty((x.shape[1],)), x.new_empty((x.shape[1],)))
    if func is aten.native_layer_norm.default:
        x, shape, weight = args[0], tuple(args[1]), args[2]
        axis = x.dim() - len(shape)
        if axis < 0 or tuple(x.shape[axis:]) != shape or (weight is not None and tuple(weight.shape) != shape):
            return None
        stats = (*x.shape[:axis], *([1] * len(shape)))
        return (torch.empty(x.shape, dtype=x.dtype, device="meta"), x.new_empty(stats), x.new_empty(stats))
    if func in _UNARY:
        return torch.empty_like(args[0])
    return None


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


class _SkipInit(TorchDispatchMode):
    """While a model is built on the meta device: in-place initialisation (``normal_``, ``zero_``,
    ``trunc_normal_``'s steps, ...) has nothing to write, so it returns at once."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.is_mutable and args and isinstance(args[0], Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


@dataclass
class _Call:
    """One call of a summary layer (`module` None: a skip crop seen at a concatenation)."""

    name: str
    module: nn.Module | None
    input_hw: tuple[int, int] | None = None
    output_shape: tuple[int, ...] = ()
    macs: int = 0
    note: str = ""


class _Run(TorchDispatchMode):
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
