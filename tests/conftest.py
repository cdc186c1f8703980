"""Shared fixtures: `zoo_cli`, the command line run as a process, without paying its imports each time.

Each `zoo ...` test used to start a fresh interpreter: about 5 s of importing torch,
Lightning, torchmetrics and torchvision before the command did anything, for each of some
forty error-catalogue rows. `zoo_cli` starts one helper process for the session that
imports those modules once and then forks a child per command. The child is a real
process running the console script's entry point (`zoo.cli:main`) with the test's argv,
working directory and environment; its stdout and stderr are the files the test reads
and its exit status is the process's (atexit handlers run, as at a normal exit). Only the
imports are shared. The helper itself never runs a tensor operation, so no thread pool
exists when it forks.

The console script itself, started the way a user starts it, stays covered by the tests
that run it as a fresh process (tests/test_cli.py, tests/test_runs.py, tests/test_reliability.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

_HELPER = r"""
import atexit, json, os, sys, traceback
import zoo.cli
import zoo.training  # Lightning, torchmetrics, torchvision: the imports every child shares

def child(request):
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out, 1)
    os.dup2(err, 2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    sys.argv = ["zoo", *request["argv"]]
    if request["timeout"]:
        import signal
        signal.alarm(int(request["timeout"]))
    try:  # what the interpreter does with the entry point's result
        code = zoo.cli.main(request["argv"])
    except SystemExit as e:
        code = e.code
    except BaseException:
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)

print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(request)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    print(json.dumps({"returncode": code}), flush=True)
"""


@dataclass
class Completed:
    """What `subprocess.run(..., capture_output=True, text=True)` returns, for the fields the tests read."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


class ZooCli:
    """Runs `zoo ARGV` in a forked child of one helper process (see the module docstring)."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.count = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        ready = self.proc.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(f"the zoo CLI helper did not start (it said {ready!r})")

    def __call__(self, *argv: str, cwd: str | Path | None = None, timeout: int = 300) -> Completed:
        self.count += 1
        out, err = self.scratch / f"{self.count}.out", self.scratch / f"{self.count}.err"
        request = {
            "argv": [str(a) for a in argv],
            "cwd": str(cwd or os.getcwd()),
            "env": dict(os.environ),
            "stdout": str(out),
            "stderr": str(err),
            "timeout": timeout,
        }
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError("the zoo CLI helper exited")
        completed = Completed(list(argv), json.loads(reply)["returncode"], out.read_text(), err.read_text())
        out.unlink()
        err.unlink()
        return completed

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def zoo_cli(tmp_path_factory: pytest.TempPathFactory):
    """`zoo_cli("fit", "--config", ...)` -> an object with returncode, stdout and stderr."""
    cli = ZooCli(tmp_path_factory.mktemp("zoo-cli"))
    yield cli
    cli.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` run only when asked for (``-m slow``); the default run leaves them out."""
    if "slow" in (config.option.markexpr or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]
