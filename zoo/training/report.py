"""What a run leaves in its folder besides Lightning's own files: plots, final metrics, predictions.

`RunReport` is a Lightning callback (the CLI adds it to every run). At the end of
fitting it draws ``curves.png`` (the losses, and every other logged metric, per epoch)
from the logger's ``metrics.csv``; after testing it writes ``metrics.json`` (the test
metrics, the model and data, the wall time); after prediction ``predictions.csv``
(classification: for the test split, each image's index, predicted class index, confidence
and target; for unlabelled images, ``--data.predict_root``, each file's path, predicted
class name and confidence and the next most probable classes, as `zoo.training.predict`
returns them) or ``predictions/N.png`` masks (segmentation). `ProgressBar` is Lightning's
progress bar, redrawn at most twice a second; `CSVLogger` is Lightning's, appending to the
``metrics.csv`` of a resumed run instead of deleting it. matplotlib is imported
only when a plot is drawn, with the Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
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


def plot_curves(metrics_csv: str | Path, out: str | Path, title: str = "") -> Path | None:
    """Draw the per-epoch losses (left) and the other metrics (right) of a run into `out` (PNG)."""
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
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def save_confusion_matrix(matrix: Tensor, classes: list[str], folder: str | Path) -> None:
    """Write a confusion matrix (rows: true class, columns: predicted) as CSV and PNG into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    m = matrix.tolist()
    with open(folder / "confusion_matrix.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, m, strict=True):
            w.writerow([name, *row])
    if len(classes) > 50:  # unreadable as a picture; the CSV has it
        return
    plt = _pyplot()
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.5 + 0.45 * n, 1 + 0.45 * n))
    ax.imshow(matrix.float().numpy(), cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45 if n > 5 else 0, ha="right" if n > 5 else "center", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max(max(r) for r in m) or 1
    for i in range(n):
        for j in range(n):
            if m[i][j]:
                ax.text(
                    j,
                    i,
                    str(m[i][j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if m[i][j] > top / 2 else "black",
                )
    fig.tight_layout()
    fig.savefig(folder / "confusion_matrix.png", dpi=100)
    plt.close(fig)


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


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Lightning deletes an existing metrics.csv here; a resumed run appends to it instead
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(next(csv.reader(f), []))


class CSVLogger(_LightningCSVLogger):
    """Lightning's CSVLogger, except that a run resumed in its folder appends to its ``metrics.csv``."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm progress bar, redrawn at most every `interval` seconds.

    Redrawing after every batch (Lightning's default) costs more than a LeNet training step
    on a CPU: on the digits recipe it made a 6 s run take 27 s.
    """

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__()
        self.interval = interval
        self._last = 0.0

    def _should_update(self, current: int, total: int) -> bool:
        now = time.perf_counter()
        if self.is_enabled and (current == total or now - self._last >= self.interval):
            self._last = now
            return True
        return False


class RunReport(L.Callback):
    """Leaves ``curves.png``, ``metrics.json`` and predictions in the run folder (``trainer.log_dir``)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.fit_seconds: float | None = None
        self._fit_start: float | None = None
        self._predictions: list[dict[str, Tensor]] = []

    @staticmethod
    def folder(trainer: L.Trainer) -> Path | None:
        return run_folder(trainer)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fit_start is not None:
            self.fit_seconds = time.perf_counter() - self._fit_start
        self.plot(trainer)

    def plot(self, trainer: L.Trainer) -> Path | None:
        folder = self.folder(trainer)
        if folder is None or trainer.logger is None:
            return None
        trainer.logger.save()  # flush metrics.csv
        metrics_csv = folder / "metrics.csv"
        if not metrics_csv.is_file():
            return None
        return plot_curves(metrics_csv, folder / "curves.png", title=folder.parent.name)

    @rank_zero_only
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = self.folder(trainer)
        if folder is None:
            return
        metrics = {k: _plain(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("test/")}
        hp = dict(pl_module.hparams)
        report = {
            **metrics,
            "model": hp.get("model"),
            "data": type(trainer.datamodule).__name__ if trainer.datamodule is not None else None,
            "epochs_trained": trainer.current_epoch,
            "global_step": trainer.global_step,
            "fit_seconds": None if self.fit_seconds is None else round(self.fit_seconds, 2),
            "wall_seconds": round(time.perf_counter() - self.start, 2),
            "ckpt_path": trainer.ckpt_path,
        }
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
        folder = self.folder(trainer)
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
