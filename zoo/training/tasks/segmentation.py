"""`SegmentationTask`: per-pixel classification with any zoo segmenter (see `zoo.training.tasks`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassJaccardIndex,
)

import zoo
from zoo.errors import InvalidArgumentError
from zoo.training.tasks.base import _Task, center_crop
from zoo.training.weight_map import WeightedLabels


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
        weights: start from these weights (a file, or a name ``zoo info MODEL`` lists), as
            `ClassificationTask`'s.
        no_decay_norms_and_biases: no weight decay on norm weights, biases and layer scales
            (as `ClassificationTask`'s).
        ema_decay: evaluate, test and save an exponential moving average of the weights
            (as `ClassificationTask`'s).

    Besides the macro mean IoU (``iou``), validation and test log each class's IoU as
    ``iou_<class>`` (the data module's class names, e.g. ``test/iou_membrane``).
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
        weights: str | None = None,
        no_decay_norms_and_biases: bool = False,
        ema_decay: float | None = None,
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
            weights=weights,
            no_decay_norms_and_biases=no_decay_norms_and_biases,
            ema_decay=ema_decay,
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
        # per-class IoU: a vector, logged element by element at the end of each evaluation epoch
        self.class_iou = torch.nn.ModuleDict(
            {stage: MulticlassJaccardIndex(num_classes, average="none") for stage in ("val", "test")}
        )

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
        target = center_crop(y, logits.shape[-2:])
        metrics.update(logits.float(), target)
        self.class_iou[stage].update(logits.float(), target)
        for name, metric in metrics.items():
            self.log(name, metric, prog_bar=name == f"{stage}/iou")

    def _log_class_iou(self, stage: str) -> None:
        metric = self.class_iou[stage]
        if not metric.update_called:  # e.g. a validation loop with no batches
            return
        # compute() already gathers every process's counts: the same number on every rank
        for name, value in zip(self._classes(), metric.compute().tolist(), strict=True):
            self.log(f"{stage}/iou_{name}", value)
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_class_iou("val")

    def on_test_epoch_end(self) -> None:
        self._log_class_iou("test")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        return {"mask": self.predict_whole(x, tta=self.tta).argmax(1).to(torch.uint8), "target": y}
