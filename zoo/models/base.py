"""The model contract every zoo classifier follows (timm's, plus stage information).

- ``forward(x) == forward_head(forward_features(x))``
- ``forward_features(x)``: the last stage's feature map (B, C, H, W);
  ``forward_stages(x)``: every stage's output, shallowest first (a U-Net decoder's skips);
  ``forward_head(features, pre_logits=False)``: pool and classify.
- ``in_channels``, ``num_classes``, ``num_features`` (the width of the pre-logits
  vector), ``stage_channels`` and ``stage_strides`` (one entry per stage),
  ``reset_classifier(num_classes)``; ``num_classes=0`` makes `forward` return the
  pre-logits features.
- The input is checked at the start of `forward_features` / `forward_stages`: a 4-D
  floating-point tensor with ``in_channels`` channels and at least ``min_input_size``
  pixels, which is computed from the model's own layers by `zoo.arithmetic`.

A family builds ``self.stages`` (an `nn.ModuleList` run one after the other) and the
head, and overrides `spatial_chain` when its main path is not simply every conv and
pool in registration order (branches, shortcuts).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zoo.arithmetic import LayerGeometry, collapse_point, min_input_size, module_chain
from zoo.errors import InputShapeError


class ZooModel(nn.Module):
    """Base class of the zoo classifiers: the forward contract and the input checks."""

    in_channels: int
    num_classes: int
    num_features: int
    stage_channels: tuple[int, ...]
    stage_strides: tuple[int, ...]
    stages: nn.ModuleList
    #: models with a flatten before the classifier take exactly one size
    fixed_input_size: tuple[int, int] | None = None

    # ------------------------------------------------------------------ contract
    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """The output of every stage, shallowest first."""
        self.check_input(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's feature map."""
        self.check_input(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool and classify a feature map (`pre_logits=True` stops before the last linear layer)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last layer with a new one for `num_classes` (0: return pre-logits features)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ arithmetic
    def spatial_chain(self) -> list[LayerGeometry]:
        """The convs and pools of the main path, in order (see `zoo.arithmetic`)."""
        return module_chain(self.named_modules())

    @property
    def min_input_size(self) -> tuple[int, int]:
        """The smallest (H, W) every layer of the model can take."""
        cached = self.__dict__.get("_min_input_size")
        if cached is None:
            cached = self.fixed_input_size or min_input_size(self.spatial_chain())
            self.__dict__["_min_input_size"] = cached
        return cached

    @property
    def model_name(self) -> str:
        card = self.__dict__.get("card")
        return card.name if card is not None else type(self).__name__

    def check_input(self, x: Tensor) -> None:
        """Raise `InputShapeError` with one clear line if the model cannot take `x`."""
        if torch.jit.is_tracing():  # a trace is specialised to its example input anyway
            return
        name = self.model_name
        if not isinstance(x, Tensor):
            raise InputShapeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            fix = " Add a batch dimension: x.unsqueeze(0)." if x.dim() == 3 else ""
            raise InputShapeError(
                f"{name} expects a 4-D tensor (batch, channels, height, width), "
                f"got a {x.dim()}-D tensor of shape {tuple(x.shape)}.{fix}"
            )
        if not x.is_floating_point():
            raise InputShapeError(
                f"{name} expects a floating-point tensor, got {x.dtype}; convert it with x.float() "
                "(and scale/normalise images as the model card says)"
            )
        if x.shape[1] != self.in_channels:
            raise InputShapeError(
                f"{name} expects {self.in_channels} input channel(s), got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}); create it with in_channels={x.shape[1]} or convert the images"
            )
        h, w = x.shape[-2], x.shape[-1]
        if self.fixed_input_size is not None:
            fh, fw = self.fixed_input_size
            if (h, w) != (fh, fw):
                raise InputShapeError(
                    f"{name} takes exactly {fh}x{fw} inputs (its classifier has a fixed size), got {h}x{w}; "
                    f"resize or pad the input, or create it with input_size={h}"
                )
            return
        mh, mw = self.min_input_size
        if h < mh or w < mw:
            where = collapse_point(self.spatial_chain(), (h, w))
            at = f": the feature map collapses at {where[0]}" if where else ""
            raise InputShapeError(
                f"{name} needs an input of at least {mh}x{mw}, got {h}x{w}{at}; resize or pad the input"
            )
