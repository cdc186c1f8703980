"""Helpers shared by several test files (fixtures live in conftest.py)."""

from __future__ import annotations

import torch
from torch import nn


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
