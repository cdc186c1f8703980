"""Predicting new images with a trained classifier, from Python: `zoo.training.predict(ckpt_or_task, paths)`.

The same as ``zoo predict --ckpt_path RUN/checkpoints/best.ckpt --data.predict_root FOLDER``
(which writes the rows below to ``RUN/predictions.csv``), without the CLI: the images are
read, turned upright (EXIF), transformed with the run's evaluation preprocessing (the
record that `ImageFolderDataModule` saves in every checkpoint: resize and centre crop,
mean and std) and classified; each row names the file, the predicted class and its
probability, and the next most probable classes.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zoo.errors import WeightsError


def prediction_rows(
    paths: Sequence[str], top_classes: Tensor, top_probs: Tensor, classes: Sequence[str]
) -> list[dict[str, Any]]:
    """Rows of ``path, class, confidence, top2, top2_confidence, ...`` from the top-k indices and probabilities."""
    rows = []
    for path, idx, probs in zip(paths, top_classes.tolist(), top_probs.tolist(), strict=True):
        row: dict[str, Any] = {"path": path, "class": classes[idx[0]], "confidence": round(probs[0], 6)}
        for rank, (i, p) in enumerate(zip(idx[1:], probs[1:], strict=True), start=2):
            row[f"top{rank}"] = classes[i]
            row[f"top{rank}_confidence"] = round(p, 6)
        rows.append(row)
    return rows


def _preprocessing_record(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The data module's preprocessing record in a Lightning checkpoint (saved under the module's class name)."""
    for value in checkpoint.values():
        if isinstance(value, dict) and isinstance(value.get("preprocessing"), dict):
            return value["preprocessing"]
    return None


def load_task(ckpt_path: str | Path) -> tuple[Any, dict[str, Any] | None]:
    """A `ClassificationTask` from a ``zoo fit`` checkpoint (read with ``weights_only=True``) and its preprocessing."""
    from zoo.training.checkpoint import read_checkpoint
    from zoo.training.tasks import ClassificationTask, weights_from_checkpoint

    path = Path(ckpt_path)
    checkpoint = read_checkpoint(path)  # one line if missing, a folder, corrupt or holding code
    if "hyper_parameters" not in checkpoint:
        raise WeightsError(f"{path} is not a zoo fit checkpoint (no state_dict and hyper_parameters in it)")
    known = inspect.signature(ClassificationTask).parameters
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if k in known}  # not LightningCLI's own
    try:
        with weights_from_checkpoint():  # every weight is in the checkpoint: nothing is downloaded
            task = ClassificationTask(**hparams)
    except TypeError as e:
        raise WeightsError(f"{path} is not a checkpoint of a classification run ({e})") from None
    task.load_state_dict(checkpoint["state_dict"])
    return task, _preprocessing_record(checkpoint)


def predict(
    model: str | Path | Any,
    paths: str | Path | Sequence[str | Path],
    *,
    preprocessing: dict[str, Any] | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> list[dict[str, Any]]:
    """Classify image files with a trained classifier; one row (a dict) per image.

    >>> rows = predict("runs/resnet18_finetune/version_0/checkpoints/best.ckpt", "new_photos/")  # doctest: +SKIP
    >>> rows[0]  # doctest: +SKIP
    {'path': 'new_photos/a.jpg', 'class': 'cat', 'confidence': 0.93, 'top2': 'dog', 'top2_confidence': 0.05}

    Args:
        model: a ``zoo fit`` checkpoint (``RUN/checkpoints/best.ckpt``), or a
            `ClassificationTask` (for instance one just trained in Python; then give
            `preprocessing`, or it is taken from the datamodule it was trained with).
        paths: an image file, a folder (searched recursively, in any layout; files that are
            not images are skipped and counted in one line), or a list of them.
        preprocessing: how to turn images into inputs (``ImageFolderDataModule.preprocessing()``);
            default: the record in the checkpoint.
        batch_size: images per forward pass.
        device: where to run (default: CUDA when available, else the CPU).

    Returns:
        Rows in the order of the files: ``path``, ``class`` (the predicted class's name),
        ``confidence`` (its probability), then ``top2``, ``top2_confidence``, ... up to the
        5 most probable classes (fewer with fewer classes), the columns of ``zoo
        predict``'s ``predictions.csv``.

    Raises:
        WeightsError: the checkpoint is missing or unreadable.
        DatasetError: no preprocessing record (the run did not train on an
            `ImageFolderDataModule`; give `preprocessing`), or no images in `paths`.
    """
    from zoo.errors import DatasetError
    from zoo.training.data import ImageFiles, collate_batch, eval_transform, image_files

    if isinstance(model, str | Path):
        task, record = load_task(model)
        preprocessing = preprocessing or record
    else:
        task = model
        if preprocessing is None and task._trainer is not None:
            datamodule = getattr(task.trainer, "datamodule", None)
            preprocessing = datamodule.preprocessing() if hasattr(datamodule, "preprocessing") else None
    if preprocessing is None:
        raise DatasetError(
            "no preprocessing record: the model was not trained on an ImageFolderDataModule; give "
            "preprocessing= (ImageFolderDataModule(...).preprocessing()) to say how to resize and normalise images"
        )
    files = [str(f) for f in image_files(paths)]
    classes = list(preprocessing.get("classes") or [str(i) for i in range(task.num_classes)])
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    mean = torch.tensor(preprocessing["mean"], device=device).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing["std"], device=device).view(1, -1, 1, 1)
    dataset = ImageFiles(None, files, range(len(files)), eval_transform(preprocessing), preprocessing["grayscale"])
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_batch)
    was_training = task.training
    task.eval().to(device)
    tops, probs = [], []
    try:
        with torch.inference_mode():
            for x, _ in loader:
                x = (x.to(device).float() / 255 - mean) / std
                p = task.logits(x, tta=task.tta).float().softmax(-1)
                top = p.topk(min(5, p.shape[-1]), -1)
                probs.append(top.values.cpu())
                tops.append(top.indices.cpu())
    finally:
        task.train(was_training)
    return prediction_rows(files, torch.cat(tops), torch.cat(probs), classes)
