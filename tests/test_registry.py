"""The registry: names, wildcards, cards, errors for unknown names and arguments, duplicates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from zoo.errors import InvalidArgumentError, UnknownModelError
from zoo.registry import Paper, Variant, register_model


def test_issue_example():
    m = zoo.create("vgg16", num_classes=10, in_channels=1)
    assert m(torch.randn(1, 1, 32, 32)).shape == (1, 10)
    assert zoo.list_models("vgg*") == [
        "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    ]  # fmt: skip
    card = zoo.model_info("alexnet")
    assert card.family == "alexnet" and card.paper.year == 2012 and card.num_params == 61_100_840
    assert card.input_size == (3, 224, 224) and card.min_input_size == (63, 63)
    assert card.mean == (0.485, 0.456, 0.406) and card.std == (0.229, 0.224, 0.225)


def test_vgg16_parameter_count_as_in_the_issue():
    assert sum(p.numel() for p in zoo.create("vgg16").parameters()) == 138_357_544


def test_list_models_patterns_and_tasks():
    everything = zoo.list_models()
    assert {"lenet5", "lenet5_1998", "alexnet", "vgg16"} <= set(everything)
    assert zoo.list_models("VGG1?") == ["vgg11", "vgg13", "vgg16", "vgg19"]
    assert zoo.list_models("nothing*") == []
    assert set(zoo.list_models(task="classification")) <= set(everything)
    with pytest.raises(InvalidArgumentError, match="unknown task 'detection'"):
        zoo.list_models(task="detection")


def test_natural_order():
    names = zoo.list_models("vgg*")
    assert names.index("vgg11_bn") < names.index("vgg13")


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("vgg166", "vgg16"), ("alexnt", "alexnet"), ("lenet", "lenet5"), ("VGG16_BM", "vgg16_bn")],
)
def test_unknown_name_suggests_closest(name, suggestion):
    with pytest.raises(UnknownModelError, match=f"unknown model '{name}'; did you mean {suggestion}\\b"):
        zoo.create(name)
    with pytest.raises(UnknownModelError):
        zoo.model_info(name)


def test_unknown_name_without_close_match():
    with pytest.raises(UnknownModelError, match="zoo list"):
        zoo.create("transformer")


def test_name_is_case_insensitive():
    assert zoo.model_info("VGG16").name == "vgg16"


def test_mistyped_keyword_suggests_and_lists():
    with pytest.raises(InvalidArgumentError, match="'num_class'; did you mean 'num_classes'.*valid arguments: in_chan"):
        zoo.create("vgg16", num_class=10)


def test_unknown_keyword_lists_valid_ones():
    with pytest.raises(InvalidArgumentError, match="unexpected argument 'pretrained'; valid arguments: .*num_classes"):
        zoo.create("alexnet", pretrained=True)


def test_registering_twice_raises():
    with pytest.raises(ValueError, match="'vgg16' is already registered"):

        @register_model(
            family="dup",
            paper=Paper("x", 2020, "https://example.org"),
            input_size=(3, 8, 8),
            min_input_size=(1, 1),
            variants={"vgg16": Variant(None, 0, "none")},
        )
        class Dup(nn.Module):
            def __init__(self, config, *, num_classes: int = 1):
                super().__init__()

    assert zoo.model_info("vgg16").family == "vgg"


def test_created_model_knows_its_card():
    m = zoo.create("lenet5")
    assert m.card is zoo.model_info("lenet5")
    assert m.model_name == "lenet5"


def test_card_as_dict_is_plain_data():
    d = zoo.model_info("vgg16_bn").as_dict()
    assert d["num_params"] == 138_365_992 and d["paper"]["year"] == 2014 and d["input_size"] == [3, 224, 224]


@pytest.mark.parametrize("name", zoo.list_models())
def test_model_card_prints_readably(name):
    """str(card) and IPython's pretty printer give `zoo info`'s text, not a one-line repr."""
    card = zoo.model_info(name)
    text = str(card)
    assert text.splitlines()[0] == f"{name}  ({card.family}, {card.task})"
    assert f"{card.num_params:,}" in text and card.paper.url in text

    class Printer:
        def __init__(self):
            self.out = []

        def text(self, s):
            self.out.append(s)

    printer = Printer()
    card._repr_pretty_(printer, False)
    assert printer.out == [text]


def test_numpy_integers_are_integers():
    """num_classes=np.int64(7) (e.g. from len(np.unique(labels))) builds like 7; a numpy float is still refused."""
    import numpy as np

    model = zoo.create("lenet5", num_classes=np.int64(7), in_channels=np.int32(1))
    assert model.num_classes == 7 and type(model.num_classes) is int and model.fc.out_features == 7
    with pytest.raises(zoo.ZooError, match="num_classes must be a non-negative integer|num_classes must be"):
        zoo.create("lenet5", num_classes=np.float64(7.0))
