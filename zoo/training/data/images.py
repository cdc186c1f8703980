"""Image files: listing folders and archives, decoding, and the decoded ImageFolder splits with their cache.

An ImageFolder copy is ``train/<class>/<image>`` with ``val/`` and/or ``test/`` beside it,
in a folder or inside a .tar.gz / .tgz / .tar / .zip archive (possibly below a top folder).
Its classes come from the listing alone (`image_folder_classes`); decoding every image
(`cached_image_folder`) happens once, and the decoded tensors are cached
(``~/.cache/zoo/datasets``, or ``$ZOO_CACHE/datasets``), so later runs start at once. An
archive is read in place, in one streamed pass, never extracted file by file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tarfile
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from zoo.errors import DatasetError, DatasetNotFoundError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")
_CACHE_VERSION = 2  # 2: decoded by torchvision.io (was Pillow)


# --------------------------------------------------------------------------- listing
def is_archive(path: Path) -> bool:
    """Whether `path` is an archive file zoo reads in place (.tar.gz, .tgz, .tar, .zip)."""
    return path.is_file() and path.name.lower().endswith((".tar.gz", ".tgz", ".tar", ".zip"))


def is_image_file(path: str) -> bool:
    """Whether a file counts as an image: an image extension, and no hidden part (``.DS_Store``, ``._x.jpg``)."""
    parts = path.split("/")
    return path.lower().endswith(IMAGE_SUFFIXES) and not any(p.startswith(".") for p in parts)


def list_files(root: Path) -> list[str]:
    """The relative paths of every file in a folder (following links) or an archive, sorted."""
    if root.is_file() and root.name.lower().endswith(".zip"):
        with zipfile.ZipFile(root) as zf:
            return sorted(info.filename for info in zf.infolist() if not info.is_dir())
    if root.is_file():
        with tarfile.open(root, "r|*") as tf:  # streamed: one pass over the compressed file
            return sorted(member.name for member in tf if member.isfile())
    names = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        folder = Path(dirpath).relative_to(root)
        names += [(folder / name).as_posix() for name in filenames]
    return sorted(names)


def read_files(root: Path, skipped: list[str] | None = None) -> Iterator[tuple[str, bytes]]:
    """(relative path, bytes) of every image file in a folder or an archive; the others' names go to `skipped`."""
    skipped = [] if skipped is None else skipped
    if is_archive(root) and root.name.lower().endswith(".zip"):
        with zipfile.ZipFile(root) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                if is_image_file(info.filename):
                    yield info.filename, zf.read(info)
                else:
                    skipped.append(info.filename)
    elif is_archive(root):
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
    else:
        for name in list_files(root):
            if is_image_file(name):
                yield name, (root / name).read_bytes()
            else:
                skipped.append(name)


def split_and_class(path: str) -> tuple[str, str] | None:
    """(split, class) of an ImageFolder file ``.../train/<class>/<image>``, or None for any other file."""
    parts = path.split("/")
    if len(parts) < 3 or parts[-3] not in SPLITS:
        return None
    return parts[-3], parts[-2]


def say(message: str) -> None:
    """One line for the person running the command, on stderr (from the first process only)."""
    from lightning.pytorch.utilities import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) == 0:
        print(f"zoo: {message}", file=sys.stderr)


def skipped_message(skipped: Sequence[str], where: str) -> str:
    shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
    files = "file that is not an image" if len(skipped) == 1 else "files that are not images"
    return f"skipped {len(skipped)} {files} in {where}: {shown}"


def image_files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """The image files among `paths` (files, or folders searched recursively in sorted order); says what it skipped."""
    found: list[Path] = []
    for item in [paths] if isinstance(paths, str | Path) else paths:
        item = Path(item)
        if item.is_dir():
            names = list_files(item)
            skipped = [n for n in names if not is_image_file(n)]
            if skipped:
                say(skipped_message(skipped, str(item)))
            found += [item / n for n in names if is_image_file(n)]
        elif item.is_file():
            found.append(item)
        else:
            raise DatasetNotFoundError(f"no image file or folder at {item}: give image files or folders of images")
    if not found:
        raise DatasetNotFoundError(f"no images found in {paths}: expected {', '.join(IMAGE_SUFFIXES)} files")
    return found


# --------------------------------------------------------------------------- decoding
def decode_image_bytes(data: bytes, *, grayscale: bool = False) -> Tensor:
    """An encoded image as uint8 (C, H, W): RGB or one grey channel, turned upright as its EXIF orientation says.

    Raises OSError when the bytes are not an image either decoder reads.
    """
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import to_dtype

    mode = ImageReadMode.GRAY if grayscale else ImageReadMode.RGB
    try:
        with warnings.catch_warnings():  # torchvision 0.29 points to TorchCodec, which zoo does not depend on
            warnings.simplefilter("ignore", DeprecationWarning)
            encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            image = decode_image(encoded, mode, apply_exif_orientation=True)
    except RuntimeError:
        return _decode_with_pillow(data, grayscale)
    return image if image.dtype == torch.uint8 else to_dtype(image, torch.uint8, scale=True)  # 16-bit PNGs


def _decode_with_pillow(data: bytes, grayscale: bool) -> Tensor:
    # Pillow only for what torchvision.io cannot read: it decodes JPEG, PNG, WebP and GIF, not BMP, TIFF or PPM/PGM
    import io

    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as im:
        array = np.asarray(ImageOps.exif_transpose(im).convert("L" if grayscale else "RGB"))
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
        self.transform, self.grayscale = transform, grayscale
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
            image = decode_image_bytes(self._read(name), grayscale=self.grayscale)
        except OSError:
            where = f" in {self.root}" if self.root is not None else ""
            raise DatasetError(f"cannot decode image {name}{where}: the file is damaged; remove it") from None
        return self.transform(image), self.targets[index]


# --------------------------------------------------------------------------- ImageFolder copies, decoded and cached
def default_cache_dir() -> Path:
    """Where decoded datasets are cached: ``$ZOO_CACHE/datasets`` or ``~/.cache/zoo/datasets``."""
    base = os.environ.get("ZOO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "zoo")
    return Path(base) / "datasets"


def _fingerprint(root: Path, options: tuple[Any, ...]) -> str:
    """A key for `root` as it is now: its path, the options, and every file's size and modification time."""
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


def check_image_folder(root: str | Path) -> Path:
    """`root` as a Path, or a one-line error if nothing is there."""
    root = Path(root)
    if not root.exists():
        raise DatasetNotFoundError(
            f"image folder not found: {root} does not exist; point --data.root at a folder with train/<class>/ "
            f"and val/ or test/ subfolders, or at a .tar.gz/.zip archive of one"
        )
    return root


def _no_train_error(root: Path) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"no train/<class>/<image> files found in {root}: expected train/ and val/ or test/ folders of class subfolders"
    )


def _check_class_folders(root: Path, found: dict[str, set[str]]) -> None:
    """An empty class folder would silently shift every label after it: a one-line error names it."""
    if not root.is_dir():  # an archive holds no empty folders worth a check: they have no members
        return
    for split in SPLITS:
        for split_dir in root.rglob(split):
            for cls_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                if cls_dir.name not in found.get(split, set()):
                    raise DatasetError(f"class folder {cls_dir} holds no images; add images to it or remove it")


def image_folder_classes(root: Path, cache_dir: Path) -> list[str]:
    """The class names of an ImageFolder copy (``train/``'s sub-folders that hold images), from its listing.

    Nothing is decoded; the listing of an archive (one pass over it) is cached beside the decoded splits.
    """
    cache = cache_dir / f"{root.name}-{_fingerprint(root, ('classes',))}.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        return list(json.loads(cache.read_text())["classes"])
    found: dict[str, set[str]] = {}
    for name in list_files(root):
        where = split_and_class(name) if is_image_file(name) else None
        if where is not None:
            found.setdefault(where[0], set()).add(where[1])
    _check_class_folders(root, found)
    classes = sorted(found.get("train", ()))
    if not classes:
        raise _no_train_error(root)
    with contextlib.suppress(OSError):  # a cache that cannot be written costs only time
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"classes": classes}))
    return classes


def cached_image_folder(root: Path, cache_dir: Path, *, image_size: int | None, grayscale: bool) -> dict[str, Any]:
    """The decoded splits of an ImageFolder copy, {"classes", "skipped", "train", "val"?, "test"?}: from the cache,
    or decoded now (`decode_image_folder`) and cached, keyed by the copy's path, size and modification time."""
    cache = cache_dir / f"{root.name}-{_fingerprint(root, (image_size, grayscale))}.pt"
    decoded = None
    if cache.is_file():
        with contextlib.suppress(Exception):  # a damaged cache is rebuilt
            decoded = torch.load(cache, weights_only=True)
    if decoded is None:
        decoded = decode_image_folder(root, image_size=image_size, grayscale=grayscale)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save(decoded, tmp)
        os.replace(tmp, cache)  # atomic: a concurrent reader sees the old file or the whole new one
    if decoded.get("skipped"):
        say(skipped_message(decoded["skipped"], str(root)))
    return decoded


def _resized(image: Tensor, size: int) -> Tensor:
    if image.shape[-2:] == (size, size):
        return image
    resized = F.interpolate(image[None].float(), size=(size, size), mode="bilinear", antialias=True)[0]
    return resized.round().clamp(0, 255).to(torch.uint8)


def decode_image_folder(root: Path, *, image_size: int | None, grayscale: bool) -> dict[str, Any]:
    """Decode every image of an ImageFolder copy: {"classes", "skipped", split: (images, targets) per split found}.

    Images are resized to `image_size` squares if given, otherwise all of a split must
    have one size; targets index the sorted class names of ``train/``.
    """
    found: dict[str, dict[str, list[Tensor]]] = {}
    skipped: list[str] = []
    for path, data in read_files(root, skipped):
        where = split_and_class(path)
        if where is None:
            continue
        try:
            image = decode_image_bytes(data, grayscale=grayscale)
        except OSError:
            raise DatasetError(f"cannot decode image {path} in {root}: the file is damaged or not an image") from None
        image = image if image_size is None else _resized(image, image_size)
        found.setdefault(where[0], {}).setdefault(where[1], []).append(image)
    _check_class_folders(root, {split: set(by_class) for split, by_class in found.items()})
    if "train" not in found:
        raise _no_train_error(root)
    classes = sorted(found["train"])
    out: dict[str, Any] = {"classes": classes, "skipped": skipped}
    for split, by_class in found.items():
        unknown = sorted(set(by_class) - set(classes))
        if unknown:
            raise DatasetError(f"{root}: {split}/ has classes not in train/: {', '.join(unknown[:5])}")
        images, targets = [], []
        for i, cls in enumerate(classes):
            images += by_class.get(cls, [])
            targets += [i] * len(by_class.get(cls, []))
        sizes = {tuple(im.shape) for im in images}
        if len(sizes) > 1:
            raise DatasetError(
                f"{root}: the images of {split}/ differ in size ({', '.join(map(str, sorted(sizes)[:3]))}, ...); "
                f"set --data.image_size to resize them, or --data.mode photo for photos of any size"
            )
        out[split] = (torch.stack(images), torch.tensor(targets, dtype=torch.long))
    return out
