"""Training through PyTorch Lightning: tasks, data modules and the ``zoo fit`` command.

Importing this package imports Lightning and torchmetrics (``import zoo`` does not).
`predict` classifies new image files with a trained run's checkpoint (``zoo predict`` from
the command line).

>>> from zoo.training import ClassificationTask, DigitsDataModule
>>> task = ClassificationTask("lenet5", num_classes=10, in_channels=1)
>>> task.net.num_classes
10
"""

from zoo.training.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    InMemoryDataModule,
    ISBI2012DataModule,
    MNISTDataModule,
)
from zoo.training.prediction import predict
from zoo.training.report import RunReport
from zoo.training.tasks import ClassificationTask, SegmentationTask

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "ClassificationTask",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ISBI2012DataModule",
    "ImageFolderDataModule",
    "InMemoryDataModule",
    "MNISTDataModule",
    "RunReport",
    "SegmentationTask",
    "predict",
]
