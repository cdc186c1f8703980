"""Deployment: a zoo network as an ONNX file, run with ONNX Runtime.

`export_onnx(model_or_name, path)` writes the network in eval mode (batch norms folded into
the convolutions before them) with what a server needs to feed it recorded as the file's
``metadata_props``: the model's name and task, the input size, the mean and std, the class
names and the run's whole preprocessing record when a ``zoo fit`` run is the source.
`OnnxModel` runs such a file and reads that record back; `predict_onnx` classifies a folder
of images with it, with the same preprocessing and the same rows as `zoo.training.predict`.
``zoo export RUN OUT.onnx`` and ``zoo predict --ckpt_path OUT.onnx --data.predict_root DIR``
are the command-line forms.

Decisions (see docs/deploy.md):

- The exporter is torch's TorchScript-based one (``dynamo=False``), not ``dynamo=True``:
  with torch 2.14 both export every zoo model, but the dynamo exporter takes 2-6x longer
  (resnet50 at 32x32: 13.9 s against 2.5 s; inception_v3: 19.2 s against 3.0 s, measured on
  this project's 2-core machine) because it first runs torch.export over the model. torch
  says the TorchScript exporter is deprecated; it is still the one ONNX Runtime users get
  the same graph from, and switching is one argument (`_export_graph`).
- Batch norm: the TorchScript exporter folds every batch norm that follows a convolution
  into it when it exports in eval mode (its ``eval_peephole`` pass, the same arithmetic as
  `zoo.inference.fold_batch_norms`); the tests check that no ``BatchNormalization`` node is
  left in any zoo model's graph, so the model is not copied and folded a second time here.
- Adaptive average pooling to a size that does not divide its input (VGG's 7x7 and
  AlexNet's 6x6 pools at small inputs) has no ONNX operator; for a fixed input size its
  windows are fixed, so it is exported as two small matrix products that average the same
  windows (`_FixedWindowAdaptivePool`).
- ``dynamic_size`` (any height and width at run time) is offered only where nothing in the
  graph depends on the export size: not for a classifier with a fixed input (LeNet), nor a
  pool to a fixed grid larger than 1x1 (VGG, AlexNet), nor a segmenter that pads its input
  (``pad_input=True``). Sizes the network cannot take exactly (the paper U-Net's 188 + 16k)
  still fail, in ONNX Runtime, as they do in torch.
"""

from zoo.deploy.export import DEFAULT_OPSET, dynamic_size_problem, export_onnx, export_run
from zoo.deploy.runtime import OnnxModel, max_abs_difference, predict_main, predict_onnx, tolerance

__all__ = [
    "DEFAULT_OPSET",
    "OnnxModel",
    "dynamic_size_problem",
    "export_onnx",
    "export_run",
    "max_abs_difference",
    "predict_main",
    "predict_onnx",
    "tolerance",
]
