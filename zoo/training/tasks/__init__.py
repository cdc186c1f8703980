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

from zoo.training.tasks.base import MeanLoss, center_crop, weights_from_checkpoint
from zoo.training.tasks.classification import ClassificationTask
from zoo.training.tasks.segmentation import SegmentationTask, soft_dice_loss

__all__ = [
    "ClassificationTask",
    "MeanLoss",
    "SegmentationTask",
    "center_crop",
    "soft_dice_loss",
    "weights_from_checkpoint",
]
