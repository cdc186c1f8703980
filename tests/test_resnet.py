"""ResNet family: parameter counts, torchvision parity, the CIFAR networks' option A shortcuts, options."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torchvision
from torch import nn

import zoo
from zoo.errors import ConfigurationError, InputShapeError, WeightsError
from zoo.models.resnet import ResNet, ResNetConfig
from zoo.models.resnet_blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, ZeroPadShortcut
from zoo.weights import import_weights

from helpers import randomise_norms

IMAGENET = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "wide_resnet50_2": 68_883_240,
}
# He et al. 2015, Table 6: the paper's counts (in millions) and the exact counts with 10 classes.
CIFAR = {
    "resnet20": (269_722, "0.27"),
    "resnet32": (464_154, "0.46"),
    "resnet44": (658_586, "0.66"),
    "resnet56": (853_018, "0.85"),
    "resnet110": (1_727_962, "1.7"),
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_parameter_counts_match_torchvision(name):
    with torch.device("meta"):
        ours = zoo.create(name)
        theirs = getattr(torchvision.models, name)()
    assert n_params(ours) == IMAGENET[name] == n_params(theirs) == zoo.model_info(name).num_params


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_parameter_counts_match_the_paper(name):
    exact, paper = CIFAR[name]
    model = zoo.create(name)
    assert n_params(model) == exact == zoo.model_info(name).num_params
    assert f"{exact / 1e6:.{len(paper.split('.')[1])}f}" == paper
    n = (int(name.removeprefix("resnet")) - 2) // 6
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 6 * n + 2  # 6n + 1 convs and the linear layer: no conv in any shortcut
    assert not any(
        isinstance(m, nn.Conv2d) for s in model.modules() if isinstance(s, ZeroPadShortcut) for m in s.modules()
    )


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2"])
def test_torchvision_weights_give_the_same_outputs(name):
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)().eval()
    randomise_norms(theirs)
    ours = import_weights(zoo.create(name), theirs).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = theirs(x)
        got = ours(x)
    assert (got - expected).abs().max().item() <= 1e-5


def test_stages_are_torchvisions_intermediate_outputs():
    """stem (stride 2), layer1 (4) ... layer4 (32): what a U-Net decoder takes as skips."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet18().eval()
    randomise_norms(tv)
    ours = import_weights(zoo.create("resnet18"), tv).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        stages = ours.forward_stages(x)
        y = tv.relu(tv.bn1(tv.conv1(x)))
        expected = [y]
        y = tv.maxpool(y)
        for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4):
            y = layer(y)
            expected.append(y)
    assert ours.stage_strides == (2, 4, 8, 16, 32)
    assert ours.stage_channels == (64, 64, 128, 256, 512)
    for s, e, stride in zip(stages, expected, ours.stage_strides, strict=True):
        assert s.shape[-1] == 64 // stride
        assert (s - e).abs().max().item() <= 1e-5


def test_cifar_stages():
    model = zoo.create("resnet20").eval()
    assert model.num_classes == 10 and zoo.model_info("resnet20").input_size == (3, 32, 32)
    with torch.no_grad():
        shapes = [tuple(s.shape[1:]) for s in model.forward_stages(torch.randn(2, 3, 32, 32))]
    assert shapes == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert model.stage_strides == (1, 2, 4)
    assert zoo.create("resnet20", num_classes=100).fc.out_features == 100


def test_option_a_shortcut_subsamples_and_pads_with_zeros():
    x = torch.randn(2, 16, 7, 7)
    y = ZeroPadShortcut(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4)  # the same grid as a 3x3 stride-2 conv with padding 1
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert not y[:, 16:].any()
    with pytest.raises(ConfigurationError, match="fewer"):
        ZeroPadShortcut(32, 16, 2)


def test_bottleneck_strides_in_the_3x3_conv():
    """v1.5: the stride sits in the 3x3 conv, not in the first 1x1 (see the module docstring)."""
    block = Bottleneck(256, 128, 2)
    assert block.conv1.conv.stride == (1, 1)
    assert block.conv2.conv.stride == (2, 2)
    assert block.downsample.conv.stride == (2, 2) and block.downsample.conv.kernel_size == (1, 1)


def test_spatial_chain_is_the_main_path():
    model = zoo.create("resnet50")
    chain = model.spatial_chain()
    assert [g.name for g in chain[:2]] == ["stages.0.stem.conv", "stages.1.pool"]
    assert len(chain) == 2 + 3 * 16  # stem conv, max pool, three convs per bottleneck
    assert not any("downsample" in g.name for g in chain)
    for name in ("resnet18", "resnet50", "resnet20"):
        assert zoo.create(name).min_input_size == zoo.model_info(name).min_input_size == (1, 1)


def test_too_small_input_is_refused():
    model = zoo.create("resnet18")
    with pytest.raises(InputShapeError, match="at least 1x1, got 0x8"):
        model(torch.randn(1, 3, 0, 8))
    with pytest.raises(InputShapeError, match="expects 3 input channel"):
        model(torch.randn(1, 1, 32, 32))


def test_cifar_networks_have_no_torchvision_counterpart():
    with pytest.raises(WeightsError, match="no torchvision counterpart"):
        import_weights(zoo.create("resnet20"), torchvision.models.resnet18())


def test_wrong_variant_weights_are_refused():
    with pytest.raises(WeightsError, match="do not fit"):
        import_weights(zoo.create("resnet18"), torchvision.models.resnet34())


def test_zero_init_residual_of_pre_activation_blocks():
    """Their last conv comes after its norm: the conv itself starts at zero (as timm's resnetv2), and the block
    passes its input through unchanged (nothing follows the addition)."""
    model = zoo.create("preact_resnet50", zero_init_residual=True).eval()
    blocks = [m for m in model.modules() if isinstance(m, PreActBottleneck)]
    assert len(blocks) == 16 and all(not b.conv3.conv.weight.any() and b.conv1.conv.weight.any() for b in blocks)
    x = torch.randn(2, 256, 8, 8)  # negative values too: no activation after the sum
    with torch.no_grad():
        assert torch.equal(blocks[1](x), x)


def test_zero_init_residual():
    model = zoo.create("resnet18", zero_init_residual=True).eval()
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert all(not b.conv2.norm.weight.any() for b in blocks)
    assert all(b.conv1.norm.weight.all() for b in blocks)
    x = torch.randn(2, 64, 8, 8).relu()
    with torch.no_grad():
        assert torch.equal(blocks[0](x), x)  # every block starts as the identity


def test_drop_path_and_drop_rate():
    torch.manual_seed(0)
    plain = zoo.create("resnet20")
    dropped = zoo.create("resnet20", drop_path_rate=0.2, drop_rate=0.3)
    rates = [getattr(b.drop_path, "p", 0.0) for b in dropped.modules() if isinstance(b, BasicBlock)]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2) and rates == sorted(rates)
    assert dropped.head_drop.p == 0.3
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), dropped.eval()(x))  # both are off in eval mode
        torch.manual_seed(1)
        assert not torch.equal(plain.train()(x), dropped.train()(x))


def test_norm_and_act_layers():
    model = zoo.create("resnet20", norm_layer=None, act_layer=nn.SiLU)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert any(isinstance(m, nn.SiLU) for m in model.modules())
    gn = zoo.create("resnet20", norm_layer=partial(nn.GroupNorm, 4), in_channels=1)
    assert gn(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_bad_configurations():
    with pytest.raises(ConfigurationError, match="BasicBlock takes only groups=1"):
        ResNet(ResNetConfig(BasicBlock, (2, 2, 2, 2), groups=32))
    with pytest.raises(ConfigurationError, match="shortcut must be 'A'"):
        ResNet(ResNetConfig(BasicBlock, (2, 2, 2, 2), shortcut="C"))
    with pytest.raises(ConfigurationError, match="same length"):
        ResNet(ResNetConfig(BasicBlock, (2, 2, 2)))
    with pytest.raises(ConfigurationError, match="drop_rate must be a number in"):
        zoo.create("resnet20", drop_rate=1.5)


# --------------------------------------------------------------------------- output stride (dilation)

TORCHVISION_DILATION = {16: [False, False, True], 8: [False, True, True]}


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("name", ["resnet50", "resnet101"])
def test_output_stride_matches_torchvisions_replace_stride_with_dilation(name, output_stride):
    torch.manual_seed(0)
    theirs = torchvision.models.get_model(name, replace_stride_with_dilation=TORCHVISION_DILATION[output_stride])
    theirs.eval()
    randomise_norms(theirs)
    ours = import_weights(zoo.create(name, output_stride=output_stride), theirs).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() <= 1e-5
        assert ours.forward_features(x).shape[-2:] == (64 // output_stride, 64 // output_stride)
    # the same tensors as the undilated network: its files load as they are
    assert ours.state_dict().keys() == zoo.create(name).state_dict().keys()


@pytest.mark.parametrize("output_stride", [16, 8])
def test_basic_block_dilation_matches_timm(output_stride):
    """torchvision refuses dilation in basic blocks; timm dilates both 3x3 convs (the first block's first keeps
    the previous dilation), and so does zoo."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    theirs = timm.create_model("resnet18", output_stride=output_stride).eval()
    randomise_norms(theirs)
    ours = import_weights(zoo.create("resnet18", output_stride=output_stride), theirs).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    ("name", "output_stride", "strides", "dilations"),
    [
        ("resnet50", 32, (2, 4, 8, 16, 32), {1}),
        ("resnet50", 16, (2, 4, 8, 16, 16), {1, 2}),
        ("resnet50", 8, (2, 4, 8, 8, 8), {1, 2, 4}),
        ("resnet18", 4, (2, 4, 4, 4, 4), {1, 2, 4, 8}),
        ("resnet20", 2, (1, 2, 2), {1, 2}),
    ],
)
def test_stage_strides_count_dilation(name, output_stride, strides, dilations):
    """stage_strides are the input/output ratio of each stage (torch on the meta device); the 3x3 convs dilate."""
    with torch.device("meta"):
        model = zoo.create(name, output_stride=output_stride).eval()
        stages = model.forward_stages(torch.empty(1, 3, 256, 256))
    assert model.stage_strides == strides
    assert tuple(256 // s.shape[-1] for s in stages) == strides
    assert {m.dilation[0] for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)} == dilations


def test_arithmetic_of_a_dilated_network_matches_torch():
    """Receptive field, jump, output size and minimum size of resnet50 at output stride 8, against torch.

    The main path (`spatial_chain`, with its dilations) is copied into a one-channel network of
    constant positive convs of the same geometry: every position of an output's field then gets a positive
    gradient, so the field is what the gradient sees. Trading stride for dilation keeps the field
    (427, as the undilated network) and makes the jump 8. Axes are independent: W = 1 keeps it cheap.
    """
    from zoo import analysis
    from zoo.arithmetic import min_input_size, output_sizes, receptive_fields

    model = zoo.create("resnet50", output_stride=8)
    chain = model.spatial_chain()
    assert {g.dilation for g in chain} == {(1, 1), (2, 2), (4, 4)}
    net = nn.Sequential(*(nn.Conv2d(1, 1, g.kernel, g.stride, g.padding, g.dilation, bias=False) for g in chain))
    for conv in net:
        nn.init.constant_(conv.weight, 1.0 / conv.weight.numel())  # averages: finite values
    x = torch.zeros(1, 1, 1200, 1, requires_grad=True)
    y = net(x)
    assert tuple(y.shape[-2:]) == output_sizes(chain, (1200, 1))[-1] == (150, 1)
    field = receptive_fields(chain)[-1]
    assert field.size[0] == 427 and field.jump[0] == 8
    rows = []
    for i in (70, 71):  # two neighbouring outputs away from the border
        (g,) = torch.autograd.grad(y[0, 0, i, 0], x, retain_graph=True)
        seen = g[0, 0, :, 0].nonzero()
        rows.append((int(seen.min()), int(seen.max())))
    assert all(hi - lo + 1 == field.size[0] for lo, hi in rows)
    assert rows[1][0] - rows[0][0] == field.jump[0]
    assert rows[0][0] + field.size[0] / 2 - 0.5 == field.start[0] + 70 * field.jump[0]  # the centre of output 70
    assert min_input_size(chain) == model.min_input_size == (1, 1)
    with torch.device("meta"):  # torch takes 1x1 through every dilated conv (each pads by its dilation)
        zoo.create("resnet50", output_stride=8).eval()(torch.empty(1, 3, 1, 1))
    stats = analysis.analyze(model)
    assert stats.receptive_field == (427, 427) and stats.output_stride == (8, 8)
    rows_by_name = {r.name: r for r in analysis.summary(model).layers}
    last = rows_by_name["stages.4.2.conv2.conv"]  # a 3x3 conv with dilation 4
    assert last.output_shape[-2:] == (28, 28) and last.jump == (8.0, 8.0) and not last.note


@pytest.mark.parametrize("bad", [12, 64, 2, True, "8"])
def test_output_stride_errors_say_which_strides_there_are(bad):
    with pytest.raises(ConfigurationError, match=r"output_stride must be one of 4, 8, 16, 32 .*got"):
        zoo.create("resnet50", output_stride=bad)


# --------------------------------------------------------------------------- pre-activation (ResNet v2)


def test_pre_activation_block_order_and_shortcut():
    """norm -> act -> conv twice, no activation after the sum; a projection shortcut starts from the first
    norm and activation (the pre-activated input), an identity shortcut from the block's input."""
    torch.manual_seed(0)
    block = PreActBasicBlock(8, 16, 2).eval()
    randomise_norms(block)
    assert [n for n, _ in block.conv1.named_children()] == ["norm", "act", "conv"]
    assert not hasattr(block, "act")  # nothing after the addition
    assert [n for n, _ in block.downsample.named_children()] == ["conv"]  # a bare 1x1 conv
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        pre = torch.relu(block.conv1.norm(x))
        branch = block.conv2.conv(torch.relu(block.conv2.norm(block.conv1.conv(pre))))
        assert torch.allclose(block(x), branch + block.downsample.conv(pre), atol=1e-6)
        same = PreActBasicBlock(8, 8).eval()
        pre = torch.relu(same.conv1.norm(x))
        branch = same.conv2.conv(torch.relu(same.conv2.norm(same.conv1.conv(pre))))
        assert torch.allclose(same(x), branch + x, atol=1e-6)
    assert (block(x) < 0).any()  # the sum is not activated


def test_pre_activation_network_layout():
    """A bare stem conv (no norm, no bias) and one norm + activation after the last block, before the head."""
    model = zoo.create("preact_resnet18")
    stem = model.stages[0].stem
    assert [n for n, _ in stem.named_children()] == ["conv"] and stem.conv.bias is None
    final = model.stages[-1].final
    assert isinstance(final.norm, nn.BatchNorm2d) and final.norm.num_features == 512
    assert isinstance(final.act, nn.ReLU)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model.eval().forward_features(x) >= 0).all()  # the features are activated


@pytest.mark.parametrize("output_stride", [32, 16, 8])
@pytest.mark.parametrize("name", ["preact_resnet18", "preact_resnet50"])
def test_pre_activation_outputs_match_timms_resnetv2(name, output_stride):
    """With timm's weights and the same output_stride (dilation), the same outputs; timm's 1x1-conv
    classifier loads into the linear one."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    theirs = timm.create_model(zoo.model_info(name).timm, output_stride=output_stride).eval()
    randomise_norms(theirs)
    ours = import_weights(zoo.create(name, output_stride=output_stride), theirs, "timm").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = theirs(x)
        assert (ours(x) - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())
        assert torch.allclose(ours.forward_features(x), theirs.forward_features(x), atol=1e-5, rtol=1e-5)


def test_pre_activation_networks_have_no_torchvision_counterpart():
    with pytest.raises(WeightsError, match="torchvision has no pre-activation ResNet"):
        import_weights(zoo.create("preact_resnet18"), torchvision.models.resnet18())
    with pytest.raises(WeightsError, match="no timm counterpart"):
        import_weights(zoo.create("preact_resnet18", stem="cifar"), zoo.create("preact_resnet18"), "timm")
