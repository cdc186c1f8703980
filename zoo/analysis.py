"""Inspect and compare models: parameters, MACs, activation memory, receptive field.

Everything is computed on the ``meta`` device: a model built by name is constructed
there (``with torch.device("meta"): zoo.create(name)``) and run once in eval mode on a
meta input, so no weight or feature map is ever allocated and even ConvNeXt-XL takes
a fraction of a second. A model you pass in is run through `torch.func.functional_call`
with meta copies of its parameters and buffers, so it is not touched either.

What is counted, and how (the definitions the columns of `zoo compare` use):

- **MACs** (multiply-accumulates): the convolutions and matrix products the forward pass
  runs (``aten.convolution``, ``mm``, ``addmm``, ``bmm``, ...), counted from their shapes
  at batch 1 with the formulas of `torch.utils.flop_counter` (the tests check ours against
  them). Normalisation, pooling,
  activations, additions and bias terms are not counted: this is the convention of
  torchvision's model metadata, so our numbers can be compared with its ``_ops``.
  Because the count is taken from the operators that actually run, a linear layer applied
  to a 4-D tensor (ConvNeXt's MLP on (B, H, W, C)) counts all H*W positions (torchinfo
  counts one and reports 0.32 GMACs for ConvNeXt-T instead of 4.46).
- **FLOPs** = 2 x MACs (one multiply and one add). Torchvision's documentation labels its
  ``_ops`` column "GFLOPS", but the numbers are GMACs: ResNet-50 is 4.09 GMACs, 8.18 GFLOPs.
- **Parameters**: total and trainable (``requires_grad``), and split by the model
  contract: *stem* is the first stage's ``stem`` module where it has one (ResNet,
  ConvNeXt), otherwise the whole first stage ``stages[0]`` (VGG's first conv block,
  AlexNet's conv1, the Inception stems, LeNet's C1); *stages* is the rest of ``stages``;
  *head* is every parameter outside ``stages`` that the eval forward uses (pooling,
  classifier); *unused* ("aux" in the tables) is what the eval forward never reads (the
  Inception auxiliary classifiers, which run only in training). A model without ``stages`` (not a classifier)
  has no split.
- **Activations**: the bytes of every floating-point tensor the eval forward pass writes
  at batch 1, in the input's dtype (float32): each operator's fresh result, while views
  and in-place operators (``relu_``, ``x += shortcut``) add nothing, and by-products
  (normalisation statistics, pooling indices) are left out. It is the memory the
  feature maps would take if none were freed, close to what training keeps for the
  backward pass; it does not depend on how the code is split into modules (as torchinfo's
  sum of module outputs does). Inference at batch 1 peaks well below it.
- **Weights**: parameters and floating-point buffers (BatchNorm running statistics),
  as a state dict stores them, in MB (10^6 bytes) at 4 bytes (fp32) and 2 bytes (bf16) each.
- **Layers**: the conv and linear modules (``nn.Conv*d``, ``nn.ConvTranspose*d``,
  ``nn.Linear``) the eval forward runs, every branch and shortcut included (ResNet-50:
  49 + 4 shortcut convs + 1 fc = 54), so not the name's "depth" of the main path.
- **Receptive field** and **output stride**: of one position of the last feature map of
  ``model.spatial_chain()`` (the main path), by `zoo.arithmetic.receptive_fields`; through
  a transposed conv (U-Net's decoder) the jump divides by its stride and the field grows by
  ``ceil(kernel / stride) - 1`` input positions.
- **Minimum input**: ``model.min_input_size``.

>>> stats = analyze("resnet50")
>>> round(stats.gmacs, 3), stats.params, stats.output_stride
(4.089, 25557032, (32, 32))
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from zoo.arithmetic import CONV_TRANSPOSE, POOL, LayerGeometry, layer_geometry, receptive_fields
from zoo.errors import ConfigurationError, InvalidArgumentError, ZooError
from zoo.registry import list_models, model_info

__all__ = [
    "LayerStats",
    "ModelStats",
    "Summary",
    "analyze",
    "compare",
    "models_markdown",
    "parse_input_size",
    "plot",
    "render",
    "summary",
]

aten = torch.ops.aten
_WEIGHT_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)
_SPATIAL_LAYERS = (nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class LayerStats:
    """One row of `summary`: a layer (a module with no children, or with parameters of its own).

    `receptive_field` and `jump` (cumulative stride) are given for the layers of the
    main path (``spatial_chain``); `note` flags a stride that drops border rows/columns
    or a skip connection cropped before concatenation.
    """

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    receptive_field: tuple[int, int] | None = None
    jump: tuple[float, float] | None = None
    note: str = ""


@dataclass(frozen=True)
class ModelStats:
    """Everything `analyze` measures for one model at one input size (see the module docstring).

    `error` says why the model cannot take the input; the input-dependent numbers are then None.
    """

    name: str
    family: str
    task: str
    paper: str
    year: int
    input_size: tuple[int, int, int]
    params: int
    trainable_params: int
    params_stem: int | None
    params_stages: int | None
    params_head: int | None
    params_unused: int | None
    weights_mb_fp32: float
    weights_mb_bf16: float
    min_input_size: tuple[int, int] | None
    receptive_field: tuple[int, int] | None
    output_stride: tuple[float, float] | None
    macs: int | None = None
    activations_mb: float | None = None
    layers: int | None = None
    error: str | None = None

    @property
    def flops(self) -> int | None:
        """2 x MACs."""
        return None if self.macs is None else 2 * self.macs

    @property
    def gmacs(self) -> float | None:
        return None if self.macs is None else self.macs / 1e9

    @property
    def gflops(self) -> float | None:
        return None if self.macs is None else 2 * self.macs / 1e9

    def as_dict(self) -> dict[str, Any]:
        """Plain data (lists for tuples), with `flops` added."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        d["flops"] = self.flops
        return d


@dataclass(frozen=True)
class Summary:
    """`summary`'s result: the model's totals and one `LayerStats` per layer in execution order."""

    stats: ModelStats
    layers: list[LayerStats] = field(default_factory=list)

    def to_text(self) -> str:
        """The per-layer table and the totals, as `zoo summary` prints them."""
        return _summary_text(self)


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


# --------------------------------------------------------------------------- analysis


def parse_input_size(text: str | int | Sequence[int], channels: int | None = None) -> tuple[int | None, int, int]:
    """``"224"``, ``"224x192"`` (H x W) or ``"3x224x224"`` (C x H x W) -> (C or `channels`, H, W).

    >>> parse_input_size("3x224x224"), parse_input_size(32, channels=1)
    ((3, 224, 224), (1, 32, 32))
    """
    if isinstance(text, int):
        parts: list[Any] = [text]
    elif isinstance(text, str):
        parts = text.lower().replace("×", "x").split("x")
    else:
        parts = list(text)
    try:
        values = [int(p) for p in parts]
    except (TypeError, ValueError):
        values = []
    if not 1 <= len(values) <= 3 or any(v < 1 for v in values):
        raise InvalidArgumentError(
            f"input size {text!r} is not understood; give S, HxW or CxHxW with positive integers, e.g. 3x224x224"
        )
    if len(values) == 1:
        return (channels, values[0], values[0])
    if len(values) == 2:
        return (channels, values[0], values[1])
    return (values[0], values[1], values[2])


def _build(name: str, input_size: Any) -> tuple[nn.Module, tuple[int, int, int]]:
    card = model_info(name)
    c, h, w = parse_input_size(input_size, card.input_size[0]) if input_size is not None else card.input_size
    overrides = {} if c == card.input_size[0] else {"in_channels": c}
    from zoo.registry import create

    with torch.device("meta"), _SkipInit():
        model = create(name, **overrides).eval()
    return model, (c, h, w)  # type: ignore[return-value]


def _param_split(model: nn.Module, params: dict[str, Tensor], read: set[str] | None) -> tuple[int | None, ...]:
    """(stem, stages, head, unused) parameter counts; see the module docstring."""
    stages = getattr(model, "stages", None)
    if not isinstance(stages, nn.Module) or not len(stages):  # type: ignore[arg-type]
        return (None, None, None, None)
    stem = "stages.0.stem." if isinstance(getattr(stages[0], "stem", None), nn.Module) else "stages.0."  # type: ignore[index]
    n_stem = n_stages = head = unused = 0
    for name, p in params.items():
        if name.startswith(stem):
            n_stem += p.numel()
        elif name.startswith("stages."):
            n_stages += p.numel()
        elif read is None or name in read:
            head += p.numel()
        else:
            unused += p.numel()
    return (n_stem, n_stages, head, None if read is None else unused)


def _weight_layers(modules: Iterable[tuple[str, nn.Module]], read: set[str]) -> int:
    """The conv and linear modules whose weight the forward read."""
    return sum(1 for n, m in modules if isinstance(m, _WEIGHT_LAYERS) and f"{n}.weight" in read)


def _chain_fields(chain: Sequence[LayerGeometry]) -> list[tuple[str, tuple[int, int], tuple[float, float]]]:
    """(name, receptive field, jump) after every layer of a chain; transposed convs included."""
    if not any(g.kind == CONV_TRANSPOSE for g in chain):
        return [(r.name, r.size, (float(r.jump[0]), float(r.jump[1]))) for r in receptive_fields(chain)]
    size, jump, out = [1, 1], [1.0, 1.0], []
    for g in chain:
        for i in range(2):
            span = g.dilation[i] * (g.kernel[i] - 1) + 1
            if g.kind == CONV_TRANSPOSE:
                # an output position of a transposed conv reads ceil(span / stride) input positions
                size[i] += int((math.ceil(span / g.stride[i]) - 1) * jump[i])
                jump[i] /= g.stride[i]
            else:
                size[i] += int((span - 1) * jump[i])
                jump[i] *= g.stride[i]
        out.append((g.name, (size[0], size[1]), (jump[0], jump[1])))
    return out


def _stride(jump: tuple[float, float]) -> tuple[float, float]:
    return tuple(int(j) if float(j).is_integer() else j for j in jump)  # type: ignore[return-value]


def _analyze(
    model: nn.Module, input_size: tuple[int, int, int], *, name: str, meta_copy: bool, layers: bool = False
) -> tuple[ModelStats, _Run | None]:
    card = getattr(model, "card", None)
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    chain_fn = getattr(model, "spatial_chain", None)
    fields = _chain_fields(chain_fn()) if callable(chain_fn) else []
    min_size = getattr(model, "min_input_size", None)
    # what a state dict stores: parameters and floating-point buffers (BatchNorm statistics)
    stored = sum(p.numel() for p in params.values()) + sum(b.numel() for b in buffers.values() if b.is_floating_point())
    state = {**params, **buffers}
    device = next((t.device for t in state.values()), torch.device("cpu"))
    if meta_copy:
        state = {k: torch.empty_like(v, device="meta") for k, v in state.items()}
    x = torch.empty((1, *input_size), device="meta" if meta_copy else device)
    run, read, error = None, None, None
    try:
        run = _run(model, x, state, meta_copy=meta_copy, layers=layers)
        read = {k for k, v in state.items() if id(v) in run.read}
    except (ZooError, RuntimeError, ValueError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        error = message if isinstance(e, ZooError) else f"{type(e).__name__}: {message}"
    split = _param_split(model, params, read)
    stats = ModelStats(
        name=name,
        family=card.family if card else type(model).__name__,
        task=card.task if card else "",
        paper=card.paper.title if card else "",
        year=card.paper.year if card else 0,
        input_size=tuple(input_size),  # type: ignore[arg-type]
        params=sum(p.numel() for p in params.values()),
        trainable_params=sum(p.numel() for p in params.values() if p.requires_grad),
        params_stem=split[0],
        params_stages=split[1],
        params_head=split[2],
        params_unused=split[3],
        weights_mb_fp32=4 * stored / 1e6,
        weights_mb_bf16=2 * stored / 1e6,
        min_input_size=tuple(min_size) if min_size is not None else None,  # type: ignore[arg-type]
        receptive_field=fields[-1][1] if fields else None,
        output_stride=_stride(fields[-1][2]) if fields else None,
        macs=run.macs if run else None,
        activations_mb=run.bytes / 1e6 if run else None,
        layers=None if read is None else _weight_layers(model.named_modules(), read),
        error=error,
    )
    return stats, run


def _resolve(model: str | nn.Module, input_size: Any) -> tuple[nn.Module, tuple[int, int, int], str, bool]:
    if isinstance(model, str):
        built, size = _build(model, input_size)
        return built, size, model_info(model).name, False
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"expected a model name or an nn.Module, got {type(model).__name__}")
    channels = getattr(model, "in_channels", None)
    card = getattr(model, "card", None)
    if input_size is None:
        if card is None:
            raise InvalidArgumentError("give input_size for a model without a zoo model card, e.g. input_size=224")
        size = card.input_size
    else:
        size = parse_input_size(input_size, channels)
        if size[0] is None:
            raise InvalidArgumentError("give the input channels for this model: input_size='CxHxW'")
    name = card.name if card is not None else type(model).__name__
    return model, size, name, True  # type: ignore[return-value]


def analyze(model: str | nn.Module, input_size: str | int | Sequence[int] | None = None) -> ModelStats:
    """Parameters, MACs, activations, weights, layers, receptive field of one model (see the module docstring).

    Args:
        model: a registered name (built on the meta device) or a model instance (run with
            meta copies of its tensors, so nothing is allocated and the model is untouched).
        input_size: ``224``, ``"HxW"`` or ``"CxHxW"``; default: the model card's input size.
            A channel count other than the card's builds the model with that `in_channels`.

    A model that cannot take the input comes back with `error` set, not as an exception.
    """
    built, size, name, meta_copy = _resolve(model, input_size)
    return _analyze(built, size, name=name, meta_copy=meta_copy)[0]


def summary(model: str | nn.Module, input_size: str | int | Sequence[int] | None = None) -> Summary:
    """Per-layer table of a model: output shape, parameters, MACs, receptive field, and flags.

    A conv or pool whose stride silently drops border rows/columns at this input size is
    flagged (`zoo.arithmetic`'s exact mode on the layer's actual input), and so is every
    skip connection cropped before it is concatenated (the paper's U-Net).
    """
    built, size, name, meta_copy = _resolve(model, input_size)
    stats, run = _analyze(built, size, name=name, meta_copy=meta_copy, layers=True)
    if run is None:
        raise ConfigurationError(f"{name} cannot take a {'x'.join(map(str, size))} input: {stats.error}")
    chain_fn = getattr(built, "spatial_chain", None)
    fields = {n: (rf, jump) for n, rf, jump in _chain_fields(chain_fn())} if callable(chain_fn) else {}
    rows = []
    for call in run.calls:
        if call.module is None:  # a skip crop
            rows.append(LayerStats(call.name, "(skip crop)", call.output_shape, 0, 0, note=call.note))
            continue
        notes = []
        if isinstance(call.module, _SPATIAL_LAYERS) and call.input_hw is not None:
            notes += _dropped_border(call.name, call.module, call.input_hw)
        rf, jump = fields.get(call.name, (None, None))
        rows.append(
            LayerStats(
                name=call.name,
                type=type(call.module).__name__,
                output_shape=call.output_shape,
                params=sum(p.numel() for p in call.module.parameters(recurse=False)),
                macs=call.macs,
                receptive_field=rf,
                jump=_stride(jump) if jump else None,
                note="; ".join(notes),
            )
        )
    return Summary(stats, rows)


def _dropped_border(name: str, module: nn.Module, hw: tuple[int, int]) -> list[str]:
    """A note if the layer's stride leaves the last rows or columns of its input unread.

    `zoo.arithmetic`'s exact mode flags a stride that leaves the end of the *padded* input
    unused; here only real input counts: AlexNet's 11x11/4 conv at 224 leaves one of its
    two bottom padding rows unused and reads every image row, so it is not flagged (at 226
    it drops a row). A layer whose window is narrower than its stride (a 1x1/2 shortcut)
    skips every other row by design and is not flagged either.
    """
    geometry = layer_geometry(name, module)
    if geometry is None or geometry.kind == CONV_TRANSPOSE or (geometry.kind == POOL and geometry.ceil_mode):
        return []
    try:
        geometry.output_size(hw, exact=True)
        return []
    except ConfigurationError:
        pass
    dropped = []
    for axis, what in ((0, "row"), (1, "column")):
        k, s, p, d = geometry.kernel[axis], geometry.stride[axis], geometry.padding[axis], geometry.dilation[axis]
        span = d * (k - 1) + 1
        lost = (hw[axis] + 2 * p - span) % s - p  # unread rows beyond the padding
        if span >= s and lost > 0:
            dropped.append(f"{lost} {what}{'s' if lost > 1 else ''}")
    if not dropped:
        return []
    stride = _pair_text(geometry.stride)
    return [f"stride {stride} never reads the last {' and '.join(dropped)} of its {hw[0]}x{hw[1]} input"]


# --------------------------------------------------------------------------- compare

SORT_KEYS = {
    "name": lambda s: s.name,
    "family": lambda s: (s.family, s.name),
    "year": lambda s: (s.year, s.name),
    "params": lambda s: s.params,
    "macs": lambda s: s.macs,
    "flops": lambda s: s.macs,
    "activations": lambda s: s.activations_mb,
    "weights": lambda s: s.weights_mb_fp32,
    "layers": lambda s: s.layers,
    "rf": lambda s: s.receptive_field[0] if s.receptive_field else None,
}


def compare(
    names: Iterable[str] | None = None,
    input_size: str | int | Sequence[int] | None = None,
    *,
    sort: str | None = None,
) -> list[ModelStats]:
    """`analyze` for several models (default: every registered one), one `ModelStats` each.

    Each model runs at `input_size` if given, else at its card's default size. A model
    that cannot take the input stays in the list with `error` saying why. `sort` is one of
    `SORT_KEYS` (ascending; rows without the value last). Render with `render`.

    >>> rows = compare(["alexnet", "lenet5"], input_size=224)
    >>> print(", ".join(f"{r.name}: {'ok' if r.error is None else 'cannot'}" for r in rows))
    alexnet: ok, lenet5: cannot
    """
    if isinstance(names, str):
        names = [names]
    names = list_models() if names is None else [model_info(n).name for n in names]  # unknown names fail first
    if sort is not None and sort not in SORT_KEYS:
        raise InvalidArgumentError(f"unknown sort key {sort!r}; choose one of {', '.join(SORT_KEYS)}")
    if input_size is not None:
        parse_input_size(input_size)  # a malformed size fails before anything is built
    rows = [analyze(n, input_size) for n in names]
    if sort is not None:
        key = SORT_KEYS[sort]
        rows = sorted((r for r in rows if key(r) is not None), key=key) + [r for r in rows if key(r) is None]
    return rows


def _num(x: float | None) -> str:
    """2 decimals from 1 up, 3 significant digits below (0.270, 0.0617)."""
    if x is None:
        return "-"
    return f"{x:.2f}" if x >= 1 or x == 0 else f"{x:.3g}"


def _g(n: int | None) -> str:
    """Giga, 3 decimals (as torchvision's metadata) or 3 significant digits below 0.01."""
    if n is None:
        return "-"
    return f"{n / 1e9:.3f}" if n >= 1e7 or n == 0 else f"{n / 1e9:.3g}"


def _pair_text(p: Sequence[Any] | None) -> str:
    if p is None:
        return "-"
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"


_COLUMNS = (
    ("model", "l"),
    ("family", "l"),
    ("input", "l"),
    ("params", "r"),
    ("stem / stages / head M", "r"),
    ("GMACs", "r"),
    ("GFLOPs", "r"),
    ("act. MB", "r"),
    ("weights MB fp32 / bf16", "r"),
    ("layers", "r"),
    ("RF", "r"),
    ("stride", "r"),
    ("min input", "r"),
)


def _cells(s: ModelStats) -> list[str]:
    split = "-"
    if s.params_stem is not None:
        split = f"{s.params_stem / 1e6:.2f} / {s.params_stages / 1e6:.2f} / {s.params_head / 1e6:.2f}"  # type: ignore[operator]
        split += f" +{s.params_unused / 1e6:.2f} aux" if s.params_unused else ""
    return [
        s.name,
        s.family,
        "x".join(map(str, s.input_size)),
        f"{s.params:,}",
        split,
        _g(s.macs),
        _g(s.flops),
        _num(s.activations_mb),
        f"{_num(s.weights_mb_fp32)} / {_num(s.weights_mb_bf16)}",
        "-" if s.layers is None else str(s.layers),
        _pair_text(s.receptive_field),
        _pair_text(s.output_stride),
        _pair_text(s.min_input_size),
    ]


_FOOTNOTE = (
    "GMACs: multiply-accumulates of the convolutions and matrix products at batch 1; GFLOPs = 2 x GMACs "
    "(torchvision's 'GFLOPS' are GMACs).\nact.: MB of the tensors the forward writes at batch 1 (fp32). "
    "aux: parameters the eval forward does not use (auxiliary classifiers).\nlayers: conv and linear layers "
    "run, branches included. RF, stride: receptive field and output stride of the last feature map."
)


def render(rows: Sequence[ModelStats], fmt: str = "table") -> str:
    """`compare`'s rows as ``"table"`` (aligned text), ``"markdown"``, ``"csv"`` or ``"json"``.

    Models that cannot take the input are listed after the table (table, markdown) or
    carry an ``error`` field (csv, json).
    """
    if fmt == "json":
        return json.dumps([r.as_dict() for r in rows], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        dicts = [r.as_dict() for r in rows]
        keys = list(dicts[0]) if dicts else list(ModelStats.__dataclass_fields__)
        writer = csv.DictWriter(out, keys, lineterminator="\n")
        writer.writeheader()
        for d in dicts:
            writer.writerow({k: "x".join(map(str, v)) if isinstance(v, list) else v for k, v in d.items()})
        return out.getvalue().rstrip("\n")
    if fmt not in ("table", "markdown"):
        raise InvalidArgumentError(f"unknown format {fmt!r}; choose table, markdown, csv or json")
    fit = [r for r in rows if r.error is None]
    unfit = [r for r in rows if r.error is not None]
    header = [c for c, _ in _COLUMNS]
    body = [_cells(r) for r in fit]
    lines = _markdown(header, [a for _, a in _COLUMNS], body) if fmt == "markdown" else _text(header, body)
    if unfit:
        lines.append("")
        lines.append("Cannot take the requested input:" if fmt == "table" else "**Cannot take the requested input:**")
        lines += [f"{'- ' if fmt == 'markdown' else '  '}{r.name}: {r.error}" for r in unfit]
    lines += ["", _FOOTNOTE]
    return "\n".join(lines)


def _text(header: list[str], body: list[list[str]], align: Sequence[str] | None = None) -> list[str]:
    align = align or [a for _, a in _COLUMNS]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align, strict=True))

    return [line(header).rstrip(), line(["-" * w for w in widths]).rstrip()] + [line(r).rstrip() for r in body]


def _markdown(header: list[str], align: Sequence[str], body: list[list[str]]) -> list[str]:
    rule = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(r) + " |" for r in [header, rule, *body]]


# --------------------------------------------------------------------------- summary text


def _summary_text(s: Summary) -> str:
    st = s.stats
    header = ["layer", "type", "output", "params", "MMACs", "RF", "jump", "note"]
    align = ["l", "l", "l", "r", "r", "r", "r", "l"]
    body = []
    for r in s.layers:
        body.append(
            [
                r.name,
                r.type,
                "x".join(map(str, r.output_shape[1:])) if r.output_shape else "-",
                f"{r.params:,}" if r.params else "",
                _num(r.macs / 1e6) if r.macs else "",
                _pair_text(r.receptive_field) if r.receptive_field else "",
                _pair_text(r.jump) if r.jump else "",
                r.note,
            ]
        )
    lines = [f"{st.name}  ({st.family}), input {'x'.join(map(str, st.input_size))}", ""]
    lines += _text(header, body, align)
    flagged = sum(1 for r in s.layers if "never reads" in r.note)
    crops = sum(1 for r in s.layers if "cropped" in r.note)
    split = ""
    if st.params_stem is not None:
        split = f" (stem {st.params_stem:,}, stages {st.params_stages:,}, head {st.params_head:,}"
        split += f", not run in eval: {st.params_unused:,})" if st.params_unused else ")"
    lines += [
        "",
        f"parameters:   {st.params:,}{split}; trainable {st.trainable_params:,}",
        f"MACs:         {st.macs:,} ({_g(st.macs)} G); FLOPs = 2 x MACs = {_g(st.flops)} G",
        f"activations:  {st.activations_mb:.2f} MB written by the forward at batch 1",
        f"weights:      {st.weights_mb_fp32:.2f} MB fp32, {st.weights_mb_bf16:.2f} MB bf16",
        f"layers:       {st.layers} conv and linear",
        f"receptive field {_pair_text(st.receptive_field)}, output stride {_pair_text(st.output_stride)}, "
        f"minimum input {_pair_text(st.min_input_size)}",
    ]
    if flagged:
        lines.append(f"{flagged} layer(s) never read the last rows/columns of their input at this size (see note)")
    if crops:
        lines.append(f"{crops} skip connection(s) cropped before concatenation (see note)")
    unattributed = st.macs - sum(r.macs for r in s.layers)
    if unattributed:
        lines.append(f"MACs outside any layer (functional ops): {unattributed:,}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- plot


def plot(rows: Sequence[ModelStats], path: str | Path, *, title: str | None = None) -> Path:
    """Parameters against MACs on log axes, one labelled point per model, coloured by family.

    Models at (almost) the same point share one label ("vgg16, vgg16_bn"); a model whose
    input differs from the most common size says so in its label ("unet @572x572"). Models
    that cannot take the input are left out of the plot (`render` lists them). matplotlib is
    imported here, not with `zoo`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fit = [r for r in rows if r.error is None and r.macs]
    if not fit:
        raise ConfigurationError("nothing to plot: no model could take the requested input")
    families = sorted({r.family for r in fit}, key=lambda f: (min(r.year for r in fit if r.family == f), f))
    palette = plt.get_cmap("tab10")
    colour = {f: palette(i % 10) for i, f in enumerate(families)}
    sizes = [r.input_size[1:] for r in fit]
    common = max(set(sizes), key=sizes.count)

    # points within ~3% of each other on both axes share one label
    groups: list[list[ModelStats]] = []
    for r in sorted(fit, key=lambda r: (r.macs, r.params)):
        for g in groups:
            near = abs(math.log10(g[0].macs / r.macs)) < 0.012 and abs(math.log10(g[0].params / r.params)) < 0.012
            if near and g[0].input_size[1:] == r.input_size[1:]:
                g.append(r)
                break
        else:
            groups.append([r])

    fig, ax = plt.subplots(figsize=(12, 7.5) if len(groups) <= 20 else (15, 9.5), dpi=150)
    for f in families:
        pts = [r for r in fit if r.family == f]
        xs, ys = [r.macs / 1e9 for r in pts], [r.params / 1e6 for r in pts]  # type: ignore[operator]
        ax.scatter(xs, ys, s=80, color=colour[f], edgecolor="white", linewidth=0.9, label=f, zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(ticks)
    ax.yaxis.set_major_formatter(ticks)
    ax.margins(x=0.12, y=0.12)
    labels = {id(g[0]): ", ".join(r.name for r in g) for g in groups}
    for g in groups:
        if g[0].input_size[1:] != common:
            labels[id(g[0])] += " @" + "x".join(map(str, g[0].input_size[1:]))
    _place_labels(ax, fig, groups, labels, colour)
    ax.set_xlabel("GMACs per image (multiply-accumulates, batch 1; GFLOPs = 2 x GMACs)", fontsize=12)
    ax.set_ylabel("parameters (millions)", fontsize=12)
    ax.set_title(title or f"Parameters vs compute, input {common[0]}x{common[1]} unless noted", fontsize=15)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.1)
    ax.legend(title="family", loc="lower right", frameon=True, fontsize=10, title_fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    path = Path(path)
    try:
        fig.savefig(path)
    except OSError as e:
        raise InvalidArgumentError(f"cannot write the plot to {path}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return path


def _place_labels(
    ax: Any, fig: Any, groups: list[list[ModelStats]], labels: dict[int, str], colour: dict[str, Any]
) -> None:
    """Label every group near its point, at the position of rings around it that collides least
    with the labels, leader lines and points already there (the nearest among equals); a label
    away from its point gets a leader line."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    px = fig.dpi / 72  # pixels per point
    points = [ax.transData.transform((r.macs / 1e9, r.params / 1e6)) for g in groups for r in g]  # type: ignore[operator]
    boxes: list[Any] = []
    segments: list[tuple[Any, Any]] = []
    # right or left of the point; further out (with a leader line) in twelve directions
    candidates = [(7.0, 0.0), (-7.0, 0.0)] + [
        (radius * math.cos(math.radians(angle)), radius * math.sin(math.radians(angle)))
        for radius in (18, 30, 45, 62, 80, 100, 125)
        for angle in (0, 180, 30, -30, 150, -150, 90, -90, 60, -60, 120, -120)
    ]

    def cost(box: Any, anchor: Any, end: Any | None) -> float:
        if not (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1):
            return math.inf
        m = 4 * px
        c = 100.0 * sum(box.overlaps(b) for b in boxes)
        c += 60.0 * sum(box.x0 - m <= x <= box.x1 + m and box.y0 - m <= y <= box.y1 + m for x, y in points)
        c += 40.0 * sum(_box_cuts(box, a, b) for a, b in segments)
        if end is not None:  # the leader line may leave a cluster, but should not cross what is further out
            samples = [(anchor[0] + (end[0] - anchor[0]) * t / 12, anchor[1] + (end[1] - anchor[1]) * t / 12)
                       for t in range(2, 12)]  # fmt: skip
            others = [p for p in points if math.hypot(p[0] - anchor[0], p[1] - anchor[1]) > 14 * px]
            c += 30.0 * sum(any(math.hypot(q[0] - p[0], q[1] - p[1]) < 5 * px for q in samples) for p in others)
            c += 40.0 * sum(any(b.contains(*q) for q in samples) for b in boxes)
            c += 40.0 * sum(_cross(anchor, end, a, b) for a, b in segments)
        return c

    for g in sorted(groups, key=lambda g: -g[0].params):
        x, y = g[0].macs / 1e9, g[0].params / 1e6  # type: ignore[operator]
        anchor = ax.transData.transform((x, y))
        dark = tuple(0.6 * c for c in colour[g[0].family][:3])
        best = None
        for i, (dx, dy) in enumerate(candidates):
            ha = "left" if dx > 1 else "right" if dx < -1 else "center"
            va = "bottom" if dy > 1 else "top" if dy < -1 else "center"
            text = {"xytext": (dx, dy), "textcoords": "offset points", "ha": ha, "va": va, "fontsize": 9, "color": dark}
            label = ax.annotate(labels[id(g[0])], (x, y), **text)
            box = label.get_window_extent(renderer).padded(2 * px)
            label.remove()
            end = (anchor[0] + dx * px, anchor[1] + dy * px) if math.hypot(dx, dy) > 10 else None
            c = cost(box, anchor, end) + i * 0.01  # the nearest of equals
            if best is None or c < best[0]:
                best = (c, text, box, end)
            if c < 1:
                break
        assert best is not None
        _, text, box, end = best
        if end is not None:
            text["arrowprops"] = {"arrowstyle": "-", "color": text["color"], "lw": 0.6, "shrinkA": 1, "shrinkB": 4}
            segments.append((anchor, end))
        ax.annotate(labels[id(g[0])], (x, y), **text)
        boxes.append(box)


def _box_cuts(box: Any, a: Any, b: Any) -> bool:
    """Whether segment a-b passes through `box`."""
    corners = [(box.x0, box.y0), (box.x1, box.y0), (box.x1, box.y1), (box.x0, box.y1)]
    inside = box.contains(*a) or box.contains(*b)
    return inside or any(_cross(a, b, corners[i], corners[(i + 1) % 4]) for i in range(4))


def _cross(p1: Any, p2: Any, q1: Any, q2: Any) -> bool:
    """Whether segments p1-p2 and q1-q2 intersect (strictly)."""

    def side(a: Any, b: Any, c: Any) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    d1, d2 = side(q1, q2, p1), side(q1, q2, p2)
    d3, d4 = side(p1, p2, q1), side(p1, p2, q2)
    return d1 * d2 < 0 and d3 * d4 < 0


# --------------------------------------------------------------------------- docs


def models_markdown() -> str:
    """The page docs/models.md: every registered model at its default input size, oldest family first."""
    rows = compare()
    first_year: dict[str, int] = {}
    for r in rows:
        first_year[r.family] = min(r.year, first_year.get(r.family, r.year))
    order = {n: i for i, n in enumerate(list_models())}
    rows.sort(key=lambda r: (first_year[r.family], r.family, order[r.name]))
    lines = [
        "# Models",
        "",
        "Every registered model at its default input size, oldest family first. This page is generated by",
        "`python -m zoo.analysis --write-docs` (a test fails when it is stale); `zoo compare --all` gives more",
        "columns (parameter split, activation memory, weight size, layers, receptive field, output stride).",
        "",
        "- **parameters**: the model as `zoo.create(name)` builds it; GoogLeNet and Inception-v3 include their",
        "  auxiliary classifiers, which run only in training.",
        "- **GMACs**: multiply-accumulates of the convolutions and matrix products of one eval forward pass at",
        '  batch 1 (FLOPs = 2 x MACs). Torchvision\'s documentation calls the same numbers "GFLOPS".',
        "",
        "| model | family | paper | year | input | parameters | GMACs |",
        "|---|---|---|---:|---|---:|---:|",
    ]
    for r in rows:
        card = model_info(r.name)
        size = "x".join(map(str, r.input_size))
        paper = f"[{card.paper.title}]({card.paper.url})"
        lines.append(f"| `{r.name}` | {r.family} | {paper} | {r.year} | {size} | {r.params:,} | {_g(r.macs)} |")
    return "\n".join(lines) + "\n"


DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "models.md"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zoo.analysis --write-docs [PATH]`` regenerates docs/models.md; ``--check-docs`` checks it."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m zoo.analysis", description=main.__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write-docs", action="store_true", help="write the models table")
    group.add_argument("--check-docs", action="store_true", help="exit 1 if the checked-in table is stale")
    parser.add_argument("path", nargs="?", default=str(DOCS_PATH))
    args = parser.parse_args(argv)
    path = Path(args.path)
    text = models_markdown()
    if args.write_docs:
        path.write_text(text)
        print(f"wrote {path}")
        return 0
    if not path.exists() or path.read_text() != text:
        print(f"{path} is stale; run `python -m zoo.analysis --write-docs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
