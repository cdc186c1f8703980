"""Run health: say when a training run collapsed, stopped learning, or kept a network that predicts one class.

`RunHealth` is a Lightning callback (``zoo fit`` adds it to every run). It records, per
epoch, the monitored metric (the best checkpoint's: ``val/acc`` for classification), the
validation loss, the mean training loss and, for classifiers, how often each class was
predicted on the validation data; when fitting ends, `check_health` looks for three things:

- **collapse**: the monitored metric ended far below its best. A metric that is maximised
  ended having lost more than half of what it had gained over chance (1 / num_classes);
  a minimised one (a loss), or the validation loss, ended more than 10 times its minimum.
  The warning names the epoch where it fell.
- **stuck**: the mean training loss of the last epochs (two or more, to the end) stayed
  within 5% of ln(num_classes), the cross-entropy of a network that gives every class the
  same probability: a dead network.
- **one class**: in the validation epoch the best checkpoint was chosen at, one class got
  90% or more of the predictions, at least 30 points more than its share of the targets.

Each finding is one ``zoo: warning:`` line on standard error (rank 0 only), with the epoch
and what to try (a lower learning rate, a warm-up, gradient clipping); `RunReport` records
the list in ``metrics.json`` as ``"health"`` and the CLI's final line points at it. The
thresholds are deliberately coarse: they catch a run that fell off a cliff, not one that
overfits a little (a healthy digits run ends 0.006 below its best validation accuracy).
The records are kept in checkpoints, so a resumed run is judged on its whole history.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

#: what to try, at the end of every warning
ADVICE = (
    "try a lower learning rate (--model.optimizer.init_args.lr, or max_lr of a one-cycle schedule), "
    "a longer warm-up (pct_start of a one-cycle schedule), or gradient clipping (--trainer.gradient_clip_val 1.0)"
)
LOST_FRACTION = 0.5  # of the gain over chance, for a maximised metric
LOSS_FACTOR = 10.0  # times the minimum, for a minimised one
STUCK_TOLERANCE = 0.05  # relative to ln(num_classes)
ONE_CLASS_SHARE = 0.9  # of the predictions
ONE_CLASS_EXCESS = 0.3  # over the class's share of the targets


@dataclass
class Finding:
    """One health problem: which check found it, the epoch it happened at, and the warning line."""

    check: str  # "collapse", "stuck" or "one_class"
    epoch: int
    message: str


@dataclass
class EpochRecord:
    """What `RunHealth` keeps of one epoch (epochs counted from 0, as in ``metrics.csv``)."""

    epoch: int
    monitor: float | None = None  # the monitored metric at the end of the epoch's validation
    val_loss: float | None = None
    train_loss: float | None = None  # the mean of the epoch's training steps (rank 0's)
    predicted: list[int] | None = None  # validation predictions per class (every process)
    targets: list[int] | None = None  # validation targets per class


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _best(records: list[EpochRecord], key: str, mode: str) -> EpochRecord | None:
    """The first record with the best finite `key` (ModelCheckpoint keeps the first of equal values)."""
    best = None
    for r in records:
        value = getattr(r, key)
        if not _finite(value):
            continue
        if best is None or (value > getattr(best, key) if mode == "max" else value < getattr(best, key)):
            best = r
    return best


def _collapse(
    records: list[EpochRecord], key: str, name: str, mode: str, chance: float | None
) -> tuple[Finding | None, EpochRecord | None]:
    """A collapse of `key` (the finding or None) and the best record."""
    best = _best(records, key, mode)
    final = records[-1] if records else None
    if best is None or final is None:
        return None, best
    b, f = getattr(best, key), getattr(final, key)
    if mode == "max":
        floor = chance if chance is not None else 0.0
        if b - floor <= 0.05:  # it never learned: the stuck check says so
            return None, best
        threshold = b - LOST_FRACTION * (b - floor)
        fell = not _finite(f) or f < threshold
        below = lambda v: not _finite(v) or v < threshold  # noqa: E731
        chance_text = f"; chance is {chance:.4f}" if chance is not None else ""
    else:
        threshold = b * LOSS_FACTOR if b > 0 else b + 1.0
        fell = not _finite(f) or f > threshold
        below = lambda v: not _finite(v) or v > threshold  # noqa: E731
        chance_text = f"; more than {LOSS_FACTOR:g} times its minimum"
    if not fell:
        return None, best
    when = next(r for r in records if r.epoch > best.epoch and below(getattr(r, key)))
    message = (
        f"{name} fell from {b:.4f} (its best, epoch {best.epoch}) to {getattr(when, key):.4f} at epoch {when.epoch} "
        f"and ended at {f:.4f}{chance_text}: the run diverged, and the result is the best checkpoint's "
        f"(epoch {best.epoch}); {ADVICE}"
    )
    return Finding("collapse", when.epoch, message), best


def _stuck(records: list[EpochRecord], num_classes: int) -> Finding | None:
    losses = [r for r in records if r.train_loss is not None]
    if num_classes < 2 or len(losses) < 2:
        return None
    level = math.log(num_classes)
    streak = []
    for r in reversed(losses):
        if not abs(r.train_loss - level) <= STUCK_TOLERANCE * level:
            break
        streak.insert(0, r)
    if len(streak) < 2:
        return None
    first, last = streak[0], streak[-1]
    message = (
        f"the training loss stayed at ln({num_classes}) = {level:.4f}, the loss of a network that gives every class "
        f"the same probability, from epoch {first.epoch} to the end ({last.train_loss:.4f} in epoch {last.epoch}): "
        f"it stopped learning; {ADVICE}"
    )
    return Finding("stuck", first.epoch, message)


def _one_class(best: EpochRecord | None, classes: list[str]) -> Finding | None:
    if best is None or not best.predicted or not best.targets:
        return None
    total = sum(best.predicted)
    if total == 0:
        return None
    top = max(range(len(best.predicted)), key=best.predicted.__getitem__)
    share = best.predicted[top] / total
    truth = best.targets[top] / max(sum(best.targets), 1)
    if share < ONE_CLASS_SHARE or share - truth < ONE_CLASS_EXCESS:
        return None
    name = classes[top] if top < len(classes) else str(top)
    message = (
        f"the best checkpoint (epoch {best.epoch}) predicts class {name!r} for {best.predicted[top]} of {total} "
        f"validation samples ({share:.0%}; it is {truth:.0%} of them): it learned the class frequencies, "
        f"not the images; {ADVICE}"
    )
    return Finding("one_class", best.epoch, message)


def check_health(
    records: list[EpochRecord],
    *,
    monitor: str | None,
    mode: str = "max",
    num_classes: int = 0,
    classes: list[str] | None = None,
) -> list[Finding]:
    """The health problems of a run's per-epoch `records` (see the module docstring); [] for a healthy run."""
    records = sorted(records, key=lambda r: r.epoch)
    chance = 1 / num_classes if num_classes >= 2 else None
    findings = []
    best = None
    if monitor is not None:
        found, best = _collapse(records, "monitor", monitor, mode, chance)
        findings.append(found)
    if monitor != "val/loss":
        found, _ = _collapse(records, "val_loss", "val/loss", "min", None)
        if not any(f is not None and f.check == "collapse" for f in findings):
            findings.append(found)
    findings.append(_stuck(records, num_classes))
    findings.append(_one_class(best, list(classes or [])))
    return [f for f in findings if f is not None]


class RunHealth(L.Callback):
    """Checks a run when fitting ends; warns (one line per problem) and keeps the findings in `findings`."""

    def __init__(self) -> None:
        self.records: list[EpochRecord] = []
        self.findings: list[Finding] | None = None  # None until a fit ends
        self._loss_sum: torch.Tensor | None = None
        self._loss_count = 0
        self._predicted: torch.Tensor | None = None
        self._targets: torch.Tensor | None = None

    # ------------------------------------------------------------------ records
    def _record(self, epoch: int) -> EpochRecord:
        if not self.records or self.records[-1].epoch != epoch:
            self.records = [r for r in self.records if r.epoch < epoch]  # a resumed run repeats nothing
            self.records.append(EpochRecord(epoch))
        return self.records[-1]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.findings = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._loss_sum, self._loss_count = None, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            loss = loss.detach().float()
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            self._loss_count += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._loss_count:
            self._record(trainer.current_epoch).train_loss = float(self._loss_sum) / self._loss_count

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._predicted = self._targets = None

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # the classifiers' validation_step returns the logits (B, C); other tasks return nothing
        num_classes = getattr(pl_module, "num_classes", 0)
        if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2 or outputs.shape[1] != num_classes:
            return
        target = batch[1] if isinstance(batch, list | tuple) and len(batch) > 1 else None
        if not isinstance(target, torch.Tensor) or target.shape != outputs.shape[:1]:
            return
        predicted = torch.bincount(outputs.detach().argmax(1), minlength=num_classes)
        targets = torch.bincount(target.long().clamp(0, num_classes - 1), minlength=num_classes)
        if self._predicted is None:
            self._predicted, self._targets = predicted, targets
        else:
            self._predicted, self._targets = self._predicted + predicted, self._targets + targets

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        record = self._record(trainer.current_epoch)
        monitor, _ = self._monitor(trainer, pl_module)
        metrics = trainer.callback_metrics
        if monitor is not None and monitor in metrics:
            record.monitor = float(metrics[monitor])
        if "val/loss" in metrics:
            record.val_loss = float(metrics["val/loss"])
        if self._predicted is not None:
            counts = torch.stack([self._predicted, self._targets])
            if trainer.world_size > 1:  # every process saw its own share of the validation data
                counts = trainer.strategy.reduce(counts, reduce_op="sum")
            record.predicted, record.targets = counts.tolist()

    # ------------------------------------------------------------------ the check
    @staticmethod
    def _monitor(trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[str | None, str]:
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and getattr(ckpt, "monitor", None):
            return ckpt.monitor, ckpt.mode
        return getattr(pl_module, "monitor", (None, "max"))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run:  # a smoke test of a step or two checks the plumbing, not the learning
            self.findings = []
            return
        monitor, mode = self._monitor(trainer, pl_module)
        classes = getattr(pl_module, "_classes", None)
        self.findings = check_health(
            self.records,
            monitor=monitor,
            mode=mode,
            num_classes=getattr(pl_module, "num_classes", 0),
            classes=classes() if callable(classes) else None,
        )
        if trainer.is_global_zero:
            for finding in self.findings:
                print(f"zoo: warning: {finding.message}", file=sys.stderr)

    def report(self) -> list[dict[str, Any]]:
        """The findings as ``metrics.json`` records them: a list of {check, epoch, message}, [] when healthy."""
        return [asdict(f) for f in self.findings or []]

    def summary(self) -> str:
        """A few words for the final line: "healthy", or the problems and their epochs."""
        if not self.findings:
            return "healthy"
        problems = ", ".join(f"{f.check.replace('_', ' ')} at epoch {f.epoch}" for f in self.findings)
        return f"UNHEALTHY run: {problems}, see the warnings above"

    # ------------------------------------------------------------------ kept in checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"records": [asdict(r) for r in self.records]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = [EpochRecord(**r) for r in state_dict.get("records", [])]
