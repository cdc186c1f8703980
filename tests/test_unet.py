"""U-Net: the paper's network, the padded one, U-Nets on zoo encoders, their size arithmetic, overlap-tile inference.

Most tests use few filters (``width=4``): the arithmetic is the paper's, the cost is not.
The one full-width 572x572 forward is `test_paper_unet_as_in_the_issue`.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from torch import nn

import zoo
from zoo.arithmetic import (
    CONV,
    CONV_TRANSPOSE,
    POOL,
    min_input_size,
    misfit,
    module_chain,
    nearest_multiples,
    nearest_valid_sizes,
    unet_chain,
    unet_output_size,
)
from zoo.errors import ConfigurationError, InputShapeError, InvalidArgumentError, UnknownModelError, WeightsError
from zoo.layers import mirror_pad
from zoo.models.base import RemovedHead
from zoo.models.unet import EncoderUNet
from zoo.registry import model_class
from zoo.segment import tile_plan
from zoo.weights import import_weights

PAPER_PARAMS = 31_030_658
ENCODER_ROWS = {  # name: (parameters, total stride, decoder blocks)
    "unet_resnet18": (14_328_354, 32, 5),
    "unet_resnet34": (24_436_514, 32, 5),
    "unet_resnet50": (32_521_250, 32, 5),
    "unet_vgg16_bn": (18_642_434, 16, 4),
    "unet_convnext_tiny": (31_922_210, 32, 4),
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def small(name: str = "unet", **kw) -> nn.Module:
    torch.manual_seed(0)
    return zoo.create(name, **kw).eval()


# --------------------------------------------------------------------------- the paper's network


def test_paper_unet_as_in_the_issue():
    torch.manual_seed(0)
    model = zoo.create("unet").eval()
    assert n_params(model) == PAPER_PARAMS
    with torch.no_grad():
        out = model(torch.randn(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)
    assert torch.isfinite(out).all()
    card = zoo.model_info("unet")
    assert card.task == "segmentation" and card.num_classes == 2 and card.num_params == PAPER_PARAMS
    assert card.input_size == (1, 572, 572) and card.min_input_size == (188, 188)
    assert model.output_size((572, 572)) == (388, 388) and "188 + 16k" in card.notes and "- 184" in card.notes


def test_paper_unet_layers():
    """Unpadded 3x3 convs with bias, 2x2 pools, 2x2 up-convolutions halving the channels, widths 64..1024, no norm."""
    with torch.device("meta"):
        model = zoo.create("unet")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 18 and all(c.padding == (0, 0) and c.bias is not None for c in convs)
    assert sorted({c.out_channels for c in convs}) == [64, 128, 256, 512, 1024]
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(u.in_channels, u.out_channels, u.kernel_size, u.stride) for u in ups] == [
        (1024, 512, (2, 2), (2, 2)), (512, 256, (2, 2), (2, 2)), (256, 128, (2, 2), (2, 2)), (128, 64, (2, 2), (2, 2)),
    ]  # fmt: skip
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 4
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert (model.head.kernel_size, model.head.in_channels, model.head.out_channels) == ((1, 1), 64, 2)


@pytest.mark.parametrize("size", [188, 204, 252])
def test_paper_unet_output_is_input_less_184(size):
    model = small(width=2)
    with torch.no_grad():
        assert model(torch.randn(1, 1, size, size + 16)).shape == (1, 2, size - 184, size - 168)


def test_paper_unet_size_errors_name_the_nearest_valid_sizes():
    model = small(width=2)
    with pytest.raises(
        InputShapeError, match=r"height of 570 .*down\.2\.pool would get 279.*556 and 572 \(188 \+ 16k\)"
    ):
        model(torch.randn(1, 1, 570, 572))
    with pytest.raises(InputShapeError, match=r"width of 190 .*188 and 204"):
        model.output_size((188, 190))
    with pytest.raises(InputShapeError, match=r"at least 188x188, got 187x187.*smallest 188x188.*pad_input=True"):
        model(torch.randn(1, 1, 187, 187))


def test_padding_does_not_change_the_parameter_count():
    """The paper's network and the padded one with the paper's channels and no norm have the same parameters."""
    with torch.device("meta"):
        padded = zoo.create("unet_padded", in_channels=1, batch_norm=False)
        bilinear = zoo.create("unet", upsample="bilinear")
    assert n_params(padded) == PAPER_PARAMS
    # a 2x2 up-convolution has 4 weights per channel pair, the 1x1 conv after bilinear interpolation 1
    pairs = sum(c * c // 2 for c in (1024, 512, 256, 128))
    assert n_params(bilinear) == PAPER_PARAMS - 3 * pairs


# --------------------------------------------------------------------------- arithmetic


def test_unet_chain_is_the_models_main_path():
    model = small(width=2)
    assert module_chain(model.named_modules()) == unet_chain(4) == model.spatial_chain()
    padded = small("unet_padded", width=2, depth=3)
    assert module_chain(padded.named_modules()) == unet_chain(3, padding=1)
    kinds = [g.kind for g in unet_chain(2, num_convs=1)]
    assert kinds == [CONV, POOL, CONV, POOL, CONV, CONV_TRANSPOSE, CONV, CONV_TRANSPOSE, CONV, CONV]


def test_valid_sizes_of_the_paper_network():
    chain = unet_chain(4)
    assert [n for n in range(1, 1200) if misfit(chain, n) is None] == list(range(188, 1200, 16))
    assert min_input_size(chain) == (188, 188)
    assert [unet_output_size(n) for n in (188, 572, 700)] == [4, 388, 516]
    assert nearest_valid_sizes(chain, 570) == (556, 572)
    assert nearest_valid_sizes(chain, 572) == (572, 572)
    assert nearest_valid_sizes(chain, 10) == (None, 188)
    assert misfit(chain, 570) == ("down.2.pool", 279)
    with pytest.raises(ConfigurationError, match=r"556 \(below\) and 572 \(above\)"):
        unet_output_size(570)


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
@pytest.mark.parametrize(("num_convs", "kernel"), [(1, 3), (2, 3), (3, 3), (2, 5)])
def test_unpadded_unet_rule(depth, num_convs, kernel):
    """Output = input - c(k-1)(3 * 2**depth - 2), valid inputs one every 2**depth: each level loses
    c(k-1) pixels per side pair at its own scale, twice above the bottom."""
    chain = unet_chain(depth, num_convs, kernel)
    shrink = num_convs * (kernel - 1) * (3 * 2**depth - 2)
    first = nearest_valid_sizes(chain, 1)[1]
    valid = [n for n in range(1, first + 5 * 2**depth) if misfit(chain, n) is None]
    assert valid == list(range(first, first + 5 * 2**depth, 2**depth))
    assert all(unet_output_size(n, depth, num_convs, kernel) == n - shrink for n in valid)
    assert min_input_size(chain)[0] <= first and unet_output_size(first, depth, num_convs, kernel) >= 1


def test_padded_unet_rule_and_nearest_multiples():
    chain = unet_chain(4, padding=1)
    assert [n for n in range(1, 100) if misfit(chain, n) is None] == [16, 32, 48, 64, 80, 96]
    assert unet_output_size(48, padding=1) == 48
    assert nearest_valid_sizes(chain, 100) == (96, 112)
    assert nearest_multiples(100, 32) == (96, 128)
    assert nearest_multiples(96, 32) == (96, 96)
    assert nearest_multiples(20, 32, minimum=32) == (None, 32)
    assert nearest_multiples(40, 16, minimum=32) == (32, 48)


def test_torch_agrees_with_the_arithmetic_on_a_shallow_unet():
    model = small(depth=2, width=2)  # valid 44 + 4k, output = input - 40
    chain = model.spatial_chain()
    for n in range(44, 64, 4):
        assert misfit(chain, n) is None
        with torch.no_grad():
            assert model(torch.randn(1, 1, n, n)).shape[-1] == n - 40 == model.output_size((n, n))[0]
    assert model.valid_sizes_rule() == "multiples of 4 from 44"  # 44 + 4k


# --------------------------------------------------------------------------- the padded U-Net


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"batch_norm": False},
        {"upsample": "bilinear"},
        {"depth": 3, "in_channels": 1, "num_classes": 5},
        {"depth": 2, "upsample": "bilinear", "batch_norm": False, "in_channels": 4, "num_classes": 1},
    ],
)
def test_padded_unet_same_size_for_every_valid_size(kw):
    model = small("unet_padded", width=4, **kw)
    c, k, grid = kw.get("in_channels", 3), kw.get("num_classes", 2), 2 ** kw.get("depth", 4)
    assert model.min_input_size == (grid, grid)
    for h, w in [(grid, grid), (2 * grid, 3 * grid), (5 * grid, 2 * grid)]:
        with torch.no_grad():
            assert model(torch.randn(2, c, h, w)).shape == (2, k, h, w)
        assert model.output_size((h, w)) == (h, w)


def test_padded_unet_norm_and_bias():
    with_bn, without = small("unet_padded", width=4), small("unet_padded", width=4, batch_norm=False)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules()) == 18
    assert all(m.bias is None for m in with_bn.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in without.modules())
    assert n_params(zoo.create("unet_padded")) == 31_037_698


def test_padded_unet_size_error_and_pad_input():
    model = small("unet_padded", width=4)
    with pytest.raises(InputShapeError, match=r"height of 100 .*not a multiple of 16.*96 and 112.*pad_input=True"):
        model(torch.randn(1, 3, 100, 96))
    padder = small("unet_padded", width=4, pad_input=True)
    x = torch.randn(2, 3, 37, 50)
    with torch.no_grad():
        out = padder(x)
        # by hand: mirror to 48x64 at the bottom and right, run, crop back
        expected = model(mirror_pad(x, (0, 14, 0, 11)))[..., :37, :50]
        assert out.shape == (2, 2, 37, 50) and torch.equal(out, expected)
        valid = torch.randn(1, 3, 32, 48)
        assert torch.equal(padder(valid), model(valid))  # a valid size is not padded


def test_paper_unet_pad_input_mirrors_the_context():
    """pad_input on the unpadded network: logits for every input pixel, the border's context mirrored."""
    model = small(width=2)
    padder = small(width=2, pad_input=True)
    x = torch.randn(1, 1, 30, 40)
    with torch.no_grad():
        out = padder(x)
        # 30 -> 220 (the smallest valid size with an output >= 30), 40 -> 236; 92 mirrored before
        expected = model(mirror_pad(x, (92, 236 - 40 - 92, 92, 220 - 30 - 92)))[..., :30, :40]
    assert out.shape == (1, 2, 30, 40) and torch.equal(out, expected)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"upsample": "nearest"}, "upsample must be one of 'transpose', 'bilinear'"),
        ({"depth": 0}, "depth must be a positive integer"),
        ({"width": 2.5}, "width must be a positive integer"),
        ({"batch_norm": "yes"}, "batch_norm must be True or False"),
        ({"pad_input": 1}, "pad_input must be True or False"),
        ({"drop_rate": 1.0}, r"drop_rate must be a number in \[0, 1\)"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
    ],
)
def test_unet_argument_errors(kw, message):
    with pytest.raises(zoo.ZooError, match=message):
        zoo.create("unet_padded", **kw)


# --------------------------------------------------------------------------- U-Nets on zoo encoders


@pytest.mark.parametrize("name", ENCODER_ROWS)
def test_encoder_unet_counts_and_decoder_from_stages(name):
    params, stride, blocks = ENCODER_ROWS[name]
    with torch.device("meta"):
        model = zoo.create(name)
    assert n_params(model) == params == zoo.model_info(name).num_params
    assert model.total_stride == stride and len(model.decoder) == blocks
    enc = model.encoder
    assert isinstance(enc, zoo.models.base.ZooClassifier) and enc.model_name == zoo.model_info(name).config.encoder
    # the decoder's first block takes the deepest stage and the next one's skip
    first = model.decoder[0].conv1.conv
    assert first.in_channels == enc.stage_channels[-1] + enc.stage_channels[-2]
    assert model.min_input_size == zoo.model_info(name).min_input_size


def test_encoder_unet_same_size_for_every_valid_size():
    model = small("unet_resnet18")
    for h, w in [(32, 32), (64, 96), (160, 64)]:
        with torch.no_grad():
            assert model(torch.randn(1, 3, h, w)).shape == (1, 2, h, w)
    for name in ("unet_vgg16_bn", "unet_convnext_tiny"):  # shapes only (the registry tests run them for real)
        with torch.device("meta"):
            model = zoo.create(name).eval()
        stride = model.total_stride
        for h, w in [(stride, 2 * stride), (3 * stride, 2 * stride), (32, 32)]:
            assert model(torch.empty(1, 3, h, w, device="meta")).shape == (1, 2, h, w)


def test_any_classifier_is_an_encoder():
    """encoder= takes any classifier; the decoder follows its stages (ResNet-50: 2048 + 1024 channels first)."""
    with torch.device("meta"):
        model = zoo.create("unet_resnet34", encoder="resnet50", in_channels=1, num_classes=4)
        cifar = zoo.create("unet_resnet18", encoder="resnet20")  # stage strides 1, 2, 4: no final block
    assert model.decoder[0].conv1.conv.in_channels == 2048 + 1024
    assert model.encoder.stages[0].stem.conv.in_channels == 1
    assert len(cifar.decoder) == 2 and cifar.min_input_size == (4, 4)
    out = cifar.eval()(torch.empty(1, 3, 12, 8, device="meta"))
    assert out.shape == (1, 2, 12, 8)


def test_encoder_argument_errors():
    with pytest.raises(UnknownModelError, match="did you mean resnet"):
        zoo.create("unet_resnet34", encoder="resnet35")
    with pytest.raises(ConfigurationError, match="must be a classifier.*'unet_padded' is a segmentation model"):
        zoo.create("unet_resnet34", encoder="unet_padded")
    with pytest.raises(InvalidArgumentError, match="encoder must be a registered model name"):
        zoo.create("unet_resnet34", encoder=nn.Conv2d(3, 3, 1))
    with pytest.raises(ConfigurationError, match=r"needs 5 decoder widths"):
        zoo.create("unet_resnet18", decoder_widths=(64, 32))
    with pytest.raises(ConfigurationError, match="upsample must be one of 'nearest', 'bilinear'"):
        zoo.create("unet_resnet18", upsample="transpose")


ENCODER_UNETS = [n for n in zoo.list_models(task="segmentation") if model_class(n) is EncoderUNet]


def _dilates(name: str) -> bool:
    encoder = zoo.model_info(name).config.encoder
    return "output_stride" in inspect.signature(model_class(encoder)).parameters


def test_every_encoder_unet_of_the_registry_has_its_expected_counts():
    """ENCODER_ROWS (the expected parameters, stride and decoder blocks) covers the registry's encoder U-Nets."""
    assert set(ENCODER_ROWS) == set(ENCODER_UNETS) and ENCODER_UNETS


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("name", [n for n in ENCODER_UNETS if _dilates(n)])
def test_encoder_unet_output_stride_dilates_its_encoder(name, output_stride):
    """The encoder is the dilated classifier (same parameters, same stages); sizes are multiples of output_stride."""
    model = small(name, output_stride=output_stride)
    encoder = zoo.model_info(name).config.encoder
    assert n_params(model) == zoo.model_info(name).num_params  # dilation adds no parameter
    assert model.total_stride == output_stride and model.min_input_size == (output_stride, output_stride)
    reference = zoo.create(encoder, num_classes=0, output_stride=output_stride).eval()
    reference.load_state_dict(model.encoder.state_dict(), strict=False)  # the encoder has no head
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        ours, theirs = model.encoder.forward_stages(x), reference.forward_stages(x)
        assert [t.shape[-1] for t in ours][-1] == 48 // output_stride
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b)
        assert model(x).shape == (1, 2, 64, 48)
    size = 3 * output_stride + 1
    with pytest.raises(
        InputShapeError, match=rf"not a multiple of {output_stride}.*{size - 1} and {size - 1 + output_stride}"
    ):
        model(torch.randn(1, 3, size, size))


@pytest.mark.parametrize("name", [n for n in ENCODER_UNETS if not _dilates(n)])
def test_encoder_unet_output_stride_of_an_encoder_that_cannot_dilate(name):
    encoder = zoo.model_info(name).config.encoder
    with pytest.raises(ConfigurationError, match=rf"unet: encoder {encoder} has no output_stride"):
        zoo.create(name, output_stride=16)


def test_encoder_unet_size_error_and_pad_input():
    model = small("unet_resnet18")
    message = r"height of 100 .*multiple of 32, the total stride of its encoder resnet18.*96 and 128"
    with pytest.raises(InputShapeError, match=message):
        model(torch.randn(1, 3, 100, 64))
    padder = small("unet_resnet18", pad_input=True)
    with torch.no_grad():
        assert padder(torch.randn(1, 3, 100, 70)).shape == (1, 2, 100, 70)


def test_encoder_head_is_removed():
    model = small("unet_resnet18")
    assert isinstance(model.encoder.fc, RemovedHead) and not list(model.encoder.fc.parameters())
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ConfigurationError, match="resnet18 has no global_pool: its head was removed"):
        model.encoder(x)
    assert len(model.encoder.forward_stages(x)) == 5


@pytest.mark.parametrize(
    ("name", "reference", "source"),
    [("unet_resnet34", "resnet34", "torchvision"), ("unet_convnext_tiny", "convnext_tiny", "torchvision")],
)
def test_encoder_imports_its_familys_weights(name, reference, source):
    """The classifier's weights (random here) load into the encoder; its stages then equal the reference's."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(1)
    ref = getattr(torchvision.models, reference)().eval()
    model = small(name)
    import_weights(model.encoder, ref, source=source)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model.encoder.forward_stages(x)[-1]
        theirs = ref.features(x) if hasattr(ref, "features") else _torchvision_resnet_features(ref, x)
    assert (ours - theirs).abs().max().item() <= 1e-5  # measured ~1e-6
    other = small("unet_resnet18")
    with pytest.raises(WeightsError, match="shape mismatch|missing|unexpected"):
        import_weights(other.encoder, ref, source=source)  # strict: another variant does not fit


def _torchvision_resnet_features(ref, x):
    x = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
    return ref.layer4(ref.layer3(ref.layer2(ref.layer1(x))))


def test_freeze_and_unfreeze_encoder():
    torch.manual_seed(0)
    model = zoo.create("unet_resnet18")
    model.freeze_encoder()
    model.train()
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    assert not model.encoder.training and model.decoder.training
    stats = model.encoder.stages[0].stem.norm.running_mean.clone()
    model(torch.randn(2, 3, 32, 32)).mean().backward()
    assert torch.equal(stats, model.encoder.stages[0].stem.norm.running_mean)  # batch norm statistics kept
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
    model.unfreeze_encoder()
    assert all(p.requires_grad for p in model.encoder.parameters()) and model.encoder.training
    model.eval()
    assert not model.encoder.training


def test_resnet_unets_equal_segmentation_models_pytorch():
    """Optional (segmentation_models_pytorch is not a dependency): same counts, and the same logits with its weights."""
    smp = pytest.importorskip("segmentation_models_pytorch")
    for name, (params, _, _) in ENCODER_ROWS.items():
        encoder = zoo.model_info(name).config.encoder
        if not encoder.startswith("resnet"):
            continue
        torch.manual_seed(0)
        ref = smp.Unet(encoder, encoder_weights=None, classes=2).eval()
        assert n_params(ref) == params
        if encoder == "resnet18":
            model = small(name)
            theirs = ref.state_dict()
            ours = model.state_dict()
            assert [tuple(v.shape) for v in ours.values()] == [tuple(v.shape) for v in theirs.values()]
            model.load_state_dict(dict(zip(ours, theirs.values(), strict=True)))
            x = torch.randn(1, 3, 64, 96)
            with torch.no_grad():
                assert (model(x) - ref(x)).abs().max().item() <= 1e-5


# --------------------------------------------------------------------------- overlap-tile inference


@pytest.mark.parametrize("length", [1, 5, 36, 100, 388, 389, 512, 1000])
@pytest.mark.parametrize(
    ("tile", "output", "margin", "grid"),
    [(572, 388, 0, 16), (188, 4, 0, 16), (220, 36, 0, 16), (64, 64, 8, 16), (32, 32, 0, 32), (17, 9, 2, 1)],
)
def test_tile_plan_covers_every_pixel_exactly_once(length, tile, output, margin, grid):
    plan = tile_plan(length, tile, output, margin=margin, grid=grid)
    count = np.zeros(length, dtype=int)
    extended = plan.before + length + plan.after
    for s in plan.spans:
        count[s.out : s.out + s.length] += 1
        assert s.start >= 0 and s.start + tile <= extended  # the tile lies in the mirrored image
        assert margin <= s.keep and s.keep + s.length <= output - margin  # only the tile's centre is kept
        # output pixel `keep` of the tile sits over input pixel start + (tile - output) / 2 + keep
        assert s.start + (tile - output) // 2 + s.keep == s.out + plan.before
    assert (count == 1).all()
    steps = {b.start - a.start for a, b in zip(plan.spans, plan.spans[1:], strict=False)}
    assert len(steps) <= 1 and all(step % grid == 0 for step in steps if output - 2 * margin >= grid)


def test_segment_a_512_slice_with_the_paper_network():
    """The paper's tiles (572 -> 388, on the 16-pixel grid) stitched equal one pass over the mirrored slice."""
    with torch.device("meta"):
        full = zoo.create("unet").eval()
    assert zoo.segment(full, torch.empty(1, 512, 512, device="meta")).shape == (2, 512, 512)
    model = small(width=4)
    image = torch.randn(1, 512, 512)
    stitched = zoo.segment(model, image)  # 4 tiles of 572x572
    model.pad_input = True
    with torch.no_grad():
        whole = model(image[None])[0]  # one 700x700 pass
    assert stitched.shape == (2, 512, 512)
    assert (stitched - whole).abs().max().item() <= 1e-5


def test_segment_equals_a_single_tile_pass():
    """An image whose mirrored extension is one valid tile (36 + 184 = 220, 52 + 184 = 236): the same computation."""
    model = small(width=4)
    image = torch.randn(1, 36, 52)
    extended = torch.from_numpy(np.pad(image.numpy(), ((0, 0), (92, 92), (92, 92)), mode="reflect"))
    with torch.no_grad():
        expected = model(extended[None])[0]
    assert expected.shape == (2, 36, 52)
    assert torch.equal(zoo.segment(model, image), expected)


def test_segment_many_small_tiles_and_batches():
    model = small(width=4)
    images = torch.randn(2, 1, 70, 90)
    stitched = zoo.segment(model, images, tile=220, batch_size=3)  # 3x3 tiles of 36 (step 32) per image
    model.pad_input = True
    with torch.no_grad():
        whole = model(images)
    assert stitched.shape == (2, 2, 70, 90)
    assert (stitched - whole).abs().max().item() <= 1e-5
    # one image alone: the same tiles in other batches (float rounding may differ in the last bits)
    torch.testing.assert_close(zoo.segment(model, images[1], tile=220), stitched[1], rtol=0, atol=1e-5)


def test_segment_padded_and_encoder_unets():
    padded = small("unet_padded", width=4)
    image = torch.randn(3, 50, 70)
    whole = zoo.segment(padded, image)  # run whole, mirrored to 64x80 and cropped back
    padded.pad_input = True
    with torch.no_grad():
        assert torch.equal(whole, padded(image[None])[0])
    tiled = zoo.segment(padded, image, tile=32, margin=4)
    assert tiled.shape == (2, 50, 70) and torch.isfinite(tiled).all()
    encoder_unet = small("unet_resnet18")
    assert zoo.segment(encoder_unet, torch.randn(3, 100, 40), tile=64).shape == (2, 100, 40)


def test_segment_errors():
    model = small(width=2)
    with pytest.raises(InputShapeError, match=r"tile 570 is not a valid input size of unet.*556 and 572"):
        zoo.segment(model, torch.randn(1, 64, 64), tile=570)
    with pytest.raises(InvalidArgumentError, match="needs a zoo segmenter"):
        zoo.segment(zoo.create("lenet5"), torch.randn(1, 32, 32))
    with pytest.raises(InputShapeError, match="expects 1 input channel"):
        zoo.segment(model, torch.randn(3, 64, 64))
    with pytest.raises(InputShapeError, match="4-D tensor"):
        zoo.segment(model, torch.randn(64, 64))
    with pytest.raises(ConfigurationError, match="margin 16 leaves nothing"):
        zoo.segment(small("unet_padded", width=2), torch.randn(3, 64, 64), tile=32, margin=16)
    with pytest.raises(ConfigurationError, match="batch_size must be a positive integer"):
        zoo.segment(model, torch.randn(1, 64, 64), batch_size=0)
