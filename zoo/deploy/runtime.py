"""Running ONNX files: `OnnxModel`, `predict_onnx` and the helpers the checks share (see `zoo.deploy`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.deploy.export import _require_onnxruntime
from zoo.errors import InputShapeError, InvalidArgumentError, WeightsError


# --------------------------------------------------------------------------- running an exported file
class OnnxModel:
    """An exported ONNX file in ONNX Runtime: ``OnnxModel(path)(x)`` returns the logits as a tensor.

    Args:
        path: the ``.onnx`` file.
        threads: ONNX Runtime's intra-op threads (default: torch's thread count, so that the two compare fairly).
        weights: for a graph written with ``weights_in_file=False``, the model whose tensors it reads.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None, weights: nn.Module | None = None) -> None:
        ort = _require_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise WeightsError(f"ONNX file not found: {self.path}; write one with zoo export RUN OUT.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are not the user's
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsError(f"ONNX Runtime cannot load {self.path}: {first[:200]}") from None
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata: dict[str, Any] = {}
        for key, value in props.items():
            try:
                self.metadata[key] = json.loads(value)
            except ValueError:
                self.metadata[key] = value
        self.input_shape = self.session.get_inputs()[0].shape  # ints, or names for dynamic axes
        self.input_name = self.session.get_inputs()[0].name
        wanted = [i.name for i in self.session.get_inputs()[1:]]
        state = {k: v.detach().cpu().numpy() for k, v in weights.state_dict().items()} if weights is not None else {}
        missing = [name for name in wanted if name not in state]
        if missing:
            raise WeightsError(
                f"{self.path} reads its weights as inputs ({missing[0]}, ...); pass the model: OnnxModel(path, "
                "weights=model)"
            )
        self.feeds = {name: state[name] for name in wanted}

    @property
    def batch_size(self) -> int | None:
        """The graph's fixed batch size, or None when it takes any."""
        first = self.input_shape[0]
        return first if isinstance(first, int) else None

    def __call__(self, x: Tensor) -> Tensor:
        import numpy as np

        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        try:
            out = self.session.run(None, {self.input_name: array, **self.feeds})[0]
        except Exception as e:  # ONNX Runtime's messages run to several lines of graph internals
            shape = "x".join(str(d) if isinstance(d, int) else "any" for d in self.input_shape)
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise InputShapeError(
                f"ONNX Runtime cannot run {self.path.name} on an input of shape {tuple(x.shape)}: the graph takes "
                f"{shape} ({first})"
            ) from None
        return torch.from_numpy(out)

    def logits(self, x: Tensor) -> Tensor:
        """Logits for a batch of any size: a graph with a fixed batch runs it in pieces (the last one padded)."""
        fixed = self.batch_size
        if fixed is None or fixed == len(x):
            return self(x)
        out = []
        for start in range(0, len(x), fixed):
            piece = x[start : start + fixed]
            short = fixed - len(piece)
            if short:
                piece = torch.cat([piece, piece[-1:].expand(short, *piece.shape[1:])])
            out.append(self(piece)[: fixed - short])
        return torch.cat(out)

    def preprocessing(self) -> dict[str, Any]:
        """How images become this network's inputs: the record `export_onnx` wrote into the file."""
        pre = self.metadata.get("preprocessing")
        if not isinstance(pre, dict):
            raise WeightsError(
                f"{self.path} does not say how to prepare images (no preprocessing in its metadata: its run did "
                "not record one, as runs on ImageFolderDataModule do); normalise images yourself and call "
                "zoo.deploy.OnnxModel"
            )
        return pre


def predict_onnx(
    path: str | Path | OnnxModel, paths: str | Path | Sequence[str | Path], *, batch_size: int = 32
) -> list[dict[str, Any]]:
    """Classify image files with an exported ONNX file: the rows `zoo.training.predict` gives for the checkpoint.

    The images are read and transformed as the run's evaluation did (the preprocessing record
    in the file's metadata; `zoo.training.data.eval_transform`), normalised with its mean and
    std, and classified in ONNX Runtime (with the run's test-time mirror averaging if it used it).
    """
    from zoo.errors import DatasetError
    from zoo.training.data import ImageFiles, collate_batch, eval_transform, image_files
    from zoo.training.prediction import prediction_rows

    model = path if isinstance(path, OnnxModel) else OnnxModel(path)
    if model.metadata.get("task", "classification") != "classification":
        raise DatasetError(
            f"{model.path} holds a {model.metadata.get('model')} {model.metadata['task']} network; "
            "zoo predict on an ONNX file classifies images"
        )
    pre = model.preprocessing()
    files = [str(f) for f in image_files(paths)]
    classes = list(pre.get("classes") or model.metadata.get("classes") or [])
    mean = torch.tensor(pre["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(pre["std"]).view(1, -1, 1, 1)
    dataset = ImageFiles(None, files, range(len(files)), eval_transform(pre), pre.get("grayscale", False))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_batch)
    tta = bool(model.metadata.get("tta"))
    tops, probs = [], []
    for x, _ in loader:
        x = (x.float() / 255 - mean) / std
        logits = model.logits(x)
        if tta:  # as ClassificationTask.logits: the mean of the image's and its mirror image's
            logits = (logits + model.logits(x.flip(-1))) / 2
        p = logits.float().softmax(-1)
        top = p.topk(min(5, p.shape[-1]), -1)
        probs.append(top.values)
        tops.append(top.indices)
    if not classes:
        classes = [str(i) for i in range(probs[0].shape[-1] if probs else 0)]
    return prediction_rows(files, torch.cat(tops), torch.cat(probs), classes)


def predict_main(argv: list[str]) -> int:
    """``zoo predict --ckpt_path MODEL.onnx --data.predict_root FOLDER [--output CSV] [--data.batch_size N]``."""
    import argparse
    import csv
    import sys

    parser = argparse.ArgumentParser(prog="zoo predict", add_help=True)
    parser.add_argument("--ckpt_path", required=True, help="the exported .onnx file")
    parser.add_argument("--data.predict_root", dest="root", required=True, help="image files or a folder of them")
    parser.add_argument("--output", help="the CSV to write (default: predictions.csv beside the .onnx file)")
    parser.add_argument("--data.batch_size", dest="batch_size", type=int, default=32)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise InvalidArgumentError(
            f"zoo predict on an ONNX file takes --ckpt_path, --data.predict_root, --output and --data.batch_size; "
            f"not {unknown[0]}"
        )
    rows = predict_onnx(args.ckpt_path, args.root, batch_size=args.batch_size)
    out = Path(args.output) if args.output else Path(args.ckpt_path).with_name("predictions.csv")
    if not out.parent.is_dir():
        raise InvalidArgumentError(f"cannot write {out}: the folder {out.parent} does not exist")
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"zoo: wrote the predictions for {len(rows)} images to {out}", file=sys.stderr)
    return 0


def max_abs_difference(a: Tensor, b: Tensor) -> float:
    """The largest absolute difference of two outputs (a helper for the checks and the benchmark)."""
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def tolerance(reference: Tensor) -> float:
    """The fp32 tolerance of an exported graph against torch: 1e-5 plus 1e-4 of the output's scale."""
    return 1e-5 + 1e-4 * float(reference.abs().max()) if reference.numel() else 0.0
