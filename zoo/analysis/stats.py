"""Per-model statistics (`analyze`), the per-layer `summary` and its text, and the result types."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from zoo.analysis.counting import _SPATIAL_LAYERS, _WEIGHT_LAYERS, _Run, _run, _SkipInit
from zoo.analysis.text import _g, _num, _pair_text, _text
from zoo.arithmetic import CONV_TRANSPOSE, POOL, LayerGeometry, layer_geometry, receptive_fields
from zoo.errors import ConfigurationError, InvalidArgumentError, ZooError
from zoo.registry import model_info

aten = torch.ops.aten

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


# --------------------------------------------------------------------------- analysis


def parse_input_size(text: str | int | Sequence[int], channels: int | None = None) -> tuple[int | None, int, int]:
    """``"224"``, ``"224x192"`` (H x W) or ``"3x224x224"`` (C x H x W) -> (C or `channels`, H, W).

    Examples:
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
