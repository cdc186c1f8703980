"""The Lightning recipes: every recipe runs end to end on small data made here, in the on-disk
formats the real loaders read; the digits recipe trains for real; resuming continues; user
errors give one line. Tests that need the real datasets in ../shared/data skip without them."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

pytest.importorskip("lightning")
pytest.importorskip("jsonargparse")

from zoo.errors import DatasetNotFoundError
from zoo.training import (
    CIFAR10DataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    ISBI2012DataModule,
    MNISTDataModule,
)
from zoo.training.cli import main
from zoo.training.data import InMemoryDataset, collate_batch, elastic_grid, random_crop
from zoo.training.tasks import center_crop

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
SHARED = ROOT.parent / "shared" / "data"


# --------------------------------------------------------------------------- synthetic datasets on disk
def _png(array: torch.Tensor) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array.numpy()).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(array: torch.Tensor) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array.numpy()).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _class_image(cls: int, gen: torch.Generator, size: int = 32) -> torch.Tensor:
    """A 32x32 RGB image whose colour tells the class, with noise."""
    base = torch.tensor([[200, 30, 30], [30, 200, 30], [30, 30, 200]])[cls % 3].view(1, 1, 3)
    noise = torch.randint(-20, 21, (size, size, 3), generator=gen)
    return (base + noise).clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MNIST IDX files, an ImageFolder .tar.gz (JPEG) and folder (PNG), ISBI-style PNG slices."""
    root = tmp_path_factory.mktemp("data")
    gen = torch.Generator().manual_seed(0)

    # MNIST in torchvision's raw layout: four uncompressed IDX files
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 96), ("t10k", 32)):
        images = torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8)
        labels = torch.arange(n) % 10
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + images.numpy().tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, n) + labels.to(torch.uint8).numpy().tobytes()
        )

    # ImageFolder: train/ and test/ with three classes, as a .tar.gz of JPEGs under a top folder
    with tarfile.open(root / "tiny-jpg.tar.gz", "w:gz") as tf:
        for split, n in (("train", 12), ("test", 4)):
            for cls, name in enumerate(("cat", "dog", "frog")):
                for i in range(n):
                    data = _jpeg(_class_image(cls, gen))
                    info = tarfile.TarInfo(f"tiny/{split}/{name}/{i:04d}.jpg")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    # an ImageFolder copy of CIFAR-10 (its ten class folders), read by CIFAR10DataModule
    with tarfile.open(root / "cifar10-tiny.tar.gz", "w:gz") as tf:
        for split, n in (("train", 2), ("test", 1)):
            for cls, name in enumerate(CIFAR10DataModule.classes):
                for i in range(n):
                    data = _jpeg(_class_image(cls, gen))
                    info = tarfile.TarInfo(f"cifar10/{split}/{name}/{i}.jpg")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    # ... and as a folder of PNGs with train/ and val/
    for split, n in (("train", 6), ("val", 2)):
        for cls, name in enumerate(("a", "b", "c")):
            folder = root / "folder" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i}.png").write_bytes(_png(_class_image(cls, gen)))

    # ISBI 2012 layout: images/N.png grey, labels/N.png with 255 = cell, 0 = membrane
    for sub in ("images", "labels"):
        (root / "isbi2012" / sub).mkdir(parents=True)
    for n in range(30):
        image = torch.randint(0, 256, (96, 96), generator=gen, dtype=torch.uint8)
        label = torch.where(torch.rand(96, 96, generator=gen) < 0.78, 255, 0).to(torch.uint8)
        (root / "isbi2012" / "images" / f"{n}.png").write_bytes(_png(image))
        (root / "isbi2012" / "labels" / f"{n}.png").write_bytes(_png(label))
    return root


def _recipe_overrides(recipe: Path, data: Path) -> list[str]:
    """Command-line overrides that point a recipe at the synthetic data and keep it small."""
    config = yaml.safe_load(recipe.read_text())
    data_class = config["data"]["class_path"].rsplit(".", 1)[-1]
    model = config["model"]["init_args"]["model"]
    args = {
        "DigitsDataModule": [],
        "MNISTDataModule": ["--data.root", str(data), "--data.val_size", "16"],
        "ImageFolderDataModule": ["--data.root", str(data / "tiny-jpg.tar.gz"), "--data.val_size", "6"],
        "CIFAR10DataModule": ["--data.root", str(data / "cifar10-tiny.tar.gz"), "--data.val_size", "5"],
        "ISBI2012DataModule": ["--data.root", str(data / "isbi2012")],
    }[data_class]
    if config["data"].get("init_args", {}).get("mode") == "photo":  # a folder (photo mode reads no .tar), small
        args = ["--data.root", str(data / "folder"), "--data.image_size", "64", "--data.num_workers", "0"]
    if config["model"]["init_args"].get("weights"):  # no download here: the same recipe from random weights
        args += ["--model.init_args.weights", "null"]
    if data_class != "ISBI2012DataModule":
        args += ["--data.batch_size", "4", "--data.eval_batch_size", "8"]
    if model.startswith("unet"):  # the paper's widths are too slow for a unit test; the arithmetic is the same
        args += ["--model.model_args", '{"width": 4}']
    return args


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path


# --------------------------------------------------------------------------- every recipe, end to end
@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_runs_end_to_end(recipe: Path, data_dir: Path, in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["fit", "--config", str(recipe), "--trainer.fast_dev_run", "1", *_recipe_overrides(recipe, data_dir)]
    assert main(args) == 0
    # the smoke run leaves nothing in the working directory but runs/, and is not judged as training
    assert [p.name for p in in_tmp.iterdir() if p.name not in ("runs", "cache")] == []
    assert list((in_tmp / "runs" / recipe.stem).glob("checkpoints/*.ckpt"))
    out, err = capsys.readouterr()
    assert "zoo: warning" not in err and "UNHEALTHY" not in out, err
    assert f"run folder runs/{recipe.stem})" in out.splitlines()[-1], out


def test_recipes_name_only_what_they_change() -> None:
    for recipe in RECIPES:
        config = yaml.safe_load(recipe.read_text())
        allowed = {"model", "data", "trainer", "checkpoint", "seed_everything", "test_after_fit", "test_ckpt"}
        assert set(config) <= allowed, recipe.name
        text = recipe.read_text()
        assert text.startswith("#"), f"{recipe.name} needs a header comment with its measured result"


def test_digits_recipe_trains_and_leaves_a_run_folder(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = ROOT / "recipes" / "lenet5_digits.yaml"
    assert main(["fit", "--config", str(recipe), "--trainer.enable_progress_bar", "false"]) == 0
    run = in_tmp / "runs" / "lenet5_digits" / "version_0"
    for name in ("config.yaml", "hparams.yaml", "metrics.csv", "metrics.json", "curves.png", "confusion_matrix.csv"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/acc"] >= 0.97, metrics
    assert "test/acc" in capsys.readouterr().out  # the command prints the test accuracy

    # test / validate / predict a saved run by `best`
    assert main(["test", "--config", str(recipe), "--ckpt_path", "best", "--trainer.enable_progress_bar", "false"]) == 0
    assert (
        main(["predict", "--config", str(recipe), "--ckpt_path", "best", "--trainer.enable_progress_bar", "false"]) == 0
    )
    lines = (run / "predict" / "predictions.csv").read_text().splitlines()
    assert lines[0] == "index,pred,confidence,target" and len(lines) == 361


def test_resume_from_last_continues_where_it_stopped(in_tmp: Path) -> None:
    recipe = str(ROOT / "recipes" / "lenet5_digits.yaml")
    # without the one-cycle schedule, whose length is fixed by the first run's max_epochs
    common = ["--trainer.enable_progress_bar", "false", "--test_after_fit", "false", "--model.lr_scheduler", "null"]
    assert main(["fit", "--config", recipe, "--trainer.max_epochs", "2", *common]) == 0
    run = in_tmp / "runs" / "lenet5_digits" / "version_0"
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert (first["epoch"], first["global_step"]) == (1, 38)  # 1,257 training images / 64 = 19 steps an epoch

    assert main(["fit", "--config", recipe, "--trainer.max_epochs", "3", "--ckpt_path", "last", *common]) == 0
    assert not (in_tmp / "runs" / "lenet5_digits" / "version_1").exists()  # resumed in its own folder
    second = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert (second["epoch"], second["global_step"]) == (2, 57)
    epochs = {line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]}
    assert epochs == {"0", "1", "2"}  # the log goes on in the same metrics.csv


@pytest.mark.parametrize("which", ["best", "last"])
def test_test_after_fit_uses_the_chosen_checkpoint(which: str, in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning

    tested: list[str | None] = []
    real_test = lightning.Trainer.test

    def spy(self, *args, **kwargs):
        tested.append(kwargs.get("ckpt_path"))
        return real_test(self, *args, **kwargs)

    monkeypatch.setattr(lightning.Trainer, "test", spy)
    recipe = str(ROOT / "recipes" / "lenet5_digits.yaml")
    args = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar", "false"]
    assert main(["fit", "--config", recipe, "--test_ckpt", which, *args]) == 0
    assert len(tested) == 1 and tested[0] is not None and Path(tested[0]).name == f"{which}.ckpt"


# --------------------------------------------------------------------------- the command line
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--config", "nowhere.yaml"], "does not exist"),
        (["--config", "{bad}"], ""),
        (["--config", "RECIPE", "--trainer.max_epochz", "3"], "max_epochz"),
        (["--config", "RECIPE", "--trainer.max_epochs", "three"], "trainer.max_epochs: expected int"),
        (["--config", "RECIPE", "--model.model", "lenet6"], "did you mean lenet5"),
        (["--config", "MNIST", "--data.root", "nowhere", "--data.download", "false"], "MNIST not found"),
    ],
    ids=["missing-recipe", "bad-yaml", "unknown-key", "wrong-type", "unknown-model", "missing-dataset"],
)
def test_user_errors_print_one_line(args: list[str], expected: str, tmp_path: Path, zoo_cli) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    recipes = {"{bad}": str(bad), "RECIPE": str(ROOT / "recipes" / "lenet5_digits.yaml")}
    recipes["MNIST"] = str(ROOT / "recipes" / "lenet5_mnist.yaml")
    args = [recipes.get(a, a) for a in args]
    result = zoo_cli("fit", *args, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("zoo: error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_print_config_and_import_cost() -> None:
    result = _cli("fit", "--config", str(ROOT / "recipes" / "lenet5_digits.yaml"), "--print_config")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["model"]["init_args"]["model"] == "lenet5"
    assert config["checkpoint"]["monitor"] is None  # filled from the task (val/acc) when the run starts
    heavy = ("lightning", "torchmetrics", "timm", "matplotlib", "jsonargparse")
    code = f"import sys, zoo; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- data modules
def test_in_memory_batches_are_one_indexing_operation() -> None:
    ds = InMemoryDataset(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), torch.arange(10), length=25)
    x, y = collate_batch(ds.__getitems__([0, 12, 24]))
    assert len(ds) == 25 and y.tolist() == [0, 2, 4] and x.shape == (3, 1, 1, 1)


def test_random_crop_shifts_without_changing_shape() -> None:
    torch.manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = random_crop(x, 2)
    assert out.shape == x.shape
    assert torch.equal(random_crop(x, 0), x)
    # every output row is a shifted row of the zero-padded input
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    windows = padded.unfold(2, 8, 1).unfold(3, 8, 1)  # (B, C, 5, 5, 8, 8)
    for b in range(2):
        assert any(torch.equal(windows[b, :, i, j], out[b]) for i in range(5) for j in range(5))


def test_elastic_grid_without_augmentation_is_a_crop() -> None:
    torch.manual_seed(0)
    grid = elastic_grid(1, 4, (8, 8), quarter_turns=False, flips=False, max_rotation=0, elastic_sigma=0)
    image = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8)
    out = torch.nn.functional.grid_sample(image, grid, mode="nearest", align_corners=False)
    rows, cols = out[0, 0, :, 0] // 8, out[0, 0, 0, :] % 8
    assert out.shape == (1, 1, 4, 4)
    assert torch.equal(rows, rows[0] + torch.arange(4.0)) and torch.equal(cols, cols[0] + torch.arange(4.0))


def test_center_crop() -> None:
    t = torch.arange(36).view(1, 6, 6)
    assert center_crop(t, (2, 2)).tolist() == [[[14, 15], [20, 21]]]


def test_digits_split_is_fixed_and_stratified() -> None:
    dm = DigitsDataModule()
    dm.setup("fit")
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sizes == {"train": 1257, "val": 180, "test": 360}
    assert dm.splits["train"].images.shape[1:] == (1, 32, 32)
    counts = torch.bincount(dm.splits["test"].targets)
    assert counts.min() >= 35 and counts.max() <= 37  # each digit is a tenth of every split
    again = DigitsDataModule()
    again.setup("fit")
    assert torch.equal(again.splits["test"].targets, dm.splits["test"].targets)


def test_mnist_reads_torchvision_idx_layout(data_dir: Path) -> None:
    dm = MNISTDataModule(str(data_dir), pad=2, val_size=16)
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 80, "val": 16, "test": 32}
    assert dm.splits["train"].images.shape[1:] == (1, 32, 32)
    with pytest.raises(DatasetNotFoundError, match="MNIST not found: looked for .* in nowhere/MNIST/raw"):
        MNISTDataModule("nowhere").setup("fit")


def test_image_folder_archive_is_decoded_once_and_cached(data_dir: Path, tmp_path: Path) -> None:
    archive = str(data_dir / "tiny-jpg.tar.gz")
    dm = ImageFolderDataModule(archive, val_size=6, cache_dir=str(tmp_path))
    assert dm.num_classes == 3 and dm.classes == ["cat", "dog", "frog"]
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 30, "val": 6, "test": 12}
    assert len(list(tmp_path.glob("*.pt"))) == 1
    again = ImageFolderDataModule(archive, val_size=6, cache_dir=str(tmp_path))
    assert torch.equal(again.decoded_splits()["train"][0], dm.decoded_splits()["train"][0])

    folder = ImageFolderDataModule(str(data_dir / "folder"), cache_dir=str(tmp_path), image_size=16)
    folder.setup("fit")
    assert {k: len(v) for k, v in folder.splits.items()} == {"train": 18, "val": 6, "test": 6}
    assert folder.splits["train"].images.shape[1:] == (3, 16, 16)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        ImageFolderDataModule(str(tmp_path / "nowhere")).num_classes  # noqa: B018
    bad = tmp_path / "bad" / "train" / "cat"
    bad.mkdir(parents=True)
    (bad / "0.jpg").write_bytes(b"not a jpeg")
    dm = ImageFolderDataModule(str(tmp_path / "bad"), cache_dir=str(tmp_path))
    assert dm.num_classes == 1  # from the listing: nothing is decoded yet
    with pytest.raises(Exception, match=r"cannot decode image train/cat/0.jpg"):
        dm.setup("fit")


def test_isbi_augmentation_keeps_masks_binary(data_dir: Path) -> None:
    dm = ISBI2012DataModule(str(data_dir / "isbi2012"), crop_size=64, mirror_pad=8)
    dm.setup("fit")
    assert len(dm.splits["train"]) == 100 and len(dm.splits["val"]) == 5
    assert dm.splits["train"].images.shape[-2:] == (112, 112)  # 96 + 2 * 8, mirrored
    x, y = dm.splits["train"].__getitems__(list(range(4)))
    torch.manual_seed(0)
    xa, ya = dm.augment(x, y)
    assert xa.shape == (4, 1, 64, 64) and ya.shape == (4, 64, 64)
    assert set(ya.unique().tolist()) <= {0.0, 1.0}
    assert xa.min() >= 0 and xa.max() <= 255  # bicubic overshoot is clamped to the uint8 range


def test_isbi_augmentation_resamples_images_sharper_than_bilinear(data_dir: Path) -> None:
    # the test slices are predicted unresampled, so training windows should lose as little
    # detail as possible: bicubic keeps more high-frequency energy than bilinear on the same grid
    dm = ISBI2012DataModule(str(data_dir / "isbi2012"), crop_size=64, mirror_pad=8)
    dm.setup("fit")
    x, y = dm.splits["train"].__getitems__(list(range(8)))
    torch.manual_seed(1)
    xa, _ = dm.augment(x, y)
    torch.manual_seed(1)  # the same grid again
    grid = elastic_grid(8, 64, tuple(x.shape[-2:]), max_rotation=dm.max_rotation, elastic_sigma=dm.elastic_sigma)
    blurred = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def detail(img: torch.Tensor) -> float:  # energy of the discrete Laplacian
        centre = img[..., 1:-1, 1:-1]
        lap = 4 * centre - img[..., :-2, 1:-1] - img[..., 2:, 1:-1] - img[..., 1:-1, :-2] - img[..., 1:-1, 2:]
        return lap.pow(2).mean().item()

    assert detail(xa) > 1.05 * detail(blurred)


@pytest.mark.skipif(not (SHARED / "MNIST" / "raw").is_dir(), reason="needs ../shared/data/MNIST")
def test_real_mnist_and_isbi_load() -> None:
    dm = MNISTDataModule(str(SHARED), pad=2)
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 55000, "val": 5000, "test": 10000}
    isbi = ISBI2012DataModule(str(SHARED))  # the parent folder works too
    isbi.setup("fit")
    assert isbi.splits["val"].images.shape == (5, 1, 512, 512)
    cells = isbi.splits["val"].targets.float().mean().item()
    assert 0.7 < cells < 0.85  # about 78% of the pixels are cell interior


@pytest.mark.skipif(not (SHARED / "cifar10-jpg.tar.gz").is_file(), reason="needs ../shared/data/cifar10-jpg.tar.gz")
def test_real_cifar10_archive_through_image_folder(tmp_path: Path) -> None:
    dm = ImageFolderDataModule(str(SHARED / "cifar10-jpg.tar.gz"), val_size=5000, cache_dir=str(tmp_path))
    assert dm.classes[:3] == ["airplane", "automobile", "bird"] and dm.num_classes == 10
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 45000, "val": 5000, "test": 10000}


def test_baseline_loop_runs(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import runpy

    baseline = runpy.run_path(str(ROOT / "benchmarks" / "plain_loop.py"))["main"]  # a benchmark, not installed

    acc = baseline(["--root", str(data_dir), "--epochs", "1", "--batch-size", "16", "--val-size", "16"])
    assert 0 <= acc <= 1 and "test acc" in capsys.readouterr().out
