"""Run folders: evaluation never rewrites what fit wrote, a saved config runs again as a new run,
hparams.yaml records the data, and the plots stay readable (issue 16)."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("lightning")

from zoo.training.cli import main
from zoo.training.report import confusion_matrix_figure, curves_figure

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "recipes" / "lenet5_digits.yaml")
QUIET = ["--trainer.enable_progress_bar", "false"]
# two short epochs without the one-cycle schedule (whose length is fixed by the first run's epochs)
SHORT = [*QUIET, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--model.lr_scheduler", "null"]


def _digests(folder: Path) -> dict[str, str]:
    """Every file under `folder` (not in the evaluation sub-folders) and the sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).parts[0] not in ("test", "validate", "predict")
    }


@pytest.fixture
def fitted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A short digits run in tmp_path/runs/lenet5_digits/version_0, tested after fit."""
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", DIGITS, *SHORT]) == 0
    run = tmp_path / "runs" / "lenet5_digits" / "version_0"
    assert (run / "metrics.json").is_file() and (run / "confusion_matrix.csv").is_file()
    return run


def test_evaluation_writes_its_own_files_and_leaves_fits(fitted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fitted
    before = _digests(run)
    fit_report = json.loads((run / "metrics.json").read_text())
    assert fit_report["epochs_trained"] == 2 and fit_report["fit_seconds"] is not None

    ckpt = str(run / "checkpoints" / "best.ckpt")
    assert main(["test", "--ckpt_path", ckpt, *QUIET]) == 0  # no recipe: the run's own config
    assert main(["validate", "--config", DIGITS, "--ckpt_path", "best", *QUIET]) == 0
    assert main(["predict", "--config", DIGITS, "--ckpt_path", "last", *QUIET]) == 0
    out = capsys.readouterr().out
    assert f"run folder {Path('runs/lenet5_digits/version_0/test')}" in out

    assert _digests(run) == before  # not one byte of fit's files changed, and none added
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["checkpoints", "predict", "test", "validate"]
    tested = json.loads((run / "test" / "metrics.json").read_text())
    assert tested["test/acc"] == pytest.approx(fit_report["test/acc"])  # the same best checkpoint, tested again
    assert "epochs_trained" not in tested and "fit_seconds" not in tested  # evaluation trained nothing
    assert tested["ckpt_path"] == ckpt
    for name in ("config.yaml", "hparams.yaml", "metrics.csv", "confusion_matrix.csv", "confusion_matrix.png"):
        assert (run / "test" / name).is_file(), name
    assert "val/acc" in (run / "validate" / "metrics.csv").read_text()
    with open(run / "predict" / "predictions.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 360


def test_a_saved_config_runs_again_as_a_new_run(fitted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fitted
    # resumed (its config.yaml then records the checkpoint and the folder it resumed in) ...
    assert main(["fit", "--config", DIGITS, "--ckpt_path", "last", *SHORT, "--trainer.max_epochs", "3"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["ckpt_path"].endswith("last.ckpt") and saved["trainer"]["logger"]["init_args"]["version"]
    assert (run.parent / "version_1").exists() is False
    before = _digests(run)
    capsys.readouterr()

    # ... then run again: a new run in a new folder, which says so, and leaves the old one alone
    assert main(["fit", "--config", str(run / "config.yaml"), *QUIET]) == 0
    err, out = capsys.readouterr()[::-1]
    assert f"{run / 'config.yaml'} is a saved config: it trains a new run" in err
    assert "--ckpt_path" in err
    assert (run.parent / "version_1" / "metrics.json").is_file()
    assert "zoo: lenet5_digits:" in out  # named after the recipe, not "config"
    assert _digests(run) == before
    again = json.loads((run.parent / "version_1" / "metrics.json").read_text())
    assert again["epochs_trained"] == 3  # the saved max_epochs, from scratch (no resume at epoch 2)

    # a config saved by predict (it holds predict's return_predictions) trains too
    assert main(["predict", "--config", DIGITS, "--ckpt_path", "best", *QUIET]) == 0
    assert "return_predictions" in (run.parent / "version_1" / "predict" / "config.yaml").read_text()
    config = str(run.parent / "version_1" / "predict" / "config.yaml")
    assert main(["fit", "--config", config, *SHORT, "--test_after_fit", "false"]) == 0
    assert (run.parent / "version_2" / "checkpoints" / "last.ckpt").is_file()


def test_an_option_of_another_command_names_the_command_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "predict-options.yaml"
    other.write_text("return_predictions: true\n")  # a plain file of the user's own: not adapted
    assert main(["fit", "--config", DIGITS, "--config", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("Subcommand 'fit' does not accept option 'return_predictions' (see `zoo fit --help`)"), err


def test_hparams_yaml_holds_the_task_and_the_data(fitted: Path) -> None:
    hparams = yaml.safe_load((fitted / "hparams.yaml").read_text())
    assert hparams["model"] == "lenet5" and hparams["num_classes"] == 10  # the task's
    assert hparams["data"]["class_path"] == "zoo.training.DigitsDataModule"
    assert hparams["data"]["init_args"]["batch_size"] == 64  # the recipe's value


def _luminance(rgba: tuple[float, ...]) -> float:
    r, g, b = rgba[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@pytest.mark.parametrize(
    "matrix",
    [
        [[50, 60, 55], [70, 100, 52], [51, 53, 99]],  # a high minimum: half the maximum is a pale cell
        [[0, 0, 0], [0, 5, 0], [0, 0, 360]],
        [[7, 7], [7, 7]],  # one value everywhere
    ],
    ids=["high-minimum", "mostly-zero", "uniform"],
)
def test_confusion_matrix_numbers_contrast_with_their_cells(matrix: list[list[int]]) -> None:
    from matplotlib.colors import to_rgba

    m = torch.tensor(matrix)
    n = len(matrix)
    fig = confusion_matrix_figure(m, [f"c{i}" for i in range(n)])
    ax = fig.axes[0]
    image = ax.images[0]
    assert len(ax.texts) == n * n
    for text in ax.texts:
        j, i = (round(c) for c in text.get_position())
        assert int(float(text.get_text())) == matrix[i][j]
        cell = image.cmap(image.norm(matrix[i][j]))  # the colour the cell is actually drawn in
        assert abs(_luminance(to_rgba(text.get_color())) - _luminance(cell)) > 0.4, (i, j, text.get_color())
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_loss_curves_use_a_log_axis(tmp_path: Path) -> None:
    rows = ["epoch,step,train/loss_epoch,val/loss,val/acc"]
    losses = [2.3, 50.0, 0.9, 0.4, 0.2, 0.1]  # one spike
    rows += [f"{e},{e},{loss},{loss * 1.1},{0.5 + e / 20}" for e, loss in enumerate(losses)]
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    fig = curves_figure(tmp_path / "metrics.csv")
    loss_axis, metric_axis = fig.axes
    assert loss_axis.get_yscale() == "log" and metric_axis.get_yscale() == "linear"
    low, high = loss_axis.get_ylim()
    assert low <= 0.1 and high >= 50  # every loss in view, the spike included
    import matplotlib.pyplot as plt

    plt.close(fig)


@pytest.mark.parametrize("extra", [[], ["--model.init_args.ema_decay", "0.9"]], ids=["recipe", "ema"])
def test_the_main_job_captured_to_a_file_is_plain_and_quiet(tmp_path: Path, extra: list[str]) -> None:
    # as the README runs it, with stdout and stderr going to files: a line per epoch and the result,
    # no progress-bar redraws (escape codes, carriage returns), no warnings of the dependencies, no tips;
    # also with the EMA option, whose callback Lightning otherwise comments on
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        code = subprocess.run(
            [sys.executable, "-m", "zoo.cli", "fit", "--config", DIGITS, "--trainer.max_epochs", "3", *extra],
            stdout=out, stderr=err, cwd=tmp_path, env=env, timeout=300,
        ).returncode  # fmt: skip
    stdout, stderr = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
    assert code == 0, stderr
    for text in (stdout, stderr):
        assert "\x1b" not in text and "\r" not in text
        for line in text.splitlines():
            assert not re.search(
                r"warn|\.py:\d+: |Tip:|💡|litlogger|LeafSpec|logging interval|callbacks|WeightAveraging", line, re.I
            ), line
    lines = stdout.splitlines()
    assert [line.split("  ")[0] for line in lines[:3]] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"], stdout
    assert all("train/loss" in line and "val/acc" in line for line in lines[:3])
    assert len(lines) == 4 and lines[-1].startswith("zoo: lenet5_digits: test/acc "), stdout
