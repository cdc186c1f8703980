"""The standard datasets: scikit-learn's digits (no download) and torchvision's MNIST, Fashion-MNIST, CIFAR-10/100.

The torchvision datasets share one base, `TorchvisionDataModule`: with no `root` they live
in the default data folder (``$ZOO_DATA``, else ``~/.cache/zoo/data``), and when they are
not there `prepare_data` downloads them through torchvision (its mirrors, progress bar and
md5 checks). ``ZOO_OFFLINE=1`` turns downloads off. `root` may instead point at a copy: a
folder in torchvision's layout, or an ImageFolder copy (a folder or a .tar.gz / .zip of
``train/<class>/`` and ``test/<class>/``, as ``../shared/data/cifar10-jpg.tar.gz``), decoded
once and cached like `ImageFolderDataModule`'s.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.errors import DatasetError, DatasetNotFoundError
from zoo.training.data.images import cached_image_folder, default_cache_dir, is_archive, say
from zoo.training.data.memory import InMemoryDataModule, holdout


def default_data_dir() -> Path:
    """Where the standard datasets are downloaded to and read from: ``$ZOO_DATA``, else ``~/.cache/zoo/data``."""
    return Path(os.environ.get("ZOO_DATA") or Path.home() / ".cache" / "zoo" / "data")


def downloads_off() -> bool:
    """Whether ``ZOO_OFFLINE`` says not to download (``1``, ``true``, ``yes`` or ``on``)."""
    return os.environ.get("ZOO_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


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
        self, root: str = "", *, image_size: int = 32, batch_size: int = 64, crop_padding: int = 2, **kwargs: Any
    ) -> None:
        super().__init__(root, batch_size=batch_size, crop_padding=crop_padding, **kwargs)
        self.image_size = image_size

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
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


class TorchvisionDataModule(InMemoryDataModule):
    """Base of the datasets torchvision downloads; a subclass names the dataset and converts its arrays.

    The validation set is the last `val_size` of a fixed random permutation of the
    training set; the test set is the dataset's own.

    Args:
        root: the folder that holds the dataset in torchvision's layout (or where it is
            downloaded to), or an ImageFolder copy (a folder or a .tar.gz / .zip of
            ``train/<class>/`` and ``test/<class>/``); None: the default data folder,
            ``$ZOO_DATA``, else ``~/.cache/zoo/data``.
        download: download the dataset through torchvision when it is not in `root`
            (needs internet; ``ZOO_OFFLINE=1`` turns downloads off).
        val_size: images held out of the training set for validation (a count or a fraction).
        See `InMemoryDataModule` for the rest.
    """

    dataset: str  # the torchvision.datasets class
    folder: str  # the folder torchvision keeps it in, under root
    layout: str  # what torchvision expects in `folder`, for the error messages

    def __init__(
        self, root: str | None = None, *, download: bool = True, val_size: int | float = 5000, **kwargs: Any
    ) -> None:
        super().__init__(str(default_data_dir()) if root is None else root, **kwargs)
        self.download, self.val_size = download, val_size

    def to_images(self, data: Any) -> Tensor:
        """A torchvision dataset's `data` array, or a copy's decoded images (N, C, H, W), as the uint8 images used."""
        raise NotImplementedError

    # ------------------------------------------------------------------ where the data are
    def image_folder_copy(self) -> Path | None:
        """`root` when it is an ImageFolder copy (an archive, or a folder with ``train/``), else None."""
        root = Path(self.root)
        if is_archive(root):
            return root
        own_layout = (root / self.folder).exists()
        if root.is_dir() and not own_layout and any(p.is_dir() for p in (root / "train", *root.glob("*/train"))):
            return root
        return None

    def _torchvision_dataset(self, train: bool, download: bool = False) -> Any:
        import torchvision

        cls = getattr(torchvision.datasets, self.dataset)
        try:
            return cls(self.root, train=train, download=download)
        except (RuntimeError, OSError) as e:  # OSError: URLError, refused connections, full disks
            if download:
                raise self._download_failed(cls, e) from None
            raise self._not_found() from None

    def _where(self) -> Path:
        return Path(self.root) / self.folder

    def _offline_copy(self) -> str:
        return f"point --data.root at a copy: the folder that holds {self.folder}/"

    def _not_found(self) -> DatasetNotFoundError:
        how = (
            "downloads are off (ZOO_OFFLINE)"
            if downloads_off()
            else "pass --data.download true to download it (needs internet)"
        )
        return DatasetNotFoundError(
            f"{self.dataset} not found: looked for {self.layout} in {self._where()}; {how}, or {self._offline_copy()}"
        )

    def _download_failed(self, cls: type, error: BaseException) -> DatasetNotFoundError:
        message = str(error).strip()
        if hasattr(cls, "mirrors"):  # MNIST's kind: one file of `resources` from each mirror in turn
            failed = re.search(r"Error downloading (\S+?):", message)
            name = failed.group(1) if failed else cls.resources[0][0]
            others = len(cls.mirrors) - 1
            url = f"{cls.mirrors[0]}{name}" + (f" (and {others} other mirror{'s' * (others > 1)})" if others else "")
        else:
            url = cls.url
        reason = message.splitlines()[-1] if message else type(error).__name__
        reason = re.sub(r"^<urlopen error (.*)>$", r"\1", reason)
        return DatasetNotFoundError(
            f"{self.dataset} not found in {self._where()} and could not be downloaded from {url}: {reason}; "
            f"offline, {self._offline_copy()}"
        )

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        if self.image_folder_copy() is not None or not self.download:
            return
        try:
            self._torchvision_dataset(train=False)
        except DatasetNotFoundError:
            if downloads_off():
                raise
            say(f"{self.dataset} is not in {self.root}: downloading it (torchvision checks every file's md5)")
            self._torchvision_dataset(train=False, download=True)

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        copy = self.image_folder_copy()
        if copy is not None:
            return self._splits_of_copy(copy)
        train, test = self._torchvision_dataset(train=True), self._torchvision_dataset(train=False)
        self.classes = self.classes or list(train.classes)  # CIFAR-100's are in its meta file
        x, y = self.to_images(train.data), torch.as_tensor(train.targets).long()
        keep, held = holdout(len(y), self.val_size)
        test_split = (self.to_images(test.data), torch.as_tensor(test.targets).long())
        return {"train": (x[keep], y[keep]), "val": (x[held], y[held]), "test": test_split}

    def _splits_of_copy(self, copy: Path) -> dict[str, tuple[Tensor, Tensor]]:
        decoded = cached_image_folder(copy, default_cache_dir(), image_size=None, grayscale=self.in_channels == 1)
        classes = list(decoded["classes"])
        expected = list(type(self).classes)
        if (expected and classes != expected) or len(classes) != self.num_classes:
            shown = ", ".join(classes[:4]) + (", ..." if len(classes) > 4 else "")
            raise DatasetError(
                f"{copy} is not a copy of {self.dataset}: its train/ holds {len(classes)} classes ({shown}), "
                f"{self.dataset} has {self.num_classes}; for other images use ImageFolderDataModule"
            )
        if "test" not in decoded:
            raise DatasetError(f"{copy} has no test/ folder: a copy of {self.dataset} needs train/ and test/")
        self.classes = classes
        (x, y), (test_x, test_y) = decoded["train"], decoded["test"]
        x, test_x = self.to_images(x), self.to_images(test_x)
        keep, held = holdout(len(y), self.val_size)
        return {"train": (x[keep], y[keep]), "val": (x[held], y[held]), "test": (test_x, test_y)}


class MNISTDataModule(TorchvisionDataModule):
    """MNIST through torchvision: 60,000 training and 10,000 test images, 28x28 grey.

    torchvision keeps it in ``MNIST/raw/`` (the four IDX files) under `root`.

    Args:
        pad: zero border added to every image (2 gives LeNet-5's 32x32, as in the paper).
        See `TorchvisionDataModule` and `InMemoryDataModule` for the rest.
    """

    dataset = folder = "MNIST"
    layout = "its four IDX files (train-images-idx3-ubyte, ...)"
    classes: Sequence[str] = tuple(str(i) for i in range(10))
    num_classes = 10
    in_channels = 1

    def __init__(self, root: str | None = None, *, pad: int = 0, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.pad = pad

    def to_images(self, data: Any) -> Tensor:
        x = data if data.dim() == 4 else data[:, None]  # (N, 28, 28) from torchvision, (N, 1, H, W) from a copy
        return F.pad(x, (self.pad,) * 4)

    def _where(self) -> Path:
        return Path(self.root) / self.folder / "raw"

    def _offline_copy(self) -> str:
        return f"{super()._offline_copy()} (e.g. ../shared/data)"


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST through torchvision: the MNIST format with ten kinds of clothing (see `MNISTDataModule`)."""

    dataset = folder = "FashionMNIST"
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


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10, 32x32 RGB: through torchvision (the pickled ``cifar-10-batches-py/``) or from an ImageFolder copy.

    Args:
        crop_padding, hflip: the standard CIFAR augmentation (4-pixel shifts, mirror images).
        See `TorchvisionDataModule` and `InMemoryDataModule` for the rest.
    """

    dataset = "CIFAR10"
    folder = "cifar-10-batches-py"
    layout = "the pickled batches (data_batch_1, ..., test_batch)"
    classes: Sequence[str] = (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )
    num_classes = 10
    in_channels = 3

    def __init__(self, root: str | None = None, *, crop_padding: int = 4, hflip: bool = True, **kwargs: Any) -> None:
        super().__init__(root, crop_padding=crop_padding, hflip=hflip, **kwargs)

    def to_images(self, data: Any) -> Tensor:
        if isinstance(data, Tensor):  # an ImageFolder copy's, (N, C, H, W) already
            return data
        return torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()  # torchvision's (N, H, W, C)

    def _offline_copy(self) -> str:
        example = "e.g. ../shared/data/cifar10-jpg.tar.gz"
        return f"{super()._offline_copy()}, or an ImageFolder copy of train/ and test/ ({example})"


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 through torchvision (``cifar-100-python/``), 100 classes (see `CIFAR10DataModule`)."""

    dataset = "CIFAR100"
    folder = "cifar-100-python"
    layout = "the pickled splits (train, test, meta)"
    classes: Sequence[str] = ()  # read from the dataset's meta file (or a copy's folders)
    num_classes = 100
