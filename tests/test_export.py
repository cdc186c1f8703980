"""Export: one representative per family goes through torch.export and torch.jit.trace and matches eager.

torch.jit.script is not supported (the contract's typed ModuleList loops and Python-level input
checks are outside TorchScript); torch.jit.trace is, and the input checks are skipped while tracing
because a trace is specialised to its example input.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import zoo

REPRESENTATIVES = {
    "lenet5": (32, 32),
    "lenet5_1998": (32, 32),
    "alexnet": (63, 63),
    "vgg11_bn": (32, 32),
    "resnet18": (64, 64),
    "resnet20": (32, 32),
    "googlenet": (64, 64),
    "inception_v3": (75, 75),
    "convnext_tiny": (32, 32),
    "mobilenet_v2": (32, 32),
    "unet": (188, 188),
    "unet_padded": (32, 48),
    "unet_resnet18": (64, 32),
}
REPRESENTATIVES = {k: v for k, v in REPRESENTATIVES.items() if k in zoo.list_models()}


@pytest.mark.parametrize(("name", "size"), REPRESENTATIVES.items())
def test_export_and_trace_match_eager(name, size):
    torch.manual_seed(0)
    model = zoo.create(name).eval()
    x = torch.randn(2, model.in_channels, *size)
    with torch.no_grad():
        expected = model(x)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), expected, rtol=1e-5, atol=1e-5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace is deprecated in favour of export
            traced = torch.jit.trace(model, x)
        torch.testing.assert_close(traced(x), expected, rtol=1e-5, atol=1e-5)
