"""The error catalogue (docs/errors.md): every bad input gets one clear line, and the CLI exits non-zero.

Each case is (id, what the user did, how to provoke it, a regex the message must match). The
message must be a single line; the ids must be exactly the ones docs/errors.md lists.
"""

from __future__ import annotations

import io
import os
import random
import re
from pathlib import Path
from unittest import mock

import pytest
import torch
import torchvision

import zoo
from zoo.weights import import_weights, load_file, save_file

ROOT = Path(__file__).resolve().parents[1]


def _file(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


EVIL_PICKLE = b"\x80\x04cos\nsystem\n(Vtouch /tmp/zoo-pwned\ntR."  # unpickled, it would run a shell command


def _compile_without_compiler(tmp: Path) -> None:
    from zoo.training import ClassificationTask

    with mock.patch("shutil.which", return_value=None):
        ClassificationTask("lenet5", num_classes=10, in_channels=1, compile=True)


def _saved(tmp: Path, name: str, model_name: str, **kw) -> Path:
    path = tmp / name
    torch.save(zoo.create(model_name, **kw).state_dict(), path)
    return path


# --------------------------------------------------------------------------- the Python API
def _short_resnet18() -> bytes:
    """torchvision's resnet18 state dict, one tensor short, as file bytes."""
    state = torchvision.models.resnet18().state_dict()
    del state["layer1.0.conv1.weight"]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _offline(action):
    """Run `action` with downloads turned off."""
    old = os.environ.get("ZOO_OFFLINE")
    os.environ["ZOO_OFFLINE"] = "1"
    try:
        return action()
    finally:
        os.environ.pop("ZOO_OFFLINE") if old is None else os.environ.__setitem__("ZOO_OFFLINE", old)


API_CASES = [
    ("unknown-model", "an unknown model name", lambda t: zoo.create("vgg166"), r"unknown model 'vgg166'; did you mean vgg16"),
    ("mistyped-keyword", "a mistyped keyword", lambda t: zoo.create("resnet18", num_class=10), r"did you mean 'num_classes'"),
    ("unknown-keyword", "a keyword the model does not take", lambda t: zoo.create("alexnet", pretrained=True),
     r"unexpected argument 'pretrained'; valid arguments: .*in_channels"),
    ("zero-channels", "in_channels=0", lambda t: zoo.create("vgg11", in_channels=0), r"in_channels must be a positive integer, got 0"),
    ("float-channels", "in_channels=3.0", lambda t: zoo.create("resnet18", in_channels=3.0), r"in_channels must be a positive integer, got 3.0"),
    ("negative-classes", "num_classes=-1", lambda t: zoo.create("convnext_tiny", num_classes=-1), r"num_classes must be an integer >= 0"),
    ("string-classes", "num_classes='10'", lambda t: zoo.create("lenet5", num_classes="10"), r"num_classes must be an integer >= 0, got '10'"),
    ("zero-width", "a U-Net of width 0", lambda t: zoo.create("unet_padded", width=0), r"width must be a positive integer, got 0"),
    ("bad-depth", "a U-Net of depth -1", lambda t: zoo.create("unet_padded", depth=-1), r"depth must be a positive integer"),
    ("bad-drop-rate", "drop_rate=2", lambda t: zoo.create("vgg11", drop_rate=2.0), r"drop_rate must be a number in \[0, 1\)"),
    ("string-activation", "act_layer='relu' (a string)", lambda t: zoo.create("resnet18", act_layer="relu"),
     r"act_layer must be a layer class or functools.partial"),
    ("input-too-small", "a 32x32 image into alexnet", lambda t: zoo.create("alexnet")(torch.randn(1, 3, 32, 32)),
     r"alexnet needs an input of at least 63x63, got 32x32: the feature map collapses at"),
    ("inception-too-small", "a 74x74 image into inception_v3", lambda t: zoo.create("inception_v3").eval()(torch.randn(1, 3, 74, 74)),
     r"inception_v3 needs an input of at least 75x75, got 74x74"),
    ("wrong-channels", "an RGB image into a 1-channel model", lambda t: zoo.create("lenet5")(torch.randn(1, 3, 32, 32)),
     r"lenet5 expects 1 input channel\(s\), got 3 .*in_channels=3"),
    ("3d-tensor", "an image without a batch dimension", lambda t: zoo.create("resnet18")(torch.randn(3, 64, 64)),
     r"expects a 4-D tensor .* got a 3-D tensor .* x.unsqueeze\(0\)"),
    ("5d-tensor", "a video clip (5-D)", lambda t: zoo.create("resnet18")(torch.randn(1, 3, 2, 64, 64)), r"got a 5-D tensor of shape"),
    ("integer-tensor", "uint8 pixels", lambda t: zoo.create("resnet18")(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)),
     r"expects a floating-point tensor, got torch.uint8; convert it with x.float\(\)"),
    ("lenet-size", "a 28x28 MNIST digit into lenet5", lambda t: zoo.create("lenet5")(torch.randn(1, 1, 28, 28)),
     r"lenet5 takes exactly 32x32 .* create it with input_size=28"),
    ("unet-odd-size", "a 570x570 input to the paper U-Net", lambda t: zoo.create("unet")(torch.randn(1, 1, 570, 570)),
     r"unet cannot take an input height of 570 .* nearest valid heights: 556 and 572"),
    ("unet-padded-size", "a 250x250 input to unet_padded", lambda t: zoo.create("unet_padded")(torch.randn(1, 3, 250, 250)),
     r"not a multiple of 16 .* nearest valid heights: 240 and 256"),
    ("kernel-too-large", "a kernel larger than the padded input", lambda t: zoo.arithmetic.conv_output_size(2, 3),
     r"the kernel does not fit: input 2 with padding 0 is 2 wide, kernel 3"),
    ("dropped-border", "a stride that drops the last row (exact mode)",
     lambda t: zoo.arithmetic.conv_output_size(10, 3, stride=2, exact=True), r"leaves the last 1 row"),
    ("truncated-checkpoint", "a truncated checkpoint",
     lambda t: zoo.create("lenet5", weights=_file(t, "cut.pt", _saved(t, "full.pt", "lenet5").read_bytes()[:200])),
     r"cannot read weights from .*cut.pt.*corrupt, truncated"),
    ("garbage-checkpoint", "a file that is not a checkpoint",
     lambda t: zoo.create("lenet5", weights=_file(t, "junk.pt", b"this is not a checkpoint")), r"cannot read weights from .*junk.pt"),
    ("missing-checkpoint", "a weights path that does not exist", lambda t: zoo.create("lenet5", weights=t / "nope.pt"),
     r"weights file '.*nope.pt' does not exist"),
    ("other-architecture", "a checkpoint of another architecture",
     lambda t: zoo.create("resnet18", weights=_saved(t, "vgg.pt", "vgg11_bn", num_classes=2)), r"do not fit resnet18"),
    ("one-key-short", "torchvision's file with one tensor missing",
     lambda t: zoo.create("resnet18", weights=_file(t, "short.pth", _short_resnet18())),
     r"closest layout, torchvision's, differs by 1 missing key\(s\): stages.1.0.conv1.conv.weight \(<- layer1.0.conv1.weight\)"),
    ("weights-not-a-path", "weights=123", lambda t: zoo.create("resnet18", weights=123),
     r"weights must be a file path, a URL or a source name"),
    ("weights-folder", "weights= a folder", lambda t: zoo.create("resnet18", weights=t), r"is a folder; pass the weights file inside it"),
    ("unknown-weights-tag", "a torchvision weights name the model does not have",
     lambda t: zoo.create("resnet50", weights="torchvision:IMAGENET1K_V3"), r"torchvision has no weights 'IMAGENET1K_V3' for resnet50; it has IMAGENET1K_V1, IMAGENET1K_V2"),
    ("mismatched-keys", "torchvision weights of another variant",
     lambda t: import_weights(zoo.create("resnet34"), torchvision.models.resnet18()), r"do not fit resnet34: .*missing key"),
    ("code-in-checkpoint", "a checkpoint whose unpickling would run code",
     lambda t: load_file(_file(t, "evil.pt", EVIL_PICKLE)), r"cannot read weights"),
    ("no-counterpart", "torchvision weights for a model torchvision does not have",
     lambda t: zoo.create("resnet20", weights="torchvision"), r"resnet20 has no torchvision counterpart, so there are no torchvision weights"),
    ("offline-weights", "torchvision weights offline (ZOO_OFFLINE=1) and not in the cache",
     lambda t: _offline(lambda: zoo.create("alexnet", weights="torchvision")),
     r"torchvision's alexnet weights \(IMAGENET1K_V1\) are not in the cache and downloads are off .*: fetch https://download.pytorch.org/models/alexnet-owt-7be5be79.pth into .*alexnet-owt-7be5be79.pth"),
    ("pattern-not-a-string", "list_models(123)", lambda t: zoo.list_models(123),
     r"a model name pattern must be a string such as 'vgg\*', got 123"),
    ("input-dtype", "a float64 input to a float32 model", lambda t: zoo.create("lenet5")(torch.zeros(1, 1, 32, 32, dtype=torch.float64)),
     r"lenet5 has torch.float32 weights and got a torch.float64 input; convert the input with x.to\(torch.float32\)"),
    ("single-sample-batch-norm", "a training-mode forward of one image that batch norm sees at 1x1",
     lambda t: zoo.create("resnet18").train()(torch.zeros(1, 3, 32, 32)),
     r"resnet18 in training mode with a batch of 1 image of 32x32: batch norm stages.4.0.conv1.norm sees a 1x1 map.*batches of at least 2"),
    ("unknown-task", "an unknown task filter", lambda t: zoo.list_models(task="detection"), r"unknown task 'detection'"),
    ("unwritable-weights", "saving weights into a folder that does not exist",
     lambda t: save_file(zoo.create("lenet5"), t / "missing" / "w.safetensors"), r"cannot write .*: the folder .* does not exist"),
    ("compile-without-compiler", "a task with compile=True on a machine without a C++ compiler",
     _compile_without_compiler, r"compile=True needs a C\+\+ compiler .*install one"),
]  # fmt: skip

# --------------------------------------------------------------------------- the command line
CLI_CASES = [
    ("cli-unknown-model", "zoo info vgg166", ["info", "vgg166"], r"unknown model 'vgg166'; did you mean vgg16"),
    ("cli-summary-too-small", "zoo summary alexnet --input 32", ["summary", "alexnet", "--input", "32"],
     r"alexnet cannot take a 3x32x32 input"),
    ("cli-bad-input-size", "zoo summary vgg16 --input abc", ["summary", "vgg16", "--input", "abc"], r"input size"),
    ("cli-compare-nothing", "zoo compare without names", ["compare"], r"give model names or --all"),
    ("cli-plot-folder", "zoo compare --plot into a missing folder",
     ["compare", "vgg11", "--plot", "/nonexistent/dir/plot.png"], r"cannot write the plot to /nonexistent/dir/plot.png"),
    ("cli-bench-batch", "zoo bench with batch size 0", ["bench", "resnet18", "--batch-size", "0"], r"batch_size must be a positive integer"),
    ("cli-bench-counterpart", "zoo bench of a model torchvision lacks", ["bench", "resnet20"], r"resnet20 has no torchvision counterpart"),
    ("cli-export-missing", "zoo export of a checkpoint that does not exist", ["export", "no-such.ckpt", "out.safetensors"],
     r"weights file 'no-such.ckpt' does not exist"),
    ("cli-export-not-weights", "zoo export of a file that is not a checkpoint",
     ["export", str(ROOT / "README.md"), "out.safetensors"], r"cannot read weights from '.*README.md'"),
]  # fmt: skip


def _one_line(message: str) -> str:
    lines = message.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{message}"
    return lines[0]


@pytest.mark.parametrize(("case", "what", "action", "pattern"), API_CASES, ids=[c[0] for c in API_CASES])
def test_api_error(case, what, action, pattern, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(zoo.ZooError) as info:
        action(tmp_path)
    assert re.search(pattern, _one_line(str(info.value))), f"{case}: {info.value}"
    assert not Path("/tmp/zoo-pwned").exists()


@pytest.mark.parametrize(("case", "what", "argv", "pattern"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_error(case, what, argv, pattern, zoo_cli):
    r = zoo_cli(*argv)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    line = _one_line(r.stderr)
    assert line.startswith("zoo: error: ") and re.search(pattern, line), f"{case}: {line}"


def catalogue_ids() -> list[str]:
    return re.findall(r"^\| `([\w-]+)` \|", (ROOT / "docs" / "errors.md").read_text(), re.M)


def test_catalogue_lists_exactly_the_tested_cases():
    tested = [c[0] for c in API_CASES + CLI_CASES + TRAINING_CASES]
    assert len(tested) == len(set(tested))
    assert sorted(catalogue_ids()) == sorted(tested)
    assert len(tested) >= 30


# --------------------------------------------------------------------------- recipes and data (zoo fit)
DIGITS = str(ROOT / "recipes" / "lenet5_digits.yaml")
CIFAR = str(ROOT / "recipes" / "resnet20_cifar10.yaml")
FOLDER = ["--config", CIFAR, "--data", "zoo.training.ImageFolderDataModule"]  # the CIFAR recipe on any image folder


def _yaml(t: Path, text: str) -> str:
    (t / "recipe.yaml").write_text(text)
    return str(t / "recipe.yaml")


def _image_folder(t: Path, *, empty_class: bool = False, broken: bool = False) -> str:
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            folder = t / "images" / split / cls
            folder.mkdir(parents=True)
            if empty_class and cls == "dog" and split == "train":
                continue
            for i in range(2):
                Image.new("RGB", (32, 32), (i * 60, 0, 0)).save(folder / f"{i}.png")
    if broken:
        (t / "images" / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    return str(t / "images")


QUICK = ("--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--test_after_fit", "false")


def _one_epoch_run(t: Path) -> str:
    """A finished one-epoch digits run in `t` (two steps); its last checkpoint."""
    from zoo.training.cli import main

    here = os.getcwd()
    os.chdir(t)  # in this process (no second interpreter start-up); the run folder goes under t
    try:
        assert main(["fit", "--config", DIGITS, "--trainer.max_epochs", "1", *QUICK]) == 0
    finally:
        os.chdir(here)
    return str(next(t.glob("runs/*/version_0/checkpoints/last.ckpt")))


TRAINING_CASES = [
    ("recipe-syntax", "a recipe that is not valid YAML", lambda t: ["fit", "--config", _yaml(t, "model:\n  init_args: {model: lenet5\n")],
     r"Problems parsing config: while parsing a flow mapping"),
    ("recipe-unknown-key", "a recipe with an unknown key",
     lambda t: ["fit", "--config", _yaml(t, "model:\n  class_path: zoo.training.ClassificationTask\n  init_args:\n    model: lenet5\n    nonsense: 3\n")],
     r"Option 'nonsense' is not accepted"),
    ("recipe-wrong-type", "a value of the wrong type", lambda t: ["fit", "--config", DIGITS, "--trainer.max_epochs", "abc"],
     r"trainer.max_epochs: expected int or null, got 'abc'"),
    ("zero-epochs", "zoo fit --trainer.max_epochs 0", lambda t: ["fit", "--config", DIGITS, "--trainer.max_epochs", "0"],
     r"--trainer.max_epochs 0 trains nothing .*give 1 or more"),
    ("endless-epochs", "zoo fit --trainer.max_epochs -1", lambda t: ["fit", "--config", DIGITS, "--trainer.max_epochs", "-1"],
     r"--trainer.max_epochs -1 would train without end .*--trainer.max_steps N"),
    ("resume-longer-schedule", "resuming a one-cycle run with more epochs than it planned",
     lambda t: ["fit", "--config", DIGITS, "--ckpt_path", _one_epoch_run(t), "--trainer.max_epochs", "2", *QUICK],
     r"the one-cycle learning-rate schedule was sized for 2 steps and training reached step 3: a run resumed .*start a new run"),
    ("recipe-missing", "a recipe file that does not exist", lambda t: ["fit", "--config", str(t / "nope.yaml")], r"File does not exist"),
    ("recipe-unknown-model", "a recipe naming an unknown model", lambda t: ["fit", "--config", DIGITS, "--model.model", "lenet6"],
     r"unknown model 'lenet6'; did you mean lenet5"),
    ("dataset-missing", "MNIST not in --data.root",
     lambda t: ["fit", "--config", str(ROOT / "recipes" / "lenet5_mnist.yaml"), "--data.root", str(t / "none"), "--data.download", "false"],
     r"MNIST not found: looked for .* --data.download true"),
    ("image-folder-missing", "an image folder that does not exist", lambda t: ["fit", *FOLDER, "--data.root", str(t / "none")],
     r"image folder not found: .* does not exist"),
    ("image-folder-empty-class", "an image folder with an empty class",
     lambda t: ["fit", *FOLDER, "--data.root", _image_folder(t, empty_class=True), "--data.cache_dir", str(t / "c")],
     r"class folder .*train/dog holds no images"),
    ("image-folder-unreadable", "an unreadable image",
     lambda t: ["fit", *FOLDER, "--data.root", _image_folder(t, broken=True), "--data.cache_dir", str(t / "c")],
     r"cannot decode image train/cat/broken.png"),
    ("ckpt-missing", "zoo fit --ckpt_path of a file that does not exist",
     lambda t: ["fit", "--config", DIGITS, "--ckpt_path", str(t / "missing.ckpt")],
     r"checkpoint not found: .*missing.ckpt; give a checkpoint written by zoo fit"),
    ("ckpt-folder", "zoo validate --ckpt_path of a folder", lambda t: ["validate", "--config", DIGITS, "--ckpt_path", str(t)],
     r"the checkpoint .* is a folder; give"),
    ("ckpt-corrupt", "zoo test --ckpt_path of random bytes",
     lambda t: ["test", "--config", DIGITS, "--ckpt_path", str(_file(t, "junk.ckpt", random.Random(0).randbytes(4096)))],
     r"cannot read the checkpoint .*junk.ckpt: it is corrupt, truncated or not a checkpoint; give"),
    ("ckpt-code", "zoo test --ckpt_path of a pickle that would run code",
     lambda t: ["test", "--config", DIGITS, "--ckpt_path", str(_file(t, "evil.ckpt", EVIL_PICKLE))],
     r"cannot read the checkpoint .*evil.ckpt: it refers to code \(os.system\), which zoo never loads"),
    ("ckpt-weights-file", "zoo test --ckpt_path of a plain weights file (no Lightning state)",
     lambda t: ["test", "--config", DIGITS, "--ckpt_path", str(_saved(t, "lenet.pt", "lenet5"))],
     r"lenet.pt is not a Lightning checkpoint .*model.init_args.weights"),
    ("config-empty", "zoo fit --config of an empty file", lambda t: ["fit", "--config", _yaml(t, "# nothing yet\n")],
     r"the config .*recipe.yaml is empty, not a mapping; a config must be a mapping with model:, data: and trainer: sections"),
    ("config-list", "zoo fit --config of a YAML list", lambda t: ["fit", "--config", _yaml(t, "- model\n- data\n")],
     r"the config .*recipe.yaml is a list, not a mapping; a config must be a mapping with model:, data: and trainer:"),
    ("config-scalar", "zoo fit --config of a YAML scalar", lambda t: ["fit", "--config", _yaml(t, "42\n")],
     r"the config .*recipe.yaml is a single value \(42\), not a mapping; a config must be a mapping"),
    ("run-folder-unwritable", "an output folder that cannot be written",
     lambda t: ["fit", "--config", DIGITS, "--trainer.logger.init_args.save_dir", "/proc/zoo-cannot-write"],
     r"cannot write the run folder /proc/zoo-cannot-write"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "what", "argv", "pattern"), TRAINING_CASES, ids=[c[0] for c in TRAINING_CASES])
def test_training_error(case, what, argv, pattern, tmp_path, zoo_cli):
    r = zoo_cli(*argv(tmp_path), cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "weights_only" not in r.stderr  # never torch's advice to load a file unsafely
    assert not Path("/tmp/zoo-pwned").exists()
    line = _one_line(r.stderr.strip().splitlines()[-1])
    assert line.startswith("zoo: error: ") and re.search(pattern, line), f"{case}: {r.stderr}"
