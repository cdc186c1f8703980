"""Training pieces that timm and Lightning users expect: no weight decay on norms and biases,
MixUp / CutMix, and an exponential moving average of the weights.

- `split_weight_decay`: each optimizer group becomes two, and the parameters that weight
  decay should not shrink (every 1-D tensor: norm scales and shifts, biases; ConvNeXt's
  layer scales) go into the one with ``weight_decay=0``, as timm's
  ``param_groups_weight_decay`` does.
- `BatchMix`: torchvision's `transforms.v2.MixUp` / `CutMix` on a whole batch (one of the two,
  at random, when both are on); the targets become class probabilities, which
  `torch.nn.functional.cross_entropy` takes as they are (label smoothing included).
- `ema_callback`: Lightning's `EMAWeightAveraging`; validation, test and the saved checkpoint
  use the averaged weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from zoo.checks import check_int, check_number


def no_weight_decay(name: str, param: Tensor) -> bool:
    """True for the parameters weight decay should leave alone: 1-D tensors (norms, biases) and layer scales."""
    return param.ndim <= 1 or name.rsplit(".", 1)[-1] in ("layer_scale", "gamma")


def split_weight_decay(groups: list[dict[str, Any]], module: nn.Module) -> list[dict[str, Any]]:
    """Each group split in two: its decayed parameters, and the rest with ``weight_decay=0.0``.

    The other keys of a group (its name, an ``lr_factor``) are kept on both halves; empty halves
    are dropped. Parameters are named by `module` (those it does not name are decayed).
    """
    names = {id(p): n for n, p in module.named_parameters()}
    out = []
    for group in groups:
        rest = {k: v for k, v in group.items() if k != "params"}
        params = list(group["params"])
        skip = [p for p in params if no_weight_decay(names.get(id(p), ""), p)]
        skipped = {id(p) for p in skip}
        keep = [p for p in params if id(p) not in skipped]
        if keep:
            out.append({**rest, "params": keep})
        if skip:
            name = f"{rest['name']}.no_decay" if "name" in rest else "no_decay"
            out.append({**rest, "name": name, "params": skip, "weight_decay": 0.0})
    return out


class BatchMix:
    """MixUp (Zhang et al. 2018) and/or CutMix (Yun et al. 2019) on a batch, with soft targets.

    Args:
        num_classes: classes of the integer labels.
        mixup_alpha: Beta(alpha, alpha) of MixUp's mixing weight; 0 turns MixUp off.
        cutmix_alpha: the same for CutMix's box area; 0 turns CutMix off.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> None:
        from torchvision.transforms import v2

        self.num_classes = check_int(num_classes, "num_classes", "BatchMix")
        mixup_alpha = check_number(mixup_alpha, "mixup_alpha", "BatchMix")
        cutmix_alpha = check_number(cutmix_alpha, "cutmix_alpha", "BatchMix")
        choices = []
        if mixup_alpha > 0:
            choices.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            choices.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        self.transform = v2.RandomChoice(choices) if len(choices) > 1 else (choices[0] if choices else None)

    def __bool__(self) -> bool:
        return self.transform is not None

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(mixed images, (B, num_classes) target probabilities); unchanged (with one-hot targets) when off."""
        if self.transform is None:
            return x, torch.nn.functional.one_hot(y, self.num_classes).to(x.dtype)
        return self.transform(x, y)


def ema_callback(decay: float) -> Any:
    """Lightning's exponential moving average of the weights (``decay`` per step, e.g. 0.999)."""
    from lightning.pytorch.callbacks import EMAWeightAveraging

    decay = check_number(decay, "ema_decay", "ClassificationTask", below=1)
    return EMAWeightAveraging(decay=decay)
