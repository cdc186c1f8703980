"""Side-by-side comparison (`compare`) and its renderings: text table, Markdown, CSV, JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence

from zoo.analysis.stats import ModelStats, analyze, parse_input_size
from zoo.analysis.text import _g, _markdown, _num, _pair_text, _text
from zoo.errors import InvalidArgumentError
from zoo.registry import list_models, model_info

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

    Examples:
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
    lines = (
        _markdown(header, [a for _, a in _COLUMNS], body)
        if fmt == "markdown"
        else _text(header, body, [a for _, a in _COLUMNS])
    )
    if unfit:
        lines.append("")
        lines.append("Cannot take the requested input:" if fmt == "table" else "**Cannot take the requested input:**")
        lines += [f"{'- ' if fmt == 'markdown' else '  '}{r.name}: {r.error}" for r in unfit]
    lines += ["", _FOOTNOTE]
    return "\n".join(lines)
