"""DenseNet family: torchvision parity (weights, stages, initialisation, dropout), its published key names, options.

The parameter counts, MACs against torchvision's metadata and the weight files are checked for
every variant by the registry-wide tests (test_models, test_analysis, test_weights_files).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn

import zoo
from zoo.errors import ConfigurationError, InputShapeError
from zoo.models.densenet import DenseNet, DenseNetConfig
from zoo.weights import import_weights
from zoo.weights.keymaps import convert_state_dict

from helpers import randomise_norms

DENSENETS = zoo.list_models("densenet*")


@pytest.fixture(scope="module")
def pair() -> tuple[nn.Module, nn.Module]:
    """torchvision's densenet121 (random weights, perturbed norms) and ours with its weights, in eval mode."""
    torch.manual_seed(0)
    theirs = torchvision.models.densenet121().eval()
    randomise_norms(theirs)
    return theirs, import_weights(zoo.create("densenet121"), theirs).eval()


def test_the_variants_are_torchvisions():
    assert DENSENETS == ["densenet121", "densenet169", "densenet201"]
    for name in DENSENETS:
        with torch.device("meta"):
            theirs = torchvision.models.get_model(name)
        assert sum(p.numel() for p in theirs.parameters()) == zoo.model_info(name).num_params
        assert zoo.model_info(name).torchvision == name


def test_stages_are_torchvisions_dense_block_outputs(pair):
    """stem (stride 2), dense block 1 (4) ... block 4 with norm5 and ReLU (32); the logits equal."""
    theirs, ours = pair
    x = torch.randn(2, 3, 64, 64)
    f = theirs.features
    with torch.no_grad():
        y = f.relu0(f.norm0(f.conv0(x)))
        expected = [y]
        y = f.denseblock1(f.pool0(y))
        expected.append(y)
        for i in (2, 3, 4):
            y = getattr(f, f"denseblock{i}")(getattr(f, f"transition{i - 1}")(y))
            expected.append(y)
        expected[-1] = torch.relu(f.norm5(y))
        stages = ours.forward_stages(x)
        assert (ours(x) - theirs(x)).abs().max() <= 1e-5
    assert ours.stage_strides == (2, 4, 8, 16, 32)
    assert ours.stage_channels == (64, 256, 512, 1024, 1024)
    for s, e in zip(stages, expected, strict=True):
        assert s.shape == e.shape
        assert (s - e).abs().max() <= 1e-5


def test_initialisation_is_torchvisions_with_the_same_seed():
    """The same policy (He fan-in convs, default linear with zero bias) and the same order of random draws."""
    torch.manual_seed(0)
    theirs = torchvision.models.densenet121()
    torch.manual_seed(0)
    ours = zoo.create("densenet121")
    converted = convert_state_dict(ours, theirs.state_dict())
    for key, value in ours.state_dict().items():
        assert torch.equal(value, converted[key]), key
    assert not ours.fc.bias.any()


def test_torchvisions_published_key_names_load(pair, tmp_path):
    """torchvision's files name the layers' children ``norm.1``, ``conv.1``, ...; they load as they are."""
    theirs, ours = pair
    legacy = {}
    for key, value in theirs.state_dict().items():
        for old, new in (("norm1", "norm.1"), ("conv1", "conv.1"), ("norm2", "norm.2"), ("conv2", "conv.2")):
            if f".{old}." in key and "denselayer" in key:
                key = key.replace(f".{old}.", f".{new}.")
        legacy[key] = value
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    path = tmp_path / "densenet121-legacy.pth"
    torch.save(legacy, path)
    loaded = zoo.create("densenet121", weights=path).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), ours(x))


def test_layer_dropout_is_torchvisions_drop_rate():
    """`layer_drop_rate` drops each dense layer's output in training, with torchvision's random draws."""
    torch.manual_seed(0)
    theirs = torchvision.models.densenet121(drop_rate=0.2)
    ours = import_weights(zoo.create("densenet121", layer_drop_rate=0.2), theirs)
    x = torch.randn(2, 3, 32, 32)
    outs = []
    for model in (theirs, ours):
        torch.manual_seed(1)
        outs.append(model(x))
    assert (outs[0] - outs[1]).abs().max() <= 1e-5
    torch.manual_seed(2)
    assert (ours(x) - outs[1]).abs().max() > 1e-3  # other masks, another output
    ours.eval()
    with torch.no_grad():
        assert torch.equal(ours(x), ours(x))


def test_memory_efficient_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    plain = zoo.create("densenet121")
    efficient = zoo.create("densenet121", memory_efficient=True)
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for model in (plain, efficient):
        out = model(x)
        out.square().mean().backward()
        grads.append((out.detach(), {n: p.grad for n, p in model.named_parameters()}))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    for name, g in grads[0][1].items():
        assert torch.allclose(g, grads[1][1][name], atol=1e-5), name


def test_too_small_input_names_the_transition_pool():
    model = zoo.create("densenet121").eval()
    assert model.min_input_size == (29, 29)
    with pytest.raises(InputShapeError, match=r"at least 29x29, got 28x28.*stages\.4\.transition\.pool"):
        model(torch.randn(1, 3, 28, 28))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer_drop_rate": 1.0}, r"layer_drop_rate must be a number in \[0, 1\)"),
        ({"memory_efficient": "yes"}, "memory_efficient must be True or False"),
        ({"num_classes": -1}, "num_classes must be an integer >= 0"),
    ],
)
def test_bad_arguments_are_one_line(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        zoo.create("densenet121", **kwargs)


def test_a_small_densenet_exports_and_traces():
    """torch.export and torch.jit.trace of the family's code (layers fed lists, concatenation, transitions).

    A small row of the table keeps this to about 5 s; densenet121 took 28 s on the 2-core development machine.
    """
    torch.manual_seed(0)
    model = DenseNet(DenseNetConfig((2, 3, 2, 2), growth_rate=8, stem_width=16), num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), expected, rtol=1e-5, atol=1e-5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace is deprecated in favour of export
            traced = torch.jit.trace(model, x)
        torch.testing.assert_close(traced(x), expected, rtol=1e-5, atol=1e-5)
    assert model.stage_channels == (16, 32, 40, 36, 34)  # +2k, then halve and grow: 20 + 2k, 18 + 2k
