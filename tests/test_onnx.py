"""ONNX export (`zoo.deploy`), checked in ONNX Runtime for every registered model.

The registry-wide test exports each model's graph at its smallest valid input, with a
dynamic batch (and a dynamic height and width where `dynamic_size_problem` allows them),
checks it with `onnx.checker`, and runs it in ONNX Runtime: the logits equal PyTorch's within
1e-5 + 1e-4 of the logits' scale (fp32: the graph only reorders float arithmetic), at that
size with batch 1 and, for dynamic graphs, at a second valid size (not square) with batch 2.
Random weights, so every parameter counts.

The graph is written without its weights (``weights_in_file=False``; ONNX Runtime reads the
model's own tensors as inputs): with them, the TorchScript exporter serialises the weights
four times over and the sweep took 154 s for the 30 models under 100M parameters alone (9 GB
of weights for the whole registry). Files with the weights inside, batch norms folded by the
exporter, are checked on every model under 1M parameters, on AlexNet (an adaptive pool that
needs `_FixedWindowAdaptivePool`) and on a trained run (`zoo predict`).
"""

from __future__ import annotations

import csv
import io
import itertools
import os
from contextlib import redirect_stderr
from pathlib import Path

import pytest
import torch

import zoo
from zoo.errors import ConfigurationError, InputShapeError
from zoo.models.base import ZooSegmenter

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install -e '.[onnx]'")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")

from zoo.deploy import OnnxModel, dynamic_size_problem, export_onnx, export_run, predict_onnx, tolerance  # noqa: E402

from helpers import random_model  # noqa: E402

SMALL = 1_000_000  # the models also checked with their weights inside the file


def _second_size(model: torch.nn.Module, h: int) -> int:
    """A valid height above `h`: the next valid size of a segmenter, else h + 16."""
    if isinstance(model, ZooSegmenter):
        return model.nearest_valid_sizes(h + 1, 0)[1]
    return h + 16


def _check(model: torch.nn.Module, session: OnnxModel, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected = model(x)
    got = session(x)
    assert got.shape == expected.shape
    diff = float((got - expected).abs().max())
    assert diff <= tolerance(expected), f"max |ORT - torch| {diff:.2e} at input {tuple(x.shape)}"


def _foldable_batch_norms(model: torch.nn.Module) -> int:
    """Batch norms right after a conv in a Sequential (every ConvNormAct): what the exporter folds."""
    return sum(
        isinstance(a, torch.nn.Conv2d) and isinstance(b, torch.nn.BatchNorm2d)
        for seq in model.modules()
        if isinstance(seq, torch.nn.Sequential)
        for a, b in itertools.pairwise(seq.children())
    )


def _export_and_check(name: str, path: Path, weights_in_file: bool) -> None:
    model = random_model(name)
    c = model.in_channels
    h, w = model.min_input_size
    dynamic = dynamic_size_problem(model) is None
    export_onnx(
        model,
        path,
        input_size=(c, h, w),
        dynamic_batch=True,
        dynamic_size=dynamic,
        weights_in_file=weights_in_file,
    )
    try:
        onnx.checker.check_model(str(path))
        graph = onnx.load(str(path))
        meta = {p.key: p.value for p in graph.metadata_props}
        assert meta["model"] == name and meta["input_size"] == f"{c}x{h}x{w}"
        assert meta["dynamic_size"] == ("true" if dynamic else "false")
        if weights_in_file:  # the exporter folded every batch norm that follows a conv
            norms = [n for n in graph.graph.node if n.op_type == "BatchNormalization"]
            total = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
            assert len(norms) <= total - _foldable_batch_norms(model)
        session = OnnxModel(path, threads=1, weights=None if weights_in_file else model)
        assert session.batch_size is None
        gen = torch.Generator().manual_seed(1)
        _check(model, session, torch.randn(1, c, h, w, generator=gen))
        if dynamic:
            _check(model, session, torch.randn(2, c, _second_size(model, h), w, generator=gen))
    finally:
        path.unlink()


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_models_graph_exports_and_matches_in_onnxruntime(name: str, tmp_path: Path) -> None:
    _export_and_check(name, tmp_path / f"{name}.onnx", False)


@pytest.mark.parametrize("name", [n for n in zoo.list_models() if zoo.model_info(n).num_params < SMALL])
def test_small_models_export_with_their_weights_inside(name: str, tmp_path: Path) -> None:
    _export_and_check(name, tmp_path / f"{name}.onnx", True)


def test_dynamic_size_is_refused_where_the_graph_depends_on_the_size(tmp_path: Path) -> None:
    for name, why in (("lenet5", "takes exactly 32x32"), ("vgg11", "pools to a 7x7 grid")):
        with torch.device("meta"):  # refused before any weight is read
            model = zoo.create(name)
        with pytest.raises(ConfigurationError, match=why):
            export_onnx(model, tmp_path / "x.onnx", input_size=64, dynamic_size=True)
    assert dynamic_size_problem(zoo.create("unet_padded", pad_input=True)) is not None
    assert not (tmp_path / "x.onnx").exists()
    assert zoo.export_onnx is export_onnx  # the top-level name, imported on first use


def test_an_impossible_input_size_is_the_models_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unet = zoo.create("unet")
    expected = r"cannot take an input height of 200.*nearest valid heights: 188 and 204"
    with pytest.raises(InputShapeError, match=expected):
        export_onnx(unet, tmp_path / "unet.onnx", input_size="1x200x188")
    with pytest.raises(InputShapeError, match="needs an input of at least 32x32"):
        export_onnx("convnext_tiny", tmp_path / "c.onnx", input_size=16)
    with pytest.raises(InputShapeError, match="takes 3 input channel"):
        export_onnx("resnet18", tmp_path / "r.onnx", input_size="1x64x64")
    assert not list(tmp_path.iterdir())
    # the command line, from a weights file: one line, exit status 2, no traceback
    from zoo.cli import main
    from zoo.weights import save_file

    weights = save_file(zoo.create("lenet5"), tmp_path / "lenet5.safetensors")
    assert main(["export", str(weights), str(tmp_path / "l.onnx"), "--model", "lenet5", "--input", "28"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("zoo: error: lenet5 takes exactly 32x32 inputs"), err
    assert not (tmp_path / "l.onnx").exists()


def test_an_adaptive_pool_exports_at_any_fixed_size(tmp_path: Path) -> None:
    # AlexNet at 100x80 (weights inside the file): its 6x6 pool reads a 2x1 map, overlapping
    # windows that no ONNX operator has; they are exported as matrix products
    alexnet = random_model("alexnet")
    path = export_onnx(alexnet, tmp_path / "a.onnx", input_size="3x100x80")
    session = OnnxModel(path)
    assert session.batch_size == 1 and session.input_shape == [1, 3, 100, 80] and not session.feeds
    _check(alexnet, session, torch.randn(1, 3, 100, 80))
    with pytest.raises(InputShapeError, match=r"on an input of shape \(1, 3, 80, 80\): the graph takes 1x3x100x80"):
        session(torch.randn(1, 3, 80, 80))


# --------------------------------------------------------------------------- a trained run: export and predict
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """LeNet-5 trained for 2 epochs on the digits as PNG files (ImageFolderDataModule), and the test digits."""
    pytest.importorskip("lightning")
    from PIL import Image

    from zoo.training import DigitsDataModule
    from zoo.training.cli import main

    root = tmp_path_factory.mktemp("digits")
    splits = DigitsDataModule().load_splits()
    for split in ("train", "test"):
        x, y = splits[split]
        for i, (image, target) in enumerate(zip(x, y.tolist(), strict=True)):
            folder = root / "images" / split / str(target)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy()).save(folder / f"{i}.png")
    cwd = root / "cwd"
    cwd.mkdir()
    args = ["fit", "--model", "zoo.training.ClassificationTask", "--model.model", "lenet5"]
    args += ["--data", "zoo.training.ImageFolderDataModule", "--data.root", str(root / "images")]
    args += ["--data.grayscale", "true", "--data.cache_dir", str(root / "cache"), "--data.batch_size", "64"]
    args += ["--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.enable_model_summary", "false", "--test_after_fit", "false"]
    old, err = os.getcwd(), io.StringIO()
    os.chdir(cwd)
    try:
        with redirect_stderr(err):
            code = main(args)
    finally:
        os.chdir(old)
    assert code == 0, err.getvalue()
    run = next((cwd / "runs").glob("*/version_0"))
    return run, root / "images" / "test"


def test_predict_with_the_onnx_file_gives_the_checkpoints_labels(
    digits_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from zoo.cli import main

    run, test_images = digits_run
    out = tmp_path / "lenet5.onnx"
    assert main(["export", str(run), str(out), "--dynamic-batch"]) == 0
    meta = OnnxModel(out).metadata
    assert meta["model"] == "lenet5" and meta["classes"] == [str(i) for i in range(10)]
    assert meta["preprocessing"]["mode"] == "memory" and meta["preprocessing"]["grayscale"] is True
    assert len(meta["mean"]) == 1 and meta["input_size"] == "1x32x32"

    ckpt = run / "checkpoints" / "best.ckpt"
    assert main(["predict", "--ckpt_path", str(ckpt), "--data.predict_root", str(test_images)]) == 0
    assert main(["predict", "--ckpt_path", str(out), "--data.predict_root", str(test_images)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "predictions for 360 images" in err

    def rows(path: Path) -> list[dict[str, str]]:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    # the checkpoint's rows are in its run folder (where exactly is zoo.training.cli's business)
    from_ckpt, from_onnx = rows(next(run.rglob("predictions.csv"))), rows(tmp_path / "predictions.csv")
    assert len(from_onnx) == 360 and list(from_onnx[0]) == list(from_ckpt[0])
    assert [r["path"] for r in from_onnx] == [r["path"] for r in from_ckpt]
    assert [r["class"] for r in from_onnx] == [r["class"] for r in from_ckpt]
    for a, b in zip(from_onnx, from_ckpt, strict=True):
        assert abs(float(a["confidence"]) - float(b["confidence"])) < 1e-4
    # trained for real: most labels are the folders' (the true digits); chance would be 36 of 360
    right = sum(Path(r["path"]).parent.name == r["class"] for r in from_onnx)
    assert right > 180, f"{right}/360"
    # a fixed-batch export predicts the same in pieces
    fixed = export_run(run, tmp_path / "fixed.onnx")
    assert OnnxModel(fixed).batch_size == 1
    assert [r["class"] for r in predict_onnx(fixed, test_images, batch_size=7)] == [r["class"] for r in from_ckpt]


def test_predict_on_onnx_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zoo.cli import main

    assert main(["predict", "--ckpt_path", str(tmp_path / "none.onnx"), "--data.predict_root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ONNX file not found" in err
    unet = export_onnx("unet_resnet18", tmp_path / "u.onnx", input_size=32)
    assert main(["predict", "--ckpt_path", str(unet), "--data.predict_root", str(tmp_path), "--x", "1"]) == 2
    assert "not --x" in capsys.readouterr().err
    assert main(["predict", "--ckpt_path", str(unet), "--data.predict_root", str(tmp_path)]) == 2
    assert "classifies images" in capsys.readouterr().err
    # a run that did not record its preprocessing (an in-memory dataset): no made-up mean and std in the file
    net = zoo.create("lenet5", num_classes=10, in_channels=1)
    ckpt = tmp_path / "digits.ckpt"
    hparams = {"model": "lenet5", "num_classes": 10, "in_channels": 1}
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "hyper_parameters": hparams}, ckpt)
    onnx_file = export_run(ckpt, tmp_path / "digits.onnx")
    meta = OnnxModel(onnx_file).metadata
    assert meta["model"] == "lenet5" and not {"mean", "std", "preprocessing"} & set(meta)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    assert main(["predict", "--ckpt_path", str(onnx_file), "--data.predict_root", str(tmp_path / "images")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not say how to prepare images" in err


def test_bench_against_onnxruntime_times_every_path(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from zoo.bench import DEPLOY_PATHS
    from zoo.cli import main

    args = ["bench", "lenet5", "--against", "onnxruntime", "--batch-size", "2", "--repeat", "3"]
    assert main([*args, "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result["times"]) == list(DEPLOY_PATHS)
    assert all(len(t) == 3 and min(t) > 0 for t in result["times"].values())
    assert result["speedup_vs_eager"]["eager fp32"] == 1.0 and result["batch_size"] == 2
    assert result["onnx_max_abs_diff"] < 1e-4  # the same weights in both
    assert main([*args, "--optimize"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--optimize is not for --against onnxruntime" in err
