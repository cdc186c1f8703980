"""zoo: the classic convolutional networks, from one registry and one library of blocks.

>>> import zoo
>>> zoo.list_models("vgg1[19]")
['vgg11', 'vgg19']
>>> model = zoo.create("lenet5", num_classes=10)
"""

from zoo import models  # noqa: F401  (registers every family)
from zoo.errors import ZooError
from zoo.registry import ModelCard, Paper, PublishedWeights, Variant, create, list_models, model_info, register_model
from zoo.segment import segment

__version__ = "0.1.0"
__all__ = [
    "ModelCard",
    "Paper",
    "PublishedWeights",
    "Variant",
    "ZooError",
    "analyze",
    "compare",
    "create",
    "export_onnx",
    "list_models",
    "model_info",
    "predict",
    "register_model",
    "segment",
    "summary",
]

_ANALYSIS = ("analyze", "compare", "summary")  # zoo.analysis, imported on first use


def __getattr__(name: str) -> object:
    if name in _ANALYSIS:
        from zoo import analysis

        return getattr(analysis, name)
    if name == "export_onnx":  # zoo.deploy.export_onnx (onnx is imported only when it is used)
        from zoo.deploy import export_onnx

        return export_onnx
    if name == "predict":  # zoo.training.predict: Lightning is imported only when it is used
        from zoo.training.prediction import predict

        return predict
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
