"""`ClassificationTask`: image classification with any zoo classifier (see `zoo.training.tasks`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from zoo.errors import ConfigurationError
from zoo.models.base import InceptionOutput
from zoo.training.regularization import BatchMix
from zoo.training.tasks.base import _check_fine_tuning, _Task


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
