"""ConvNeXt: parameter counts, weight parity with torchvision and timm, the family's own behaviour.

The parity tests build both models on the meta device and fill the reference with random
values (norm weights and layer scales near 1, so every block contributes): the default
initialisation would cost seconds, and a layer scale of 1e-6 would hide any error in the
blocks. Our models use exactly torchvision's ops in the same order, so the outputs agree to
the bit; timm's small models (atto ... nano) run the MLP as 1x1 convs, whose float32
summation order differs slightly (< 1e-6).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import zoo
from zoo.errors import ConfigurationError, InputShapeError, WeightsError
from zoo.models.convnext import ConvNeXt, ConvNeXtBlock, ConvNeXtConfig
from zoo.weights import convert_state_dict, import_weights

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

REFERENCE_PARAMS = {
    "convnext_tiny": 28_589_128,  # torchvision
    "convnext_small": 50_223_688,  # torchvision
    "convnext_base": 88_591_464,  # torchvision
    "convnext_large": 197_767_336,  # torchvision
    "convnext_xlarge": 350_196_968,  # timm (convnext_xlarge, counted on the meta device)
}
TOL = 1e-5


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_cpu(make) -> nn.Module:
    """Build on the meta device (no initialisation cost), then allocate uninitialised CPU storage."""
    with torch.device("meta"):
        model = make()
    return model.to_empty(device="cpu").eval()


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded random values everywhere: weights ~ N(0, 0.02), norm weights and layer scales ~ 1 +- 0.3."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            scale = name.endswith(("layer_scale", "gamma")) or (p.dim() == 1 and name.endswith("weight"))
            if scale:
                p.copy_(1 + 0.3 * noise)
            elif p.dim() == 1:  # biases
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.02 * noise)
    return model


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# --------------------------------------------------------------------------- counts


@pytest.mark.parametrize("name", list(REFERENCE_PARAMS))
def test_parameter_counts(name):
    with torch.device("meta"):
        model = zoo.create(name)
    assert n_params(model) == REFERENCE_PARAMS[name] == zoo.model_info(name).num_params


@pytest.mark.parametrize("name", ["convnext_tiny", "convnext_small", "convnext_base", "convnext_large"])
def test_torchvision_counts_and_key_map_on_meta(name):
    """The torchvision key map covers every key of every size (checked on meta: no memory, no compute)."""
    with torch.device("meta"):
        ref, ours = getattr(torchvision.models, name)(), zoo.create(name)
    assert n_params(ref) == REFERENCE_PARAMS[name]
    assert set(convert_state_dict(ours, ref.state_dict(), "torchvision")) == set(ours.state_dict())


@pytest.mark.parametrize("name", ["convnext_tiny", "convnext_xlarge"])
def test_timm_counts_and_key_map_on_meta(name):
    with torch.device("meta"):
        ref, ours = timm.create_model(name), zoo.create(name)
    assert n_params(ref) == REFERENCE_PARAMS[name]
    converted = convert_state_dict(ours, ref.state_dict(), "timm")
    assert converted["stages.3.blocks.2.layer_scale"].shape == (2048 if name == "convnext_xlarge" else 768, 1, 1)


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("name", ["convnext_tiny", "convnext_small"])
def test_torchvision_parity(name):
    torch.manual_seed(0)
    ref = randomize(on_cpu(getattr(torchvision.models, name)))
    ours = import_weights(on_cpu(lambda: zoo.create(name)), ref)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, out = ref(x), ours(x)
        assert max_diff(ref.features(x), ours.forward_features(x)) <= TOL
    assert expected.abs().max() > 0.1  # a meaningful comparison, not two near-zero outputs
    assert max_diff(expected, out) <= TOL


def test_timm_parity_linear_mlp():
    """A small timm ConvNeXt with the layout of convnext_tiny ... xlarge (nn.Linear MLP, (C,) gamma)."""
    torch.manual_seed(0)
    depths, dims = (1, 1, 3, 1), (16, 32, 64, 128)
    ref = randomize(on_cpu(lambda: timm.models.convnext.ConvNeXt(depths=depths, dims=dims, num_classes=10)))
    ours = import_weights(on_cpu(lambda: ConvNeXt(ConvNeXtConfig(depths, dims), num_classes=10)), ref, "timm")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, out = ref(x), ours(x)
    assert expected.abs().max() > 0.1
    assert max_diff(expected, out) <= TOL


def test_timm_parity_convnext_atto():
    """timm's convnext_atto runs its MLP as 1x1 convs: the key map reshapes (4C, C, 1, 1) to (4C, C)."""
    torch.manual_seed(0)
    ref = randomize(on_cpu(lambda: timm.create_model("convnext_atto")))
    ours = import_weights(on_cpu(lambda: ConvNeXt(ConvNeXtConfig((2, 2, 6, 2), (40, 80, 160, 320)))), ref, "timm")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, out = ref(x), ours(x)
    assert expected.abs().max() > 0.1
    assert max_diff(expected, out) <= TOL


def test_import_rejects_other_sizes():
    with torch.device("meta"):
        ref, ours = torchvision.models.convnext_tiny(), zoo.create("convnext_small")
    with pytest.raises(WeightsError, match="missing key"):
        convert_state_dict(ours, ref.state_dict(), "torchvision")
    with torch.device("meta"):
        ref, ours = timm.create_model("convnext_tiny"), zoo.create("convnext_tiny", num_classes=10)
    with pytest.raises(WeightsError, match=r"head\.fc\.weight \(1000, 768\) -> fc\.weight \(10, 768\)"):
        convert_state_dict(ours, ref.state_dict(), "timm")


def test_reshape_only_where_the_key_map_allows():
    """torchvision's key map has no `Reshape`: a (C,) layer scale does not load into (C, 1, 1)."""
    from torchvision.models.convnext import CNBlockConfig

    ref = torchvision.models.convnext.ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 2)], num_classes=3)
    ours = ConvNeXt(ConvNeXtConfig((1, 2), (8, 16)), num_classes=3)
    state_dict = ref.state_dict()
    convert_state_dict(ours, state_dict, "torchvision")  # any configuration maps
    state_dict["features.1.0.layer_scale"] = state_dict["features.1.0.layer_scale"].flatten()
    with pytest.raises(WeightsError, match=r"layer_scale \(8,\) -> stages\.0\.blocks\.0\.layer_scale \(8, 1, 1\)"):
        convert_state_dict(ours, state_dict, "torchvision")


# --------------------------------------------------------------------------- behaviour


def small(**kwargs) -> ConvNeXt:
    """A four-stage ConvNeXt small enough to build and run in milliseconds."""
    torch.manual_seed(0)
    return ConvNeXt(ConvNeXtConfig((1, 2, 3, 1), (8, 16, 32, 64)), **kwargs)


def test_stages_strides_and_channels():
    with torch.device("meta"):
        model = zoo.create("convnext_tiny").eval()
        stages = model.forward_stages(torch.empty(1, 3, 96, 128))
    assert [tuple(s.shape[1:]) for s in stages] == [(96, 24, 32), (192, 12, 16), (384, 6, 8), (768, 3, 4)]
    assert model.stage_strides == (4, 8, 16, 32)
    assert model.stage_channels == (96, 192, 384, 768)
    assert model.num_features == 768


def test_min_input_size():
    with torch.device("meta"):
        model = zoo.create("convnext_tiny")
    assert model.min_input_size == zoo.model_info("convnext_tiny").min_input_size == (32, 32)
    model = small().eval()
    assert model.min_input_size == (32, 32)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1000)
    with pytest.raises(InputShapeError, match=r"at least 32x32, got 31x32: the feature map collapses at stages\.3"):
        model(torch.randn(1, 3, 31, 32))


def test_drop_path_grows_linearly():
    model = small(drop_path_rate=0.4, num_classes=10)
    blocks = [m for m in model.modules() if isinstance(m, ConvNeXtBlock)]
    rates = [getattr(b.drop_path, "p", 0.0) for b in blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.4, 7).tolist())
    assert isinstance(blocks[0].drop_path, nn.Identity)  # the first block's rate is 0
    with torch.device("meta"):
        tiny = zoo.create("convnext_tiny", drop_path_rate=0.1)
    assert tiny.stages[3].blocks[2].drop_path.p == pytest.approx(0.1)
    x = torch.randn(8, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # no drop path in eval mode
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))


def test_layer_scale_init_and_disable():
    per_block = sum(d * w for d, w in zip((3, 3, 9, 3), (96, 192, 384, 768), strict=True))
    model = small(layer_scale_init_value=0.5)
    assert all(torch.all(b.layer_scale == 0.5) for b in model.modules() if isinstance(b, ConvNeXtBlock))
    for off in (None, 0):
        with torch.device("meta"):
            plain = zoo.create("convnext_tiny", layer_scale_init_value=off)
        assert n_params(plain) == REFERENCE_PARAMS["convnext_tiny"] - per_block
        assert all(b.layer_scale is None for b in plain.modules() if isinstance(b, ConvNeXtBlock))
    small(layer_scale_init_value=None)(torch.randn(2, 3, 32, 32)).sum().backward()


def test_arguments():
    model = small(in_channels=1, num_classes=10, drop_rate=0.2).eval()
    assert model.head_drop.p == 0.2
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 64)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"drop_path_rate": 1.0}, r"drop_path_rate must be a number in \[0, 1\)"),
        ({"drop_rate": -0.1}, r"drop_rate must be a number in \[0, 1\)"),
        ({"layer_scale_init_value": -1e-6}, "layer_scale_init_value must be a number >= 0"),
        ({"in_channels": 0}, "in_channels must be a positive integer"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        zoo.create("convnext_tiny", **kwargs)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (ConvNeXtConfig((3, 3), (96,)), "one entry per stage, got 2 and 1"),
        (ConvNeXtConfig((3, 0), (96, 192)), "every depth must be a positive integer"),
        (ConvNeXtConfig((3,), (96,), kernel_size=4), "kernel_size must be odd"),
    ],
)
def test_bad_configs(config, message):
    with pytest.raises(ConfigurationError, match=message):
        ConvNeXt(config)


def test_import_zoo_imports_neither_timm_nor_torchvision():
    code = "import sys, zoo; print(sorted({'timm', 'torchvision'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_convnext_cifar_stem():
    """stem="cifar": 2x2 patches at stride 2, so 32x32 images give 16, 8, 4, 2 pixel stages (4x4 stem: 8 ... 1)."""
    x = torch.randn(1, 3, 32, 32)
    cifar = zoo.create("convnext_tiny", stem="cifar")
    assert [f.shape[-1] for f in cifar.forward_stages(x)] == [16, 8, 4, 2]
    assert cifar.stage_strides == (2, 4, 8, 16) and cifar.min_input_size == (16, 16)
    assert cifar.stages[0].stem.conv.kernel_size == (2, 2) and cifar.stages[0].stem.conv.stride == (2, 2)
    with pytest.raises(ConfigurationError, match="stem must be one of"):
        zoo.create("convnext_tiny", stem=4)


# --------------------------------------------------------------------------- ConvNeXt V2 (GRN, no layer scale)


def test_grn_starts_as_identity_and_follows_the_papers_formula():
    from zoo.models.convnext import GlobalResponseNorm

    grn = GlobalResponseNorm(3)
    x = torch.randn(2, 4, 5, 3)  # channels last
    assert torch.equal(grn(x), x)  # gamma = beta = 0
    with torch.no_grad():
        grn.weight.copy_(torch.tensor([0.5, -1.0, 2.0]))
        grn.bias.copy_(torch.tensor([0.1, 0.0, -0.2]))
    # by hand, one sample and channel at a time: G = ||x_c||_2 over H, W; N = G / mean_c(G)
    g = torch.stack([torch.stack([x[b, :, :, c].pow(2).sum().sqrt() for c in range(3)]) for b in range(2)])
    n = g / (g.mean(dim=1, keepdim=True) + 1e-6)
    expected = torch.stack(
        [
            torch.stack([x[b, :, :, c] * (1 + grn.weight[c] * n[b, c]) + grn.bias[c] for c in range(3)], -1)
            for b in range(2)
        ]
    )
    assert torch.allclose(grn(x), expected, atol=1e-6)


def test_v2_rows_have_grn_and_no_layer_scale_unless_asked():
    with torch.device("meta"):
        v2, v1 = zoo.create("convnextv2_tiny"), zoo.create("convnext_tiny")
        scaled = zoo.create("convnextv2_tiny", layer_scale_init_value=1e-6)
    v2_blocks = [m for m in v2.modules() if isinstance(m, ConvNeXtBlock)]
    assert len(v2_blocks) == 18
    assert all(b.layer_scale is None and b.grn.weight.shape == (4 * b.fc2.out_features,) for b in v2_blocks)
    assert all(
        isinstance(b.grn, nn.Identity) and b.layer_scale is not None
        for b in v1.modules()
        if isinstance(b, ConvNeXtBlock)
    )
    grn_params = sum(2 * 4 * d * w for d, w in zip((3, 3, 9, 3), (96, 192, 384, 768), strict=True))
    layer_scales = sum(d * w for d, w in zip((3, 3, 9, 3), (96, 192, 384, 768), strict=True))
    assert n_params(v2) == n_params(v1) + grn_params - layer_scales == 28_635_496
    assert n_params(scaled) == n_params(v2) + layer_scales
    assert zoo.model_info("convnextv2_tiny").paper.year == 2023


@pytest.mark.parametrize("name", ["convnextv2_atto", "convnextv2_tiny"])
def test_timm_parity_v2(name):
    """atto runs timm's 1x1-conv MLP and GRN on (B, C, H, W); tiny the linear MLP and GRN on (B, H, W, C)."""
    ref = randomize(on_cpu(lambda: timm.create_model(name)))  # GRN's weight ~ 1, bias ~ 0.1: GRN matters
    ours = import_weights(on_cpu(lambda: zoo.create(name)), ref, "timm")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, out = ref(x), ours(x)
        without_grn = import_weights(on_cpu(lambda: zoo.create(name)), ref, "timm")
        for block in without_grn.modules():
            if isinstance(block, ConvNeXtBlock):
                block.grn = nn.Identity()
        assert max_diff(expected, without_grn(x)) > 1e-2  # the comparison sees GRN
    assert expected.abs().max() > 0.1
    assert max_diff(expected, out) <= TOL


def test_v2_grn_loads_from_the_original_checkpoints_shape():
    """The original V2 checkpoints store GRN's gamma and beta as (1, 1, 1, 4C); under timm's names they load."""
    with torch.device("meta"):
        ref, ours = timm.create_model("convnextv2_atto"), zoo.create("convnextv2_atto")
    state = {k: v.reshape(1, 1, 1, -1) if ".grn." in k else v for k, v in ref.state_dict().items()}
    assert state["stages.3.blocks.1.mlp.grn.weight"].shape == (1, 1, 1, 1280)
    converted = convert_state_dict(ours, state, "timm")
    assert converted["stages.3.blocks.1.grn.weight"].shape == (1280,)
    assert set(converted) == set(ours.state_dict())


def test_every_convnextv2_of_timm_is_a_registered_row():
    """ConvNeXt V2 atto ... huge: timm's whole `convnextv2_*` list is in the registry, each card naming it."""
    theirs = set(timm.list_models("convnextv2_*"))
    ours = {n for n in zoo.list_models() if n.startswith("convnextv2_")}
    assert theirs == ours and len(ours) == 9, sorted(theirs ^ ours)
    assert all(zoo.model_info(n).timm == n for n in ours)
