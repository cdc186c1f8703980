"""What a run leaves in its folder besides Lightning's own files: plots, final metrics, predictions.

`RunReport` is a Lightning callback (the CLI adds it to every run). At the end of
fitting it draws ``curves.png`` (the losses, and every other logged metric, per epoch)
from the logger's ``metrics.csv``; after testing it writes ``metrics.json`` (the test
metrics, the model and data, the wall time); after prediction ``predictions.csv``
(classification: for the test split, each image's index, predicted class index, confidence
and target; for unlabelled images, ``--data.predict_root``, each file's path, predicted
class name and confidence and the next most probable classes, as `zoo.training.predict`
returns them) or ``predictions/N.png`` masks (segmentation). The run folder is the logger's:
evaluating a run's checkpoint logs into ``RUN/test/`` (``validate/``, ``predict/``), so these
files never replace fit's. `ProgressBar` is Lightning's progress bar for a terminal, redrawn at
most twice a second; `ProgressLines` prints plain lines for a log file; `CSVLogger` is
Lightning's, appending to the ``metrics.csv`` of a resumed run (``append=True``) instead of
deleting it. matplotlib is imported only when a plot is drawn, with the Agg backend (no display
needed); the confusion matrix is torchmetrics' own plot.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar as ProgressBarBase
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from zoo.training.health import RunHealth


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Every column of a CSVLogger ``metrics.csv`` as (epoch, value) pairs, skipping empty cells."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            epoch = row.get("epoch") or ""
            if not epoch:
                continue
            for key, value in row.items():
                if key in ("epoch", "step") or not value:
                    continue
                series[key].append((float(epoch), float(value)))
    return dict(series)


def curves_figure(metrics_csv: str | Path, title: str = "") -> Any:
    """The per-epoch losses (left, on a log axis: one spike does not flatten the rest) and the other metrics
    (right) of a run, as a matplotlib figure; None when nothing per epoch was logged."""
    series = {k: v for k, v in read_metrics(metrics_csv).items() if not k.endswith("_step") and v}
    if not series:
        return None
    series = {k.removesuffix("_epoch"): v for k, v in series.items()}
    losses = {k: v for k, v in series.items() if "loss" in k}
    others = {k: v for k, v in series.items() if "loss" not in k and not k.startswith(("lr", "test/"))}
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, group, label in ((axes[0], losses, "loss"), (axes[1], others, "metric")):
        for name, points in sorted(group.items()):
            xs, ys = zip(*points, strict=True)
            ax.plot([x + 1 for x in xs], ys, marker="o" if len(xs) < 30 else None, markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if group:
            ax.legend(fontsize=8)
    if losses and all(y > 0 for points in losses.values() for _, y in points):
        axes[0].set_yscale("log")
        axes[0].set_ylabel("loss (log scale)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_curves(metrics_csv: str | Path, out: str | Path, title: str = "") -> Path | None:
    """Draw `curves_figure` of a run's ``metrics.csv`` into `out` (PNG)."""
    fig = curves_figure(metrics_csv, title)
    if fig is None:
        return None
    out = Path(out)
    fig.savefig(out, dpi=100)
    _pyplot().close(fig)
    return out


def confusion_matrix_figure(matrix: Tensor, classes: list[str]) -> Any:
    """A confusion matrix drawn by torchmetrics' `MulticlassConfusionMatrix.plot` (each number's colour from
    its own cell's colour, so never white on white), on a figure sized to the number of classes."""
    from torchmetrics.classification import MulticlassConfusionMatrix

    plt = _pyplot()
    n = len(classes)
    cell = 0.5  # inches
    fig, ax = plt.subplots(figsize=(2 + cell * n, 1.5 + cell * n), layout="constrained")
    MulticlassConfusionMatrix(num_classes=n).plot(matrix.cpu(), ax=ax, labels=list(classes), cmap="Blues")
    digits = max(len(str(int(v))) for v in matrix.flatten().tolist())
    for text in ax.texts:  # torchmetrics writes 15 pt: make the widest number fit its cell
        text.set_fontsize(min(12, 0.8 * cell * 72 / (0.6 * digits)))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return fig


def save_confusion_matrix(matrix: Tensor, classes: list[str], folder: str | Path) -> None:
    """Write a confusion matrix (rows: true class, columns: predicted) as CSV and PNG into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "confusion_matrix.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, matrix.tolist(), strict=True):
            w.writerow([name, *row])
    if len(classes) > 50:  # unreadable as a picture; the CSV has it
        return
    fig = confusion_matrix_figure(matrix, classes)
    fig.savefig(folder / "confusion_matrix.png", dpi=100)
    _pyplot().close(fig)


def run_folder(trainer: L.Trainer) -> Path | None:
    """The run folder, as ``trainer.log_dir`` gives it, but without its broadcast to every process.

    ``trainer.log_dir`` is a collective under DDP: asked on rank 0 alone (in a rank-zero-only
    hook), it waits forever for the other processes.
    """
    if trainer.loggers:
        logger = trainer.loggers[0]
        folder = logger.log_dir if isinstance(logger, TensorBoardLogger | _LightningCSVLogger) else logger.save_dir
    else:
        folder = trainer.default_root_dir
    return Path(folder) if folder else None


def _plain(value: Any) -> Any:
    if isinstance(value, Tensor):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class CSVLogger(_LightningCSVLogger):
    """Lightning's CSVLogger; with ``append=True`` (a run resumed in its own folder) it goes on with the
    folder's ``metrics.csv`` instead of deleting it (the CLI sets it when ``fit --ckpt_path last`` resumes).

    Args:
        append: keep the rows of an existing ``metrics.csv`` and add the new ones after them.
        *args, **kwargs: Lightning's `CSVLogger` arguments (``save_dir``, ``name``, ``version``, ...).
    """

    def __init__(self, *args: Any, append: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.append = append

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            metrics = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
            kept = metrics.read_bytes() if self.append and metrics.is_file() else None
            with warnings.catch_warnings():
                if kept is not None:  # "previous log files will be deleted": not this time
                    warnings.filterwarnings("ignore", message="Experiment logs directory")
                self._experiment = ExperimentWriter(log_dir=self.log_dir)  # deletes metrics.csv
            if kept is not None:
                metrics.write_bytes(kept)
                self._experiment.metrics_keys = next(csv.reader(io.StringIO(kept.decode())), [])
        return self._experiment


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm progress bar, for a terminal, redrawn at most every `interval` seconds.

    Redrawing after every batch (Lightning's default) costs more than a LeNet training step
    on a CPU: on the digits recipe it made a 6 s run take 27 s. The throttle sits in the
    public batch-end hooks; the last batch of a loop is always drawn.
    """

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__()
        self.interval = interval
        self._drawn: dict[str, float] = {}

    def _due(self, stage: str, batch_idx: int, total: float) -> bool:
        now = time.perf_counter()
        if batch_idx + 1 == total or now - self._drawn.get(stage, 0.0) >= self.interval:
            self._drawn[stage] = now
            return True
        return False

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._due("train", batch_idx, self.total_train_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._due("validate", batch_idx, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._due("test", batch_idx, self.total_test_batches_current_dataloader):
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._due("predict", batch_idx, self.total_predict_batches_current_dataloader):
            super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)


def _train_first(item: tuple[str, Any]) -> tuple[bool, str]:
    return (not item[0].startswith("train"), item[0])


class ProgressLines(ProgressBarBase):
    """Progress for a log file (the CLI uses it when stdout is not a terminal): plain lines, no redraws.

    One line at the end of every training epoch (``epoch 3/10  train/loss 0.1234  val/acc
    0.9700  (1.2 s)``: the metrics logged with ``prog_bar=True``), and one every `interval`
    seconds inside a long epoch or evaluation (``epoch 3/10  batch 120/352 ...``,
    ``test  batch 40/79``). Only the first process writes.
    """

    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        self.interval = interval
        self._enabled = True
        self._epoch_start = self._last = time.perf_counter()

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _say(self, trainer: L.Trainer, text: str) -> None:
        if self._enabled and trainer.is_global_zero:
            print(text, flush=True)

    def _metrics(self, trainer: L.Trainer, pl_module: L.LightningModule, per: str) -> str:
        """The progress-bar metrics, the ``_epoch`` or the ``_step`` values (`per`) without their suffix."""
        other = "_step" if per == "_epoch" else "_epoch"
        shown = {
            k.removesuffix(per): v
            for k, v in self.get_metrics(trainer, pl_module).items()
            if k != "v_num" and not k.endswith(other)
        }
        return "  ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(shown.items(), key=_train_first)
        )

    def _epoch(self, trainer: L.Trainer) -> str:
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        return f"epoch {trainer.current_epoch + 1}/{total}"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._last = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if time.perf_counter() - self._last >= self.interval:
            self._last = time.perf_counter()
            total = self.total_train_batches
            done = f"batch {batch_idx + 1}/{total if math.isfinite(total) else '?'}"
            self._say(trainer, f"{self._epoch(trainer)}  {done}  {self._metrics(trainer, pl_module, '_step')}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        took = time.perf_counter() - self._epoch_start
        self._say(trainer, f"{self._epoch(trainer)}  {self._metrics(trainer, pl_module, '_epoch')}  ({took:.1f} s)")

    def _evaluation(self, trainer: L.Trainer, stage: str, batch_idx: int, total: float | int) -> None:
        if trainer.sanity_checking or time.perf_counter() - self._last < self.interval:
            return
        self._last = time.perf_counter()
        self._say(trainer, f"{stage}  batch {batch_idx + 1}/{total if math.isfinite(total) else '?'}")

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._evaluation(trainer, "validate", batch_idx, trainer.num_val_batches[dataloader_idx])

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._evaluation(trainer, "test", batch_idx, trainer.num_test_batches[dataloader_idx])

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._evaluation(trainer, "predict", batch_idx, trainer.num_predict_batches[dataloader_idx])


class RunReport(L.Callback):
    """Leaves ``curves.png``, ``metrics.json`` and predictions in the run folder (``trainer.log_dir``)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.fit_seconds: float | None = None
        self._fit_start: float | None = None
        self._predictions: list[dict[str, Tensor]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fit_start is not None:
            self.fit_seconds = time.perf_counter() - self._fit_start
        self.plot(trainer)

    def plot(self, trainer: L.Trainer) -> Path | None:
        folder = run_folder(trainer)
        if folder is None or trainer.logger is None:
            return None
        trainer.logger.save()  # flush metrics.csv
        metrics_csv = folder / "metrics.csv"
        if not metrics_csv.is_file():
            return None
        return plot_curves(metrics_csv, folder / "curves.png", title=folder.parent.name)

    @rank_zero_only
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = run_folder(trainer)
        if folder is None:
            return
        metrics = {k: _plain(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("test/")}
        hp = dict(pl_module.hparams)
        report = {
            **metrics,
            "model": hp.get("model"),
            "data": type(trainer.datamodule).__name__ if trainer.datamodule is not None else None,
        }
        if self.fit_seconds is not None:  # the test after fit; a later `zoo test` trained nothing
            report.update(
                epochs_trained=trainer.current_epoch,
                global_step=trainer.global_step,
                fit_seconds=round(self.fit_seconds, 2),
            )
        report.update(wall_seconds=round(time.perf_counter() - self.start, 2), ckpt_path=trainer.ckpt_path)
        health = next((c for c in trainer.callbacks if isinstance(c, RunHealth)), None)
        if health is not None and health.findings is not None:  # after a fit: see zoo.training.health
            report["health"] = health.report()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._predictions = []

    def on_predict_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if isinstance(outputs, dict):
            self._predictions.append({k: v.detach().cpu() for k, v in outputs.items()})

    @rank_zero_only
    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = run_folder(trainer)
        if folder is None or not self._predictions:
            return
        folder.mkdir(parents=True, exist_ok=True)
        keys = self._predictions[0].keys()
        merged = {k: torch.cat([p[k] for p in self._predictions]) for k in keys}
        if "mask" in merged:
            from PIL import Image

            out = folder / "predictions"
            out.mkdir(exist_ok=True)
            for i, mask in enumerate(merged["mask"]):
                scale = 255 // max(int(mask.max()), 1)
                Image.fromarray((mask * scale).to(torch.uint8).numpy()).save(out / f"{i}.png")
            return
        paths = getattr(trainer.datamodule, "predict_paths", None) if trainer.datamodule is not None else None
        if paths is not None and "top_classes" in merged:  # unlabelled images: their paths and class names
            from zoo.training.prediction import prediction_rows

            names = [paths[i] for i in merged["target"].tolist()]
            rows = prediction_rows(names, merged["top_classes"], merged["top_probs"], _class_names(pl_module))
            with open(folder / "predictions.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
            print(f"zoo: wrote the predictions for {len(rows)} images to {folder / 'predictions.csv'}", file=sys.stderr)
            return
        keys = [k for k in keys if merged[k].dim() == 1]  # the top-k columns are for named files only
        with open(folder / "predictions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["index", *keys])
            for i in range(len(merged["pred"])):
                w.writerow([i, *(_plain(merged[k][i]) for k in keys)])


def _class_names(pl_module: L.LightningModule) -> list[str]:
    classes = getattr(pl_module, "_classes", None)
    return classes() if callable(classes) else [str(i) for i in range(getattr(pl_module, "num_classes", 0))]
