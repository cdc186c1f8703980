"""The U-Net paper's pixel weights: class balance plus a border term between touching cells.

Ronneberger et al. 2015, eq. 2: ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))``,
where ``d1`` and ``d2`` are the distances from a pixel to the nearest and the second-nearest
cell, ``w0 = 10`` and ``sigma ~ 5`` pixels. The border term makes the thin membranes that
separate two cells weigh up to ``w0`` times more than the rest, so the network learns to keep
touching cells apart.

Decisions where the paper is silent (and what common re-implementations do):

- Cells are the 4-connected components of the foreground (label 1); the border term is put on
  background pixels only (a pixel inside a cell is at distance 0 from it and gets ``w_c``).
- Distances are Euclidean, from a pixel's centre to the nearest pixel of the cell. A cell's
  distances are computed only within ``reach`` pixels of it (by default where the term is
  still above 1e-6 of ``w0``: ``reach = sigma * sqrt(2 * ln(1e6))``, 26 px at sigma 5); further
  away the term is taken as 0.
- ``w_c`` balances the two classes within the slice: each class weighs ``N / (2 N_class)``,
  so the mean of ``w_c`` over the slice is 1.

The maps are computed once per label slice (`WeightMapCache`), not per training step: random
crops and flips of the training data then crop and flip the map with the label.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from zoo.checks import check_number
from zoo.errors import InvalidArgumentError


def class_balance(label: np.ndarray) -> np.ndarray:
    """``w_c``: each class weighs ``N / (2 N_class)`` (1 for a class that fills half the slice)."""
    fg = label.astype(bool)
    n, n_fg = fg.size, int(fg.sum())
    w = np.ones(label.shape, dtype=np.float32)
    if 0 < n_fg < n:
        w[fg] = n / (2 * n_fg)
        w[~fg] = n / (2 * (n - n_fg))
    return w


def nearest_two_distances(label: np.ndarray, reach: float = math.inf) -> tuple[np.ndarray, np.ndarray]:
    """``d1``, ``d2``: per pixel, the distance to the nearest and the second-nearest cell (inf if none).

    A cell is a 4-connected component of the foreground; distances further than `reach` from a
    cell are not computed (inf).
    """
    from scipy import ndimage

    cells, _ = ndimage.label(label.astype(bool))
    h, w = label.shape
    d1 = np.full((h, w), np.inf, dtype=np.float64)
    d2 = np.full((h, w), np.inf, dtype=np.float64)
    pad = math.ceil(reach) if math.isfinite(reach) else max(h, w)
    for index, box in enumerate(ndimage.find_objects(cells), start=1):
        if box is None:
            continue
        rows = slice(max(box[0].start - pad, 0), min(box[0].stop + pad, h))
        cols = slice(max(box[1].start - pad, 0), min(box[1].stop + pad, w))
        # distance_transform_edt measures the distance to the nearest zero: the cell's pixels are the zeros
        d = ndimage.distance_transform_edt(cells[rows, cols] != index)
        if math.isfinite(reach):
            d = np.where(d <= reach, d, np.inf)
        a, b = d1[rows, cols], d2[rows, cols]
        # insert d into the running pair of smallest distances
        d2[rows, cols] = np.where(d < a, a, np.minimum(b, d))
        d1[rows, cols] = np.minimum(a, d)
    return d1, d2


def unet_weight_map(label: np.ndarray | Tensor, w0: float = 10.0, sigma: float = 5.0) -> Tensor:
    """The paper's weight map of one binary label slice (H, W): ``w_c + w0 exp(-(d1 + d2)^2 / (2 sigma^2))``.

    Args:
        label: (H, W), 1 (or True) for cell interior, 0 for membrane / background.
        w0: the border term's peak weight (the paper's 10).
        sigma: its width in pixels (the paper's "about 5").

    Returns:
        (H, W) float32 weights.
    """
    w0 = check_number(w0, "w0", "unet_weight_map")
    sigma = check_number(sigma, "sigma", "unet_weight_map")
    if sigma == 0:
        raise InvalidArgumentError("unet_weight_map: sigma must be positive (the paper's is about 5 pixels), got 0")
    lab = label.numpy() if isinstance(label, Tensor) else np.asarray(label)
    if lab.ndim != 2:
        raise InvalidArgumentError(
            f"unet_weight_map: expects one (H, W) label slice, got shape {tuple(lab.shape)}; call it per slice"
        )
    lab = lab.astype(bool)
    reach = sigma * math.sqrt(2 * math.log(1e6))
    d1, d2 = nearest_two_distances(lab, reach)
    with np.errstate(invalid="ignore", over="ignore"):
        border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    border = np.where(np.isfinite(border) & ~lab, border, 0.0)
    return torch.from_numpy(class_balance(lab) + border.astype(np.float32))


class WeightMapCache:
    """`unet_weight_map` of each label slice, computed on first use and kept (keyed by the caller's index)."""

    def __init__(self, w0: float = 10.0, sigma: float = 5.0) -> None:
        self.w0, self.sigma = w0, sigma
        self._maps: dict[int, Tensor] = {}

    def __call__(self, index: int, label: np.ndarray | Tensor) -> Tensor:
        if index not in self._maps:
            self._maps[index] = unet_weight_map(label, self.w0, self.sigma)
        return self._maps[index]

    def __len__(self) -> int:
        return len(self._maps)


class WeightedLabels(NamedTuple):
    """A training batch's segmentation target with its per-pixel loss weights (`SegmentationTask` uses both)."""

    labels: Tensor  # (B, H, W) class indices
    weights: Tensor  # (B, H, W) float
