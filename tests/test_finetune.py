"""Fine-tuning on a folder of photos, end to end: the photo mode of ImageFolderDataModule, the
fine-tuning recipe, `zoo predict` and `zoo.training.predict` on unlabelled images, and the
classification task's weights / freeze_backbone / backbone_lr_factor options.

The photos are made here: small RGB images of mixed sizes and shapes, with stray files that
are not images. No weights can be downloaded here, so the recipe runs with
``--model.init_args.weights null`` (everything else is the recipe's)."""

from __future__ import annotations

import csv
import functools
import io
import os
import zipfile
from contextlib import redirect_stderr
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

import zoo

pytest.importorskip("lightning")
pytest.importorskip("jsonargparse")

from zoo.errors import ConfigurationError, DatasetError, InvalidArgumentError
from zoo.training import ClassificationTask, ImageFolderDataModule, predict
from zoo.training.cli import main
from zoo.training.data import eval_transform

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "resnet18_finetune.yaml"
SIZES = [(40, 30), (50, 70), (64, 48), (33, 90), (80, 80), (45, 60)]  # (width, height)
# what keeps the recipe fast and offline here; everything else is the recipe's own
FAST = ["--model.init_args.weights", "null", "--data.image_size", "32", "--data.batch_size", "4"]


def _photo(cls: int, size: tuple[int, int], gen: torch.Generator, fmt: str = "JPEG") -> bytes:
    """A photo-like RGB image of `size` (w, h) whose colour tells the class, with noise."""
    from PIL import Image

    base = torch.tensor([[190, 60, 40], [40, 80, 190]])[cls].view(1, 1, 3)
    noise = torch.randint(-40, 41, (size[1], size[0], 3), generator=gen)
    buf = io.BytesIO()
    Image.fromarray((base + noise).clamp(0, 255).to(torch.uint8).numpy()).save(buf, format=fmt)
    return buf.getvalue()


def _make_photos(root: Path, splits: dict[str, int], gen: torch.Generator) -> Path:
    for split, n in splits.items():
        for cls, name in enumerate(("a", "b")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                fmt = "PNG" if i % 3 == 2 else "JPEG"
                (folder / f"{i}.{fmt.lower().replace('jpeg', 'jpg')}").write_bytes(
                    _photo(cls, SIZES[(i + cls) % len(SIZES)], gen, fmt)
                )
    (root / "notes.txt").write_text("where these photos came from\n")
    (root / "train" / "a" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/{a,b} (6 each) and val/{a,b} (2 each) of mixed sizes, plus notes.txt and a .DS_Store."""
    return _make_photos(tmp_path_factory.mktemp("photos"), {"train": 6, "val": 2}, torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five new photos in nested folders, and a file that is not an image."""
    root = tmp_path_factory.mktemp("new")
    gen = torch.Generator().manual_seed(1)
    (root / "2024" / "june").mkdir(parents=True)
    for i, (cls, where) in enumerate([(0, "."), (1, "."), (0, "2024"), (1, "2024/june"), (1, "2024/june")]):
        (root / where / f"img{i}.jpg").write_bytes(_photo(cls, SIZES[i], gen))
    (root / "2024" / "readme.md").write_text("not a photo\n")
    return root


@pytest.fixture(scope="module")
def trained_run(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """The fine-tuning recipe, fitted for one step on `photos` (the folder only: no other data flag).

    It starts from a prepared file in torchvision's layout (an ImageNet-shaped ResNet-18, randomly
    initialised) in place of the download, and the file is deleted afterwards: evaluating and
    predicting the run must need only its checkpoint.
    """
    import torchvision

    cwd = tmp_path_factory.mktemp("cwd")
    weights = cwd / "resnet18-imagenet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    args = ["fit", "--config", str(RECIPE), "--data.root", str(photos), *FAST]
    args += ["--model.init_args.weights", str(weights)]  # after FAST's null
    args += ["--trainer.max_steps", "1", "--trainer.val_check_interval", "1"]  # validated after its one step
    args += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    old, err = os.getcwd(), io.StringIO()
    os.chdir(cwd)
    try:
        with redirect_stderr(err):
            code = main(args)
    finally:
        os.chdir(old)
    weights.unlink()
    return cwd / "runs" / "resnet18_finetune" / "version_0", code, err.getvalue()


# --------------------------------------------------------------------------- the recipe, as a user runs it
def test_recipe_trains_on_a_folder_of_mixed_size_photos(trained_run: tuple[Path, int, str]) -> None:
    run, code, stderr = trained_run
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "metrics.json").is_file()
    # the stray files are named in one line; the missing test/ folder is said once
    skipped = [line for line in stderr.splitlines() if "not images" in line]
    assert len(skipped) == 1 and "skipped 2 files" in skipped[0], stderr
    assert "notes.txt" in skipped[0] and ".DS_Store" in skipped[0]
    said = [line for line in stderr.splitlines() if "test metrics are on the validation split" in line]
    assert len(said) == 1 and "no test/ folder" in said[0], stderr
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["init_args"]["mode"] == "photo" and config["model"]["init_args"]["model"] == "resnet18"
    assert config["model"]["init_args"]["weights"].endswith("resnet18-imagenet.pth")


def test_recipe_runs_in_fast_dev_run_with_workers(photos: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    # the recipe's default DataLoader workers (photo mode decodes in them), one batch of each
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(RECIPE), "--data.root", str(photos), *FAST, "--trainer.fast_dev_run", "1"]
    assert main([*args, "--data.num_workers", "2"]) == 0
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("workers", [0, 1])
def test_a_damaged_photo_is_named_in_one_line(workers: int, tmp_path: Path, monkeypatch, capsys) -> None:
    root = _make_photos(tmp_path / "photos", {"train": 2, "val": 1}, torch.Generator().manual_seed(3))
    (root / "train" / "b" / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(RECIPE), "--data.root", str(root), *FAST, "--trainer.fast_dev_run", "1"]
    assert main([*args, "--data.num_workers", str(workers), "--data.batch_size", "8"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("zoo: error:")]
    assert len(errors) == 1 and "cannot decode image train/b/broken.jpg" in errors[0], err
    assert "Traceback" not in err


def test_zoo_predict_writes_paths_and_class_names(
    trained_run: tuple[Path, int, str], unlabelled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, code, _ = trained_run
    assert code == 0
    fit_config = (run / "config.yaml").read_text()
    # as a user types it: the checkpoint and the folder, no recipe (the run's config is used)
    ckpt = str(run / "checkpoints" / "best.ckpt")
    args = ["predict", "--ckpt_path", ckpt, "--data.predict_root", str(unlabelled)]
    assert main([*args, "--trainer.enable_progress_bar", "false"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "readme.md" in err  # the skipped file is named
    with open(run / "predict" / "predictions.csv", newline="") as f:  # evaluation writes into RUN/predict/
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "class", "confidence", "top2", "top2_confidence"]
    assert sorted(Path(r["path"]).name for r in rows) == [f"img{i}.jpg" for i in range(5)]
    assert all(Path(r["path"]).is_file() for r in rows)
    assert {r["class"] for r in rows} <= {"a", "b"} and {r["top2"] for r in rows} <= {"a", "b"}
    for r in rows:
        assert r["class"] != r["top2"]
        assert abs(float(r["confidence"]) + float(r["top2_confidence"]) - 1) < 1e-4
    assert (run / "config.yaml").read_text() == fit_config  # the run's record is left as fit wrote it

    # the same from Python, with the same preprocessing: the same classes and confidences
    python_rows = predict(ckpt, unlabelled)
    assert [r["path"] for r in python_rows] == [r["path"] for r in rows]
    for mine, theirs in zip(python_rows, rows, strict=True):
        assert mine["class"] == theirs["class"]
        assert abs(mine["confidence"] - float(theirs["confidence"])) < 1e-4
    assert zoo.predict is predict  # the top-level name, imported on first use
    one = predict(ckpt, [unlabelled / "img0.jpg"])
    assert len(one) == 1 and one[0]["class"] == python_rows[0]["class"]


def test_predict_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--config", str(RECIPE), "--ckpt_path", str(tmp_path / "none.ckpt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint not found" in err
    with pytest.raises(Exception, match="checkpoint not found"):
        predict(tmp_path / "none.ckpt", tmp_path)


# --------------------------------------------------------------------------- photo mode
def test_photo_mode_finds_classes_and_skips_non_images(photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dm = ImageFolderDataModule(str(photos), mode="photo", image_size=32, num_workers=0, batch_size=4)
    assert dm.classes == ["a", "b"] and dm.num_classes == 2 and dm.in_channels == 3
    assert "skipped 2 files that are not images" in capsys.readouterr().err
    dm.setup("fit")
    assert {k: len(v[0]) for k, v in dm._files.items()} == {"train": 12, "val": 4, "test": 4}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.uint8 and set(y.tolist()) <= {0, 1}
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 0, 1, 1]
    normalised, _ = dm.on_after_batch_transfer((x, y), 0)
    assert normalised.dtype == torch.float32 and abs(float(normalised.mean())) < 3
    dm.test_dataloader()
    dm.test_dataloader()
    assert capsys.readouterr().err.count("test metrics are on the validation split (val/)") == 1


def test_photo_mode_holds_out_validation_and_reads_a_zip(tmp_path: Path) -> None:
    root = _make_photos(tmp_path / "photos", {"train": 5}, torch.Generator().manual_seed(2))
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, f"top/{path.relative_to(root).as_posix()}")
    dm = ImageFolderDataModule(str(tmp_path / "photos.zip"), mode="photo", image_size=24, val_size=2, num_workers=0)
    dm.setup("fit")
    assert dm.classes == ["a", "b"]
    assert {k: len(v[0]) for k, v in dm._files.items()} == {"train": 8, "val": 2, "test": 2}
    assert dm._test_is_val == "the images held out of train/"
    x, _ = next(iter(dm.val_dataloader()))
    assert x.shape == (2, 3, 24, 24)


def test_photo_mode_refuses_a_tar_in_one_line(tmp_path: Path) -> None:
    import tarfile

    (tmp_path / "photos.tar").write_bytes(b"")
    with tarfile.open(tmp_path / "photos.tar", "w"):
        pass
    with pytest.raises(DatasetError, match=r"cannot do; extract it \(tar xf photos.tar\)"):
        ImageFolderDataModule(str(tmp_path / "photos.tar"), mode="photo").classes  # noqa: B018


def test_eval_transform_keeps_the_aspect_ratio_and_crops_the_centre() -> None:
    transform = eval_transform({"mode": "photo", "image_size": 32, "resize_size": 36, "interpolation": "bilinear"})
    image = torch.zeros(3, 40, 80, dtype=torch.uint8)  # (C, H, W): twice as wide as high
    image[:, :, 38:42] = 255  # a vertical line through the centre
    out = transform(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    assert out[:, :, 14:18].float().mean() > 100 and out[:, :, :8].max() == 0  # centre kept, not squeezed
    memory = eval_transform({"mode": "memory", "image_size": [16, 16]})
    assert memory(image).shape == (3, 16, 16)


def test_photo_normalisation_comes_from_the_weights_then_the_card(photos: Path) -> None:
    task = ClassificationTask("resnet18", num_classes=2)
    cfg = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2], "crop_size": 48, "resize_size": 60}
    task.net.pretrained_cfg = {**cfg, "interpolation": "bicubic"}
    dm = ImageFolderDataModule(str(photos), mode="photo", num_workers=0)
    dm.trainer = SimpleNamespace(lightning_module=task)
    pre = dm.preprocessing()
    assert (pre["image_size"], pre["resize_size"], pre["interpolation"]) == (48, 60, "bicubic")
    assert pre["mean"] == cfg["mean"] and pre["std"] == cfg["std"] and pre["classes"] == ["a", "b"]

    task.net.pretrained_cfg = None  # no weights: the model card's statistics and input size
    card = ImageFolderDataModule(str(photos), mode="photo", num_workers=0)
    card.trainer = SimpleNamespace(lightning_module=task)
    pre = card.preprocessing()
    assert pre["image_size"] == 224 and pre["resize_size"] == 256
    import zoo

    assert pre["mean"] == list(zoo.model_info("resnet18").mean)

    # a checkpoint's record wins over the network's own, so a run is evaluated as it was trained
    restored = ImageFolderDataModule(str(photos), mode="photo", num_workers=0)
    restored.trainer = SimpleNamespace(lightning_module=task)
    restored.load_state_dict({"preprocessing": dm.preprocessing()})
    assert restored.preprocessing()["mean"] == cfg["mean"] and restored.preprocessing()["image_size"] == 48


def test_memory_mode_names_skipped_files_and_predicts_a_folder(
    photos: Path, unlabelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dm = ImageFolderDataModule(str(photos), image_size=16, cache_dir=str(tmp_path), predict_root=str(unlabelled))
    dm.setup("predict")
    assert "skipped 2 files that are not images" in capsys.readouterr().err
    x, index = next(iter(dm.predict_dataloader()))
    assert x.shape == (5, 3, 16, 16) and index.tolist() == list(range(5))
    names = ["2024/img2.jpg", "2024/june/img3.jpg", "2024/june/img4.jpg", "img0.jpg", "img1.jpg"]  # sorted paths
    assert dm.predict_paths == [str(unlabelled / n) for n in names]
    assert dm.state_dict()["preprocessing"]["image_size"] == [16, 16]


def test_photo_mode_argument_errors(photos: Path) -> None:
    with pytest.raises(DatasetError, match="mode must be 'memory' or 'photo'"):
        ImageFolderDataModule(str(photos), mode="photos")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="crop_padding is memory mode's augmentation"):
        ImageFolderDataModule(str(photos), mode="photo", crop_padding=4)


# --------------------------------------------------------------------------- the task's fine-tuning options
def _step(task: ClassificationTask, optimizer: torch.optim.Optimizer) -> None:
    task.train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    optimizer.zero_grad()
    task._loss(task(x), y).backward()
    optimizer.step()


@pytest.mark.parametrize("freeze", [True, 2])
def test_freeze_backbone_freezes_stages_and_their_batch_norm(freeze: bool | int) -> None:
    torch.manual_seed(0)
    sgd = functools.partial(torch.optim.SGD, lr=0.1)
    task = ClassificationTask("resnet18", num_classes=2, freeze_backbone=freeze, optimizer=sgd)
    frozen = task.net.stages[: 5 if freeze is True else 2]
    before = {k: v.clone() for k, v in task.net.state_dict().items()}
    optimizer = task.configure_optimizers()
    trainable = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in trainable for p in frozen.parameters())  # left out of the optimizer
    _step(task, optimizer)
    after = task.net.state_dict()
    for name, value in after.items():
        in_frozen = name.startswith(tuple(f"stages.{i}." for i in range(len(frozen))))
        if in_frozen:  # weights and BatchNorm statistics alike
            assert torch.equal(value, before[name]), name
    assert not torch.equal(after["fc.weight"], before["fc.weight"])  # the head trained
    norms = [m for m in frozen.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms) and task.net.fc.training
    if freeze == 2:  # the later stages train, with their BatchNorm in train mode
        last = task.net.stages[4]
        assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("stages.4."))
        assert all(m.training for m in last.modules())


def test_backbone_lr_factor_makes_two_parameter_groups() -> None:
    adamw = functools.partial(torch.optim.AdamW, lr=1e-3)
    task = ClassificationTask("resnet18", num_classes=2, backbone_lr_factor=0.1, optimizer=adamw)
    optimizer = task.configure_optimizers()
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"backbone", "head"}
    assert groups["backbone"]["lr"] == pytest.approx(1e-4) and groups["head"]["lr"] == pytest.approx(1e-3)
    backbone = {id(p) for p in task.net.stages.parameters()}
    assert {id(p) for p in groups["backbone"]["params"]} == backbone
    assert {id(p) for p in groups["head"]["params"]} == {id(p) for p in task.net.fc.parameters()}

    # a one-cycle schedule sets every group from its own max_lr: the factor applies to it too
    one_cycle = functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=1e-3, total_steps=10)
    task = ClassificationTask(
        "resnet18", num_classes=2, backbone_lr_factor=0.1, optimizer=adamw, lr_scheduler=one_cycle
    )
    config = task.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    backbone, head = optimizer.param_groups
    assert backbone["max_lr"] == pytest.approx(1e-4) and head["max_lr"] == pytest.approx(1e-3)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
        assert backbone["lr"] == pytest.approx(0.1 * head["lr"])


def test_frozen_batch_norm_stays_in_eval_mode_under_lightning(photos: Path, recwarn: pytest.WarningsRecorder) -> None:
    import lightning as L

    task = ClassificationTask("resnet18", num_classes=2, freeze_backbone=True)
    before = task.net.stages[0].stem.norm.running_mean.clone()
    dm = ImageFolderDataModule(str(photos), mode="photo", image_size=32, batch_size=4, num_workers=0)
    trainer = L.Trainer(
        max_steps=2, limit_val_batches=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(task, dm)
    assert torch.equal(task.net.stages[0].stem.norm.running_mean, before)
    assert not any("eval mode at the start of training" in str(w.message) for w in recwarn)
    # a task trained in Python predicts with its datamodule's preprocessing
    rows = predict(task, photos / "val")
    assert [Path(r["path"]).parent.name for r in rows] == ["a", "a", "b", "b"]
    assert {r["class"] for r in rows} <= {"a", "b"} and all(0.5 <= r["confidence"] <= 1 for r in rows)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"freeze_backbone": 7}, "freeze_backbone=7 but resnet18 has 5 stages: give 0 to 5, or true"),
        ({"freeze_backbone": -1}, "freeze_backbone=-1 but resnet18 has 5 stages"),
        ({"freeze_backbone": "yes"}, "freeze_backbone must be true, false or a number of stages"),
        ({"backbone_lr_factor": 0}, "backbone_lr_factor must be a number > 0, got 0; to keep the backbone fixed"),
        ({"backbone_lr_factor": -0.1}, "backbone_lr_factor must be a number > 0, got -0.1"),
        ({"backbone_lr_factor": 0.1, "freeze_backbone": True}, "backbone_lr_factor=0.1 has nothing to act on"),
    ],
)
def test_fine_tuning_options_are_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")) as info:
        ClassificationTask("resnet18", num_classes=2, **kwargs)
    assert "\n" not in str(info.value)


def test_weights_go_to_zoo_create(tmp_path: Path) -> None:
    import zoo

    torch.manual_seed(0)
    source = zoo.create("resnet18", num_classes=2)
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    task = ClassificationTask("resnet18", num_classes=2, weights=str(tmp_path / "r18.pth"))
    for (name, a), b in zip(source.state_dict().items(), task.net.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert task.hparams["weights"] == str(tmp_path / "r18.pth")
    with pytest.raises(InvalidArgumentError, match="give the weights as the task's own argument"):
        ClassificationTask("resnet18", model_args={"weights": "torchvision"}, num_classes=2)
