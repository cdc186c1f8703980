"""The model families; importing this package registers every variant."""

from zoo.models import alexnet, convnext, lenet, resnet, vgg  # noqa: F401
