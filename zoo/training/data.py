"""Lightning data modules: the datasets the recipes train on, held in memory and augmented per batch.

Every module here follows Lightning's conventions (download in `prepare_data`, datasets
in `setup`) and takes a `root` argument. The datasets are small, so each split is decoded
once into a uint8 tensor (N, C, H, W) in memory; a batch is then one indexing operation
(the dataset's ``__getitems__``), and augmentation and normalisation run on the whole
batch after it reaches the device (`on_after_batch_transfer`), as tensor operations. Data
loading is then a small fraction of a step (docs/training.md has the measurements).

- `DigitsDataModule`: scikit-learn's bundled 8x8 handwritten digits (1,797 images), resized
  to 32x32, a fixed stratified 70/10/20 train/val/test split. Needs no download.
- `MNISTDataModule`, `FashionMNISTDataModule`, `CIFAR10DataModule`, `CIFAR100DataModule`:
  through torchvision, from `root` (``download=True`` fetches them when online). The
  validation set is a fixed held-out part of the training set.
- `ImageFolderDataModule`: ``train/<class>/*.jpg`` and ``val/`` or ``test/`` folders, or the
  same inside a .tar.gz / .tgz / .tar / .zip archive. The images are decoded once and the
  decoded tensors cached (``~/.cache/zoo/datasets``, or ``$ZOO_CACHE``), so later runs start
  at once; the archive itself is read in place, never extracted file by file. Its photo
  mode (``mode="photo"``) is the exception to the in-memory rule: photos of any size,
  decoded and transformed per image in the DataLoader's workers, as fine-tuning needs.
- `ISBI2012DataModule`: the ISBI 2012 EM membranes (``images/N.png``, ``labels/N.png``), a
  fixed held-out set of slices, and the U-Net paper's augmentation: flips, rotations,
  elastic deformation (a 3x3 grid of Gaussian displacements, bicubic upsampling) and
  random crops, all in one ``grid_sample``.

A missing dataset raises `zoo.errors.DatasetNotFoundError` with one line that says where
it was looked for and how to get it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import sys
import tarfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from zoo.checks import check_int
from zoo.errors import DatasetError, DatasetNotFoundError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_CACHE_VERSION = 1


# --------------------------------------------------------------------------- datasets
class InMemoryDataset(Dataset):
    """Images (N, C, H, W) uint8 and targets in memory; `length` repeats them (index modulo N)."""

    def __init__(self, images: Tensor, targets: Tensor, length: int | None = None) -> None:
        self.images, self.targets = images, targets
        self.length = len(images) if length is None else length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        index = index % len(self.images)
        return self.images[index], self.targets[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        # a whole batch in one indexing operation (torch's DataLoader calls this when it exists)
        index = torch.as_tensor(indices, dtype=torch.long) % len(self.images)
        return self.images[index], self.targets[index]


def collate_batch(batch: Any) -> Any:
    """The DataLoader's collate: a batch from `__getitems__` is already stacked."""
    if isinstance(batch, tuple) and all(isinstance(t, Tensor) for t in batch):
        return batch
    return default_collate(batch)


# --------------------------------------------------------------------------- batch augmentation
def random_crop(x: Tensor, padding: int) -> Tensor:
    """Zero-pad each image by `padding` and crop it back to its size at a random offset (per image)."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dev = x.device
    rows = torch.randint(0, 2 * padding + 1, (b, 1), device=dev) + torch.arange(h, device=dev)  # (B, H)
    cols = torch.randint(0, 2 * padding + 1, (b, 1), device=dev) + torch.arange(w, device=dev)  # (B, W)
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def random_hflip(x: Tensor) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def elastic_grid(
    batch: int,
    size: int,
    image_size: tuple[int, int],
    *,
    max_rotation: float = 0.0,
    quarter_turns: bool = True,
    flips: bool = True,
    elastic_sigma: float = 0.0,
    elastic_points: int = 3,
    device: torch.device | str = "cpu",
) -> Tensor:
    """A `grid_sample` grid (B, size, size, 2) that crops, rotates, flips and deforms at random.

    Each grid takes a size x size window at a random place in an image of `image_size`
    (H, W), rotated by a random angle in +-`max_rotation` degrees plus a random multiple
    of 90 degrees (`quarter_turns`), mirrored at random (`flips`), and displaced elastically: Gaussian
    displacements of `elastic_sigma` pixels on an `elastic_points` x `elastic_points`
    grid, upsampled bicubically (the U-Net paper's augmentation).
    """
    h, w = image_size
    half = (size - 1) / 2
    r = torch.linspace(-half, half, size, device=device)
    v, u = torch.meshgrid(r, r, indexing="ij")  # (S, S) offsets from the window's centre, in pixels
    offsets = torch.stack((u, v), -1).expand(batch, size, size, 2)  # (B, S, S, 2) as (x, y)
    angle = torch.randint(0, 4 if quarter_turns else 1, (batch,), device=device) * (math.pi / 2)
    angle = angle + (torch.rand(batch, device=device) * 2 - 1) * math.radians(max_rotation)
    cos, sin = angle.cos(), angle.sin()
    sx = torch.where(torch.rand(batch, device=device) < 0.5, -1.0, 1.0) if flips else torch.ones(batch, device=device)
    rot = torch.stack((torch.stack((cos * sx, -sin), -1), torch.stack((sin * sx, cos), -1)), -2)  # (B, 2, 2)
    coords = torch.einsum("bij,bhwj->bhwi", rot, offsets)
    if elastic_sigma > 0:
        coarse = torch.randn(batch, 2, elastic_points, elastic_points, device=device) * elastic_sigma
        fine = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)  # (B, 2, S, S)
        coords = coords + fine.permute(0, 2, 3, 1)
    # the window's centre, so that an unrotated window lies inside the image where it fits
    cy = half + torch.rand(batch, device=device) * max(h - size, 0) + min(h - size, 0) / 2
    cx = half + torch.rand(batch, device=device) * max(w - size, 0) + min(w - size, 0) / 2
    px = coords[..., 0] + cx[:, None, None]
    py = coords[..., 1] + cy[:, None, None]
    # pixel centres -> grid_sample's [-1, 1] (align_corners=False)
    return torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), -1)


# --------------------------------------------------------------------------- the shared base
class InMemoryDataModule(L.LightningDataModule):
    """Base of the data modules whose splits fit in memory as uint8 tensors.

    Subclasses implement `load()`, returning ``{"train": (x, y), "val": (x, y), "test": (x, y)}``
    with x uint8 (N, C, H, W), and set `classes`, `num_classes` and `in_channels`.

    Args:
        root: where the dataset is (each subclass says what it expects there).
        batch_size: training batch size.
        eval_batch_size: validation / test / predict batch size (default: `batch_size`).
        num_workers: DataLoader worker processes (0: batches are built in the main process,
            which is fastest for in-memory data).
        crop_padding: random-crop augmentation: pad by this many pixels and crop back.
        hflip: random left-right flips.
        mean: per-channel mean (0..1) for normalisation; None: computed from the training split.
        std: per-channel standard deviation; None: computed from the training split.
    """

    classes: Sequence[str]
    num_classes: int
    in_channels: int

    def __init__(
        self,
        root: str = "data",
        *,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        crop_padding: int = 0,
        hflip: bool = False,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.root = root
        self.batch_size = check_int(batch_size, "batch_size", owner)
        self.eval_batch_size = check_int(eval_batch_size or batch_size, "eval_batch_size", owner)
        self.num_workers = check_int(num_workers, "num_workers", owner, minimum=0)
        self.crop_padding = check_int(crop_padding, "crop_padding", owner, minimum=0)
        self.hflip = hflip
        self.mean, self.std = mean, std
        self.splits: dict[str, InMemoryDataset] = {}
        self._scale: Tensor | None = None
        self._shift: Tensor | None = None

    # ------------------------------------------------------------------ to implement
    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        """The train, val and test splits as uint8 images and integer targets."""
        raise NotImplementedError

    def train_dataset(self, images: Tensor, targets: Tensor) -> InMemoryDataset:
        return InMemoryDataset(images, targets)

    def augment(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Augment a training batch on its device (x still uint8 or 0..255 floats)."""
        x = random_crop(x, self.crop_padding)
        if self.hflip:
            x = random_hflip(x)
        return x, y

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        splits = self.load()
        train_x = splits["train"][0]
        if self.mean is None or self.std is None:
            mean, std = channel_stats(train_x)
            self.mean = self.mean or mean
            self.std = self.std or std
        self.splits = {
            name: self.train_dataset(x, y) if name == "train" else InMemoryDataset(x, y)
            for name, (x, y) in splits.items()
        }

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        return self._dataloader(self.splits[split], train)

    def _dataloader(self, dataset: Dataset, train: bool) -> DataLoader:
        batch_size = self.batch_size if train else self.eval_batch_size
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train and len(dataset) > batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_batch,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        trainer = self.trainer
        if trainer is not None and trainer.training:
            x, y = self.augment(x, y)
        return self.normalize(x), y.long()

    def _mean_std(self) -> tuple[Sequence[float], Sequence[float]]:
        return self.mean, self.std

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 (or 0..255 float) images -> float32, normalised per channel."""
        if self._scale is None or self._scale.device != x.device:
            mean, std = self._mean_std()
            mean = torch.tensor(mean, dtype=torch.float32, device=x.device)
            std = torch.tensor(std, dtype=torch.float32, device=x.device)
            self._scale = (1 / (255 * std)).view(1, -1, 1, 1)
            self._shift = (-mean / std).view(1, -1, 1, 1)
        return torch.addcmul(self._shift, x.float(), self._scale)


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation (0..1 scale) of uint8 images (N, C, H, W)."""
    x = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255
    return tuple(x.mean(1).tolist()), tuple(x.std(1).clamp_min(1e-3).tolist())


def holdout(n: int, size: int | float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A fixed random split of range(n): (kept indices, held-out indices); `size` a count or a fraction."""
    count = round(n * size) if isinstance(size, float) else int(size)
    if not 0 < count < n:
        raise DatasetError(f"val_size must leave images on both sides of the split, got {size!r} of {n} images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[count:].sort().values, perm[:count].sort().values


# --------------------------------------------------------------------------- scikit-learn digits
class DigitsDataModule(InMemoryDataModule):
    """scikit-learn's bundled handwritten digits, resized for LeNet: the dataset that needs no download.

    1,797 grey 8x8 images (values 0..16) of the digits 0-9, scaled to 0..255 and resized
    bilinearly to `image_size`; a fixed stratified split, 70% train (1,257), 10% val
    (180), 20% test (360), the same on every machine (`root` is not used).

    Args:
        image_size: side of the square images (32 for LeNet-5).
        crop_padding: random shifts of up to this many pixels in training.
        See `InMemoryDataModule` for the rest.
    """

    classes = tuple(str(i) for i in range(10))
    num_classes = 10
    in_channels = 1

    def __init__(
        self,
        root: str = "",
        *,
        image_size: int = 32,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        crop_padding: int = 2,
        hflip: bool = False,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__(
            root,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            crop_padding=crop_padding,
            hflip=hflip,
            mean=mean,
            std=std,
        )
        self.image_size = image_size

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x = torch.from_numpy(digits.images).float()[:, None] * (255 / 16)  # (1797, 1, 8, 8)
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8)
        y = torch.from_numpy(digits.target).long()
        index = list(range(len(y)))
        train, rest = train_test_split(index, test_size=0.3, stratify=digits.target, random_state=0)
        val, test = train_test_split(rest, test_size=2 / 3, stratify=digits.target[rest], random_state=0)
        return {name: (x[sorted(i)], y[sorted(i)]) for name, i in (("train", train), ("val", val), ("test", test))}


# --------------------------------------------------------------------------- torchvision datasets
class MNISTDataModule(InMemoryDataModule):
    """MNIST through torchvision: 60,000 training and 10,000 test images, 28x28 grey.

    `root` holds ``MNIST/raw/`` with the four IDX files (torchvision's layout); the last
    `val_size` of a fixed random permutation of the training set is the validation set.

    Args:
        root: the folder that holds ``MNIST/`` (``../shared/data`` on the development machines).
        download: fetch the dataset into `root` if it is not there (needs internet).
        pad: zero border added to every image (2 gives LeNet-5's 32x32, as in the paper).
        val_size: images held out of the training set for validation (a count or a fraction).
        See `InMemoryDataModule` for the rest.
    """

    folder = "MNIST"
    classes = tuple(str(i) for i in range(10))
    num_classes = 10
    in_channels = 1

    def __init__(
        self,
        root: str = "data",
        *,
        download: bool = False,
        pad: int = 0,
        val_size: int | float = 5000,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        crop_padding: int = 0,
        hflip: bool = False,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__(
            root,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            crop_padding=crop_padding,
            hflip=hflip,
            mean=mean,
            std=std,
        )
        self.download, self.pad, self.val_size = download, pad, val_size

    def _dataset(self, train: bool, download: bool = False) -> Any:
        import torchvision

        cls = getattr(torchvision.datasets, self.folder)
        try:
            return cls(self.root, train=train, download=download)
        except RuntimeError as e:
            if download:
                raise DatasetNotFoundError(f"could not download {self.folder} into {self.root}: {e}") from None
            raise self._not_found() from None

    def _not_found(self) -> DatasetNotFoundError:
        where = Path(self.root) / self.folder / "raw"
        return DatasetNotFoundError(
            f"{self.folder} not found: looked for its four IDX files (train-images-idx3-ubyte, ...) in {where}; "
            f"pass --data.download true to download it (needs internet), or --data.root the folder that holds "
            f"{self.folder}/ (e.g. ../shared/data)"
        )

    def prepare_data(self) -> None:
        if self.download:
            self._dataset(train=True, download=True)
            self._dataset(train=False, download=True)

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        train, test = self._dataset(train=True), self._dataset(train=False)
        x, y = F.pad(train.data[:, None], (self.pad,) * 4), train.targets.long()
        keep, held = holdout(len(y), self.val_size)
        return {
            "train": (x[keep], y[keep]),
            "val": (x[held], y[held]),
            "test": (F.pad(test.data[:, None], (self.pad,) * 4), test.targets.long()),
        }


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST through torchvision: the MNIST format with ten kinds of clothing (see `MNISTDataModule`)."""

    folder = "FashionMNIST"
    classes = (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )


class CIFAR10DataModule(InMemoryDataModule):
    """CIFAR-10 through torchvision (the pickled release in ``cifar-10-batches-py/``), 32x32 RGB.

    Args:
        root: the folder that holds ``cifar-10-batches-py/``.
        download: fetch the dataset into `root` if it is not there (needs internet).
        val_size: images held out of the training set for validation (a count or a fraction).
        crop_padding, hflip: the standard CIFAR augmentation (4-pixel shifts, mirroring).
        See `InMemoryDataModule` for the rest.
    """

    dataset = "CIFAR10"
    folder = "cifar-10-batches-py"
    num_classes = 10
    in_channels = 3

    def __init__(
        self,
        root: str = "data",
        *,
        download: bool = False,
        val_size: int | float = 5000,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        crop_padding: int = 4,
        hflip: bool = True,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__(
            root,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            crop_padding=crop_padding,
            hflip=hflip,
            mean=mean,
            std=std,
        )
        self.download, self.val_size = download, val_size
        self.classes: Sequence[str] = ()

    def _dataset(self, train: bool, download: bool = False) -> Any:
        import torchvision

        cls = getattr(torchvision.datasets, self.dataset)
        try:
            return cls(self.root, train=train, download=download)
        except RuntimeError as e:
            if download:
                raise DatasetNotFoundError(f"could not download {self.dataset} into {self.root}: {e}") from None
            raise DatasetNotFoundError(
                f"{self.dataset} not found: looked for {Path(self.root) / self.folder}; pass --data.download true to "
                f"download it (needs internet), or --data.root the folder that holds {self.folder}/; for a copy in "
                f"ImageFolder layout use ImageFolderDataModule"
            ) from None

    def prepare_data(self) -> None:
        if self.download:
            self._dataset(train=True, download=True)
            self._dataset(train=False, download=True)

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        train, test = self._dataset(train=True), self._dataset(train=False)
        self.classes = list(train.classes)
        x, y = torch.from_numpy(train.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(train.targets)
        keep, held = holdout(len(y), self.val_size)
        tx = torch.from_numpy(test.data).permute(0, 3, 1, 2).contiguous()
        return {"train": (x[keep], y[keep]), "val": (x[held], y[held]), "test": (tx, torch.tensor(test.targets))}


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 through torchvision (``cifar-100-python/``), 100 classes (see `CIFAR10DataModule`)."""

    dataset = "CIFAR100"
    folder = "cifar-100-python"
    num_classes = 100


# --------------------------------------------------------------------------- ImageFolder
def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith((".tar.gz", ".tgz", ".tar", ".zip"))


def is_image_file(path: str) -> bool:
    """Whether a file counts as an image: an image extension, and no hidden part (``.DS_Store``, ``._x.jpg``)."""
    parts = path.split("/")
    return path.lower().endswith(IMAGE_SUFFIXES) and not any(p.startswith(".") for p in parts)


def _say(message: str) -> None:
    """One line for the person running the command, on stderr (from the first process only)."""
    from lightning.pytorch.utilities import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) == 0:
        print(f"zoo: {message}", file=sys.stderr)


def _skipped_message(skipped: Sequence[str], where: str) -> str:
    shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
    files = "file that is not an image" if len(skipped) == 1 else "files that are not images"
    return f"skipped {len(skipped)} {files} in {where}: {shown}"


def _members(root: Path, skipped: list[str] | None = None) -> Iterator[tuple[str, bytes]]:
    """(relative path, bytes) of every image file in a folder or an archive; the others' names go to `skipped`."""
    skipped = [] if skipped is None else skipped
    if _is_archive(root):
        if root.name.lower().endswith(".zip"):
            with zipfile.ZipFile(root) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    if is_image_file(info.filename):
                        yield info.filename, zf.read(info)
                    else:
                        skipped.append(info.filename)
            return
        with tarfile.open(root, "r|*") as tf:  # streamed: one pass over the compressed file
            for member in tf:
                if not member.isfile():
                    continue
                if is_image_file(member.name):
                    f = tf.extractfile(member)
                    if f is not None:
                        yield member.name, f.read()
                else:
                    skipped.append(member.name)
        return
    for name in _list_files(root):
        if is_image_file(name):
            yield name, (root / name).read_bytes()
        else:
            skipped.append(name)


def _list_files(root: Path) -> list[str]:
    """The relative paths of every file in a folder (following links) or a .zip archive, sorted."""
    if root.is_file():
        with zipfile.ZipFile(root) as zf:
            return sorted(info.filename for info in zf.infolist() if not info.is_dir())
    names = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        folder = Path(dirpath).relative_to(root)
        names += [(folder / name).as_posix() for name in filenames]
    return sorted(names)


def decode(data: bytes, mode: str = "RGB") -> Tensor:
    """An encoded image (JPEG, PNG, ...) as a uint8 tensor (C, H, W); `mode` is PIL's ("RGB", "L")."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        array = np.asarray(im.convert(mode))
    return torch.from_numpy(array.copy()).view(array.shape[0], array.shape[1], -1).permute(2, 0, 1)


def decode_photo(data: bytes, mode: str = "RGB") -> Tensor:
    """`decode`, turned upright first as the photo's EXIF orientation says (phones store photos sideways)."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as im:
        array = np.asarray(ImageOps.exif_transpose(im).convert(mode))
    return torch.from_numpy(array.copy()).view(array.shape[0], array.shape[1], -1).permute(2, 0, 1)


class ImageFiles(Dataset):
    """Image files decoded one at a time (in the DataLoader's workers): (transform(image), target) per item.

    Args:
        root: the folder the names are relative to, or a .zip archive that holds them (None:
            the names are the files' paths).
        names: the files' relative paths.
        targets: one integer per file (the class, or for unlabelled images the file's index).
        transform: called on the decoded uint8 image (C, H, W).
        grayscale: decode to one channel instead of RGB.
    """

    def __init__(
        self, root: Path | None, names: Sequence[str], targets: Sequence[int], transform: Any, grayscale: bool = False
    ) -> None:
        self.root, self.names, self.targets = root, list(names), list(targets)
        self.transform, self.mode = transform, "L" if grayscale else "RGB"
        self._zip: zipfile.ZipFile | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self) -> dict[str, Any]:  # workers open their own archive handle
        return {**self.__dict__, "_zip": None, "_pid": -1}

    def _read(self, name: str) -> bytes:
        if self.root is None or self.root.is_dir():
            return (self.root / name if self.root is not None else Path(name)).read_bytes()
        if self._zip is None or self._pid != os.getpid():
            self._zip, self._pid = zipfile.ZipFile(self.root), os.getpid()
        return self._zip.read(name)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        name = self.names[index]
        try:
            image = decode_photo(self._read(name), self.mode)
        except OSError:
            where = f" in {self.root}" if self.root is not None else ""
            raise DatasetError(f"cannot decode image {name}{where}: the file is damaged; remove it") from None
        return self.transform(image), self.targets[index]


def _fingerprint(root: Path, options: tuple[Any, ...]) -> str:
    h = hashlib.sha1(repr((_CACHE_VERSION, str(root.resolve()), options)).encode())
    if root.is_file():
        st = root.stat()
        h.update(repr((st.st_size, st.st_mtime_ns)).encode())
    else:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                st = (Path(dirpath) / name).stat()
                h.update(repr((dirpath, name, st.st_size, st.st_mtime_ns)).encode())
    return h.hexdigest()[:16]


def default_cache_dir() -> Path:
    """Where decoded datasets are cached: ``$ZOO_CACHE/datasets`` or ``~/.cache/zoo/datasets``."""
    base = os.environ.get("ZOO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "zoo")
    return Path(base) / "datasets"


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


def image_files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """The image files among `paths` (files, or folders searched recursively in sorted order); says what it skipped."""
    found: list[Path] = []
    for item in [paths] if isinstance(paths, str | Path) else paths:
        item = Path(item)
        if item.is_dir():
            names = _list_files(item)
            skipped = [n for n in names if not is_image_file(n)]
            if skipped:
                _say(_skipped_message(skipped, str(item)))
            found += [item / n for n in names if is_image_file(n)]
        elif item.is_file():
            found.append(item)
        else:
            raise DatasetNotFoundError(f"no image file or folder at {item}: give image files or folders of images")
    if not found:
        raise DatasetNotFoundError(f"no images found in {paths}: expected {', '.join(IMAGE_SUFFIXES)} files")
    return found


IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class ImageFolderDataModule(InMemoryDataModule):
    """Images in class folders, ``train/<class>/*`` with ``val/`` and/or ``test/``, in a folder or an archive.

    The split folders may sit below a top folder (``cifar10/train/cat/0001.jpg``). Without a
    ``val/`` folder, `val_size` images of ``train/`` are held out for validation; without a
    ``test/`` folder, the test split is the validation split (said once, when testing starts).
    Files that are not images (``notes.txt``, ``.DS_Store``, any hidden file) are skipped, and
    one line names how many and the first few.

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
        hflip: random left-right mirror images in training (None: on in photo mode, off in memory mode).
        color_jitter: photo mode: the strength of random brightness, contrast and saturation
            changes in training (0 turns them off).
        predict_root: unlabelled images to predict (a folder in any layout, or a file).
        num_workers: DataLoader worker processes (None: 0 in memory mode, up to 8 in photo mode).
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
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        crop_padding: int = 0,
        hflip: bool | None = None,
        color_jitter: float = 0.2,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        predict_root: str | None = None,
    ) -> None:
        if mode not in ("memory", "photo"):
            raise DatasetError(f"ImageFolderDataModule: mode must be 'memory' or 'photo', got {mode!r}")
        photo = mode == "photo"
        if num_workers is None:
            num_workers = min(8, os.cpu_count() or 1) if photo else 0
        super().__init__(
            root,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            crop_padding=crop_padding,
            hflip=photo if hflip is None else hflip,
            mean=mean,
            std=std,
        )
        if image_size is not None:
            check_int(image_size, "image_size", type(self).__name__)
        if not 0 <= color_jitter < 1:
            raise DatasetError(f"ImageFolderDataModule: color_jitter must be in [0, 1), got {color_jitter!r}")
        if photo and crop_padding:
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
        return self.photos()["classes"] if self.mode == "photo" else self.decoded()["classes"]

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return len(self.classes)

    def _check_root(self) -> Path:
        root = Path(self.root)
        if not root.exists():
            raise DatasetNotFoundError(
                f"image folder not found: {root} does not exist; point --data.root at a folder with train/<class>/ "
                f"and val/ or test/ subfolders, or at a .tar.gz/.zip archive of one"
            )
        return root

    # ------------------------------------------------------------------ memory mode
    def decoded(self) -> dict[str, Any]:
        """The decoded splits ({"classes", "train", "val"?, "test"?}), from the cache or from the source."""
        if self._decoded is not None:
            return self._decoded
        root = self._check_root()
        cache = self.cache_dir / f"{root.name}-{_fingerprint(root, (self.image_size, self.grayscale))}.pt"
        decoded = None
        if cache.is_file():
            with contextlib.suppress(Exception):  # a damaged cache is rebuilt
                decoded = torch.load(cache, weights_only=True)
        if decoded is None:
            decoded = self._decode(root)
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".tmp{os.getpid()}")
            torch.save(decoded, tmp)
            os.replace(tmp, cache)  # atomic: a concurrent reader sees the old file or the whole new one
        if decoded.get("skipped"):
            _say(_skipped_message(decoded["skipped"], str(root)))
        self._decoded = decoded
        return decoded

    def _decode(self, root: Path) -> dict[str, Any]:
        mode = "L" if self.grayscale else "RGB"
        found: dict[str, dict[str, list[Tensor]]] = {}
        skipped: list[str] = []
        for path, data in _members(root, skipped):
            parts = path.split("/")
            if len(parts) < 3 or parts[-3] not in ("train", "val", "test"):
                continue
            split, cls = parts[-3], parts[-2]
            try:
                img = decode(data, mode)
            except OSError:
                raise DatasetError(
                    f"cannot decode image {path} in {root}: the file is damaged or not an image"
                ) from None
            if self.image_size is not None and img.shape[-2:] != (self.image_size, self.image_size):
                img = (
                    F.interpolate(img[None].float(), size=(self.image_size,) * 2, mode="bilinear", antialias=True)[0]
                    .round()
                    .clamp(0, 255)
                    .to(torch.uint8)
                )
            found.setdefault(split, {}).setdefault(cls, []).append(img)
        if root.is_dir():  # an empty class folder would silently shift every label after it
            for split in ("train", "val", "test"):
                for split_dir in root.rglob(split):
                    for cls_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                        if cls_dir.name not in found.get(split, {}):
                            raise DatasetError(f"class folder {cls_dir} holds no images; add images to it or remove it")
        if "train" not in found:
            raise DatasetNotFoundError(
                f"no train/<class>/<image> files found in {root}: expected train/ and val/ or test/ folders of class "
                f"subfolders"
            )
        if not found.keys() & {"val", "test"} and not self.val_size:
            raise DatasetError(f"{root} has no val/ or test/ folder: set --data.val_size to hold out part of train/")
        classes = sorted(found["train"])
        out: dict[str, Any] = {"classes": classes, "skipped": skipped}
        for split, by_class in found.items():
            unknown = sorted(set(by_class) - set(classes))
            if unknown:
                raise DatasetError(f"{root}: {split}/ has classes not in train/: {', '.join(unknown[:5])}")
            images, targets = [], []
            for i, cls in enumerate(classes):
                imgs = by_class.get(cls, [])
                images += imgs
                targets += [i] * len(imgs)
            sizes = {tuple(im.shape) for im in images}
            if len(sizes) > 1:
                raise DatasetError(
                    f"{root}: the images of {split}/ differ in size ({', '.join(map(str, sorted(sizes)[:3]))}, ...); "
                    f"set --data.image_size to resize them, or --data.mode photo for photos of any size"
                )
            out[split] = (torch.stack(images), torch.tensor(targets, dtype=torch.long))
        return out

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        d = self.decoded()
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
    def photos(self) -> dict[str, Any]:
        """Photo mode's file lists: {"classes", "root", "train"/"val"/"test": (names, targets)}, found once."""
        if self._photos is None:
            self._photos = self._find_photos(self._check_root())
        return self._photos

    def _find_photos(self, root: Path) -> dict[str, Any]:
        if _is_archive(root) and not root.name.lower().endswith(".zip"):
            raise DatasetError(
                f"{root}: photo mode reads images one by one, which a .tar cannot do; extract it "
                f"(tar xf {root.name}) and point --data.root at the folder, or use a .zip"
            )
        names = _list_files(root)
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
            _say(_skipped_message(skipped, str(root)))
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

    def _setup_photos(self) -> None:
        found = self.photos()
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
            _say(message)

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
                self._setup_photos()
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


# --------------------------------------------------------------------------- ISBI 2012
class ISBI2012DataModule(InMemoryDataModule):
    """The ISBI 2012 EM segmentation challenge's 30 labelled slices (the U-Net paper's dataset).

    `root` holds ``images/N.png`` (512x512 grey) and ``labels/N.png`` (255 = cell, 0 =
    membrane), or a folder ``isbi2012/`` that does. The slices in `val_slices` are held out
    (the challenge's test labels were never released) and serve as validation and test
    set, predicted whole. Classes: 0 membrane, 1 cell.

    Training samples are `crop_size` windows taken at random from the (mirror-padded)
    training slices, with the U-Net paper's augmentation, done per batch on the device:
    random flips and 90-degree turns, a random rotation of up to `max_rotation` degrees,
    and an elastic deformation (Gaussian displacements of `elastic_sigma` pixels on a 3x3
    grid, bicubic interpolation; the paper's 10 pixels), with mirrored borders. The images
    are resampled bicubically (bilinear resampling blurs every training window, while the
    slices predicted at test are not resampled; bicubic measured better, recipes/README.md),
    the labels by nearest neighbour. An epoch is `samples_per_epoch` windows.

    Args:
        root: the folder with ``images/`` and ``labels/`` (or its parent).
        crop_size: side of the training windows (the network's input size: 572 for the
            paper's U-Net, any multiple of 16 for the padded one).
        mirror_pad: mirror the training slices by this many pixels on every side first, so
            that a network whose output is smaller than its input (the paper's U-Net: 92)
            sees every labelled pixel at the centre of a window.
        val_slices: the held-out slices (default: the last five of the stack).
        samples_per_epoch: training windows per epoch.
        max_rotation: largest rotation in degrees, besides the random 90-degree turns.
        elastic_sigma: standard deviation of the elastic displacements in pixels (0: none).
        See `InMemoryDataModule` for the rest.
    """

    classes = ("membrane", "cell")
    num_classes = 2
    in_channels = 1

    def __init__(
        self,
        root: str = "data/isbi2012",
        *,
        crop_size: int = 256,
        mirror_pad: int = 0,
        val_slices: tuple[int, ...] = (25, 26, 27, 28, 29),
        samples_per_epoch: int = 100,
        max_rotation: float = 15.0,
        elastic_sigma: float = 10.0,
        batch_size: int = 4,
        eval_batch_size: int | None = 1,
        num_workers: int = 0,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__(
            root,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            mean=mean,
            std=std,
        )
        self.crop_size, self.mirror_pad, self.val_slices = crop_size, mirror_pad, tuple(val_slices)
        self.samples_per_epoch, self.max_rotation, self.elastic_sigma = samples_per_epoch, max_rotation, elastic_sigma

    def _folder(self) -> Path:
        root = Path(self.root)
        for candidate in (root, root / "isbi2012"):
            if (candidate / "images").is_dir() and (candidate / "labels").is_dir():
                return candidate
        raise DatasetNotFoundError(
            f"ISBI 2012 not found: looked for images/ and labels/ folders of N.png slices in {root}; point "
            f"--data.root at that folder (e.g. ../shared/data/isbi2012)"
        )

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        folder = self._folder()
        names = sorted((p.name for p in (folder / "images").iterdir() if p.suffix == ".png"), key=_numeric)
        missing = [n for n in names if not (folder / "labels" / n).is_file()]
        if not names or missing:
            raise DatasetError(f"{folder}: every images/N.png needs a labels/N.png; missing: {missing[:3] or 'all'}")

        def read(path: Path) -> Tensor:
            try:
                return decode(path.read_bytes(), "L")
            except OSError:
                raise DatasetError(f"cannot decode {path}: the file is damaged or not a PNG") from None

        images = torch.stack([read(folder / "images" / n) for n in names])  # (N, 1, H, W)
        labels = (torch.stack([read(folder / "labels" / n)[0] for n in names]) > 127).to(torch.uint8)
        held = [i for i, n in enumerate(names) if _numeric(n) in self.val_slices]
        kept = [i for i in range(len(names)) if i not in held]
        if not held or not kept:
            raise DatasetError(f"{folder}: val_slices {self.val_slices} must name some, but not all, of the slices")
        train_x, train_y = images[kept], labels[kept]
        if self.mirror_pad:
            p = self.mirror_pad
            train_x = F.pad(train_x.float(), (p, p, p, p), mode="reflect").to(torch.uint8)
            train_y = F.pad(train_y[:, None].float(), (p, p, p, p), mode="reflect")[:, 0].to(torch.uint8)
        return {"train": (train_x, train_y), "val": (images[held], labels[held]), "test": (images[held], labels[held])}

    def train_dataset(self, images: Tensor, targets: Tensor) -> InMemoryDataset:
        return InMemoryDataset(images, targets, length=self.samples_per_epoch)

    def augment(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        grid = elastic_grid(
            x.shape[0],
            self.crop_size,
            tuple(x.shape[-2:]),
            max_rotation=self.max_rotation,
            elastic_sigma=self.elastic_sigma,
            device=x.device,
        )
        x = F.grid_sample(x.float(), grid, mode="bicubic", padding_mode="reflection", align_corners=False).clamp(0, 255)
        y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="reflection", align_corners=False)
        return x, y[:, 0]


def _numeric(name: str) -> int | str:
    stem = Path(name).stem
    return int(stem) if stem.isdigit() else stem
