"""Checkpoints that a crash cannot corrupt: `AtomicCheckpointIO`, installed by ``zoo fit``.

Lightning's own `TorchCheckpointIO` serialises a checkpoint into memory and writes it through
an fsspec transaction: to a temporary file in the *system* temporary folder, then
``shutil.move`` onto the checkpoint. When that folder is on another file system (a tmpfs
``/tmp``, a run folder on a network or scratch disk) the move is a copy that overwrites the
old checkpoint in place, so a kill during the copy leaves a truncated ``last.ckpt`` and no
previous one; the bytes are never fsync'ed, so a power cut can leave an empty file even after
a "successful" save; and a large checkpoint has to fit into ``/tmp`` (often RAM).

`AtomicCheckpointIO` writes next to the target instead: ``.last.ckpt.tmp-<pid>-<random>``
in the same folder, fsync, ``os.replace`` onto ``last.ckpt`` (atomic on POSIX and Windows
within one file system), then fsync the folder so the rename itself is durable. A kill at
any moment leaves either the previous checkpoint or the new one, never a mix; a crashed
save leaves at most a hidden temporary file, which the next save of the same checkpoint
removes. Paths with a URL scheme (``s3://...``) go to Lightning's implementation.

With the plain Lightning API: ``L.Trainer(plugins=[AtomicCheckpointIO()])``.

`read_checkpoint` is how zoo opens a checkpoint a user names (``--ckpt_path``,
`zoo.training.predict`): with ``weights_only=True`` (a file never runs code), memory-mapped
(checking a large checkpoint costs little), and with one line naming the file and what to do
when it is missing, a folder, corrupt, or holds code; never torch's advice to retry with
``weights_only=False``. `AtomicCheckpointIO` loads with ``weights_only=True`` too, unless its
caller says otherwise.
"""

from __future__ import annotations

import os
import re
import secrets
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.types import _PATH

from zoo.errors import WeightsError

_ADVICE = "give a checkpoint written by zoo fit (RUN/checkpoints/best.ckpt or last.ckpt), or best or last"


def _unreadable(path: Path, error: Exception) -> WeightsError:
    """One line for a checkpoint that torch.load refused; never torch's advice to load it unsafely."""
    code = re.search(r"GLOBAL ([\w.]+)", str(error))
    if code:
        why = f"it refers to code ({code.group(1)}), which zoo never loads (checkpoints hold tensors and plain values)"
    else:  # the unpickler fails on garbage in many ways (UnpicklingError, IndexError, KeyError, ...)
        why = "it is corrupt, truncated or not a checkpoint"
    return WeightsError(f"cannot read the checkpoint {path}: {why}; {_ADVICE}")


def read_checkpoint(path: str | Path, *, mmap: bool = True) -> dict[str, Any]:
    """A Lightning checkpoint read safely (``weights_only=True``), or a `WeightsError` that says why not.

    `mmap` maps the tensors instead of reading them (cheap for a check; any zip-format file).
    """
    path = Path(path)
    if path.is_dir():
        inside = path / "checkpoints" / "best.ckpt"
        hint = f"give {inside}" if inside.is_file() else _ADVICE
        raise WeightsError(f"the checkpoint {path} is a folder; {hint}")
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}; {_ADVICE}")
    mmap = mmap and zipfile.is_zipfile(path)  # torch.save's format since 1.6; older files are read whole
    try:
        with warnings.catch_warnings():  # the safe unpickler's protocol warning, for a file it then refuses
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        raise _unreadable(path, e) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise WeightsError(
            f"{path} is not a Lightning checkpoint (no state_dict in it; a weights file goes to "
            f"model.init_args.weights instead); {_ADVICE}"
        )
    return checkpoint


def _is_local(path: _PATH) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


def atomic_save(obj: Any, path: str | Path) -> None:
    """`torch.save` `obj` to `path` so that `path` holds either its old or its new content, whatever happens."""
    path = Path(str(path).removeprefix("file://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-"
    tmp = path.with_name(f"{prefix}{os.getpid()}-{secrets.token_hex(4)}")
    f = open(tmp, "xb")  # noqa: SIM115  (closed below, before the rename)
    try:
        with f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    # temporary files of earlier processes that died while saving this checkpoint
    mine = f"{prefix}{os.getpid()}-"
    for stale in path.parent.iterdir():
        if stale.name.startswith(prefix) and not stale.name.startswith(mine):
            stale.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":  # Windows cannot open a folder; os.replace is durable there once it returns
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not fsync folders
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's `TorchCheckpointIO`, saving local checkpoints with `atomic_save` (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path: _PATH, *args: Any, weights_only: bool | None = None, **kwargs: Any) -> dict:
        """Lightning's loader, with ``weights_only=True`` unless the caller asks otherwise."""
        weights_only = True if weights_only is None else weights_only
        return super().load_checkpoint(path, *args, weights_only=weights_only, **kwargs)
