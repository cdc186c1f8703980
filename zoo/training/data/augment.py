"""Augmentation of whole batches on their device: random crops, mirror images, elastic deformations.

Each function takes a batch (B, C, H, W) and draws its randomness per image from torch's
global generator, so that a seeded run repeats itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop(x: Tensor, padding: int) -> Tensor:
    """Zero-pad each image by `padding` and crop it back to its size at a random offset (per image)."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dev = x.device
    rows = torch.randint(0, 2 * padding + 1, (b, 1), device=dev) + torch.arange(h, device=dev)  # (B, H)
    cols = torch.randint(0, 2 * padding + 1, (b, 1), device=dev) + torch.arange(w, device=dev)  # (B, W)
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def random_hflip(x: Tensor) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def elastic_grid(
    batch: int,
    size: int,
    image_size: tuple[int, int],
    *,
    max_rotation: float = 0.0,
    quarter_turns: bool = True,
    flips: bool = True,
    elastic_sigma: float = 0.0,
    elastic_points: int = 3,
    device: torch.device | str = "cpu",
) -> Tensor:
    """A `grid_sample` grid (B, size, size, 2) that crops, rotates, flips and deforms at random.

    Each grid takes a size x size window at a random place in an image of `image_size`
    (H, W), rotated by a random angle in +-`max_rotation` degrees plus a random multiple
    of 90 degrees (`quarter_turns`), mirrored at random (`flips`), and displaced elastically: Gaussian
    displacements of `elastic_sigma` pixels on an `elastic_points` x `elastic_points`
    grid, upsampled bicubically (the U-Net paper's augmentation).
    """
    h, w = image_size
    half = (size - 1) / 2
    r = torch.linspace(-half, half, size, device=device)
    v, u = torch.meshgrid(r, r, indexing="ij")  # (S, S) offsets from the window's centre, in pixels
    offsets = torch.stack((u, v), -1).expand(batch, size, size, 2)  # (B, S, S, 2) as (x, y)
    angle = torch.randint(0, 4 if quarter_turns else 1, (batch,), device=device) * (math.pi / 2)
    angle = angle + (torch.rand(batch, device=device) * 2 - 1) * math.radians(max_rotation)
    cos, sin = angle.cos(), angle.sin()
    sx = torch.where(torch.rand(batch, device=device) < 0.5, -1.0, 1.0) if flips else torch.ones(batch, device=device)
    rot = torch.stack((torch.stack((cos * sx, -sin), -1), torch.stack((sin * sx, cos), -1)), -2)  # (B, 2, 2)
    coords = torch.einsum("bij,bhwj->bhwi", rot, offsets)
    if elastic_sigma > 0:
        coarse = torch.randn(batch, 2, elastic_points, elastic_points, device=device) * elastic_sigma
        fine = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)  # (B, 2, S, S)
        coords = coords + fine.permute(0, 2, 3, 1)
    # the window's centre, so that an unrotated window lies inside the image where it fits
    cy = half + torch.rand(batch, device=device) * max(h - size, 0) + min(h - size, 0) / 2
    cx = half + torch.rand(batch, device=device) * max(w - size, 0) + min(w - size, 0) / 2
    px = coords[..., 0] + cx[:, None, None]
    py = coords[..., 1] + cy[:, None, None]
    # pixel centres -> grid_sample's [-1, 1] (align_corners=False)
    return torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), -1)
