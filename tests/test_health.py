"""Run health (zoo.training.health): a run that diverged, stopped learning or kept a one-class network says so
in one warning line per problem, in the final line and in metrics.json; a healthy run says nothing.

The end-to-end runs are `zoo fit` on the digits recipe (no download), a few epochs each, in this process.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("lightning")
pytest.importorskip("jsonargparse")

from zoo.training.cli import main
from zoo.training.health import EpochRecord, RunHealth, check_health

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "lenet5_digits.yaml")
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _fit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[list[str], str, dict]:
    """Run ``zoo fit`` on the digits recipe: its warning lines, its final line and its metrics.json."""
    assert main(["fit", "--config", RECIPE, *QUIET, *args]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("zoo: warning:")]
    final = [line for line in captured.out.splitlines() if line.startswith("zoo: lenet5_digits: test/")]
    assert len(final) == 1, captured.out
    metrics = json.loads(Path("runs/lenet5_digits/version_0/metrics.json").read_text())
    return warnings, final[0], metrics


def test_a_diverging_run_says_so_and_records_it(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the recipe's one-cycle schedule at max_lr 1.5: the network dies in the first epoch
    warnings, final, metrics = _fit(capsys, "--model.lr_scheduler.init_args.max_lr", "1.5", "--trainer.max_epochs", "4")
    checks = {h["check"] for h in metrics["health"]}
    assert checks == {"stuck", "one_class"}, metrics["health"]
    assert len(warnings) == 2, warnings  # one line per problem
    assert [w.removeprefix("zoo: warning: ") for w in warnings] == [h["message"] for h in metrics["health"]]
    stuck = next(w for w in warnings if "stayed at ln(10) = 2.3026" in w)
    assert "learning rate" in stuck and "warm-up" in stuck and "--trainer.gradient_clip_val" in stuck
    one_class = next(w for w in warnings if "validation samples" in w)
    assert "of 180 validation samples" in one_class, one_class  # the digits' validation split
    assert "UNHEALTHY run: " in final and "stuck at epoch" in final, final


def test_a_run_that_learned_then_collapsed_names_the_epoch(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # plain SGD at 0.1 learns for two epochs; the rate then jumps eightfold (MultiStepLR at epoch 2) and it dies
    jump = [
        "--model.lr_scheduler", "torch.optim.lr_scheduler.MultiStepLR",
        "--model.lr_scheduler.init_args.milestones", "[2]",
        "--model.lr_scheduler.init_args.gamma", "8",
    ]  # fmt: skip
    warnings, final, metrics = _fit(capsys, *jump, "--model.optimizer.init_args.lr", "0.1", "--trainer.max_epochs", "4")
    collapse = [h for h in metrics["health"] if h["check"] == "collapse"]
    assert len(collapse) == 1 and collapse[0]["epoch"] == 2, metrics["health"]
    assert "val/acc fell from " in collapse[0]["message"] and "at epoch 2" in collapse[0]["message"]
    assert any(w.endswith(collapse[0]["message"]) for w in warnings)
    assert "collapse at epoch 2" in final, final


def test_a_healthy_run_says_nothing(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    warnings, final, metrics = _fit(capsys, "--trainer.max_epochs", "3")
    assert metrics["test/acc"] > 0.5, metrics  # it did learn
    assert warnings == [] and metrics["health"] == [] and "UNHEALTHY" not in final


# --------------------------------------------------------------------------- the rules, on recorded histories
def _records(acc: list[float], train_loss: list[float] | None = None) -> list[EpochRecord]:
    losses = train_loss or [0.5] * len(acc)
    pairs = enumerate(zip(acc, losses, strict=True))
    return [EpochRecord(e, monitor=a, val_loss=1 - a, train_loss=t) for e, (a, t) in pairs]


def test_the_issue_run_collapse_at_epoch_7_and_stuck_after() -> None:
    # issue 21: val/acc rose to 0.927 at epoch 6, fell to 0.094 at epoch 7 and stayed at 0.100 (loss ln 10)
    acc = [0.5, 0.7, 0.8, 0.85, 0.9, 0.91, 0.927, 0.094] + [0.1] * 22
    loss = [1.5, 0.9, 0.6, 0.5, 0.4, 0.35, 0.3, 9.0] + [math.log(10) + 0.001] * 22
    findings = check_health(_records(acc, loss), monitor="val/acc", mode="max", num_classes=10)
    assert [(f.check, f.epoch) for f in findings] == [("collapse", 7), ("stuck", 8)]
    assert "from 0.9270 (its best, epoch 6) to 0.0940 at epoch 7 and ended at 0.1000" in findings[0].message


def test_overfitting_a_little_is_not_a_collapse() -> None:
    acc = [0.6, 0.9, 0.98, 1.0, 0.994, 0.99]
    assert check_health(_records(acc), monitor="val/acc", mode="max", num_classes=10) == []
    # a loss-monitored run: 3 times its minimum is overfitting; 10 times (validation loss in the thousands) is not
    records = [EpochRecord(e, monitor=v) for e, v in enumerate([1.0, 0.2, 0.1, 0.3])]
    assert check_health(records, monitor="val/loss", mode="min") == []
    records.append(EpochRecord(4, monitor=1500.0))
    assert [(f.check, f.epoch) for f in check_health(records, monitor="val/loss", mode="min")] == [("collapse", 4)]


def test_one_class_counts_against_the_targets() -> None:
    # 95% of the predictions in class 0: a dead network when class 0 is 10% of the data, not when it is 92%
    dead = EpochRecord(0, monitor=0.5, predicted=[171, 9, 0], targets=[18, 81, 81])
    skewed = EpochRecord(0, monitor=0.5, predicted=[171, 9, 0], targets=[166, 9, 5])
    for record, expected in ((dead, ["one_class"]), (skewed, [])):
        found = check_health([record], monitor="val/acc", mode="max", num_classes=3, classes=["a", "b", "c"])
        assert [f.check for f in found] == expected
    assert "predicts class 'a' for 171 of 180 validation samples (95%; it is 10% of them)" in found_message(dead)


def found_message(record: EpochRecord) -> str:
    return check_health([record], monitor="val/acc", num_classes=3, classes=["a", "b", "c"])[0].message


def test_the_history_is_kept_in_checkpoints() -> None:
    health = RunHealth()
    health.records = _records([0.5, 0.9])
    restored = RunHealth()
    restored.load_state_dict(health.state_dict())
    assert restored.records == health.records
