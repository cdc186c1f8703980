"""The Inception family: blocks, parameter counts, torchvision parity, aux heads, input sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from zoo.errors import ConfigurationError, InputShapeError, InvalidArgumentError, WeightsError
from zoo.models.inception import (
    GoogLeNetAux,
    InceptionA,
    InceptionAux,
    InceptionB,
    InceptionBlock,
    InceptionC,
    InceptionD,
    InceptionE,
    InceptionOutput,
)
from zoo.weights import import_weights

torchvision = pytest.importorskip("torchvision")


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    ("name", "aux_logits", "expected"),
    [
        ("googlenet_tv", False, 6_624_904),
        ("googlenet_tv", True, 13_004_888),
        ("inception_v3", True, 27_161_264),
        ("inception_v3", False, 23_834_568),
        ("googlenet", False, 6_998_552),
        ("googlenet", True, 13_378_280),
    ],
)
def test_parameter_counts(name, aux_logits, expected):
    with torch.device("meta"):
        model = zoo.create(name, aux_logits=aux_logits)
    assert n_params(model) == expected


def test_defaults_follow_torchvision():
    # aux heads on by default (torchvision's default); the card counts the default model
    for name in ("googlenet", "googlenet_tv", "inception_v3"):
        with torch.device("meta"):
            model = zoo.create(name)
        assert model.aux_logits is True and model.transform_input is False
        assert n_params(model) == zoo.model_info(name).num_params
    assert zoo.model_info("inception_v3").input_size == (3, 299, 299)


def test_table1_per_layer_counts():
    # the paper's Table 1 counts weights (no biases) in units of 1024
    block = InceptionBlock(192, 64, 96, 128, 16, 32, 32)  # inception (3a): 159K
    weights = sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Conv2d))
    assert weights == 163_328 and weights // 1024 == 159
    model = zoo.create("googlenet", aux_logits=False)
    stem = model.stages[1]  # conv2 (1x1, 64) and conv3 (3x3, 192): 112K
    assert stem.conv2.conv.weight.numel() + stem.conv3.conv.weight.numel() == 112 * 1024


def test_inception_block_branches():
    block = InceptionBlock(192, 64, 96, 128, 16, 32, 32)
    assert block.branch_5x5[1].conv.kernel_size == (5, 5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block.modules())  # the paper's: no norm
    assert block.branch_1x1.conv.bias is not None
    x = torch.randn(2, 192, 9, 9)
    assert block(x).shape == (2, 256, 9, 9)
    tv_like = InceptionBlock(192, 64, 96, 128, 16, 32, 32, kernel_5x5=3, norm_layer=nn.BatchNorm2d)
    assert tv_like.branch_5x5[1].conv.kernel_size == (3, 3)
    assert tv_like(x).shape == (2, 256, 9, 9)


def test_v3_blocks_shapes():
    torch.manual_seed(0)
    with torch.no_grad():
        assert InceptionA(192, 32)(torch.randn(1, 192, 9, 9)).shape == (1, 256, 9, 9)
        assert InceptionB(288)(torch.randn(1, 288, 9, 9)).shape == (1, 768, 4, 4)
        assert InceptionC(768, 128)(torch.randn(1, 768, 7, 7)).shape == (1, 768, 7, 7)
        assert InceptionD(768)(torch.randn(1, 768, 7, 7)).shape == (1, 1280, 3, 3)
        assert InceptionE(1280)(torch.randn(1, 1280, 3, 3)).shape == (1, 2048, 3, 3)
        assert InceptionAux(768, 10)(torch.randn(2, 768, 17, 17)).shape == (2, 10)
        assert InceptionAux(768, 10)(torch.randn(2, 768, 3, 3)).shape == (2, 10)  # adaptive below 17x17
        assert GoogLeNetAux(512, 10)(torch.randn(2, 512, 14, 14)).shape == (2, 10)


def test_paper_googlenet_is_the_paper_network():
    model = zoo.create("googlenet", aux_logits=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in model.modules()) == 2
    assert model.stages[2].inception3a.branch_5x5[1].conv.kernel_size == (5, 5)
    assert model.stages[4].pool4.kernel_size == 3
    assert model.head_drop.p == 0.4
    tv = zoo.create("googlenet_tv", aux_logits=False)
    assert tv.stages[2].inception3a.branch_5x5[1].conv.kernel_size == (3, 3)
    assert tv.stages[4].pool4.kernel_size == 2


# --------------------------------------------------------------------------- torchvision parity


def _randomise_bn(ref: nn.Module, x: torch.Tensor) -> None:
    """Random BN affine parameters and running statistics from one batch, so eval outputs are O(1)."""
    ref.eval()
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
            m.reset_running_stats()
            m.momentum = None  # cumulative: the running stats become this batch's
            m.train()
    with torch.no_grad():
        ref(x)
    ref.eval()


def _tv_googlenet(aux_logits: bool, transform_input: bool = False) -> nn.Module:
    return torchvision.models.GoogLeNet(aux_logits=aux_logits, transform_input=transform_input, init_weights=False)


def _tv_inception_v3(aux_logits: bool, transform_input: bool = False) -> nn.Module:
    return torchvision.models.Inception3(aux_logits=aux_logits, transform_input=transform_input, init_weights=False)


# exact agreement is expected (the same ops in the same order); 1e-5 is the contract
@pytest.mark.parametrize(
    ("name", "make_ref", "aux_logits", "transform_input", "size"),
    [
        ("googlenet_tv", _tv_googlenet, False, False, 64),
        ("googlenet_tv", _tv_googlenet, True, True, 64),
        ("inception_v3", _tv_inception_v3, False, False, 75),
        ("inception_v3", _tv_inception_v3, True, True, 80),
    ],
)
def test_torchvision_parity(name, make_ref, aux_logits, transform_input, size):
    torch.manual_seed(0)
    ref = make_ref(aux_logits, transform_input)
    assert n_params(ref) == n_params(zoo.create(name, aux_logits=aux_logits))
    _randomise_bn(ref, torch.randn(4, 3, size + 16, size + 16))
    ours = import_weights(zoo.create(name, aux_logits=aux_logits, transform_input=transform_input), ref).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert isinstance(got, torch.Tensor) and got.shape == (2, 1000)
    assert (expected - got).abs().max().item() <= 1e-5


def _dropout_off(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()


def test_googlenet_aux_heads_match_torchvision_in_training():
    torch.manual_seed(0)
    ref = _tv_googlenet(True)
    ours = import_weights(zoo.create("googlenet_tv"), ref)
    ref.train(), ours.train()
    _dropout_off(ref), _dropout_off(ours)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, aux2, aux1 = ref(x)
        out = ours(x)
    assert isinstance(out, InceptionOutput) and len(out.aux_logits) == 2
    for expected, got in ((logits, out.logits), (aux1, out.aux_logits[0]), (aux2, out.aux_logits[1])):
        assert (expected - got).abs().max().item() <= 1e-5


@pytest.mark.parametrize("size", [17, 20, 9])
def test_inception_v3_aux_head_matches_torchvision(size):
    # from 17x17 up (299x299 inputs) the head uses the released 5x5/3 average pool, as torchvision;
    # below, where torchvision's head fails, it pools adaptively to 5x5
    from torchvision.models.inception import InceptionAux as TVInceptionAux

    torch.manual_seed(0)
    ref = TVInceptionAux(768, 10).eval()
    ours = InceptionAux(768, 10).eval()
    import_weights(ours, ref)  # the blocks carry their own torchvision key maps
    x = torch.randn(2, 768, size, size)
    with torch.no_grad():
        got = ours(x)
        if size >= 17:
            assert (ref(x) - got).abs().max().item() <= 1e-5
        else:
            with pytest.raises(RuntimeError):
                ref(x)
    assert got.shape == (2, 10)


def test_key_map_is_strict():
    ref = _tv_googlenet(True)
    # built without aux heads, the model leaves the file's aux tensors out (torchvision's builder drops them too)
    ours = import_weights(zoo.create("googlenet_tv", aux_logits=False), ref)
    assert len(ours.aux_heads) == 0
    assert torch.equal(ours.fc.weight, ref.fc.weight)
    with pytest.raises(WeightsError, match=r"missing key\(s\): aux_heads"):  # but a model with them needs them
        import_weights(zoo.create("googlenet_tv", aux_logits=True), _tv_googlenet(False))
    with pytest.raises(WeightsError, match="googlenet_tv"):
        import_weights(zoo.create("googlenet", aux_logits=True), ref)  # the paper's network


# --------------------------------------------------------------------------- outputs, heads, sizes


@pytest.mark.parametrize(("name", "minimum"), [("googlenet", 31), ("googlenet_tv", 15), ("inception_v3", 75)])
def test_minimum_input_size_and_outputs_per_mode(name, minimum):
    torch.manual_seed(0)
    model = zoo.create(name, num_classes=5)
    assert model.min_input_size == (minimum, minimum) == zoo.model_info(name).min_input_size
    # training mode with aux heads: InceptionOutput, at the minimum size too; every parameter learns
    out = model.train()(torch.randn(2, 3, minimum, minimum))
    assert isinstance(out, InceptionOutput) and isinstance(out.aux_logits, tuple)
    assert out.logits.shape == (2, 5) and all(a.shape == (2, 5) for a in out.aux_logits)
    assert len(out.aux_logits) == (1 if name == "inception_v3" else 2)
    (out.logits.sum() + sum(a.sum() for a in out.aux_logits)).backward()
    assert all(p.grad is not None for p in model.parameters())
    # eval mode: the logits Tensor
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, minimum, minimum))
        assert isinstance(logits, torch.Tensor) and logits.shape == (2, 5)
        below = torch.randn(2, 3, minimum - 1, minimum)
        with pytest.raises(InputShapeError, match=f"at least {minimum}x{minimum}"):
            model(below)
        with pytest.raises(RuntimeError):  # torch itself fails one pixel below: the arithmetic is right
            for stage in model.stages:
                below = stage(below)


def test_without_aux_heads_training_returns_a_tensor():
    model = zoo.create("googlenet_tv", num_classes=3, aux_logits=False).train()
    assert not list(model.aux_heads)
    out = model(torch.randn(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)


def test_inception_v3_small_input_error_names_the_minimum():
    model = zoo.create("inception_v3").eval()
    with pytest.raises(InputShapeError, match=r"at least 75x75, got 74x74") as info:
        model(torch.randn(1, 3, 74, 74))
    assert "Kernel size" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "size", "spatial"),
    [("googlenet_tv", 224, (112, 56, 28, 14, 7)), ("inception_v3", 299, (147, 71, 35, 17, 8))],
)
def test_stages(name, size, spatial):
    with torch.device("meta"):  # shapes only
        model = zoo.create(name).eval()
        stages = model.forward_stages(torch.randn(1, 3, size, size))
    assert model.stage_strides == (2, 4, 8, 16, 32)
    assert tuple(s.shape[1] for s in stages) == model.stage_channels
    assert tuple(s.shape[-1] for s in stages) == spatial


def test_stage_channels():
    assert zoo.create("googlenet").stage_channels == (64, 192, 480, 832, 1024)
    assert zoo.create("inception_v3").stage_channels == (64, 192, 288, 768, 2048)


def test_reset_classifier_resets_aux_heads():
    model = zoo.create("googlenet_tv")
    model.reset_classifier(0)
    x = torch.randn(2, 3, 32, 32)
    out = model.train()(x)
    assert out.logits.shape == (2, 1024) and all(a.shape == (2, 1024) for a in out.aux_logits)
    model.reset_classifier(3)
    assert model.train()(x).aux_logits[0].shape == (2, 3)
    v3 = zoo.create("inception_v3", num_classes=0)
    assert v3.eval()(torch.randn(1, 3, 75, 75)).shape == (1, 2048)


def test_argument_errors():
    with pytest.raises(ConfigurationError, match="in_channels=3"):
        zoo.create("inception_v3", in_channels=1, transform_input=True)
    with pytest.raises(InvalidArgumentError, match="aux_logits"):
        zoo.create("googlenet", aux_logits="yes")
    gray = zoo.create("googlenet", in_channels=1).eval()
    with torch.no_grad():
        assert gray(torch.randn(1, 1, 64, 64)).shape == (1, 1000)


def test_googlenet_cifar_stem():
    """stem="cifar": conv1 3x3 at stride 1, so 32x32 images reach inception 3a at 8x8 (ImageNet stem: 4x4)."""
    x = torch.randn(2, 3, 32, 32)
    plain, cifar = (zoo.create("googlenet_tv", num_classes=10, stem=s).eval() for s in (None, "cifar"))
    assert [f.shape[-1] for f in plain.forward_stages(x)] == [16, 8, 4, 2, 1]
    assert [f.shape[-1] for f in cifar.forward_stages(x)] == [32, 16, 8, 4, 2]
    assert cifar.stage_strides == (1, 2, 4, 8, 16) and cifar.stages[0].conv1.conv.kernel_size == (3, 3)
    count = sum(p.numel() for p in plain.parameters()) - sum(p.numel() for p in cifar.parameters())
    assert count == 64 * 3 * (7 * 7 - 3 * 3)  # only conv1's kernel differs
    assert cifar(x).shape == (2, 10) and cifar.min_input_size == (8, 8)
    with pytest.raises(ConfigurationError, match="stem must be one of"):
        zoo.create("googlenet", stem="mnist")
