"""The model families; importing this package registers every variant."""

from zoo.models import alexnet, lenet, vgg  # noqa: F401
