"""The model families; importing this package registers every variant."""

from zoo.models import alexnet, convnext, densenet, inception, lenet, mobilenet, resnet, segnet, unet, vgg  # noqa: F401
