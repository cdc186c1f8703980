"""Inspect and compare models: parameters, MACs, activation memory, receptive field.

Everything is computed on the ``meta`` device: a model built by name is constructed
there (``with torch.device("meta"): zoo.create(name)``) and run once in eval mode on a
meta input, so no weight or feature map is ever allocated and even ConvNeXt-XL takes
a fraction of a second. A model you pass in is run through `torch.func.functional_call`
with meta copies of its parameters and buffers, so it is not touched either.

What is counted, and how (the definitions the columns of `zoo compare` use):

- **MACs** (multiply-accumulates): the convolutions and matrix products the forward pass
  runs (``aten.convolution``, ``mm``, ``addmm``, ``bmm``, ...), counted from their shapes
  at batch 1 with the formulas of `torch.utils.flop_counter` (the tests check ours against
  them). Normalisation, pooling,
  activations, additions and bias terms are not counted: this is the convention of
  torchvision's model metadata, so our numbers can be compared with its ``_ops``.
  Because the count is taken from the operators that actually run, a linear layer applied
  to a 4-D tensor (ConvNeXt's MLP on (B, H, W, C)) counts all H*W positions (torchinfo
  counts one and reports 0.32 GMACs for ConvNeXt-T instead of 4.46).
- **FLOPs** = 2 x MACs (one multiply and one add). Torchvision's documentation labels its
  ``_ops`` column "GFLOPS", but the numbers are GMACs: ResNet-50 is 4.09 GMACs, 8.18 GFLOPs.
- **Parameters**: total and trainable (``requires_grad``), and split by the model
  contract: *stem* is the first stage's ``stem`` module where it has one (ResNet,
  ConvNeXt), otherwise the whole first stage ``stages[0]`` (VGG's first conv block,
  AlexNet's conv1, the Inception stems, LeNet's C1); *stages* is the rest of ``stages``;
  *head* is every parameter outside ``stages`` that the eval forward uses (pooling,
  classifier); *unused* ("aux" in the tables) is what the eval forward never reads (the
  Inception auxiliary classifiers, which run only in training). A model without ``stages`` (not a classifier)
  has no split.
- **Activations**: the bytes of every floating-point tensor the eval forward pass writes
  at batch 1, in the input's dtype (float32): each operator's fresh result, while views
  and in-place operators (``relu_``, ``x += shortcut``) add nothing, and by-products
  (normalisation statistics, pooling indices) are left out. It is the memory the
  feature maps would take if none were freed, close to what training keeps for the
  backward pass; it does not depend on how the code is split into modules (as torchinfo's
  sum of module outputs does). Inference at batch 1 peaks well below it.
- **Weights**: parameters and floating-point buffers (BatchNorm running statistics),
  as a state dict stores them, in MB (10^6 bytes) at 4 bytes (fp32) and 2 bytes (bf16) each.
- **Layers**: the conv and linear modules (``nn.Conv*d``, ``nn.ConvTranspose*d``,
  ``nn.Linear``) the eval forward runs, every branch and shortcut included (ResNet-50:
  49 + 4 shortcut convs + 1 fc = 54), so not the name's "depth" of the main path.
- **Receptive field** and **output stride**: of one position of the last feature map of
  ``model.spatial_chain()`` (the main path), by `zoo.arithmetic.receptive_fields`; through
  a transposed conv (U-Net's decoder) the jump divides by its stride and the field grows by
  ``ceil(kernel / stride) - 1`` input positions.
- **Minimum input**: ``model.min_input_size``.

Examples:
    >>> stats = analyze("resnet50")
    >>> round(stats.gmacs, 3), stats.params, stats.output_stride
    (4.089, 25557032, (32, 32))
"""

from zoo.analysis.counting import _fast, _macs  # noqa: F401  (the tests check them directly)
from zoo.analysis.plot import plot
from zoo.analysis.stats import (
    LayerStats,
    ModelStats,
    Summary,
    _build,  # noqa: F401
    _chain_fields,  # noqa: F401
    analyze,
    parse_input_size,
    summary,
)
from zoo.analysis.tables import SORT_KEYS, compare, render

__all__ = [
    "SORT_KEYS",
    "LayerStats",
    "ModelStats",
    "Summary",
    "analyze",
    "compare",
    "parse_input_size",
    "plot",
    "render",
    "summary",
]
