"""DDP trains and evaluates like one process (2 gloo processes on the CPU, Lightning's ``ddp`` strategy).

- Training: with the same initial weights, a global batch of 16 split over two processes (8 each)
  gives the same parameters after an optimizer step as one process with the whole batch (LeNet-5:
  no BatchNorm), and the one-cycle schedule is sized and stepped the same number of times.
- Evaluation: the test metrics of a checkpoint under DDP equal one process's, on a test split of
  45 samples that two processes cannot share evenly (Lightning's DistributedSampler would count
  one sample twice; zoo's data modules give each sample to one process: see
  `zoo.training.data.memory`), and the confusion matrix counts every sample once.

The two processes are started the way torchrun starts them (environment variables, then the
``ddp`` strategy, which then launches nothing), with torch.multiprocessing; both experiments run in
that one pair of processes to keep the test to one start-up.
"""

from __future__ import annotations

import csv
import os
import socket
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DistributedSampler

L = pytest.importorskip("lightning")

from zoo.training import ClassificationTask  # noqa: E402
from zoo.training.data import InMemoryDataModule  # noqa: E402
from zoo.training.data.memory import collate_batch  # noqa: E402

GLOBAL_BATCH = 16
SIZES = {"train": 32, "val": 11, "test": 45}  # 2 steps an epoch; odd evaluation splits
EPOCHS = 2
TIMEOUT = 240


class TinyData(InMemoryDataModule):
    """Random 1x32x32 images of 10 classes; the training batches in order (no shuffling), so that one process
    and two processes see the same global batches (a DistributedSampler deals them out: 0, 2, 4, ... and 1, 3, 5)."""

    classes = tuple(str(i) for i in range(10))
    num_classes = 10
    in_channels = 1

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(1)
        return {
            name: (torch.randint(0, 256, (n, 1, 32, 32), generator=gen, dtype=torch.uint8), torch.arange(n) % 10)
            for name, n in SIZES.items()
        }

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        world, dataset = self.trainer.world_size, self.splits["train"]
        # Lightning's own DistributedSampler for training always shuffles; one it is given stays as it is
        sampler = DistributedSampler(dataset, world, self.trainer.global_rank, shuffle=False) if world > 1 else None
        return torch.utils.data.DataLoader(dataset, self.batch_size, sampler=sampler, collate_fn=collate_batch)


class Record(L.Callback):
    """Keeps the parameters after the first optimizer step, and the schedule at the end."""

    def __init__(self) -> None:
        self.out: dict[str, Any] = {}

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == 1 and "step1" not in self.out:
            self.out["step1"] = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        scheduler = trainer.lr_scheduler_configs[0].scheduler
        self.out.update(total_steps=scheduler.total_steps, scheduler_steps=scheduler.last_epoch)
        self.out["global_step"] = trainer.global_step


def _experiment(devices: int, folder: Path, ckpt: Path | None) -> dict[str, Any]:
    """Fit 2 epochs from seed 0 on `devices` processes; then test `ckpt` (or this run's own weights)."""
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    task = ClassificationTask(
        "lenet5",
        num_classes=10,
        in_channels=1,
        optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
        lr_scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1),
    )
    initial = {k: v.detach().clone() for k, v in task.net.state_dict().items()}
    data = TinyData(batch_size=GLOBAL_BATCH // devices, eval_batch_size=8)
    record = Record()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=EPOCHS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[record],
        default_root_dir=str(folder),
    )
    trainer.fit(task, data)
    if ckpt is None:
        ckpt = folder / "model.ckpt"
        trainer.save_checkpoint(ckpt)
    (tested,) = trainer.test(task, data, ckpt_path=str(ckpt), verbose=False)
    return {**record.out, "initial": initial, "test": tested, "ckpt": ckpt}


def _worker(rank: int, folder: str, port: int, ckpt: str) -> None:
    # what torchrun sets: Lightning's ddp strategy then joins these processes instead of starting its own
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
        NODE_RANK="0", OMP_NUM_THREADS="1",
    )  # fmt: skip
    out = _experiment(2, Path(folder), Path(ckpt))
    torch.save(out, Path(folder) / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[dict[str, Any]], Path, Path]:
    """One process, then two DDP processes from the same seed; the DDP pair tests the one-process checkpoint."""
    one_dir, ddp_dir = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("ddp")
    single = _experiment(1, one_dir, None)
    import torch.multiprocessing as mp

    context = mp.start_processes(
        _worker, args=(str(ddp_dir), _free_port(), str(single["ckpt"])), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + TIMEOUT
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail(f"two DDP processes ran past {TIMEOUT} s")
    ranks = [torch.load(ddp_dir / f"rank{r}.pt", weights_only=False) for r in range(2)]
    return single, ranks, one_dir, ddp_dir


def test_one_step_on_two_processes_equals_one_step_on_the_whole_batch(runs: tuple) -> None:
    single, ranks, _, _ = runs
    for key, before in single["initial"].items():
        assert torch.equal(before, ranks[0]["initial"][key]), key  # the same starting point
        moved = (single["step1"][key] - before).abs().max()
        assert moved > 1e-5, key  # the step changed this parameter: the comparison below means something
        for rank in ranks:  # both processes hold the same weights, which are the one-process weights
            torch.testing.assert_close(rank["step1"][key], single["step1"][key], rtol=1e-5, atol=1e-3 * float(moved))


def test_the_schedule_advances_the_same_number_of_steps(runs: tuple) -> None:
    single, ranks, _, _ = runs
    steps = EPOCHS * SIZES["train"] // GLOBAL_BATCH
    for run in (single, *ranks):
        assert (run["global_step"], run["total_steps"], run["scheduler_steps"]) == (steps, steps, steps)


def test_test_metrics_under_ddp_count_every_sample_once(runs: tuple) -> None:
    single, ranks, one_dir, ddp_dir = runs
    for rank in ranks:
        assert rank["test"].keys() == single["test"].keys()
        for name, value in single["test"].items():
            assert rank["test"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    for folder in (one_dir, ddp_dir):  # the confusion matrix (rank 0's file) holds the 45 test samples once each
        with open(folder / "confusion_matrix.csv", newline="") as f:
            rows = list(csv.reader(f))[1:]
        assert sum(int(v) for row in rows for v in row[1:]) == SIZES["test"], folder
