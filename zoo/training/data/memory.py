"""The in-memory base: splits held as uint8 tensors, a batch in one indexing operation, normalised on its device.

The datasets the recipes train on are small, so each split is decoded once into a uint8
tensor (N, C, H, W) in memory; a batch is then one indexing operation (the dataset's
``__getitems__``), and augmentation and normalisation run on the whole batch after it
reaches the device (`on_after_batch_transfer`), as tensor operations. Data loading is then
a small fraction of a step (docs/training.md has the measurements).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from zoo.checks import check_int
from zoo.errors import DatasetError
from zoo.training.data.augment import random_crop, random_hflip


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


def _unpadded_sampler(dataset: Dataset, trainer: L.Trainer | None) -> Sampler | None:
    """Under DDP, each process's share of an evaluation split, without the padding of Lightning's own sampler.

    Lightning's `DistributedSampler` repeats the first samples until every process has as many:
    the validation and test metrics (gathered from every process) would count them twice. This
    one gives every sample to exactly one process (the shares differ by one at most); Lightning
    leaves a `DistributedSampler` it is given as it is. None (Lightning's choice) on one process.
    """
    world = trainer.world_size if trainer is not None else 1
    if world <= 1 or len(dataset) < world:
        return None
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=trainer.global_rank, shuffle=False)


class InMemoryDataModule(L.LightningDataModule):
    """Base of the data modules whose splits fit in memory as uint8 tensors.

    Subclasses implement `load_splits()`, returning ``{"train": (x, y), "val": (x, y),
    "test": (x, y)}`` with x uint8 (N, C, H, W), and set `classes`, `num_classes` and
    `in_channels`. Their ``__init__`` takes their own arguments and passes ``**kwargs`` on
    to this one (the command line still lists every option, with its default).

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
    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
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
        splits = self.load_splits()
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
            sampler=None if train else _unpadded_sampler(dataset, self.trainer),
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
