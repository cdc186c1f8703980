"""zoo: the classic convolutional networks, from one registry and one library of blocks.

>>> import zoo
>>> zoo.list_models("vgg1[19]")
['vgg11', 'vgg19']
>>> model = zoo.create("lenet5", num_classes=10)
"""

from zoo import models  # noqa: F401  (registers every family)
from zoo.errors import ZooError
from zoo.registry import ModelCard, Paper, Variant, create, list_models, model_info, register_model

__version__ = "0.1.0"
__all__ = [
    "ModelCard",
    "Paper",
    "Variant",
    "ZooError",
    "create",
    "list_models",
    "model_info",
    "register_model",
]
