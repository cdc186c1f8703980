"""optimize_for_inference keeps the outputs (within the stated tolerances) and `zoo bench` reports both sides.

No timing is asserted here: speed is measured by `zoo bench`, a benchmark, not a unit test.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from zoo.bench import Settings, bench_models
from zoo.inference import fold_batch_norms, optimize_for_inference

from helpers import randomise_norms


@pytest.mark.parametrize(
    ("name", "size"), [("resnet18", 64), ("vgg11_bn", 32), ("googlenet_tv", 64), ("convnext_tiny", 32)]
)
def test_optimized_model_matches_fp32(name, size):
    torch.manual_seed(0)
    model = zoo.create(name).eval()
    randomise_norms(model, torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = model(x)
    fast = optimize_for_inference(model)
    out = fast(x)
    assert out.dtype == torch.float32 and out.shape == expected.shape
    scale = expected.abs().max()
    assert (out - expected).abs().max() <= 1e-4 * scale
    # the original is untouched
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) or name == "convnext_tiny"


def test_optimized_bf16_is_close():
    torch.manual_seed(0)
    model = zoo.create("resnet18").eval()
    randomise_norms(model, torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    out = optimize_for_inference(model, dtype=torch.bfloat16)(x)
    assert out.dtype == torch.float32
    assert (out - expected).abs().max() <= 5e-2 * expected.abs().max()


def test_every_conv_norm_pair_is_folded():
    model = zoo.create("resnet50").eval()
    n_norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert fold_batch_norms(model) == n_norms == 53
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_bench_reports_both_sides(mode):
    result = bench_models("resnet18", mode=mode, batch_size=2, input_size=32, repeat=2, warmup=1)
    assert len(result.ours_times) == len(result.theirs_times) == 2
    assert result.reference == "torchvision.models.resnet18"
    d = result.as_dict()
    assert d["ratio"] == pytest.approx(d["ours_median_s"] / d["theirs_median_s"])
    assert "ratio ours/theirs" in result.render()


def test_bench_optimized_and_recipe_settings_run():
    r = bench_models("resnet18", batch_size=2, input_size=32, repeat=1, warmup=0, ours=Settings(optimize=True))
    assert "optimize_for_inference" in r.render()
    r = bench_models(
        "resnet18", mode="train", batch_size=2, input_size=32, repeat=1, warmup=0,
        ours=Settings(channels_last=True, precision="bf16"),
    )  # fmt: skip
    assert "bf16, channels_last" in r.render()


def test_bench_without_counterpart_says_so():
    with pytest.raises(zoo.ZooError, match="resnet20 has no torchvision counterpart"):
        bench_models("resnet20")
