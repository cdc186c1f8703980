"""Load a state dict in whichever layout of the model fits it, adapting the head and the first conv for fine-tuning."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from torch import Tensor, nn

from zoo.errors import WeightsError
from zoo.weights.keymaps import SOURCES, _Fit, _listing, _match

logger = logging.getLogger("zoo")


def layouts(model: nn.Module) -> dict[str, dict[str, str]]:
    """Every key layout the model knows: zoo's own, and its references' (the model card's fields)."""
    from zoo.models.base import RemovedHead

    ours = {k: k for k in model.state_dict()}
    # a head the model was built without (num_classes=0, remove_head) leaves a file's head tensors out
    ours |= {n: n for n, m in model.named_modules() if n and isinstance(m, (nn.Identity, RemovedHead))}
    found = {"zoo": ours}
    card = getattr(model, "card", None)
    for source in SOURCES:
        get_map = getattr(model, f"{source}_key_map", None)
        if get_map is None or (card is not None and getattr(card, source) is None):
            continue
        try:
            found[source] = get_map()
        except WeightsError:  # a configuration (e.g. stem="cifar") that has left the reference's layout
            continue
    # older names of a reference's published files (torchvision's DenseNet files: "norm.1")
    found |= getattr(model, "legacy_layouts", dict)()
    return found


def adapt_input_conv(weight: Tensor, in_channels: int) -> Tensor:
    """A first-conv weight (O, I, kH, kW) for `in_channels` inputs, from one trained on I (RGB: 3).

    One channel: the sum over the trained channels (a grey image x gives what the RGB network gave
    for (x, x, x)). More or fewer: the trained channels repeated in turn, scaled by I / in_channels so
    that the response to equal inputs keeps its size. timm's ``adapt_input_conv`` does the same.
    """
    trained = weight.shape[1]
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // trained)
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (trained / in_channels)


def _first_conv(model: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return f"{name}.weight"
    return None


def _classifier_modules(model: nn.Module) -> set[str]:
    """The module paths of the model's classifiers: its ``fc`` and every linear layer with `num_classes` outputs."""
    num_classes, fc = getattr(model, "num_classes", None), getattr(model, "fc", None)
    return {
        name
        for name, m in model.named_modules()
        if m is fc or (isinstance(m, nn.Linear) and m.out_features == num_classes)  # the aux heads' too
    }


def _adapt(model: nn.Module, fit: _Fit) -> list[str] | None:
    """Complete `fit.converted` for a new head or input channels, as fine-tuning expects; None if it cannot.

    A classifier whose output size is the model's `num_classes` keeps the model's fresh
    initialisation; a first conv whose input channels are the model's `in_channels` is adapted
    from the trained ones (`adapt_input_conv`). Any other difference is a misfit.
    """
    num_classes, in_channels = getattr(model, "num_classes", None), getattr(model, "in_channels", None)
    first_conv, state, notes = _first_conv(model), model.state_dict(), []
    classifiers = _classifier_modules(model)
    head = []
    for described in fit.missing:  # weights without a classifier (timm's feature-only tags)
        ours = described.split(" ")[0]
        if ours.rsplit(".", 1)[0] not in classifiers:
            return None
        fit.converted[ours] = state[ours]
        head.append((ours, 0))
    if fit.unexpected:
        return None
    for ours, theirs, s_theirs, s_ours in fit.mismatched:
        if ours.rsplit(".", 1)[0] in classifiers and s_ours[:1] == (num_classes,) and s_ours[1:] == s_theirs[1:]:
            fit.converted[ours] = state[ours]
            head.append((ours, s_theirs[0]))
        elif ours == first_conv and len(s_ours) == 4 and s_ours[1] == in_channels and s_ours[2:] == s_theirs[2:]:
            fit.converted[ours] = adapt_input_conv(fit.state_dict[theirs], in_channels)
            how = "summed" if in_channels == 1 else "repeated and scaled"
            notes.append(f"the first conv ({ours.removesuffix('.weight')}) {how} from {s_theirs[1]} input channels")
        else:
            return None
    if head:
        modules = sorted({k.rsplit(".", 1)[0] for k, _ in head})
        theirs = f"the weights have {head[-1][1]}" if head[-1][1] else "the weights have no classifier"
        notes.insert(0, f"the classifier ({', '.join(modules)}) starts fresh for {num_classes} classes ({theirs})")
    return notes


def load_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], label: str = "the") -> str:
    """Load `state_dict` in whichever layout of the model fits it exactly; returns the layout's name.

    Every layout the model knows is tried (`layouts`). One that fits exactly is loaded. Failing that,
    one whose only differences are the classifier's size (a different `num_classes`: the head starts
    fresh) or the first conv's input channels (a different `in_channels`: `adapt_input_conv`) is
    loaded, with one log line that says so. A U-Net on a zoo encoder takes its encoder's weights
    (the decoder starts fresh). Otherwise the error names the closest layout and what differs.
    """
    name = getattr(model, "model_name", type(model).__name__)
    layout, notes = _load(model, state_dict, label)
    if notes:
        logger.warning("zoo: %s: loaded %s weights (%s layout); %s", name, label, layout, "; ".join(notes))
    return layout


def _load(model: nn.Module, state_dict: Mapping[str, Tensor], label: str) -> tuple[str, list[str]]:
    """`load_state_dict` without the log line: the layout and what was adapted, in words."""
    fits = sorted((_match(model, state_dict, m, layout) for layout, m in layouts(model).items()), key=lambda f: f.size)
    for fit in fits:
        notes = [] if fit.exact else _adapt(model, fit)
        if notes is not None:
            model.load_state_dict(fit.converted, strict=True)
            if fit.dropped:
                modules = sorted({k.rsplit(".", 1)[0] for k in fit.dropped})
                notes.append(
                    f"left out {len(fit.dropped)} tensor(s) of modules it does not have ({_listing(modules, 3)})"
                )
            return fit.layout, notes
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, nn.Module) and hasattr(encoder, "stage_channels"):
        try:
            layout, notes = _load(encoder, state_dict, label)
        except WeightsError:
            pass
        else:
            return layout, ["into its encoder; the decoder starts fresh", *notes]
    name = getattr(model, "model_name", type(model).__name__)
    closest = fits[0]
    raise WeightsError(
        f"{label} weights do not fit {name}: the closest layout, {closest.layout}'s, differs by {closest.problems()}. "
        "Check that both were built with the same variant and options"
    )
