"""The `zoo` command line: list, info, and one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import timm

import zoo
from zoo.cli import main


def test_list_all_and_pattern(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "vgg16_bn" in out and "138,365,992" in out and "lenet5_1998" in out
    assert main(["list", "vgg1?", "--names-only"]) == 0
    assert capsys.readouterr().out.split() == ["vgg11", "vgg13", "vgg16", "vgg19"]


def test_list_without_match(capsys):
    assert main(["list", "transformer*"]) == 1
    assert "no model matches 'transformer*'" in capsys.readouterr().err


def test_info(capsys):
    assert main(["info", "alexnet"]) == 0
    out = capsys.readouterr().out
    assert "ImageNet Classification with Deep Convolutional Neural Networks" in out
    assert "61,100,840" in out and "minimum 63x63" in out
    assert main(["info", "vgg16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_params"] == 138_357_544


def test_unknown_name_is_one_line_and_non_zero(capsys):
    assert main(["info", "vgg166"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    expected = "zoo: error: unknown model 'vgg166'; did you mean vgg16, vgg19, vgg13?"
    assert captured.err.strip().splitlines() == [expected]


def test_debug_shows_the_traceback():
    from zoo.errors import UnknownModelError

    with pytest.raises(UnknownModelError):
        main(["--debug", "info", "vgg166"])


def test_console_script_end_to_end():
    """As a user runs it: `python -m zoo.cli info vgg166` exits non-zero with one line and no traceback."""
    r = subprocess.run([sys.executable, "-m", "zoo.cli", "info", "vgg166"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == "zoo: error: unknown model 'vgg166'; did you mean vgg16, vgg19, vgg13?"
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("name", zoo.list_models())
def test_info_lists_the_pretrained_weights_of_every_model(name, capsys):
    """`zoo info` shows each model's weights with their preprocessing (torchvision's with accuracy)."""
    assert main(["info", name]) == 0
    out = capsys.readouterr().out
    card = zoo.model_info(name)
    if card.torchvision:
        assert "torchvision:IMAGENET1K_V1" in out and "% (ImageNet-1K)" in out and f"crop {card.input_size[-1]}" in out
    published = bool(card.timm and timm.list_pretrained(f"{card.timm}.*"))  # convnextv2_small has none
    if published:
        assert "timm:" in out
    if not (card.torchvision or published):
        assert "weights:        none pretrained" in out


def test_bench_help_describes_the_command_and_its_defaults(capsys):
    from zoo.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "alternating between them" in out and "medians" in out  # a description, not only the usage
    for default in ("(default: 8)", "(default: 5)", "infer, the default", "fp32 (the default)"):
        assert default in " ".join(out.split()), default
