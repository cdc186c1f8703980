"""What both tasks share: the network, the optimizer and its schedule, channels_last (see `zoo.training.tasks`)."""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import math
import os
import shutil
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import Metric

import zoo
from zoo.checks import check_bool, check_number
from zoo.errors import ConfigurationError, InvalidArgumentError, NonFiniteLossError
from zoo.training.regularization import ema_callback, split_weight_decay


def center_crop(t: Tensor, size: tuple[int, int]) -> Tensor:
    """The centre `size` (h, w) of the last two dimensions of `t`."""
    h, w = t.shape[-2:]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return t[..., top : top + size[0], left : left + size[1]]


def _unset_argument(factory: Any, names: tuple[str, ...]) -> str | None:
    """The first of `names` that the class behind `factory` takes and `factory` leaves at None."""
    # jsonargparse gives partial(instantiator, cls, **init_args); functools.partial(cls, ...) works too
    args = getattr(factory, "args", ())
    target = next((a for a in args if inspect.isclass(a)), getattr(factory, "func", factory))
    given = {**getattr(factory, "keywords", {})}
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return None
    for name in names:
        if name in params and given.get(name, params[name].default) in (None, inspect.Parameter.empty):
            return name
    return None


_SKIP_WEIGHTS = contextvars.ContextVar("zoo_skip_weights", default=False)


@contextlib.contextmanager
def weights_from_checkpoint() -> Iterator[None]:
    """Within this block tasks build their networks without loading `weights`.

    For a task about to be loaded from a checkpoint, which holds every weight: validating,
    testing or predicting a fine-tuned run then needs neither the network nor the download
    cache that its pretrained weights came from. The hyperparameters still record them.
    """
    token = _SKIP_WEIGHTS.set(True)
    try:
        yield
    finally:
        _SKIP_WEIGHTS.reset(token)


class MeanLoss(Metric):
    """The mean of a loss over every sample of every process (the sums are synchronised, then divided).

    Lightning's own epoch mean of a ``sync_dist=True`` value divides the summed batch sizes by the
    number of processes in integer arithmetic: wrong when the processes' shares differ, which they
    do when every evaluation sample is counted once (45 test samples on 2 processes: 103.8 / 44).
    """

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, loss: Tensor, count: int) -> None:
        self.total += loss.detach().double() * count
        self.count += count

    def compute(self) -> Tensor:
        return (self.total / self.count).float()


def _non_finite_message(loss: Tensor, trainer: L.Trainer | None) -> str:
    value = loss.detach().float().cpu()
    where = "a training step"
    if trainer is not None:
        batch = trainer.fit_loop.epoch_loop.batch_idx
        where = f"step {trainer.global_step} (epoch {trainer.current_epoch}, batch {batch})"
    if torch.isfinite(value).all():
        what = "NaN or infinite on another process"
    else:
        what = "NaN" if value.isnan().any() else "infinite"
    causes = [
        "the learning rate is too high (lower --model.optimizer.init_args.lr, or max_lr of a one-cycle schedule)",
        "gradients explode (clip them: --trainer.gradient_clip_val 1.0)",
        "the inputs or labels hold NaN, inf or out-of-range values (check the data, its mean and std)",
    ]
    precision = str(getattr(trainer, "precision", "")) if trainer is not None else ""
    if "16" in precision:
        causes.insert(0, f"{precision} precision overflowed (try --trainer.precision 32)")
    return f"the training loss became {what} at {where}; stopped before updating the weights. Likely: " + "; or ".join(
        causes
    )


def _scale_one_cycle(optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """Apply the groups' ``lr_factor`` to a schedule that set every group from one ``max_lr`` (OneCycleLR)."""
    for i, group in enumerate(optimizer.param_groups):
        factor = group.get("lr_factor", 1.0)
        if factor == 1.0 or "max_lr" not in group:  # other schedules start from the group's (scaled) lr
            continue
        for key in ("lr", "initial_lr", "max_lr", "min_lr"):
            if key in group:
                group[key] *= factor
        if hasattr(scheduler, "base_lrs"):
            scheduler.base_lrs[i] *= factor
    if hasattr(scheduler, "_last_lr"):
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def _check_fine_tuning(freeze: Any, factor: Any) -> None:
    """A one-line error for a `freeze_backbone` or `backbone_lr_factor` of the wrong kind."""
    if not isinstance(freeze, int):  # bool is an int
        raise ConfigurationError(f"freeze_backbone must be true, false or a number of stages to freeze, got {freeze!r}")
    number = isinstance(factor, int | float) and not isinstance(factor, bool)
    if not (number and math.isfinite(factor) and factor > 0):
        raise ConfigurationError(
            f"backbone_lr_factor must be a number > 0, got {factor!r}"
            + ("; to keep the backbone fixed use freeze_backbone: true" if factor == 0 else "")
        )


class _Task(L.LightningModule):
    """What both tasks share: building the network, the optimizer, channels_last."""

    #: the metric the best checkpoint is chosen by, and whether more is better
    monitor: tuple[str, str] = ("val/loss", "min")

    def __init__(
        self,
        model: str,
        *,
        model_args: dict[str, Any] | None,
        num_classes: int,
        in_channels: int,
        optimizer: OptimizerCallable,
        lr_scheduler: LRSchedulerCallable | None,
        channels_last: bool,
        compile: bool = False,
        tta: bool = False,
        weights: str | None = None,
        no_decay_norms_and_biases: bool = False,
        ema_decay: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.no_decay_norms_and_biases = check_bool(no_decay_norms_and_biases, "no_decay_norms_and_biases")
        self.ema_decay = None if ema_decay is None else check_number(ema_decay, "ema_decay", below=1)
        model_args = dict(model_args or {})
        if "weights" in model_args:
            raise InvalidArgumentError(
                "model_args.weights: give the weights as the task's own argument (model.init_args.weights), "
                "not among the model's arguments"
            )
        for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
            if key in model_args and model_args[key] != value:
                raise InvalidArgumentError(
                    f"model_args.{key}={model_args[key]!r} disagrees with the data ({key}={value}); "
                    f"leave it out: the task takes it from the data module"
                )
            model_args[key] = value
        if _SKIP_WEIGHTS.get():
            weights = None
        self.net: nn.Module = zoo.create(model, weights=weights, **model_args)
        self.num_classes = num_classes
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.channels_last = channels_last
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.tta = tta
        self.eval_losses = nn.ModuleDict({"val": MeanLoss(), "test": MeanLoss()})
        if compile and not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "c++", "clang++")):
            raise ConfigurationError(
                "compile=True needs a C++ compiler for torch.compile (none of $CXX, g++, c++, clang++ is on PATH); "
                "install one (apt install g++) or leave compile off"
            )
        # a compiled *function*, not a module attribute: the checkpoint keeps the plain `net.` keys
        self._compiled = torch.compile(self.net.forward) if compile else None

    def _log_loss(self, stage: str, loss: Tensor, count: int) -> None:
        """Log the evaluation loss of `stage` ("val", "test"): its mean over the samples of every process."""
        self.eval_losses[stage].update(loss, count)
        self.log(f"{stage}/loss", self.eval_losses[stage], prog_bar=True)

    def _input(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, x: Tensor) -> Any:
        return (self._compiled or self.net)(self._input(x))

    def on_before_backward(self, loss: Tensor) -> None:
        """Stop, with the step and the likely causes, on a NaN or infinite loss, before it reaches the weights."""
        finite = bool(torch.isfinite(loss.detach()).all())
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:  # every process stops at the same step
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            raise NonFiniteLossError(_non_finite_message(loss, trainer))

    def parameter_groups(self) -> list[dict[str, Any]]:
        """What the optimizer is given: the trainable parameters, in groups (see `ClassificationTask`)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_callbacks(self) -> list[Any]:
        """With `ema_decay`, Lightning's EMA of the weights: validation, test and checkpoints use the average."""
        return [ema_callback(self.ema_decay)] if self.ema_decay is not None else []

    def configure_optimizers(self) -> Any:
        groups = self.parameter_groups()
        if self.no_decay_norms_and_biases:  # as timm's param_groups_weight_decay
            groups = split_weight_decay(groups, self)
        optimizer = self.optimizer(groups)
        for group in optimizer.param_groups:
            group["lr"] *= group.get("lr_factor", 1.0)
        if self.lr_scheduler is None:
            return optimizer
        per_step = _unset_argument(self.lr_scheduler, ("total_steps", "T_max"))
        if per_step:
            scheduler = self.lr_scheduler(optimizer, **{per_step: int(self.trainer.estimated_stepping_batches)})
        else:
            scheduler = self.lr_scheduler(optimizer)
        _scale_one_cycle(optimizer, scheduler)
        config = {"scheduler": scheduler, "interval": "step" if per_step else "epoch"}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "val/loss"
        return {"optimizer": optimizer, "lr_scheduler": config}

    def _classes(self) -> list[str]:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        classes = list(getattr(dm, "classes", None) or [])
        return classes if len(classes) == self.num_classes else [str(i) for i in range(self.num_classes)]
