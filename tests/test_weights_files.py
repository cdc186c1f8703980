"""Every weights file a user has loads through `zoo.create(name, weights=FILE)`, for the whole registry.

Driven by the model cards' structured references (`ModelCard.torchvision`, `ModelCard.timm`),
never by a hand-kept list: each reference is built (random weights, batch-norm statistics and
affine parameters perturbed), saved as ``.pth`` and as ``.safetensors``, loaded by name, and
the outputs compared in eval and train mode. zoo's own layout and `zoo fit` checkpoints are
checked for every registered model.

The references are built on the meta device and filled with random numbers, and zoo's random
initialisation is skipped (`skip_random_init`: every tensor is then loaded from the file), which
keeps the whole registry within seconds per model. The largest models (over 100M parameters: VGG,
ConvNeXt-L/XL, ConvNeXt V2-L/H) are checked by one eval forward at their minimum size, from the
format their source publishes (torchvision's .pth, timm's .safetensors: both formats are checked
on every other model), and in
zoo's own layout (the identity map, checked in both formats on every other model) through the
checkpoint only, whose tensors repeat one random slice each (`_light_state`).
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import zoo
from zoo.models.inception import InceptionOutput

REFERENCES = [
    (name, source)
    for name in zoo.list_models()
    for source in ("torchvision", "timm")
    if getattr(zoo.model_info(name), source)
]
LARGE = 100_000_000  # VGG, ConvNeXt(V2)-L/XL/H


def build_reference(name: str, source: str) -> nn.Module:
    """The reference library's model for zoo's `name`, on the CPU, every tensor random."""
    card = zoo.model_info(name)
    with torch.device("meta"):
        if source == "torchvision":
            import torchvision

            kwargs = {"init_weights": False} if card.torchvision in ("googlenet", "inception_v3") else {}
            ref = torchvision.models.get_model(card.torchvision, weights=None, **kwargs)
        else:
            import timm

            ref = timm.create_model(card.timm, pretrained=False)
    ref = ref.to_empty(device="cpu")
    for module in ref.modules():  # torchvision's ConvNeXts train with stochastic depth, zoo's by default not
        if type(module).__name__ == "StochasticDepth":
            module.p = 0.0
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, tensor in ref.state_dict().items():
            if key.endswith("num_batches_tracked"):
                tensor.zero_()
            elif key.endswith("running_var"):
                tensor.uniform_(0.5, 1.5, generator=generator)
            elif tensor.dim() >= 2:  # conv / linear weights, scaled to keep activations of order one
                fan_in = tensor[0].numel()
                tensor.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)
            elif key.endswith(("weight", "gamma")):  # norm scales, layer scales
                tensor.uniform_(0.5, 1.5, generator=generator)
            else:  # biases, running means
                tensor.normal_(0.0, 0.1, generator=generator)
    return ref


def _logits(output: object) -> torch.Tensor:
    """The main logits of a model's output (Inception networks return named tuples in training mode)."""
    if isinstance(output, InceptionOutput):
        return output.logits
    return output[0] if isinstance(output, tuple) else output


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """The largest difference, relative to the size of the reference's output."""
    ours, theirs = ours.detach(), theirs.detach()
    return ((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1.0)).item()


@pytest.fixture(autouse=True)
def skip_random_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """zoo's constructors skip their random initialisation (seconds for VGG and ConvNeXt-L): the file overwrites it."""
    for name in ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_"):
        monkeypatch.setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory):
    """Build one reference at a time; its files are written one format at a time."""
    folder = tmp_path_factory.mktemp("references")

    def files(state: dict, formats: tuple[str, ...]):
        """Each format in turn, deleted before the next (ConvNeXt V2-H's file alone is 2.6 GB)."""
        writers = {"pth": torch.save, "safetensors": lambda s, p: save_file(s, str(p))}
        for fmt, write in ((f, writers[f]) for f in formats):
            path = folder / f"weights.{fmt}"
            write(state, path)
            try:
                yield fmt, path
            finally:
                path.unlink()

    def save(name: str, source: str) -> tuple[nn.Module, dict, object]:
        ref = build_reference(name, source)
        state = {k: v.contiguous() for k, v in ref.state_dict().items()}
        if zoo.model_info(name).num_params <= LARGE:  # a training-mode forward moves batch-norm statistics
            state = {k: v.clone() for k, v in state.items()}
            return ref, state, files(state, ("pth", "safetensors"))
        # the largest: the format their source publishes (torchvision .pth, timm's hub .safetensors)
        return ref, state, files(state, ("pth",) if source == "torchvision" else ("safetensors",))

    return save


@pytest.mark.parametrize(("name", "source"), REFERENCES, ids=[f"{n}-{s}" for n, s in REFERENCES])
def test_reference_files_load_by_name_with_the_same_outputs(name, source, saved):
    card = zoo.model_info(name)
    ref, state, files = saved(name, source)
    # torchvision's Inception aux heads need their full-size maps in training mode
    h, w = card.input_size[1:] if card.family == "inception" else (max(s, 32) for s in card.min_input_size)
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
    assert sum(p.numel() for p in ref.parameters()) == card.num_params
    for fmt, path in files:
        ours = zoo.create(name, weights=path)
        if card.num_params > LARGE:  # the state dict and one eval forward at the minimum size
            ref.eval(), ours.eval()
            x_min = x[:1, :, : card.min_input_size[0], : card.min_input_size[1]]
            assert _close(ours(x_min), ref(x_min)) <= 1e-4, f"{name} from {source} .{fmt}"
            continue
        ref.load_state_dict(state)  # a training-mode forward has moved the batch-norm statistics
        for train in (False, True):
            ours.train(train), ref.train(train)
            # (no torch.no_grad: on the CPU its first call per model costs seconds of kernel set-up)
            torch.manual_seed(2)  # the same dropout masks on both sides
            theirs = _logits(ref(x))
            torch.manual_seed(2)
            mine = _logits(ours(x))
            assert _close(mine, theirs) <= 1e-4, f"{name} from {source} .{fmt}, train={train}"
        del ours


def test_every_reference_of_the_registry_is_covered():
    """Every model card that names a reference has a parity case above (n/n), and the list is not empty."""
    named = {n for n in zoo.list_models() if zoo.model_info(n).torchvision or zoo.model_info(n).timm}
    assert named == {n for n, _ in REFERENCES}
    assert len(named) >= 20, sorted(named)


def _perturbed(name: str) -> tuple[nn.Module, dict]:
    torch.manual_seed(0)
    model = zoo.create(name)
    with torch.no_grad():  # every value set (the random initialisation is skipped here)
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.uniform_(-1.0, 1.0)
    return model, model.state_dict()


def _light_state(name: str) -> dict:
    """A state dict of `name`'s keys and shapes whose tensors of 2+ dimensions repeat one random slice
    along their first dimension (stride 0): every key has its own values, and torch.save writes one
    slice per tensor (a few MB instead of ConvNeXt V2-H's 2.6 GB)."""
    torch.manual_seed(0)
    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in zoo.create(name).state_dict().items()}
    state = {}
    for key, (shape, dtype) in shapes.items():
        if not dtype.is_floating_point:
            state[key] = torch.zeros(shape, dtype=dtype)
        elif len(shape) >= 2:
            state[key] = torch.rand(1, *shape[1:], dtype=dtype).expand(shape)
        else:
            state[key] = torch.rand(shape, dtype=dtype)
    return state


@pytest.mark.parametrize("name", zoo.list_models())
def test_zoo_layout_and_fit_checkpoint_load_by_name(name, tmp_path):
    """zoo's own files (a state dict, safetensors, a `zoo fit` checkpoint) load into every registered model.

    The largest models (over 100M parameters) are checked through the checkpoint only, with
    tensors that repeat a slice (`_light_state`): the file is then megabytes, not gigabytes."""
    _, state = _perturbed(name) if zoo.model_info(name).num_params <= LARGE else (None, _light_state(name))
    paths = [tmp_path / "best.ckpt"]
    torch.save({"state_dict": {f"net.{k}": v for k, v in state.items()}, "epoch": 1}, paths[0])
    if zoo.model_info(name).num_params <= LARGE:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
        paths.append(tmp_path / "w.safetensors")
    try:
        for path in paths:
            loaded = zoo.create(name, weights=path).state_dict()
            assert loaded.keys() == state.keys()
            assert all(torch.equal(loaded[k], state[k]) for k in state), f"{name} from {path.name}"
    finally:  # up to 1.4 GB a model: the whole registry's files at once would fill a small CI disk
        for path in paths:
            path.unlink(missing_ok=True)
