"""Side-by-side comparison (`compare`) and its renderings: text table, Markdown, CSV, JSON."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import textwrap
import warnings
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
    rows = _analyze_all(names, input_size)
    if sort is not None:
        key = SORT_KEYS[sort]
        rows = sorted((r for r in rows if key(r) is not None), key=key) + [r for r in rows if key(r) is None]
    return rows


WORKERS_VARIABLE = "ZOO_COMPARE_WORKERS"
_MIN_PER_WORKER = 6  # below this a worker's start costs more than it saves


def _workers(count: int) -> int:
    """How many processes analyse `count` models: one per CPU this process may use (at most 4),
    only on Linux (fork: the workers inherit the imports and the registry, user-registered models
    included) and never inside a daemon process; ``ZOO_COMPARE_WORKERS=1`` turns it off."""
    import multiprocessing

    wanted = os.environ.get(WORKERS_VARIABLE, "").strip()
    if wanted:
        if not wanted.isdigit():
            raise InvalidArgumentError(f"{WORKERS_VARIABLE} must be a whole number (1: no workers), got {wanted!r}")
        limit = int(wanted)
    else:
        limit = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 4)
    if sys.platform != "linux" or multiprocessing.current_process().daemon:
        return 1
    return max(1, min(limit, count // _MIN_PER_WORKER))


def _analyze_chunk(job: tuple[list[str], object]) -> list[ModelStats]:
    names, input_size = job
    return [analyze(n, input_size) for n in names]  # type: ignore[arg-type]


def _analyze_all(names: list[str], input_size: object) -> list[ModelStats]:
    """`analyze` of every name, in order; split over forked worker processes where there are CPUs for them.

    Each model is built on the meta device and counted (no tensor memory, no threads), which is
    pure Python work: with two CPUs the whole registry takes about half the time.
    """
    workers = _workers(len(names))
    if workers < 2:
        return _analyze_chunk((names, input_size))
    import multiprocessing

    chunks = [names[i::workers] for i in range(workers)]  # interleaved: the big models spread out
    with warnings.catch_warnings():  # Python 3.12+: "use of fork() may lead to deadlocks" (torch keeps a thread)
        warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_analyze_chunk, [(chunk, input_size) for chunk in chunks])
    rows: list[ModelStats] = [None] * len(names)  # type: ignore[list-item]
    for i, part in enumerate(parts):
        rows[i::workers] = part
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


#: the table's columns in the order they are left out when it must fit a width (the first ones stay)
_DROP_ORDER = (
    "stem / stages / head M",
    "GFLOPs",
    "weights MB fp32 / bf16",
    "family",
    "layers",
    "stride",
    "input",
    "act. MB",
    "min input",
    "RF",
)


def _fit_columns(header: list[str], body: list[list[str]], width: int | None) -> list[int]:
    """The indices of the columns to show: all, or as many as fit in `width` characters (two-space gaps)."""
    keep = list(range(len(header)))
    if width is None:
        return keep

    def table_width(cols: list[int]) -> int:
        return sum(max(len(header[c]), *(len(r[c]) for r in body)) for c in cols) + 2 * (len(cols) - 1)

    for name in _DROP_ORDER:
        if table_width(keep) <= width:
            break
        keep.remove(header.index(name))
    return keep


def render(rows: Sequence[ModelStats], fmt: str = "table", width: int | None = None) -> str:
    """`compare`'s rows as ``"table"`` (aligned text), ``"markdown"``, ``"csv"`` or ``"json"``.

    Models that cannot take the input are listed after the table (table, markdown) or
    carry an ``error`` field (csv, json). With a `width`, the text table leaves out the
    least needed columns until it fits (a terminal's width; `zoo compare --wide` shows all)
    and says which.
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
    keep = _fit_columns(header, body, width if fmt == "table" else None)
    left_out = [header[c] for c in range(len(header)) if c not in keep]
    header, align = [header[c] for c in keep], [_COLUMNS[c][1] for c in keep]
    body = [[row[c] for c in keep] for row in body]
    lines = _markdown(header, align, body) if fmt == "markdown" else _text(header, body, align)
    if left_out:
        lines.append(f"(left out to fit {width} columns: {', '.join(left_out)}; --wide shows every column)")
    if unfit:
        lines.append("")
        lines.append("Cannot take the requested input:" if fmt == "table" else "**Cannot take the requested input:**")
        lines += [f"{'- ' if fmt == 'markdown' else '  '}{r.name}: {r.error}" for r in unfit]
    notes = _FOOTNOTE.split("\n")
    if fmt == "table" and width is not None:  # the notes wrap to the same width
        lines = lines[:-1] + textwrap.wrap(lines[-1], width) if left_out else lines
        notes = [w for n in notes for w in textwrap.wrap(n, width)]
    lines += ["", *notes]
    return "\n".join(lines)
