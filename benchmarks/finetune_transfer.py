"""Fine-tuning against training from scratch, with the same budget, on data that needs no download.

A LeNet-5 trained by the zoo recipe ``lenet5_mnist`` (MNIST: 60,000 28x28 digits, handwritten
by Census Bureau staff and students) is exported with ``zoo export --name`` and fine-tuned on
scikit-learn's bundled digits (``lenet5_digits``: 1,797 8x8 digits from another source,
resized to 32x32), against the same network trained from its random initialisation, with the
same recipe, the same number of steps and the same seed. Budgets: a few batches of a few
epochs (few labels, few steps: 6 and 30 optimizer steps) and the recipe's full 30 epochs.

    python benchmarks/finetune_transfer.py --mnist ../shared/data            # trains lenet5_mnist first
    python benchmarks/finetune_transfer.py --weights lenet5-mnist.safetensors   # or reuse exported weights

Prints one row per budget and start: test accuracy on the digits' 360 held-out images.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def zoo(*args: str, cwd: Path) -> None:
    command = [sys.executable, "-m", "zoo.cli", *args, "--trainer.enable_progress_bar", "false"]
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def digits(cwd: Path, name: str, weights: str | None, extra: list[str]) -> dict:
    start = ["--model.init_args.weights", weights] if weights else []
    run = ["--trainer.logger.init_args.name", name]
    t = time.perf_counter()
    zoo("fit", "--config", str(ROOT / "recipes" / "lenet5_digits.yaml"), *start, *run, *extra, cwd=cwd)
    seconds = time.perf_counter() - t
    metrics = json.loads(sorted((cwd / "runs" / name).glob("version_*/metrics.json"))[-1].read_text())
    return {"acc": metrics["test/acc"], "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", help="MNIST root for lenet5_mnist (trains it first)")
    parser.add_argument("--weights", help="lenet5 weights exported from a lenet5_mnist run")
    parser.add_argument("--workdir", help="where the runs go (default: a temporary folder)")
    args = parser.parse_args()
    if not (args.mnist or args.weights):
        parser.error("give --mnist ROOT (train lenet5_mnist first) or --weights FILE")
    cwd = Path(args.workdir or tempfile.mkdtemp(prefix="zoo-finetune-")).resolve()
    cwd.mkdir(parents=True, exist_ok=True)
    weights = args.weights and str(Path(args.weights).resolve())
    if weights is None:
        t = time.perf_counter()
        mnist = str(Path(args.mnist).resolve())
        zoo("fit", "--config", str(ROOT / "recipes" / "lenet5_mnist.yaml"), "--data.root", mnist, cwd=cwd)
        run = sorted((cwd / "runs" / "lenet5_mnist").glob("version_*"))[-1]
        subprocess.run([sys.executable, "-m", "zoo.cli", "export", str(run), "--name", "lenet5-mnist"], cwd=cwd,
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        weights = str(cwd / "lenet5-mnist.safetensors")
        card = json.loads((cwd / "lenet5-mnist.json").read_text())
        print(f"lenet5_mnist: test/acc {card['metrics']['test/acc']:.4f} in {time.perf_counter() - t:.1f} s")
    budgets = {
        "2 batches x 3 epochs (384 images seen)": ["--trainer.max_epochs", "3", "--trainer.limit_train_batches", "2"],
        "6 batches x 5 epochs (1,920 seen)": ["--trainer.max_epochs", "5", "--trainer.limit_train_batches", "6"],
        "full recipe (30 epochs)": [],
    }
    print(f"{'budget':<40} {'start':<22} {'test acc':>9} {'seconds':>8}")
    for label, extra in budgets.items():
        for start, w in (("from scratch", None), ("fine-tuned from MNIST", weights)):
            tag = f"{'ft' if w else 'scratch'}_{len(extra)}_{extra[1] if extra else 30}"
            r = digits(cwd, tag, w, extra)
            print(f"{label:<40} {start:<22} {r['acc']:>9.4f} {r['seconds']:>8.1f}")
    print(f"(runs in {cwd})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
