"""Reliability of ``zoo fit`` on the digits recipe: a run killed with SIGKILL resumes to the same
number of optimizer steps, a kill while a checkpoint is written leaves the previous one intact,
two runs with the same seed give identical metrics, two DDP processes (gloo, CPU) train a model
as good as one process, and a NaN loss stops the run with one line.

Every run is a real ``python -m zoo.cli fit`` process. They use one thread each
(``OMP_NUM_THREADS=1``): faster on a shared 2-core machine, and part of what makes runs
bit-identical (see docs/training.md, "Reproducible runs"). A tiny callback (`PROBE`, written
next to the runs and added with ``--trainer.callbacks+=probe.Probe``) kills its own process
with SIGKILL at an exact step, or in the middle of writing a checkpoint, so that no test
synchronises with sleeps.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")
pytest.importorskip("jsonargparse")

from zoo.training.checkpoint import AtomicCheckpointIO, atomic_save

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "lenet5_digits.yaml")
EPOCHS = 10  # 19 steps an epoch (1,257 training digits, batches of 64): 190 steps
STEPS = EPOCHS * 19
COMMON = ["--trainer.max_epochs", str(EPOCHS), "--trainer.enable_progress_bar", "false"]
TIMEOUT = 240

PROBE = '''
import hashlib, io, json, os, signal
from pathlib import Path

import lightning as L
import torch


class Probe(L.Callback):
    """Kills this process with SIGKILL at a step, or halfway through writing a checkpoint; records the end."""

    def __init__(self, kill_at_step: int = -1, kill_in_save: int = 0, record: str = "probe.json") -> None:
        self.kill_at_step, self.record = kill_at_step, Path(record).absolute()
        if kill_in_save:
            self._cut_save(kill_in_save)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_fit_end(self, trainer, pl_module) -> None:
        self.record.write_text(json.dumps({"global_step": trainer.global_step, "epoch": trainer.current_epoch}))

    def _cut_save(self, nth: int) -> None:
        real, seen, record = torch.save, [0], self.record

        def save(obj, f, *args, **kwargs):
            name = str(getattr(f, "name", ""))
            if ".last.ckpt.tmp-" in name:
                seen[0] += 1
                if seen[0] == nth:  # write half of the new checkpoint, then die
                    buf = io.BytesIO()
                    real(obj, buf, *args, **kwargs)
                    data = buf.getvalue()
                    last = Path(name).parent / "last.ckpt"
                    before = hashlib.sha256(last.read_bytes()).hexdigest()
                    record.write_text(json.dumps({"sha256": before, "step": obj["global_step"], "size": len(data)}))
                    f.write(data[: len(data) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(obj, f, *args, **kwargs)

        torch.save = save
'''


def _fit(cwd: Path, *args: str) -> subprocess.Popen[str]:
    """Start ``python -m zoo.cli fit`` on the digits recipe in `cwd` (its own session, so it can be killed whole)."""
    (cwd / "probe.py").write_text(PROBE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(cwd), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", "fit", "--config", RECIPE, *COMMON, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # DDP's second process too
        out, _ = proc.communicate()
        pytest.fail(f"zoo fit ran past {TIMEOUT} s:\n{out[-3000:]}")
    return proc.returncode, out


def _run(cwd: Path, *args: str) -> tuple[int, str]:
    return _wait(_fit(cwd, *args))


def _run_dir(cwd: Path) -> Path:
    return cwd / "runs" / "lenet5_digits" / "version_0"


def _probe(cwd: Path) -> dict:
    return json.loads((cwd / "probe.json").read_text())


def _last(cwd: Path) -> dict:
    return torch.load(_run_dir(cwd) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two uninterrupted single-process runs with the default seed, started side by side."""
    dirs = [tmp_path_factory.mktemp("reference_a"), tmp_path_factory.mktemp("reference_b")]
    procs = [_fit(d) for d in dirs]
    for proc in procs:
        rc, out = _wait(proc)
        assert rc == 0, out[-3000:]
    return dirs[0], dirs[1]


# --------------------------------------------------------------------------- determinism
def test_two_runs_with_the_same_seed_give_identical_metrics(reference: tuple[Path, Path]) -> None:
    a, b = (_run_dir(d) for d in reference)
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()
    timing = {"fit_seconds", "wall_seconds"}
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert {k: v for k, v in ma.items() if k not in timing} == {k: v for k, v in mb.items() if k not in timing}
    assert ma["global_step"] == STEPS and ma["test/acc"] >= 0.95, ma
    wa, wb = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for d in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # bit-identical weights


# --------------------------------------------------------------------------- faults
def test_sigkill_mid_epoch_then_resume_gives_the_same_steps(reference: tuple[Path, Path], tmp_path: Path) -> None:
    every = ["--checkpoint.every_n_train_steps", "10", "--test_after_fit", "false", "--trainer.callbacks+=probe.Probe"]
    # killed during step 25: epoch 1, batch 6; the newest checkpoint is from step 20 (epoch 1, batch 1)
    rc, out = _run(tmp_path, *every, "--trainer.callbacks.kill_at_step", "25")
    assert rc == -signal.SIGKILL, out[-3000:]
    assert not (tmp_path / "probe.json").exists()
    killed = _last(tmp_path)
    assert (killed["global_step"], killed["epoch"]) == (20, 1)

    rc, out = _run(tmp_path, *every, "--ckpt_path", "last")
    assert rc == 0, out[-3000:]
    assert "Restored all states" in out
    uninterrupted = json.loads((_run_dir(reference[0]) / "metrics.json").read_text())["global_step"]
    assert _probe(tmp_path)["global_step"] == uninterrupted == STEPS
    assert not (tmp_path / "runs" / "lenet5_digits" / "version_1").exists()  # resumed in its own folder


def test_kill_while_saving_leaves_the_previous_checkpoint(reference: tuple[Path, Path], tmp_path: Path) -> None:
    every = ["--checkpoint.every_n_train_steps", "10", "--test_after_fit", "false", "--trainer.callbacks+=probe.Probe"]
    # last.ckpt is written at steps 20 and 30 (Lightning defers the step-10 save until the monitored
    # val/acc exists): the second write dies halfway through
    rc, out = _run(tmp_path, *every, "--trainer.callbacks.kill_in_save", "2")
    assert rc == -signal.SIGKILL, out[-3000:]
    cut = _probe(tmp_path)
    folder = _run_dir(tmp_path) / "checkpoints"
    partial = list(folder.glob(".last.ckpt.tmp-*"))
    assert len(partial) == 1 and partial[0].stat().st_size == cut["size"] // 2  # died mid-write
    last = folder / "last.ckpt"
    assert hashlib.sha256(last.read_bytes()).hexdigest() == cut["sha256"]  # untouched
    assert (cut["step"], _last(tmp_path)["global_step"]) == (30, 20)  # and loads: the step-20 checkpoint

    rc, out = _run(tmp_path, *every, "--ckpt_path", "last")
    assert rc == 0, out[-3000:]
    assert _probe(tmp_path)["global_step"] == STEPS
    assert not list(folder.glob(".last.ckpt.tmp-*"))  # the next save removed the dead one's leftovers


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.ckpt"
    atomic_save({"step": 1}, path)
    before = path.read_bytes()

    def broken(obj: object, f: object, *args: object, **kwargs: object) -> None:
        f.write(b"half a checkpoint")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="No space left"):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind
    AtomicCheckpointIO().save_checkpoint({"step": 3}, path)
    assert torch.load(path, weights_only=True) == {"step": 3}
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # ordinary permissions, not 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- scale-out
def test_ddp_on_two_cpu_processes_trains_as_well(reference: tuple[Path, Path], tmp_path: Path) -> None:
    # two processes of 32 keep the recipe's global batch of 64, so the steps and the schedule are the same
    ddp = ["--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "2"]
    rc, out = _run(tmp_path, *ddp, "--data.batch_size", "32")
    assert rc == 0, out[-3000:]
    assert "distributed_backend=gloo" in out and "All distributed processes registered" in out
    single = json.loads((_run_dir(reference[0]) / "metrics.json").read_text())
    both = json.loads((_run_dir(tmp_path) / "metrics.json").read_text())
    assert both["global_step"] == single["global_step"] == STEPS
    assert abs(both["test/acc"] - single["test/acc"]) <= 0.02, (both["test/acc"], single["test/acc"])
    assert (_run_dir(tmp_path) / "confusion_matrix.csv").is_file()  # rank-0-only reports do not hang


# --------------------------------------------------------------------------- numerical guard
def test_nan_loss_stops_the_run_with_one_line(tmp_path: Path) -> None:
    # plain SGD at lr 1e4: the loss is NaN within a few steps; one process, and two DDP processes side by side
    args = ["--model.lr_scheduler", "null", "--model.optimizer.init_args.lr", "1e4", "--trainer.max_epochs", "1"]
    ddp = ["--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "2"]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    procs = [_fit(tmp_path / "one", *args), _fit(tmp_path / "two", *args, *ddp, "--data.batch_size", "32")]
    for proc in procs:
        rc, out = _wait(proc)
        assert rc == 2, out[-3000:]
        errors = [line for line in out.splitlines() if line.startswith("zoo: error:")]
        assert len(errors) == 1 and "Traceback" not in out, out[-3000:]  # under DDP too: rank 0 speaks
        message = errors[0]
        assert "training loss became NaN at step " in message and "(epoch 0, batch " in message, message
        assert "learning rate" in message and "--trainer.gradient_clip_val" in message, message
