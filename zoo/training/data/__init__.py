"""Lightning data modules: the datasets the recipes train on, held in memory and augmented per batch.

Every module here follows Lightning's conventions (download in `prepare_data`, datasets
in `setup`) and takes a `root` argument. A file per concern:

- `memory`: the base, `InMemoryDataModule`: each split decoded once into a uint8 tensor
  (N, C, H, W); a batch is one indexing operation, and augmentation and normalisation
  run on the whole batch on its device. `augment`: those batch augmentations.
- `standard`: `DigitsDataModule` (scikit-learn's bundled 8x8 digits, no download) and
  one base, `TorchvisionDataModule`, for `MNISTDataModule`, `FashionMNISTDataModule`,
  `CIFAR10DataModule` and `CIFAR100DataModule`: downloaded through torchvision into the
  default data folder (``$ZOO_DATA``, else ``~/.cache/zoo/data``) when not there, or read
  from a copy that `root` points at (torchvision's layout, or an ImageFolder copy).
- `images`: image files in folders and archives, decoding (`torchvision.io`), and the
  decoded ImageFolder splits with their cache; `image_folder`: `ImageFolderDataModule`
  (small images in memory, or photos decoded per item for fine-tuning).
- `isbi`: `ISBI2012DataModule`, the U-Net paper's EM membranes and its augmentation.

A missing dataset raises `zoo.errors.DatasetNotFoundError` with one line that says where
it was looked for and how to get it.
"""

from zoo.training.data.augment import elastic_grid, random_crop, random_hflip
from zoo.training.data.image_folder import (
    IMAGENET_MEAN_STD,
    ImageFolderDataModule,
    eval_transform,
    photo_train_transform,
)
from zoo.training.data.images import (
    IMAGE_SUFFIXES,
    ImageFiles,
    decode_image_bytes,
    default_cache_dir,
    image_files,
    is_image_file,
)
from zoo.training.data.isbi import ISBI2012DataModule
from zoo.training.data.memory import InMemoryDataModule, InMemoryDataset, channel_stats, collate_batch, holdout
from zoo.training.data.standard import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    TorchvisionDataModule,
    default_data_dir,
)

__all__ = [
    "IMAGENET_MEAN_STD",
    "IMAGE_SUFFIXES",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ISBI2012DataModule",
    "ImageFiles",
    "ImageFolderDataModule",
    "InMemoryDataModule",
    "InMemoryDataset",
    "MNISTDataModule",
    "TorchvisionDataModule",
    "channel_stats",
    "collate_batch",
    "decode_image_bytes",
    "default_cache_dir",
    "default_data_dir",
    "elastic_grid",
    "eval_transform",
    "holdout",
    "image_files",
    "is_image_file",
    "photo_train_transform",
    "random_crop",
    "random_hflip",
]
