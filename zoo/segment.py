"""Overlap-tile inference: segment an image of any size (Ronneberger et al. 2015, section 2 and Fig. 2).

An unpadded U-Net's output is smaller than its input: a 572x572 tile gives the logits of
its central 388x388 pixels. To segment a whole image the paper mirrors the image at its
border (the missing context), cuts tiles of a valid input size that overlap by that
context, runs them, and sets their outputs side by side. `segment` does this for any zoo
segmenter:

- Along each axis, tile t reads the mirrored image from ``t * step`` and contributes the
  output pixels ``[t * step, (t + 1) * step)`` (the last tile fewer), so every output
  pixel comes from exactly one tile (`tile_plan`).
- ``step`` is the tile's output less ``2 * margin``, rounded down to a multiple of the
  network's grid (its valid sizes' period: 16 for the paper's U-Net) when it is at least
  one grid step and more than one tile is needed. On the grid, the unpadded U-Net computes
  in every tile exactly what one pass over the whole mirrored image computes, so the
  stitched logits equal that pass (up to float rounding).
- A padded network (output as large as its input) sees zeros beyond each tile's border,
  so its tiles keep only their centre: ``margin`` output pixels are dropped at each side
  (default: an eighth of the tile). Without ``tile`` such a network runs on the whole image
  at once, mirrored up to the next valid size and cropped back, as ``pad_input=True`` does.

Examples:
    >>> import torch, zoo
    >>> model = zoo.create("unet", width=4).eval()   # the paper's arithmetic, few filters
    >>> zoo.segment(model, torch.rand(1, 100, 120), tile=220).shape
    torch.Size([2, 100, 120])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from zoo.checks import check_int
from zoo.errors import ConfigurationError, InputShapeError, InvalidArgumentError
from zoo.layers import mirror_pad
from zoo.models.base import ZooSegmenter


@dataclass(frozen=True)
class Span:
    """One tile along one axis: its input is the mirrored image's ``[start, start + tile)``; its
    output pixels ``[keep, keep + length)`` are the result's ``[out, out + length)``."""

    start: int
    keep: int
    out: int
    length: int


@dataclass(frozen=True)
class TilePlan:
    """The tiles along one axis and the mirror padding (before, after) of the image they read."""

    before: int
    after: int
    tile: int
    spans: tuple[Span, ...]


def tile_plan(length: int, tile: int, output: int, *, margin: int = 0, grid: int = 1) -> TilePlan:
    """Plan the tiles along one axis of `length` pixels.

    `tile` is a valid input size whose output is `output` pixels, centred on it (the unpadded
    U-Net loses ``(tile - output) / 2`` at each side); `margin` output pixels are dropped at
    each side of every tile; the step between tiles is a multiple of `grid` where it can be.

    Examples:
        >>> plan = tile_plan(512, 572, 388, grid=16)  # the paper's tile on a 512-pixel slice
        >>> plan.before, plan.after, [(s.start, s.out, s.length) for s in plan.spans]
        (92, 352, [(0, 0, 384), (384, 384, 128)])
    """
    for value, name in ((length, "length"), (tile, "tile"), (output, "output"), (grid, "grid")):
        check_int(value, name, "tile_plan")
    check_int(margin, "margin", "tile_plan", minimum=0)
    if (tile - output) % 2 or output > tile:
        raise ConfigurationError(f"tile_plan: the output ({output}) must be centred on the tile ({tile})")
    step = output - 2 * margin
    if step < 1:
        raise ConfigurationError(
            f"tile_plan: margin {margin} leaves nothing of a tile's {output} output pixels; use a smaller margin"
        )
    if step >= grid and length > step:
        step = step // grid * grid
    count = math.ceil(length / step)
    before = (tile - output) // 2 + margin
    spans = tuple(Span(t * step, margin, t * step, min(step, length - t * step)) for t in range(count))
    return TilePlan(before, (count - 1) * step + tile - length - before, tile, spans)


def _output(model: ZooSegmenter, size: int, axis: int) -> int:
    return model._output_axis(size, axis)


def _covering(model: ZooSegmenter, length: int, axis: int, margin: int) -> int:
    """The smallest valid input size whose output, less the margins, covers `length` pixels."""
    size = model.nearest_valid_sizes(length, axis)[1]
    while size is not None and _output(model, size, axis) - 2 * margin < length:
        size = model.nearest_valid_sizes(size + 1, axis)[1]
    if size is None:
        raise InputShapeError(f"{model.model_name} has no valid input size that covers {length} pixels")
    return size


def _plan(model: ZooSegmenter, length: int, axis: int, tile: int | None, margin: int | None) -> TilePlan:
    minimum = model.min_input_size[axis]
    following = model.nearest_valid_sizes(minimum + 1, axis)[1]
    grid = following - minimum if following is not None else 1
    if tile is None:
        margin = 0
        card = model.__dict__.get("card")
        default = card.input_size[1 + axis] if card is not None else minimum
        padded = _output(model, default, axis) == default  # same-size logits: run the image whole
        tile = _covering(model, length, axis, 0) if padded else default
    else:
        out = _output(model, tile, axis)
        if margin is None:
            margin = out // 8 if out == tile else 0
    tile = min(tile, _covering(model, length, axis, margin))
    return tile_plan(length, tile, _output(model, tile, axis), margin=margin, grid=grid)


def segment(
    model: ZooSegmenter,
    image: Tensor,
    *,
    tile: int | tuple[int, int] | None = None,
    batch_size: int = 4,
    margin: int | None = None,
) -> Tensor:
    """Per-pixel logits for images of any size, by overlap-tile inference (see the module docstring).

    Args:
        model: a zoo segmenter (``zoo.create("unet")``, ...); call ``model.eval()`` first for
            inference (its mode is left as it is). Runs under ``torch.no_grad()``.
        image: (C, H, W) or (B, C, H, W), floating point, on the model's device.
        tile: the tiles' input size (H, W) or one int for both, a valid input size of the model.
            None: the card's input size for a network whose output is smaller than its input
            (572 for the paper's U-Net), the whole image (one tile) for a padded network.
            A tile larger than the image needs shrinks to the smallest that covers it.
        batch_size: how many tiles run at once.
        margin: output pixels dropped at each side of a tile (None: 0 for an unpadded network,
            an eighth of the tile for a padded one).

    Returns:
        Logits (num_classes, H, W), or (B, num_classes, H, W) for a batch.

    Raises:
        InvalidArgumentError: not a zoo segmenter, or a bad argument.
        InputShapeError: an image or tile the model cannot take (the message says which sizes it can).
    """
    if not isinstance(model, ZooSegmenter):
        raise InvalidArgumentError(
            f"segment needs a zoo segmenter (zoo.list_models(task='segmentation')), got {type(model).__name__}"
        )
    check_int(batch_size, "batch_size", "segment")
    if margin is not None:
        check_int(margin, "margin", "segment", minimum=0)
    single = isinstance(image, Tensor) and image.dim() == 3
    x = image.unsqueeze(0) if single else image
    model._check_tensor(x)
    height, width = x.shape[-2], x.shape[-1]
    tiles: tuple[int | None, int | None] = (None, None)
    if tile is not None:
        tiles = (tile, tile) if isinstance(tile, int) else tuple(tile)  # type: ignore[assignment]
        if len(tiles) != 2:
            raise InvalidArgumentError(f"segment: tile must be an int or (height, width), got {tile!r}")
        for axis, t in enumerate(tiles):
            check_int(t, "tile", "segment")
            below, above = model.nearest_valid_sizes(t, axis)
            if below != t:
                near = " and ".join(str(n) for n in (below, above) if n is not None)
                raise InputShapeError(
                    f"segment: tile {t} is not a valid input size of {model.model_name}; the nearest valid sizes: "
                    f"{near} ({model.valid_sizes_rule(axis)})"
                )
    plans = [_plan(model, n, axis, tiles[axis], margin) for axis, n in enumerate((height, width))]
    rows, cols = plans
    x = mirror_pad(x, (cols.before, cols.after, rows.before, rows.after))

    jobs = [(b, r, c) for b in range(x.shape[0]) for r in rows.spans for c in cols.spans]
    out = None
    with torch.no_grad():
        for i in range(0, len(jobs), batch_size):
            chunk = jobs[i : i + batch_size]
            batch = torch.stack(
                [x[b, :, r.start : r.start + rows.tile, c.start : c.start + cols.tile] for b, r, c in chunk]
            )
            logits = model.forward_logits(batch)
            if out is None:
                out = logits.new_empty(x.shape[0], logits.shape[1], height, width)
            for (b, r, c), y in zip(chunk, logits, strict=True):
                out[b, :, r.out : r.out + r.length, c.out : c.out + c.length] = y[
                    :, r.keep : r.keep + r.length, c.keep : c.keep + c.length
                ]
    assert out is not None
    return out[0] if single else out
