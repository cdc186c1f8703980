"""`ISBI2012DataModule`: the ISBI 2012 EM membranes (the U-Net paper's dataset) and the paper's augmentation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.checks import check_bool
from zoo.errors import DatasetError, DatasetNotFoundError
from zoo.training.data.augment import elastic_grid
from zoo.training.data.images import decode_image_bytes
from zoo.training.data.memory import InMemoryDataModule, InMemoryDataset
from zoo.training.weight_map import WeightedLabels, unet_weight_map


class ISBI2012DataModule(InMemoryDataModule):
    """The ISBI 2012 EM segmentation challenge's 30 labelled slices (the U-Net paper's dataset).

    `root` holds ``images/N.png`` (512x512 grey) and ``labels/N.png`` (255 = cell, 0 =
    membrane), or a folder ``isbi2012/`` that does. The slices in `val_slices` are held out
    (the challenge's test labels were never released) and serve as validation and test
    set, predicted whole. Classes: 0 membrane, 1 cell.

    Training samples are `crop_size` windows taken at random from the (mirror-padded)
    training slices, with the U-Net paper's augmentation, done per batch on the device:
    random mirror images (`hflip`) and 90-degree turns, a random rotation of up to
    `max_rotation` degrees, and an elastic deformation (Gaussian displacements of
    `elastic_sigma` pixels on a 3x3 grid, bicubic interpolation; the paper's 10 pixels),
    with mirrored borders. The images are resampled bicubically (bilinear resampling blurs
    every training window, while the slices predicted at test are not resampled; bicubic
    measured better, recipes/README.md), the labels by nearest neighbour. An epoch is
    `samples_per_epoch` windows. `crop_padding` does not apply (the windows are random
    already) and must stay 0.

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
        hflip: random mirror images (with the quarter turns: all eight orientations).
        weight_map: weigh each training pixel's loss by the U-Net paper's weight map (class
            balance plus a border term on the membranes between touching cells; computed once
            per slice by `zoo.training.weight_map.unet_weight_map`, then cropped, turned and
            deformed with the label). The training targets are then `WeightedLabels`.
        w0, sigma: the weight map's border term (the paper's 10 and about 5 pixels).
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
        hflip: bool = True,
        weight_map: bool = False,
        w0: float = 10.0,
        sigma: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, batch_size=batch_size, eval_batch_size=eval_batch_size, hflip=hflip, **kwargs)
        if self.crop_padding:
            raise DatasetError(
                "ISBI2012DataModule: crop_padding does not apply (its training windows are random crops already); "
                "set the window with crop_size"
            )
        self.crop_size, self.mirror_pad, self.val_slices = crop_size, mirror_pad, tuple(val_slices)
        self.samples_per_epoch, self.max_rotation, self.elastic_sigma = samples_per_epoch, max_rotation, elastic_sigma
        self.weight_map, self.w0, self.sigma = check_bool(weight_map, "weight_map", "ISBI2012DataModule"), w0, sigma

    def _folder(self) -> Path:
        root = Path(self.root)
        for candidate in (root, root / "isbi2012"):
            if (candidate / "images").is_dir() and (candidate / "labels").is_dir():
                return candidate
        raise DatasetNotFoundError(
            f"ISBI 2012 not found: looked for images/ and labels/ folders of N.png slices in {root}; point "
            f"--data.root at that folder (e.g. ../shared/data/isbi2012)"
        )

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        folder = self._folder()
        names = sorted((p.name for p in (folder / "images").iterdir() if p.suffix == ".png"), key=_numeric)
        missing = [n for n in names if not (folder / "labels" / n).is_file()]
        if not names or missing:
            raise DatasetError(f"{folder}: every images/N.png needs a labels/N.png; missing: {missing[:3] or 'all'}")

        def read_grey_png(path: Path) -> Tensor:
            try:
                return decode_image_bytes(path.read_bytes(), grayscale=True)
            except OSError:
                raise DatasetError(f"cannot decode {path}: the file is damaged or not a PNG") from None

        images = torch.stack([read_grey_png(folder / "images" / n) for n in names])  # (N, 1, H, W)
        labels = (torch.stack([read_grey_png(folder / "labels" / n)[0] for n in names]) > 127).to(torch.uint8)
        held = [i for i, n in enumerate(names) if _numeric(n) in self.val_slices]
        kept = [i for i in range(len(names)) if i not in held]
        if not held or not kept:
            raise DatasetError(f"{folder}: val_slices {self.val_slices} must name some, but not all, of the slices")
        train_x, train_y = images[kept], labels[kept]
        if self.weight_map:  # (N, 2, H, W) float: the label and its weights, transformed together
            maps = torch.stack([unet_weight_map(y, self.w0, self.sigma) for y in train_y])
            train_y = torch.stack([train_y.float(), maps], 1)
        if self.mirror_pad:
            p = self.mirror_pad
            train_x = F.pad(train_x.float(), (p, p, p, p), mode="reflect").to(torch.uint8)
            if self.weight_map:
                train_y = F.pad(train_y, (p, p, p, p), mode="reflect")
            else:
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
            flips=self.hflip,
            elastic_sigma=self.elastic_sigma,
            device=x.device,
        )
        x = F.grid_sample(x.float(), grid, mode="bicubic", padding_mode="reflection", align_corners=False).clamp(0, 255)
        weighted = y.dim() == 4  # (B, 2, H, W): label and weight map
        y = F.grid_sample(
            y.float() if weighted else y[:, None].float(),
            grid,
            mode="nearest",
            padding_mode="reflection",
            align_corners=False,
        )
        return x, y if weighted else y[:, 0]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        if y.dim() != 4:  # plain labels (every evaluation batch, and training without the weight map)
            return super().on_after_batch_transfer(batch, dataloader_idx)
        x, y = self.augment(x, y)
        return self.normalize(x), WeightedLabels(y[:, 0].long(), y[:, 1].contiguous())


def _numeric(name: str) -> int | str:
    stem = Path(name).stem
    return int(stem) if stem.isdigit() else stem
