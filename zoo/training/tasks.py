"""Lightning modules: image classification and semantic segmentation with any zoo network.

Both tasks build their network with ``zoo.create(model, num_classes=..., in_channels=...,
**model_args)``; the numbers of classes and input channels come from the data module (the
CLI links them), everything else about the network from `model_args`. The optimizer and
the learning-rate scheduler are injected as callables (LightningCLI's `OptimizerCallable`
/ `LRSchedulerCallable`): in a recipe they are a ``class_path`` and its ``init_args``,
and the task calls them with its parameters and its optimizer.

A scheduler whose constructor takes ``total_steps`` (`torch.optim.lr_scheduler.OneCycleLR`)
or ``T_max`` (`CosineAnnealingLR`) and was not given one gets the run's number of optimizer
steps and is stepped after every batch; any other scheduler is stepped once per epoch
(`ReduceLROnPlateau` watches ``val/loss``).

Metrics come from torchmetrics. Classification logs the loss, top-1 accuracy (``acc``),
top-5 accuracy (``acc_top5``, with more than five classes) and macro F1 (``f1``) for
validation and test, and writes the test confusion matrix into the run folder as CSV and
PNG. Segmentation logs the mean IoU over the classes (``iou``, the Jaccard index), the
mean Dice score (``dice``: per class, Dice equals the pixel F1 score) and pixel accuracy
(``pixel_acc``), each over all pixels of the epoch.

Fine-tuning (`ClassificationTask`): ``weights`` starts the network from pretrained weights
(`zoo.create`'s ``weights=``: a file, ``"torchvision"``, ``"timm:TAG"``, ...; a different
number of classes keeps the backbone and starts a fresh head). ``freeze_backbone`` stops
training the backbone (``true``) or its first n stages (an int): the backbone is
``net.stages``, the classifier everything outside it. Frozen parameters get no gradient and
are left out of the optimizer, and frozen BatchNorm layers stay in eval mode while the rest
trains (their running statistics are the pretrained ones, as timm's and torchvision's
fine-tuning keep them). ``backbone_lr_factor`` gives the parameters inside ``net.stages``
their own parameter group, at the optimizer's learning rate times the factor (a
`OneCycleLR` schedule is scaled the same way: its ``max_lr`` applies to the head; a
`CyclicLR`, which sets every group's rate from its own arguments, would ignore the factor).

Inception networks with auxiliary heads return ``InceptionOutput(logits, aux_logits)`` in
training mode: the classification loss is then the main loss plus `aux_weight` times each
auxiliary loss. GoogLeNet's paper weighs its two auxiliary losses by 0.3 (the default);
torchvision's Inception-v3 training recipe weighs its single auxiliary loss by 0.4.

Networks whose output is smaller than their input (the paper's valid-convolution U-Net)
are trained on the centre of the target that their output covers; for validation, test
and prediction, ``overlap_tile=True`` predicts whole images with `zoo.segment`
(overlap-tile inference, with mirrored borders).
"""

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
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassJaccardIndex,
)

import zoo
from zoo.checks import check_bool, check_number
from zoo.errors import ConfigurationError, InvalidArgumentError, NonFiniteLossError
from zoo.models.base import InceptionOutput
from zoo.training.regularization import BatchMix, ema_callback, split_weight_decay
from zoo.training.weight_map import WeightedLabels


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


class ClassificationTask(_Task):
    """Image classification with any zoo classifier.

    Args:
        model: the registered model name (``zoo list``).
        model_args: further keyword arguments of the model (``drop_rate``, ``stem``, ...).
        num_classes: number of classes (linked from the data module by the CLI).
        in_channels: input channels (linked from the data module by the CLI).
        optimizer: called with the parameters; default Adam with torch's defaults.
        lr_scheduler: called with the optimizer; see the module docstring for how it is stepped.
        label_smoothing: cross-entropy label smoothing.
        aux_weight: weight of each auxiliary loss of an Inception network (0.3 as in GoogLeNet).
        channels_last: run the network in channels_last memory format (faster on CPUs with
            oneDNN and on GPUs with tensor cores for many conv nets; measure).
        compile: run the network through `torch.compile` (a one-off compilation of tens of
            seconds, again for evaluation; measure: it did not speed up ResNet-20's training
            step on the development CPU, see docs/training.md).
        tta: test-time augmentation for test and predict: the logits are the mean of the
            image's and its mirror image's (validation stays plain, so checkpoints are chosen
            on single-view accuracy). Use it when training mirrors images (``hflip``).
        weights: pretrained weights to start from, as `zoo.create` takes them: a file,
            ``"torchvision"``, ``"torchvision:TAG"``, ``"timm"``, ``"timm:TAG"``; None starts
            from a random initialisation.
        freeze_backbone: ``true`` trains only the classifier (everything outside
            ``net.stages``); an int n freezes the first n stages; ``false`` (or 0) trains all.
        backbone_lr_factor: the parameters inside ``net.stages`` train at the optimizer's
            learning rate times this factor (0.1: ten times slower than the head).
        mixup_alpha, cutmix_alpha: MixUp / CutMix of each training batch (torchvision's
            ``transforms.v2``; Beta(alpha, alpha)); 0 (the default) turns each off, and with both
            on each batch gets one of the two. The loss then takes the mixed class probabilities.
        no_decay_norms_and_biases: put norm layers' parameters, biases and layer scales in an
            optimizer group with ``weight_decay=0`` (timm's ``param_groups_weight_decay``).
        ema_decay: keep an exponential moving average of the weights (e.g. 0.999 per step;
            Lightning's ``EMAWeightAveraging``): validation, test and the saved checkpoints use
            the averaged weights. None (the default) keeps none.
    """

    monitor = ("val/acc", "max")

    def __init__(
        self,
        model: str = "lenet5",
        *,
        model_args: dict[str, Any] | None = None,
        num_classes: int = 10,
        in_channels: int = 3,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        label_smoothing: float = 0.0,
        aux_weight: float = 0.3,
        channels_last: bool = False,
        compile: bool = False,
        tta: bool = False,
        weights: str | None = None,
        freeze_backbone: bool | int = False,
        backbone_lr_factor: float = 1.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        no_decay_norms_and_biases: bool = False,
        ema_decay: float | None = None,
    ) -> None:
        _check_fine_tuning(freeze_backbone, backbone_lr_factor)  # before the network is built (or downloaded)
        super().__init__(
            model,
            model_args=model_args,
            num_classes=num_classes,
            in_channels=in_channels,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            channels_last=channels_last,
            compile=compile,
            tta=tta,
            weights=weights,
            no_decay_norms_and_biases=no_decay_norms_and_biases,
            ema_decay=ema_decay,
        )
        self.mix = BatchMix(num_classes, mixup_alpha, cutmix_alpha)
        self.frozen_stages = self._frozen_stages(freeze_backbone, backbone_lr_factor)
        self.backbone_lr_factor = float(backbone_lr_factor)
        self._frozen_norms: list[nn.Module] = []
        if self.frozen_stages:
            for stage in self.net.stages[: self.frozen_stages]:
                stage.requires_grad_(False)
                self._frozen_norms += [m for m in stage.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.label_smoothing = label_smoothing
        self.aux_weight = aux_weight
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        metrics: dict[str, Any] = {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        }
        if num_classes > 5:
            metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
        # compute_groups=False: shared states across cloned collections gave wrong test scores
        self.val_metrics = MetricCollection(metrics, prefix="val/", compute_groups=False)
        self.test_metrics = self.val_metrics.clone(prefix="test/")
        self.confusion = MulticlassConfusionMatrix(num_classes)

    def _frozen_stages(self, freeze: bool | int, factor: float) -> int:
        """The number of stages `freeze` freezes, or a one-line error if the network cannot do it."""
        model = self.hparams["model"]
        if not freeze and factor == 1:
            return 0
        stages = getattr(self.net, "stages", None)
        if not isinstance(stages, nn.ModuleList):
            what = "freeze_backbone" if freeze else "backbone_lr_factor"
            raise ConfigurationError(f"{what} needs a network whose backbone is net.stages; {model} has no stages")
        n = len(stages) if freeze is True else int(freeze)
        if not 0 <= n <= len(stages):
            raise ConfigurationError(
                f"freeze_backbone={freeze} but {model} has {len(stages)} stages: give 0 to {len(stages)}, "
                f"or true for the whole backbone"
            )
        if n == len(stages) and factor != 1:
            raise ConfigurationError(
                f"backbone_lr_factor={factor} has nothing to act on: freeze_backbone={freeze} freezes every stage "
                f"of {model}; leave one of the two out"
            )
        return n

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The trainable parameters; with a `backbone_lr_factor`, the backbone's in a group of their own.

        The backbone group is named "backbone" and carries ``lr_factor`` (the optimizer's
        learning rate is multiplied by it in `configure_optimizers`); the rest is "head".
        """
        if self.backbone_lr_factor == 1:
            return super().parameter_groups()
        backbone = {id(p) for p in self.net.stages.parameters()}
        trainable = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"name": "backbone", "params": [p for p in trainable if id(p) in backbone]},
            {"name": "head", "params": [p for p in trainable if id(p) not in backbone]},
        ]
        groups[0]["lr_factor"] = self.backbone_lr_factor
        return [g for g in groups if g["params"]]

    def train(self, mode: bool = True) -> ClassificationTask:
        """Switch modes as usual, except that the BatchNorm layers of frozen stages stay in eval mode."""
        super().train(mode)
        for norm in self._frozen_norms:
            norm.eval()
        return self

    def on_train_start(self) -> None:
        # Lightning starts training with every module in train mode (and warns otherwise)
        for norm in self._frozen_norms:
            norm.eval()

    def _loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        if self.mix:  # mixed images; the loss takes the mixed class probabilities, the accuracy their argmax
            x, target = self.mix(x, y)
            y = target.argmax(1)
        else:
            target = y
        out = self(x)
        if isinstance(out, InceptionOutput):
            logits = out.logits
            loss = self._loss(logits, target) + self.aux_weight * sum(self._loss(a, target) for a in out.aux_logits)
        else:
            logits = out
            loss = self._loss(logits, target)
        self.train_acc(logits.detach(), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def logits(self, x: Tensor, tta: bool = False) -> Tensor:
        """Evaluation logits; with `tta`, the mean of the image's and its mirror image's."""
        if not tta:
            return self(x)
        return (self(x).float() + self(x.flip(-1)).float()) / 2

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str, metrics: MetricCollection) -> Tensor:
        x, y = batch
        logits = self.logits(x, tta=self.tta and stage == "test")
        self._log_loss(stage, self._loss(logits, y), len(y))
        metrics.update(logits, y)
        for name, metric in metrics.items():
            self.log(name, metric, prog_bar=name == f"{stage}/acc")
        return logits

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        # the logits go to the callbacks (`RunHealth` counts the predicted classes); Lightning keeps nothing
        return self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        logits = self._evaluate(batch, "test", self.test_metrics)
        self.confusion.update(logits, batch[1])

    def on_test_epoch_end(self) -> None:
        matrix = self.confusion.compute().cpu()
        self.confusion.reset()
        if self.trainer.is_global_zero:
            from zoo.training.report import run_folder, save_confusion_matrix

            folder = run_folder(self.trainer)
            if folder is not None:
                save_confusion_matrix(matrix, self._classes(), folder)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """The predicted class, its probability and the target (for unlabelled images: the file's index),
        and the top 5 classes with their probabilities (``top_classes``, ``top_probs``; B x min(5, classes))."""
        x, y = batch
        probs = self.logits(x, tta=self.tta).float().softmax(-1)
        top_probs, top_classes = probs.topk(min(5, probs.shape[-1]), -1)
        return {
            "pred": top_classes[:, 0],
            "confidence": top_probs[:, 0],
            "target": y,
            "top_classes": top_classes,
            "top_probs": top_probs,
        }


def soft_dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """One minus the mean over classes of the soft Dice of softmax(logits) (B, C, H, W) and `target` (B, H, W)."""
    probs = logits.softmax(1)
    onehot = F.one_hot(target.long(), logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * inter + eps) / (total + eps)).mean()


class SegmentationTask(_Task):
    """Semantic segmentation with any zoo segmentation network (``zoo list --task segmentation``).

    Args:
        model: the registered model name.
        model_args: further keyword arguments of the model.
        num_classes: number of classes (linked from the data module by the CLI).
        in_channels: input channels (linked from the data module by the CLI).
        optimizer: called with the parameters; default Adam with torch's defaults.
        lr_scheduler: called with the optimizer; see the module docstring.
        class_weights: per-class weights of the cross-entropy loss (None: equal).
        dice_weight: weight of a soft Dice loss (one minus the mean over classes of the
            Dice of the softmax probabilities and the targets, over the batch) added to the
            cross-entropy; 0 trains on the cross-entropy alone.
        overlap_tile: predict whole images for validation, test and prediction with
            `zoo.segment` (overlap-tile inference) instead of one forward pass: needed by
            networks whose output is smaller than their input.
        tile: the tiles' input size for `zoo.segment`; None lets it choose (the card's input
            size for a network whose output is smaller than its input, else the whole image).
        channels_last: run the network in channels_last memory format.
        compile: run the network through `torch.compile`.
        tta: test-time augmentation for test and predict: the class probabilities are the
            mean over the image's 8 mirror images and quarter turns (each prediction turned
            back). Validation stays plain.
    """

    monitor = ("val/iou", "max")

    def __init__(
        self,
        model: str = "unet_padded",
        *,
        model_args: dict[str, Any] | None = None,
        num_classes: int = 2,
        in_channels: int = 1,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        class_weights: list[float] | None = None,
        dice_weight: float = 0.0,
        overlap_tile: bool = False,
        tile: int | None = None,
        channels_last: bool = False,
        compile: bool = False,
        tta: bool = False,
    ) -> None:
        super().__init__(
            model,
            model_args=model_args,
            num_classes=num_classes,
            in_channels=in_channels,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            channels_last=channels_last,
            compile=compile,
            tta=tta,
        )
        if class_weights is not None and len(class_weights) != num_classes:
            raise InvalidArgumentError(
                f"class_weights needs one weight per class ({num_classes}), got {len(class_weights)}"
            )
        self.register_buffer(
            "class_weights", None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        )
        if not dice_weight >= 0:
            raise InvalidArgumentError(f"dice_weight must be >= 0, got {dice_weight}")
        self.dice_weight = float(dice_weight)
        self.overlap_tile, self.tile = overlap_tile, tile
        metrics = MetricCollection(
            {
                "iou": MulticlassJaccardIndex(num_classes, average="macro"),
                "dice": MulticlassF1Score(num_classes, average="macro", multidim_average="global"),
                "pixel_acc": MulticlassAccuracy(num_classes, average="micro", multidim_average="global"),
            },
            compute_groups=False,
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def _loss(self, logits: Tensor, y: Tensor | WeightedLabels) -> Tensor:
        weights = None
        if isinstance(y, WeightedLabels):  # the U-Net paper's per-pixel weights (ISBI2012DataModule(weight_map=True))
            y, weights = y.labels, center_crop(y.weights, logits.shape[-2:])
        logits, y = logits.float(), center_crop(y, logits.shape[-2:])
        if weights is None:
            loss = F.cross_entropy(logits, y, weight=self.class_weights)
        else:
            loss = (F.cross_entropy(logits, y, weight=self.class_weights, reduction="none") * weights).mean()
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, y)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self._loss(self(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def predict_whole(self, x: Tensor, tta: bool = False) -> Tensor:
        """Logits for whole images (B, C, h, w); h == H except without `overlap_tile` on a shrinking network.

        With `tta`, log-probabilities: the log of the mean probability over the 8 mirror
        images and quarter turns of `x` (each turned back before averaging).
        """
        if tta:
            total = None
            for flip in (False, True):
                for k in range(4):
                    view = torch.rot90(x.flip(-1) if flip else x, k, (-2, -1))
                    probs = torch.rot90(self.predict_whole(view).float().softmax(1), -k, (-2, -1))
                    probs = probs.flip(-1) if flip else probs
                    total = probs if total is None else total + probs
            return (total / 8).clamp_min(1e-12).log()
        if self.overlap_tile:
            return zoo.segment(self.net, self._input(x), tile=self.tile)
        return self(x)

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str, metrics: MetricCollection) -> None:
        x, y = batch
        logits = self.predict_whole(x, tta=self.tta and stage == "test")
        self._log_loss(stage, self._loss(logits, y), len(y))
        metrics.update(logits.float(), center_crop(y, logits.shape[-2:]))
        for name, metric in metrics.items():
            self.log(name, metric, prog_bar=name == f"{stage}/iou")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        return {"mask": self.predict_whole(x, tta=self.tta).argmax(1).to(torch.uint8), "target": y}
