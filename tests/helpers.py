"""Helpers shared by several test files (fixtures live in conftest.py)."""

from __future__ import annotations

from unittest import mock

import torch
from torch import nn

import zoo

_INITS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_")
_NOISE = torch.rand(1 << 20, generator=torch.Generator().manual_seed(0)) * 2 - 1  # U(-1, 1), 4 MB


def random_model(name: str) -> nn.Module:
    """`name` in eval mode with random weights, fast: zoo's initialisation (seconds for ConvNeXt-XL) is
    skipped and every tensor is tiled from a fixed random vector, scaled by its fan-in; batch-norm
    statistics are perturbed."""
    with mock.patch.multiple(torch.nn.init, **{init: lambda tensor, *args, **kwargs: tensor for init in _INITS}):
        model = zoo.create(name).eval()
    with torch.no_grad():
        for i, (key, t) in enumerate(model.state_dict().items()):
            if not t.is_floating_point():
                continue
            scale = 0.5 if key.endswith("running_var") else (t[0].numel() if t.dim() > 1 else 1) ** -0.5
            flat, noise = t.view(-1), _NOISE.roll(i * 7919)
            for start in range(0, flat.numel(), noise.numel()):
                piece = flat[start : start + noise.numel()]
                torch.mul(noise[: piece.numel()], scale, out=piece)
            if key.endswith("running_var"):
                t.add_(1)  # 0.5 .. 1.5
    return model


def randomise_norms(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Non-trivial batch-norm statistics and affine parameters, so that a swapped, skipped or
    wrongly folded norm shows in the outputs (fresh norms are the identity in eval mode)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2, generator=generator)
            m.running_var.uniform_(0.5, 1.5, generator=generator)
            m.weight.data.uniform_(0.2, 0.6, generator=generator)
            m.bias.data.uniform_(-0.2, 0.2, generator=generator)
    return model
