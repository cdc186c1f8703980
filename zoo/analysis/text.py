"""Text helpers shared by the tables and the per-layer summary: number formats, aligned and Markdown tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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


def _text(header: list[str], body: list[list[str]], align: Sequence[str]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align, strict=True))

    return [line(header).rstrip(), line(["-" * w for w in widths]).rstrip()] + [line(r).rstrip() for r in body]


def _markdown(header: list[str], align: Sequence[str], body: list[list[str]]) -> list[str]:
    rule = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(r) + " |" for r in [header, rule, *body]]
