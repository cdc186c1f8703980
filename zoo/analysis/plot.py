"""Parameters against MACs as a labelled scatter plot (matplotlib, imported when a plot is drawn)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.analysis.stats import ModelStats
from zoo.errors import ConfigurationError, InvalidArgumentError

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
