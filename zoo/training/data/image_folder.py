"""`ImageFolderDataModule`: images in class folders, decoded into memory (small images) or per item (photos)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from torch import Tensor
from torch.utils.data import DataLoader

from zoo.checks import check_int
from zoo.errors import DatasetError, DatasetNotFoundError
from zoo.training.data.images import (
    ImageFiles,
    cached_image_folder,
    check_image_folder,
    default_cache_dir,
    image_files,
    image_folder_classes,
    is_archive,
    is_image_file,
    list_files,
    say,
    skipped_message,
)
from zoo.training.data.memory import InMemoryDataModule, holdout

IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _one_size(value: Any) -> int | None:
    """A size from a weights' card (an int, or a sequence whose first item is the size), or None."""
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return int(value) if value else None


def eval_transform(preprocessing: dict[str, Any]) -> Any:
    """The evaluation transform a run's `preprocessing` record (`ImageFolderDataModule.preprocessing`) describes.

    Photo mode: resize the short side to ``resize_size`` (aspect kept), then the centre
    ``image_size`` square; memory mode: resize to the training images' ``image_size`` (H, W).
    Both map uint8 (C, H, W) to uint8; normalisation comes after, on the batch.
    """
    from torchvision.transforms import InterpolationMode, v2

    interpolation = InterpolationMode(preprocessing.get("interpolation", "bilinear"))
    size = preprocessing["image_size"]
    if preprocessing.get("mode") == "photo":
        return v2.Compose(
            [
                v2.Resize(preprocessing["resize_size"], interpolation=interpolation, antialias=True),
                v2.CenterCrop(size),
            ]
        )
    return v2.Resize(tuple(size), interpolation=interpolation, antialias=True)


def photo_train_transform(preprocessing: dict[str, Any], hflip: bool, color_jitter: float) -> Any:
    """Photo mode's training transform: a random resized crop, a random mirror image, mild colour jitter."""
    from torchvision.transforms import InterpolationMode, v2

    interpolation = InterpolationMode(preprocessing.get("interpolation", "bilinear"))
    ops = [v2.RandomResizedCrop(preprocessing["image_size"], interpolation=interpolation, antialias=True)]
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    if color_jitter:
        ops.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    return v2.Compose(ops)


class ImageFolderDataModule(InMemoryDataModule):
    """Images in class folders, ``train/<class>/*`` with ``val/`` and/or ``test/``, in a folder or an archive.

    The split folders may sit below a top folder (``cifar10/train/cat/0001.jpg``). Without a
    ``val/`` folder, `val_size` images of ``train/`` are held out for validation; without a
    ``test/`` folder, the test split is the validation split (said once, when testing starts).
    Files that are not images (``notes.txt``, ``.DS_Store``, any hidden file) are skipped, and
    one line names how many and the first few. The classes (and `num_classes`) come from the
    listing of ``train/``'s sub-folders; nothing is decoded until `setup`.

    Two modes, chosen by `mode`, because the two kinds of data need opposite things:

    - ``"memory"`` (default): small images of one size (CIFAR, MNIST as JPEGs). Every image is
      decoded once, resized to `image_size` if given (otherwise all must have one size), and
      the decoded tensors are cached in `cache_dir`, keyed by the source's path, size and
      modification time; batches come from memory and are augmented on the device
      (`crop_padding`, `hflip`), normalised with the training split's mean and std.
    - ``"photo"``: photos of any size and shape, as for fine-tuning. Nothing is decoded ahead:
      each image is read, turned upright (EXIF), and transformed per item in the DataLoader's
      workers (torchvision.transforms.v2). Training: a random resized crop to `image_size`
      (scale 0.08-1, aspect 3/4-4/3), a random mirror image (`hflip`, on unless set false)
      and colour jitter (`color_jitter`); evaluation and prediction: the short side resized
      to ``image_size / 0.875`` (the pretrained weights' resize size where they say one for
      this crop) and the centre `image_size` square. The mean and std (and the default
      `image_size` and interpolation) are the network's pretrained weights' when it has any
      (``net.pretrained_cfg``), else its model card's; `mean`/`std` override them. Reads a
      folder or a .zip archive (a .tar must be extracted first: it cannot be read file by
      file). What was used is saved in checkpoints (`state_dict`), so a checkpoint is
      evaluated and predicted with the preprocessing it was trained with.

    `predict_root` (both modes) names unlabelled images to predict instead of the test split:
    a folder in any layout (searched recursively) or one file; ``zoo predict`` then writes
    their paths, predicted class names and confidences to ``predictions.csv``.

    Args:
        root: the folder, or a .tar.gz / .tgz / .tar / .zip archive (photo mode: a folder or a .zip).
        mode: ``"memory"`` or ``"photo"`` (see above).
        image_size: memory mode: resize every image to this square size (None keeps the
            size); photo mode: the side of the crops (None: the weights' crop size, else the
            model card's input size).
        grayscale: decode to one channel instead of RGB.
        val_size: images held out of ``train/`` when there is no ``val/`` folder (count or fraction).
        cache_dir: memory mode: where to keep the decoded tensors (default: `default_cache_dir()`).
        num_workers: DataLoader worker processes (None: 0 in memory mode, up to 8 in photo mode).
        hflip: random left-right mirror images in training (None: on in photo mode, off in memory mode).
        color_jitter: photo mode: the strength of random brightness, contrast and saturation
            changes in training (0 turns them off).
        predict_root: unlabelled images to predict (a folder in any layout, or a file).
        See `InMemoryDataModule` for the rest.
    """

    def __init__(
        self,
        root: str = "data",
        *,
        mode: Literal["memory", "photo"] = "memory",
        image_size: int | None = None,
        grayscale: bool = False,
        val_size: int | float = 0.1,
        cache_dir: str | None = None,
        num_workers: int | None = None,
        hflip: bool | None = None,
        color_jitter: float = 0.2,
        predict_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        if mode not in ("memory", "photo"):
            raise DatasetError(f"ImageFolderDataModule: mode must be 'memory' or 'photo', got {mode!r}")
        photo = mode == "photo"
        if num_workers is None:
            num_workers = min(8, os.cpu_count() or 1) if photo else 0
        super().__init__(root, num_workers=num_workers, hflip=photo if hflip is None else hflip, **kwargs)
        if image_size is not None:
            check_int(image_size, "image_size", type(self).__name__)
        if not 0 <= color_jitter < 1:
            raise DatasetError(f"ImageFolderDataModule: color_jitter must be in [0, 1), got {color_jitter!r}")
        if photo and self.crop_padding:
            raise DatasetError(
                "ImageFolderDataModule: crop_padding is memory mode's augmentation; photo mode crops at random "
                "already (leave crop_padding out)"
            )
        if predict_root is not None and not Path(predict_root).exists():
            raise DatasetNotFoundError(
                f"predict_root {predict_root} does not exist: give a folder of images (any layout) or an image file"
            )
        self.mode, self.color_jitter, self.predict_root = mode, color_jitter, predict_root
        self.image_size, self.grayscale, self.val_size = image_size, grayscale, val_size
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.in_channels = 1 if grayscale else 3
        self._classes: list[str] | None = None
        self._decoded: dict[str, Any] | None = None
        self._photos: dict[str, Any] | None = None  # photo mode: classes and file lists
        self._files: dict[str, tuple[list[str], list[int]]] = {}  # photo mode: split -> (names, targets)
        self._restored: dict[str, Any] | None = None  # the preprocessing a checkpoint was trained with
        self._preprocessing: dict[str, Any] | None = None
        self._test_is_val = ""  # where the test split comes from when there is no test/ folder
        self.predict_paths: list[str] | None = None
        self._said: set[str] = set()

    @property
    def classes(self) -> list[str]:  # type: ignore[override]
        """The class names: ``train/``'s sub-folders, sorted (read from the listing; nothing is decoded)."""
        if self._classes is None:
            if self.mode == "photo":
                self._classes = self.photo_files()["classes"]
            elif self._decoded is not None:
                self._classes = self._decoded["classes"]
            else:
                self._classes = image_folder_classes(check_image_folder(self.root), self.cache_dir)
        return self._classes

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return len(self.classes)

    # ------------------------------------------------------------------ memory mode
    def decoded_splits(self) -> dict[str, Any]:
        """Memory mode's decoded splits ({"classes", "train", "val"?, "test"?}), from the cache or decoded now."""
        if self._decoded is None:
            root = check_image_folder(self.root)
            self._decoded = cached_image_folder(
                root, self.cache_dir, image_size=self.image_size, grayscale=self.grayscale
            )
            if self._classes is not None and self._classes != self._decoded["classes"]:
                raise DatasetError(f"{root} changed while it was read: its classes differ; run again")
            if not self._decoded.keys() & {"val", "test"} and not self.val_size:
                raise DatasetError(
                    f"{root} has no val/ or test/ folder: set --data.val_size to hold out part of train/"
                )
        return self._decoded

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        d = self.decoded_splits()
        train = d["train"]
        if "val" in d:
            splits = {"train": train, "val": d["val"]}
        else:
            keep, held = holdout(len(train[1]), self.val_size)
            splits = {"train": (train[0][keep], train[1][keep]), "val": (train[0][held], train[1][held])}
        splits["test"] = d.get("test", splits["val"])
        if "test" not in d:
            self._test_is_val = "val/" if "val" in d else "the images held out of train/"
        return splits

    # ------------------------------------------------------------------ photo mode
    def photo_files(self) -> dict[str, Any]:
        """Photo mode's file lists: {"classes", "train"/"val"/"test": (names, targets)}, listed once."""
        if self._photos is None:
            self._photos = self._list_photos(check_image_folder(self.root))
        return self._photos

    def _list_photos(self, root: Path) -> dict[str, Any]:
        if is_archive(root) and not root.name.lower().endswith(".zip"):
            raise DatasetError(
                f"{root}: photo mode reads images one by one, which a .tar cannot do; extract it "
                f"(tar xf {root.name}) and point --data.root at the folder, or use a .zip"
            )
        names = list_files(root)
        # the split folders' parent: the shallowest folder that holds train/<class>/<file>
        tops = set()
        for name in names:
            parts = name.split("/")
            if "train" in parts[:-2]:
                tops.add("/".join(parts[: parts.index("train")]))
        if not tops:
            raise DatasetNotFoundError(
                f"no train/<class>/<image> files found in {root}: expected train/ and val/ or test/ folders of class "
                f"subfolders"
            )
        depth = min(t.count("/") + bool(t) for t in tops)
        shallowest = sorted(t for t in tops if t.count("/") + bool(t) == depth)
        if len(shallowest) > 1:
            raise DatasetError(
                f"{root} holds more than one dataset ({', '.join(f'{t}/train' for t in shallowest[:3])}); "
                f"point --data.root at one of them"
            )
        prefix = shallowest[0] + "/" if shallowest[0] else ""
        by_split: dict[str, dict[str, list[str]]] = {}
        skipped = []
        for name in names:
            parts = name[len(prefix) :].split("/") if name.startswith(prefix) else []
            if len(parts) >= 3 and parts[0] in ("train", "val", "test") and is_image_file(name[len(prefix) :]):
                by_split.setdefault(parts[0], {}).setdefault(parts[1], []).append(name)
            else:
                skipped.append(name)
        if skipped:
            say(skipped_message(skipped, str(root)))
        classes = sorted(by_split.get("train", {}))
        if root.is_dir():  # an empty class folder would silently shift every label after it
            for folder in sorted(p for p in (root / prefix / "train").iterdir() if p.is_dir()):
                if folder.name not in classes:
                    raise DatasetError(f"class folder {folder} holds no images; add images to it or remove it")
        if not by_split.keys() & {"val", "test"} and not self.val_size:
            raise DatasetError(f"{root} has no val/ or test/ folder: set --data.val_size to hold out part of train/")
        out: dict[str, Any] = {"classes": classes}
        for split, by_class in by_split.items():
            unknown = sorted(set(by_class) - set(classes))
            if unknown:
                raise DatasetError(f"{root}: {split}/ has classes not in train/: {', '.join(unknown[:5])}")
            files = [(name, i) for i, cls in enumerate(classes) for name in by_class.get(cls, [])]
            out[split] = ([n for n, _ in files], [t for _, t in files])
        return out

    def _split_photos(self) -> None:
        found = self.photo_files()
        names, targets = found["train"]
        if "val" in found:
            self._files = {"train": found["train"], "val": found["val"]}
        else:
            keep, held = (i.tolist() for i in holdout(len(names), self.val_size))
            self._files = {
                "train": ([names[i] for i in keep], [targets[i] for i in keep]),
                "val": ([names[i] for i in held], [targets[i] for i in held]),
            }
        self._files["test"] = found.get("test", self._files["val"])
        if "test" not in found:
            self._test_is_val = "val/" if "val" in found else "the images held out of train/"

    def _network(self) -> tuple[dict[str, Any], Any]:
        """The network's pretrained_cfg ({} without weights) and model card (None if unknown)."""
        trainer = getattr(self, "trainer", None)
        module = getattr(trainer, "lightning_module", None) if trainer is not None else None
        cfg = getattr(getattr(module, "net", None), "pretrained_cfg", None)
        name = getattr(module, "hparams", {}).get("model") if module is not None else None
        card = None
        if isinstance(name, str):
            import zoo

            with contextlib.suppress(zoo.ZooError):
                card = zoo.model_info(name)
        return (dict(cfg) if isinstance(cfg, dict) else {}), card

    def preprocessing(self) -> dict[str, Any]:
        """How images become the network's inputs in this run: mode, sizes, interpolation, mean, std, classes.

        Saved in checkpoints (`state_dict`) and read by `zoo.training.predict`. Photo mode
        chooses, in order: this module's own arguments, a checkpoint's record, the network's
        pretrained weights (``net.pretrained_cfg``), its model card, ImageNet's values.
        """
        if self._preprocessing is not None:
            return self._preprocessing
        if self.mode == "memory":
            if not self.splits:
                self.setup()
            return {
                "mode": "memory",
                "image_size": list(self.splits["train"].images.shape[-2:]),
                "interpolation": "bilinear",
                "mean": list(self.mean),
                "std": list(self.std),
                "grayscale": self.grayscale,
                "classes": list(self.classes),
            }
        restored = self._restored or {}
        cfg, card = self._network()
        size = self.image_size or restored.get("image_size") or _one_size(cfg.get("crop_size"))
        size = size or (card.input_size[-1] if card is not None else 224)
        if restored.get("image_size") == size and restored.get("resize_size"):
            resize = restored["resize_size"]
        elif _one_size(cfg.get("crop_size")) == size and _one_size(cfg.get("resize_size")):
            resize = _one_size(cfg.get("resize_size"))
        else:
            resize = int(size / 0.875)
        if self.mean is not None and self.std is not None:
            (mean, std), source = (self.mean, self.std), "the mean and std given"
        elif restored.get("mean"):
            (mean, std), source = (restored["mean"], restored["std"]), "the checkpoint's mean and std"
        elif cfg.get("mean") and cfg.get("std"):
            (mean, std), source = (cfg["mean"], cfg["std"]), "the pretrained weights' mean and std"
        elif card is not None:
            (mean, std), source = (card.mean, card.std), f"{card.name}'s model card's mean and std"
        else:
            (mean, std), source = IMAGENET_MEAN_STD, "ImageNet's mean and std"
        if self.grayscale and len(mean) == 3:  # grey images of an RGB network's statistics: their average
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)
        self._preprocessing = {
            "mode": "photo",
            "image_size": int(size),
            "resize_size": int(resize),
            "interpolation": restored.get("interpolation") or cfg.get("interpolation") or "bilinear",
            "mean": [float(m) for m in mean],
            "std": [float(s) for s in std],
            "grayscale": self.grayscale,
            "classes": list(self.classes),
        }
        self._say_once(
            f"photo mode: random {size}x{size} crops to train; to evaluate and predict, the centre {size}x{size} of "
            f"images resized to {resize} (short side); normalised with {source}"
        )
        return self._preprocessing

    def _say_once(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            say(message)

    def _mean_std(self) -> tuple[Sequence[float], Sequence[float]]:
        if self.mode == "photo":
            pre = self.preprocessing()
            return pre["mean"], pre["std"]
        return super()._mean_std()

    def _photo_loader(self, split: str, train: bool = False) -> DataLoader:
        pre = self.preprocessing()
        names, targets = self._files[split]
        transform = photo_train_transform(pre, self.hflip, self.color_jitter) if train else eval_transform(pre)
        dataset = ImageFiles(Path(self.root), names, targets, transform, self.grayscale)
        return self._dataloader(dataset, train)

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        if self.mode == "photo":
            if not self._files:
                self._split_photos()
            return
        super().setup(stage)

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        if self.mode == "photo":
            return self._photo_loader(split, train)
        return super()._loader(split, train)

    def augment(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.mode == "photo":  # done per image in the workers
            return x, y
        return super().augment(x, y)

    def test_dataloader(self) -> DataLoader:
        if self._test_is_val:
            self._say_once(
                f"{self.root} has no test/ folder: the test metrics are on the validation split ({self._test_is_val})"
            )
        return super().test_dataloader()

    def predict_dataloader(self) -> DataLoader:
        if self.predict_root is None:
            return super().predict_dataloader()
        self.predict_paths = [str(f) for f in image_files(self.predict_root)]
        transform = eval_transform(self.preprocessing())
        dataset = ImageFiles(None, self.predict_paths, range(len(self.predict_paths)), transform, self.grayscale)
        return self._dataloader(dataset, train=False)

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: the `preprocessing` the network was trained with."""
        return {"preprocessing": self.preprocessing()} if (self.splits or self._files) else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        restored = state_dict.get("preprocessing")
        if restored and restored.get("mode") == self.mode == "photo":
            self._restored, self._preprocessing, self._scale = restored, None, None
