"""The data modules: torchvision's download path (against a local HTTP server), the offline errors, ImageFolder
copies read by the CIFAR module, classes from a folder's listing, decoding, and the options the CLI lists.

Nothing here needs the internet or ../shared/data: every dataset is a tiny one made here."""

from __future__ import annotations

import functools
import gzip
import hashlib
import inspect
import io
import pickle
import socket
import struct
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")
jsonargparse = pytest.importorskip("jsonargparse")
torchvision = pytest.importorskip("torchvision")

import zoo.training.data as data  # noqa: E402
from zoo.errors import DatasetError, DatasetNotFoundError  # noqa: E402
from zoo.training.cli import main  # noqa: E402
from zoo.training.data import (  # noqa: E402
    CIFAR10DataModule,
    ImageFolderDataModule,
    InMemoryDataModule,
    MNISTDataModule,
    decode_image_bytes,
)

ROOT = Path(__file__).resolve().parents[1]
DATA_MODULES = [
    obj
    for obj in map(functools.partial(getattr, data), data.__all__)
    if inspect.isclass(obj) and issubclass(obj, InMemoryDataModule)
]


# --------------------------------------------------------------------------- a local download server
class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # no request lines on stderr
        pass


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(folder it serves, its base URL): an HTTP server on 127.0.0.1, stopped after the test."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    folder = tmp_path / "served"
    folder.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def _closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused: what offline looks like, at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _serve_tiny_mnist(folder: Path, n_train: int = 40, n_test: int = 12) -> list[tuple[str, str]]:
    """Gzipped IDX files as MNIST's mirrors serve them; returns torchvision's `resources` for them."""
    gen = torch.Generator().manual_seed(0)
    resources = []
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8)
        labels = (torch.arange(n) % 10).to(torch.uint8)
        files = {
            f"{prefix}-images-idx3-ubyte.gz": struct.pack(">IIII", 2051, n, 28, 28) + images.numpy().tobytes(),
            f"{prefix}-labels-idx1-ubyte.gz": struct.pack(">II", 2049, n) + labels.numpy().tobytes(),
        }
        for name, raw in files.items():
            (folder / name).write_bytes(gzip.compress(raw))
            resources.append((name, _md5(folder / name)))
    return resources


def _serve_tiny_cifar10(folder: Path, monkeypatch: pytest.MonkeyPatch, base_url: str) -> None:
    """A tiny cifar-10-python.tar.gz in the pickled release's layout, with torchvision's md5s patched to fit."""
    import numpy as np

    rng = np.random.default_rng(0)
    batches = {f"data_batch_{i}": 4 for i in range(1, 6)} | {"test_batch": 6}
    pickles = {
        name: pickle.dumps(
            {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": [i % 10 for i in range(n)]}
        )
        for name, n in batches.items()
    }
    pickles["batches.meta"] = pickle.dumps({"label_names": list(CIFAR10DataModule.classes)})
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name, blob in pickles.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    md5 = {name: hashlib.md5(blob).hexdigest() for name, blob in pickles.items()}
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "url", base_url + archive.name)
    monkeypatch.setattr(cls, "tgz_md5", _md5(archive))
    monkeypatch.setattr(cls, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5["batches.meta"]})


# --------------------------------------------------------------------------- the download path
def test_mnist_downloads_through_torchvision_into_the_default_folder(
    server: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, url = server
    resources = _serve_tiny_mnist(folder)
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [url])
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "zoo-data"))

    dm = MNISTDataModule(val_size=8, pad=2)  # no root: the default data folder
    assert Path(dm.root) == tmp_path / "zoo-data"
    dm.prepare_data()
    assert sorted(p.name for p in (tmp_path / "zoo-data" / "MNIST" / "raw").iterdir() if p.suffix != ".gz") == [
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 32, "val": 8, "test": 12}
    assert dm.splits["train"].images.shape[1:] == (1, 32, 32)

    # a second module finds it there: nothing is downloaded again (the server's files are gone)
    for f in folder.iterdir():
        f.unlink()
    again = MNISTDataModule(val_size=8)
    again.prepare_data()
    again.setup("fit")
    assert len(again.splits["test"]) == 12


def test_download_checks_md5(server: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, url = server
    resources = _serve_tiny_mnist(folder)
    resources[0] = (resources[0][0], "0" * 32)  # the served file no longer matches its checksum
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [url])
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)
    with pytest.raises(DatasetNotFoundError, match=r"could not be downloaded from .*train-images-idx3-ubyte\.gz"):
        MNISTDataModule(str(tmp_path / "data")).prepare_data()


def test_cifar10_downloads_through_torchvision(
    server: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, url = server
    _serve_tiny_cifar10(folder, monkeypatch, url)
    dm = CIFAR10DataModule(str(tmp_path / "data"), val_size=5)
    dm.prepare_data()
    assert (tmp_path / "data" / "cifar-10-batches-py" / "test_batch").is_file()
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 15, "val": 5, "test": 6}
    assert dm.splits["train"].images.shape[1:] == (3, 32, 32) and dm.classes[0] == "airplane"


def test_offline_download_error_is_one_line_naming_url_folder_and_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    url = _closed_port_url()
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [url, url + "second/"])
    with pytest.raises(DatasetNotFoundError) as e:
        MNISTDataModule(str(tmp_path / "data")).prepare_data()
    message = str(e.value)
    assert "\n" not in message
    assert f"from {url}train-images-idx3-ubyte.gz (and 1 other mirror)" in message
    assert str(tmp_path / "data" / "MNIST" / "raw") in message
    assert "offline, point --data.root at a copy" in message

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", url + "cifar-10-python.tar.gz")
    with pytest.raises(DatasetNotFoundError) as e:
        CIFAR10DataModule(str(tmp_path / "data")).prepare_data()
    message = str(e.value)
    assert "\n" not in message and f"from {url}cifar-10-python.tar.gz" in message
    assert "cifar10-jpg.tar.gz" in message  # the ImageFolder copy is the offline alternative


def test_recipe_without_data_argument_tries_the_download_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "zoo-data"))
    url = _closed_port_url()
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", url + "cifar-10-python.tar.gz")
    recipe = str(ROOT / "recipes" / "resnet20_cifar10.yaml")
    assert main(["fit", "--config", recipe, "--trainer.fast_dev_run", "1"]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("zoo: error:")]
    assert len(errors) == 1, errors
    assert url in errors[0] and str(tmp_path / "zoo-data" / "cifar-10-batches-py") in errors[0]
    assert "--data.root" in errors[0] and errors[0].endswith("cifar10-jpg.tar.gz)")  # whole, not cut short


def test_zoo_offline_turns_downloads_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://zoo.invalid/"])  # never reached
    with pytest.raises(DatasetNotFoundError, match=r"MNIST not found: .*downloads are off \(ZOO_OFFLINE\)"):
        MNISTDataModule(str(tmp_path / "data")).prepare_data()


# --------------------------------------------------------------------------- ImageFolder copies
def _jpeg(color: tuple[int, int, int], seed: int, size: int = 32) -> bytes:
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    noise = torch.randint(-20, 21, (size, size, 3), generator=gen)
    array = (torch.tensor(color).view(1, 1, 3) + noise).clamp(0, 255).to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _image_folder_archive(path: Path, classes: list[str], per_class: dict[str, int]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for split, n in per_class.items():
            for c, name in enumerate(classes):
                for i in range(n):
                    blob = _jpeg((25 * c, 100, 200 - 20 * c), seed=c * 100 + i)
                    info = tarfile.TarInfo(f"copy/{split}/{name}/{i}.jpg")
                    info.size = len(blob)
                    tf.addfile(info, io.BytesIO(blob))
    return path


def test_cifar10_reads_an_image_folder_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    classes = list(CIFAR10DataModule.classes)
    archive = _image_folder_archive(tmp_path / "cifar10.tar.gz", classes, {"train": 3, "test": 2})
    dm = CIFAR10DataModule(str(archive), val_size=10)
    dm.prepare_data()  # a copy: nothing to download
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 20, "val": 10, "test": 20}
    assert dm.splits["test"].images.shape[1:] == (3, 32, 32)
    assert dm.splits["test"].targets.tolist() == [i // 2 for i in range(20)]  # class folders in CIFAR-10's order
    # the same copy, extracted to a folder
    with tarfile.open(archive) as tf:
        tf.extractall(tmp_path / "extracted", filter="data")
    folder = CIFAR10DataModule(str(tmp_path / "extracted"), val_size=10)
    folder.setup("fit")
    assert torch.equal(folder.splits["test"].images, dm.splits["test"].images)


def test_cifar10_refuses_a_copy_of_other_classes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    archive = _image_folder_archive(tmp_path / "pets.tar.gz", ["cat", "dog"], {"train": 2, "test": 1})
    with pytest.raises(DatasetError, match=r"is not a copy of CIFAR10: its train/ holds 2 classes \(cat, dog\)"):
        CIFAR10DataModule(str(archive), val_size=1).setup("fit")


def test_image_folder_classes_come_from_the_listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _image_folder_archive(tmp_path / "three.tar.gz", ["c", "a", "b"], {"train": 2, "test": 1})

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded while only the classes were asked for")

    monkeypatch.setattr("zoo.training.data.images.decode_image_folder", no_decoding)
    monkeypatch.setattr("zoo.training.data.images.decode_image_bytes", no_decoding)
    dm = ImageFolderDataModule(str(archive), cache_dir=str(tmp_path / "cache"))
    assert dm.num_classes == 3 and dm.classes == ["a", "b", "c"]
    again = ImageFolderDataModule(str(archive), cache_dir=str(tmp_path / "cache"))  # the listing is cached
    assert again.classes == ["a", "b", "c"]


# --------------------------------------------------------------------------- decoding
def _encoded(array: torch.Tensor, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array.numpy()).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])  # BMP and TIFF: Pillow, which torchvision.io cannot replace
def test_decode_image_bytes_lossless_formats(fmt: str) -> None:
    rgb = torch.randint(0, 256, (5, 7, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    decoded = decode_image_bytes(_encoded(rgb, fmt))
    assert decoded.dtype == torch.uint8 and torch.equal(decoded, rgb.permute(2, 0, 1))
    grey = decode_image_bytes(_encoded(rgb[..., 0].contiguous(), fmt), grayscale=True)
    assert torch.equal(grey, rgb[..., 0][None])


def test_decode_image_bytes_turns_photos_upright_and_rejects_garbage() -> None:
    from PIL import Image

    image = Image.new("RGB", (6, 2), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # EXIF orientation: stored turned, shown rotated 90 degrees
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif)
    assert decode_image_bytes(buf.getvalue()).shape == (3, 6, 2)
    with pytest.raises(OSError):
        decode_image_bytes(b"not an image")


# --------------------------------------------------------------------------- the options the CLI lists
@pytest.mark.parametrize("cls", DATA_MODULES, ids=lambda c: c.__name__)
def test_every_base_option_reaches_the_command_line_with_the_default_used(cls: type) -> None:
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "data")
    listed = parser.get_defaults().as_dict()["data"]
    base = [p for p in inspect.signature(InMemoryDataModule.__init__).parameters if p != "self"]
    assert set(base) <= set(listed), f"{cls.__name__} hides base options: {set(base) - set(listed)}"
    built = cls()  # builds without touching the disk
    for name in ("batch_size", "num_workers", "crop_padding", "hflip", "mean", "std"):
        if listed[name] is not None:  # None: chosen by the module (ImageFolder's num_workers, hflip by mode)
            assert getattr(built, name) == listed[name], name


def test_cli_help_lists_forwarded_options_with_defaults(zoo_cli) -> None:
    result = zoo_cli("fit", "--data.help", "zoo.training.CIFAR10DataModule", timeout=120)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for option, default in [
        ("root", "null"),
        ("download", "True"),
        ("val_size", "5000"),
        ("batch_size", "128"),
        ("num_workers", "0"),
        ("crop_padding", "4"),
        ("hflip", "True"),
        ("mean", "null"),
        ("std", "null"),
    ]:
        assert f"--data.{option}" in text
        after = text.split(f"--data.{option} ", 2)[-1]
        assert f"default: {default})" in after.split("--data.")[0], option
