"""Writing ONNX files: `export_onnx` and `export_run` (see `zoo.deploy`)."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.errors import ConfigurationError, InputShapeError, InvalidArgumentError, WeightsError

#: the ONNX opset written by default (ONNX Runtime 1.16+ runs it; torch's exporter supports 7-20)
DEFAULT_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "exporting to ONNX needs the onnx package: pip install 'zoo[onnx]' (onnx and onnxruntime)"
        ) from None


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigurationError(
            "running an ONNX file needs ONNX Runtime: pip install 'zoo[onnx]' (onnx and onnxruntime)"
        ) from None
    return onnxruntime


# --------------------------------------------------------------------------- what can be exported how
def dynamic_size_problem(model: nn.Module) -> str | None:
    """Why `model` cannot be exported with a dynamic height and width, or None if it can."""
    fixed = getattr(model, "fixed_input_size", None)
    if fixed is not None:
        return f"it takes exactly {fixed[0]}x{fixed[1]} inputs"
    if getattr(model, "pad_input", False):
        return "it pads each input to a valid size, which is computed when the graph is exported"
    for name, module in model.named_modules():
        if isinstance(module, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
            size = module.output_size
            size = (size, size) if isinstance(size, int) else tuple(size)
            if size != (1, 1):
                return (
                    f"its {name} pools to a {size[0]}x{size[1]} grid, whose windows depend on the input size "
                    "and are fixed when the graph is exported"
                )
    return None


class _FixedWindowAdaptivePool(nn.Module):
    """`nn.AdaptiveAvgPool2d` for the input size it is traced at, as two matrix products (exportable to ONNX).

    Output row i averages input rows floor(i*H/oh) .. ceil((i+1)*H/oh) - 1, as torch's
    adaptive pool does; likewise for columns.
    """

    def __init__(self, pool: nn.AdaptiveAvgPool2d) -> None:
        super().__init__()
        self.pool = pool

    @staticmethod
    def _windows(size: int, out: int) -> Tensor:
        m = torch.zeros(out, size)
        for i in range(out):
            start, end = (i * size) // out, -((-(i + 1) * size) // out)
            m[i, start:end] = 1 / (end - start)
        return m

    def forward(self, x: Tensor) -> Tensor:
        oh, ow = (self.pool.output_size,) * 2 if isinstance(self.pool.output_size, int) else self.pool.output_size
        h, w = int(x.shape[-2]), int(x.shape[-1])  # constants of the trace: the graph has one input size
        oh, ow = oh or h, ow or w  # None keeps that axis
        if h % oh == 0 and w % ow == 0:  # torch's exporter writes an AveragePool for these
            return self.pool(x)
        rows = self._windows(h, oh).to(x.dtype)  # (oh, H)
        cols = self._windows(w, ow).to(x.dtype).T  # (W, ow)
        return torch.matmul(torch.matmul(rows, x), cols)  # (B, C, oh, ow)


@contextlib.contextmanager
def _exportable(model: nn.Module) -> Iterator[nn.Module]:
    """`model` with its adaptive average pools swapped for `_FixedWindowAdaptivePool` while exporting."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d):
                swapped.append((parent, name, child))
                setattr(parent, name, _FixedWindowAdaptivePool(child))
    try:
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


# --------------------------------------------------------------------------- export
def _check_example(model: nn.Module, x: Tensor) -> None:
    """The model's own input checks (a trace skips them): the zoo's one-line error for a size it cannot take."""
    if getattr(model, "pad_input", False):
        model._check_tensor(x)
    elif hasattr(model, "check_input"):
        model.check_input(x)


def _export_graph(
    model: nn.Module, x: Tensor, path: Path, opset: int, dynamic_axes: dict, weights_in_file: bool = True
) -> None:
    if weights_in_file:
        options: dict[str, Any] = {"do_constant_folding": True}  # eval mode: batch norms folded into the convs
    else:  # the graph alone: the model's own tensors as named inputs, so nothing may fold them into new ones
        options = {
            "export_params": False,
            "keep_initializers_as_inputs": True,
            "do_constant_folding": False,
            "training": torch.onnx.TrainingMode.PRESERVE,  # eval semantics without the eval pass that folds
        }
    with warnings.catch_warnings(), contextlib.ExitStack() as stack:
        if not weights_in_file:
            stack.enter_context(_shape_inference_without_weight_values())
        # our choice of exporter (module docstring), and the tracer's notes on the shape checks it skips
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes or None,
            **options,
        )


@contextlib.contextmanager
def _shape_inference_without_weight_values() -> Iterator[None]:
    """The exporter's ONNX shape inference, without copying the weights' values into it.

    torch's exporter hands every weight's value to ONNX shape inference, twice, which
    serialises them (3 of the 4 s that exporting VGG-16's graph takes). In a graph whose
    weights are inputs, their types carry the shapes and no value is needed: the pass gets
    none. (`torch._C` is looked up at call time, so the swap reaches the exporter.)
    """
    original = torch._C._jit_pass_onnx_graph_shape_type_inference

    def without_values(graph: Any, params_dict: dict, opset: int) -> None:
        return original(graph, {}, opset)

    torch._C._jit_pass_onnx_graph_shape_type_inference = without_values
    try:
        yield
    finally:
        torch._C._jit_pass_onnx_graph_shape_type_inference = original


def _append_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Add `metadata` to the ONNX file's ``metadata_props`` without reading the (possibly 1.4 GB) model back.

    A serialized protobuf message followed by another one of the same type parses as their
    merge, with repeated fields concatenated: appending a ModelProto that holds only
    metadata_props is the same as adding them to the model.
    """
    import onnx

    extra = onnx.ModelProto()
    for key, value in metadata.items():
        extra.metadata_props.add(key=key, value=value)
    with open(path, "ab") as f:
        f.write(extra.SerializeToString())


def export_onnx(
    model: nn.Module | str,
    path: str | Path,
    *,
    input_size: Sequence[int] | int | str | None = None,
    batch_size: int = 1,
    dynamic_batch: bool = False,
    dynamic_size: bool = False,
    opset: int = DEFAULT_OPSET,
    weights: str | Path | None = None,
    weights_in_file: bool = True,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write `model` (a zoo network, or a registered name) to `path` as ONNX; returns the path.

    >>> import tempfile, onnx
    >>> path = export_onnx("lenet5", Path(tempfile.mkdtemp()) / "lenet5.onnx", dynamic_batch=True)
    >>> meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    >>> meta["model"], meta["input_size"], meta["dynamic_batch"]
    ('lenet5', '1x32x32', 'true')

    Args:
        model: a zoo model, or a registered name (built with `weights`).
        path: the ``.onnx`` file to write (its folder must exist).
        input_size: S, HxW or CxHxW (default: the model card's input size); the network must take it.
        batch_size: the batch size of the graph's input (with `dynamic_batch`, of the example only).
        dynamic_batch: any batch size at run time.
        dynamic_size: any height and width at run time, where the network allows it
            (`dynamic_size_problem` says why not otherwise).
        opset: the ONNX opset to write.
        weights: with a name, what `zoo.create` loads (a file or a source such as ``"torchvision"``).
        weights_in_file: False writes the graph alone (kilobytes, not the weights' size): every
            parameter and buffer it reads becomes an input named as in the model's ``state_dict``,
            batch norms stay unfolded, and ``OnnxModel(path, weights=model)`` feeds them. For
            looking at the graph, and for the registry-wide test, which would otherwise write 9 GB.
        metadata: more entries for the file's ``metadata_props`` (values not strings are written as JSON;
            None leaves out the entry, including the defaults: mean, std and preprocessing from the model card).

    Raises:
        InputShapeError: the network cannot take `input_size` (the message names the sizes it can take).
        ConfigurationError: `dynamic_size` for a network whose graph depends on its input size,
            or the onnx package is not installed.
    """
    from zoo.analysis.stats import parse_input_size
    from zoo.checks import check_int
    from zoo.models.base import ZooSegmenter
    from zoo.registry import create

    _require_onnx()
    if isinstance(model, str):
        model = create(model, weights=weights)
    elif weights is not None:
        raise InvalidArgumentError("weights= is for a model given by name; load them into the model first")
    card = model.__dict__.get("card")
    name = card.name if card is not None else type(model).__name__
    path = Path(path)
    if path.suffix != ".onnx":
        raise InvalidArgumentError(f"the ONNX file's name must end in .onnx, got {str(path)!r}")
    if not path.parent.is_dir():
        raise InvalidArgumentError(f"cannot write {str(path)!r}: the folder {str(path.parent)!r} does not exist")
    check_int(batch_size, "batch_size", "export_onnx")
    check_int(opset, "opset", "export_onnx", minimum=7)
    channels = getattr(model, "in_channels", None)
    if input_size is None:
        if card is None:
            raise InvalidArgumentError(f"give the input size for {name}: input_size='CxHxW'")
        input_size = card.input_size[1:]
    c, h, w = parse_input_size(input_size, channels=channels)
    if channels is not None and c != channels:
        raise InputShapeError(
            f"{name} takes {channels} input channel(s), not {c}; give --input {channels}x{h}x{w} "
            f"or create it with in_channels={c}"
        )
    if dynamic_size:
        problem = dynamic_size_problem(model)
        if problem is not None:
            raise ConfigurationError(f"{name} cannot be exported with a dynamic input size: {problem}; export one size")
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    # an example batch of 1 lets the tracer fold the batch into a constant somewhere; 2 cannot be mistaken
    example_batch = max(batch_size, 2) if dynamic_batch else batch_size
    x = torch.randn(example_batch, c, h, w, dtype=param.dtype if param is not None else torch.float32)
    _check_example(model, x)
    axes: dict[int, str] = {}
    if dynamic_batch:
        axes[0] = "batch"
    if dynamic_size:
        axes |= {2: "height", 3: "width"}
    out_axes = {0: "batch"} if dynamic_batch else {}
    if dynamic_size and isinstance(model, ZooSegmenter):  # per-pixel logits: (B, K, H_out, W_out)
        out_axes |= {2: "out_height", 3: "out_width"}
    dynamic_axes = {INPUT_NAME: axes, OUTPUT_NAME: out_axes} if axes else {}
    try:
        with torch.no_grad(), _exportable(model):
            _export_graph(model, x, path, opset, dynamic_axes, weights_in_file)
    finally:
        model.train(was_training)
    _append_metadata(path, _metadata(model, card, (c, h, w), dynamic_batch, dynamic_size, metadata or {}))
    return path


def _metadata(
    model: nn.Module, card: Any, size: tuple[int, int, int], dynamic_batch: bool, dynamic_size: bool, extra: dict
) -> dict[str, str]:
    """The file's metadata_props: strings, JSON where the value is not one."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    mean = cfg.get("mean") or (card.mean if card is not None else None)
    std = cfg.get("std") or (card.std if card is not None else None)
    classes = cfg.get("categories") or cfg.get("classes")
    meta: dict[str, Any] = {
        "model": card.name if card is not None else type(model).__name__,
        "task": card.task if card is not None else None,
        "input_size": "x".join(map(str, size)),
        "dynamic_batch": dynamic_batch,
        "dynamic_size": dynamic_size,
        "num_classes": getattr(model, "num_classes", None),
        "mean": list(mean) if mean is not None else None,
        "std": list(std) if std is not None else None,
        "classes": classes,
        "producer": "zoo.deploy.export_onnx",
    }
    if "preprocessing" not in extra and mean is not None and (card is None or card.task == "classification"):
        # no run to say how images were prepared: what a photo-mode run of this network would do
        # (ImageFolderDataModule: the weights' resize and crop, else resize to size / 0.875, centre crop)
        c, h, _ = size
        resize = cfg.get("resize_size") if cfg.get("crop_size") == h and cfg.get("resize_size") else int(h / 0.875)
        meta["preprocessing"] = {
            "mode": "photo",
            "image_size": h,
            "resize_size": int(resize[0] if isinstance(resize, list | tuple) else resize),
            "interpolation": cfg.get("interpolation") or "bilinear",
            "mean": list(mean),
            "std": list(std),
            "grayscale": c == 1,
            "classes": list(classes or [str(i) for i in range(getattr(model, "num_classes", 0))]),
        }
    meta |= extra
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items() if v is not None}


# --------------------------------------------------------------------------- from a run or a weights file
def _hparams(checkpoint: Path) -> dict[str, Any]:
    """A Lightning checkpoint's hyper_parameters (memory-mapped: the weights are not read), or {}."""
    try:
        data = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a plain weights file, or not a torch file at all (create() says which)
        return {}
    hparams = data.get("hyper_parameters") if isinstance(data, dict) else None
    return dict(hparams) if isinstance(hparams, dict) else {}


def export_run(
    source: str | Path,
    output: str | Path,
    *,
    model: str | None = None,
    input_size: Sequence[int] | int | str | None = None,
    dynamic_batch: bool = False,
    dynamic_size: bool = False,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """``zoo export SOURCE OUT.onnx``: a ``zoo fit`` run folder, checkpoint or weights file as ONNX.

    The network is rebuilt as the run built it (model, classes, channels, model_args) and
    the run's preprocessing record (photo or memory mode, sizes, mean, std, class names),
    its recipe and test metrics go into the metadata. A weights file needs `model` unless
    the JSON card that ``zoo export --name`` writes beside it names one; `source` may also
    be a weights source (``torchvision``, ``timm:TAG``) with `model`. The input size
    defaults to the run's image size, then to the model card's.
    """
    from zoo.registry import create
    from zoo.weights.files import _run_files, export_card

    path = Path(source)
    info: dict[str, Any] = {}
    kwargs: dict[str, Any] = {}
    weights: str | Path = str(source)
    if path.exists():
        ckpt, _ = _run_files(path)
        weights = ckpt
        info = export_card(path)
        sidecar = ckpt.with_suffix(".json")
        if ckpt.suffix == ".safetensors" and sidecar.is_file():  # written by zoo export --name
            with contextlib.suppress(ValueError):
                info = {**json.loads(sidecar.read_text()), **{k: v for k, v in info.items() if v is not None}}
        info["tta"] = _hparams(ckpt).get("tta")
        kwargs = {k: info[k] for k in ("num_classes", "in_channels") if info.get(k) is not None}
        kwargs |= dict(info.get("model_args") or {})
    elif model is None:
        raise WeightsError(
            f"{str(source)!r} is not a file or a run folder; give a zoo fit run, a checkpoint or a weights file "
            "(or a source such as torchvision with --model NAME)"
        )
    name = model or info.get("model")
    if not name:
        raise WeightsError(f"{str(source)!r} does not say which model its weights are for; give --model NAME")
    if model and info.get("model") and model.lower() != str(info["model"]).lower():
        raise WeightsError(f"{str(source)!r} holds a {info['model']} network, not {model}; leave out --model")
    net = create(name, weights=weights, **kwargs)
    pre = info.get("preprocessing")
    if input_size is None and isinstance(pre, dict) and pre.get("image_size"):
        size = pre["image_size"]
        input_size = tuple(size) if isinstance(size, list | tuple) else (size, size)
    extra: dict[str, Any] = {
        "preprocessing": pre,
        "classes": info.get("classes") or (pre or {}).get("classes"),
        "mean": info.get("mean"),
        "std": info.get("std"),
        "tta": info.get("tta"),
        "recipe": info.get("recipe"),
        "metrics": info.get("metrics"),
    }
    if info.get("model") and not isinstance(pre, dict):
        # a run on an in-memory dataset (digits, MNIST, CIFAR) normalised with statistics it did not
        # record: the model card's would be wrong, so the file says nothing rather than something false
        extra |= {"preprocessing": None, "mean": None, "std": None}
    else:
        extra = {k: v for k, v in extra.items() if v is not None}
    return export_onnx(
        net,
        output,
        input_size=input_size,
        dynamic_batch=dynamic_batch,
        dynamic_size=dynamic_size,
        opset=opset,
        metadata=extra,
    )
