"""Train-step time of a network in fp32 and bf16 autocast, channels-first and channels_last.

``python benchmarks/train_step.py resnet20 lenet5:1`` times one training step (forward,
cross-entropy, backward, SGD step) of each network in the four settings, interleaved
round by round so that a machine's changing load falls on all four alike, and prints the
median of each. ``NAME:C`` gives the input channels (default 3). This is how the recipes'
``precision`` and ``channels_last`` were chosen (docs/training.md).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import zoo

SETTINGS = ((False, False), (False, True), (True, False), (True, True))  # (channels_last, bf16)


def _step_fn(name: str, channels: int, batch: int, size: int, channels_last: bool, bf16: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    model = zoo.create(name, num_classes=10, in_channels=channels)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, channels, size, size), torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
            loss = F.cross_entropy(out[0] if isinstance(out, tuple) else out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure(name: str, channels: int = 3, batch: int = 128, size: int = 32, rounds: int = 5, steps: int = 4) -> dict:
    """Median seconds per step for each (channels_last, bf16) setting."""
    fns = {s: _step_fn(name, channels, batch, size, *s) for s in SETTINGS}
    for fn in fns.values():  # warm-up (oneDNN picks its kernels on the first calls)
        for _ in range(3):
            fn()
    times: dict[tuple[bool, bool], list[float]] = {s: [] for s in SETTINGS}
    for _ in range(rounds):
        for s, fn in fns.items():
            for _ in range(steps):
                t = time.perf_counter()
                fn()
                times[s].append(time.perf_counter() - t)
    return {s: statistics.median(v) for s, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python benchmarks/train_step.py", description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="NAME or NAME:CHANNELS")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--input", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    print(f"ms per training step, batch {args.batch_size}, {args.input}x{args.input} inputs")
    print("| model | fp32 | bf16 | fp32 + channels_last | bf16 + channels_last |")
    print("|---|---:|---:|---:|---:|")
    for spec in args.models:
        name, _, channels = spec.partition(":")
        med = measure(name, int(channels or 3), args.batch_size, args.input, args.rounds)
        cells = " | ".join(f"{1000 * med[s]:.1f}" for s in SETTINGS)
        print(f"| {name} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
