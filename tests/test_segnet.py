"""SegNet: the paper's layout and count, max-unpooling with the encoder's indices, odd sizes, vgg16_bn import.

The registry-wide tests (tests/test_models.py, test_export.py, test_onnx.py, ...) cover the
segmenter contract; these check what is SegNet's own.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from zoo.errors import InputShapeError
from zoo.layers import ConvNormAct, MaxUnpool
from zoo.models.segnet import SegNet, SegNetConfig
from zoo.weights import import_weights

SMALL = SegNetConfig(((4, 4), (8, 8), (8,)))  # three levels, milliseconds


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_the_papers_layout_and_parameter_count():
    with torch.device("meta"):
        model = zoo.create("segnet")
    convs = [m for m in model.modules() if isinstance(m, ConvNormAct)]
    assert len(convs) == 26  # 13 in the encoder, 13 in the decoder (the last gives the classes)
    decoder_widths = [c.conv.out_channels for level in model.decoder for c in level.convs]
    assert decoder_widths == [512, 512, 512, 512, 512, 256, 256, 256, 128, 128, 64, 64, 11]
    last = model.decoder[-1].convs[-1]
    assert not hasattr(last, "norm") and not hasattr(last, "act") and last.conv.bias is not None
    assert all(c.conv.bias is not None and hasattr(c, "norm") for c in convs[:-1])  # Caffe: bias and BN
    assert n_params(model) == zoo.model_info("segnet").num_params == 29_449_355
    assert n_params(model.encoder) == 14_723_136  # vgg16_bn's features: the paper's "14.7M"
    assert sum(isinstance(m, MaxUnpool) for m in model.modules()) == 5
    card = zoo.model_info("segnet")
    assert card.input_size == (3, 360, 480) and card.num_classes == 11


def test_decoder_upsamples_with_the_encoders_indices():
    """Where the encoder's maxima were, the first decoder level's unpool puts its values; elsewhere zeros."""
    torch.manual_seed(0)
    model = SegNet(SMALL, num_classes=3).eval()
    x = torch.randn(1, 3, 12, 12)
    seen = {}
    model.decoder[0].unpool.register_forward_hook(lambda m, args, out: seen.update(out=out, args=args))
    with torch.no_grad():
        model(x)
    pooled, indices, size = seen["args"]
    assert size == (3, 3) and pooled.shape[-2:] == (2, 2)  # 12 -> 6 -> 3 -> 2 (ceil), back to 3
    flat = seen["out"].flatten(2)
    expected = torch.zeros_like(flat).scatter_(2, indices.flatten(2), pooled.flatten(2))
    assert torch.equal(flat, expected)
    assert (flat != 0).sum(-1).le(4).all()  # at most one non-zero per pooled value


@pytest.mark.parametrize("size", [(45, 61), (17, 23), (1, 1), (360, 480)])
def test_odd_sizes_come_back_exactly(size):
    model = SegNet(SMALL, num_classes=3).eval()
    assert model.output_size(size) == size
    assert model.nearest_valid_sizes(size[0]) == (size[0], size[0])
    if size == (360, 480):
        with torch.device("meta"):
            meta = zoo.create("segnet").eval()
        assert meta(torch.empty(1, 3, *size, device="meta")).shape == (1, 11, *size)
        return
    with torch.no_grad():
        assert model(torch.randn(2, 3, *size)).shape == (2, 3, *size)


def test_input_errors_are_one_line():
    model = SegNet(SMALL, num_classes=3)
    with pytest.raises(InputShapeError, match="expects 3 input channel"):
        model(torch.randn(1, 1, 16, 16))
    with pytest.raises(InputShapeError, match="Add a batch dimension"):
        model(torch.randn(3, 16, 16))


def test_encoder_imports_torchvision_vgg16_bn():
    """A randomly initialised vgg16_bn (BN statistics perturbed): the encoder's output equals its features'."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ref = torchvision.models.vgg16_bn().eval()
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
    model = zoo.create("segnet").eval()
    import_weights(model.encoder, ref)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = ref.features(x)
        ours, _ = model.encoder(x)
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    assert model(x).shape == (1, 11, 64, 96)
