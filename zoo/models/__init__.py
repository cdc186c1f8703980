"""The model families; importing this package registers every variant."""

from zoo.models import alexnet, lenet, resnet, vgg  # noqa: F401
