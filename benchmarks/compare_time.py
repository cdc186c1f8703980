"""Wall time of ``zoo compare --all`` as a user runs it: a fresh process each time.

``python benchmarks/compare_time.py [--runs 5] [--repo PATH ...]`` runs
``python -m zoo.cli compare --all`` (output discarded) in each repository given (default:
this one; give an older checkout too to compare, the runs alternate between them), and
prints every run's seconds, the median per repository and the load average before and after.
The target (issue 19) is under 5 s for every registered model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repo", type=Path, nargs="*", default=[Path(__file__).resolve().parents[1]])
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    times: dict[Path, list[float]] = {repo: [] for repo in args.repo}
    for _ in range(args.runs):
        for repo in args.repo:  # python -m puts the repository's own zoo first on the path
            start = time.perf_counter()
            command = [sys.executable, "-m", "zoo.cli", "compare", "--all"]
            subprocess.run(command, cwd=repo, stdout=subprocess.DEVNULL, check=True)
            times[repo].append(time.perf_counter() - start)
            print(f"{repo}: {times[repo][-1]:.2f} s", flush=True)
    for repo, seconds in times.items():
        count = subprocess.run(
            [sys.executable, "-c", "import zoo; print(len(zoo.list_models()))"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print(f"{repo}: median {statistics.median(seconds):.2f} s of {len(seconds)} runs ({count} models)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
