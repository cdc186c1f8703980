"""The Docker image's runtime layout, checked without a Docker daemon.

The Dockerfile's user, directory and copy steps are replayed on a small model of the image's
file ownership; the container's user must own its working directory (the main job writes
``runs/`` there). Then a process with that user's uid and no privileges writes ``runs/`` in a
folder owned as the model says.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per step, continuation lines joined, comments dropped."""
    steps, current = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            if current.strip():
                word, _, rest = current.strip().partition(" ")
                steps.append((word.upper(), rest.strip()))
            current = ""
    return steps


def runtime_layout(text: str) -> dict[str, object]:
    """Replay the steps that decide ownership: who the container runs as and who owns its WORKDIR."""
    uids, owner, user, workdir = {"root": 0}, {}, "root", "/"
    for word, args in instructions(text):
        if word == "RUN":
            for command in args.split("&&"):
                argv = shlex.split(command)
                if argv[:1] == ["useradd"]:
                    name = argv[-1]
                    uids[name] = int(argv[argv.index("--uid") + 1]) if "--uid" in argv else 1000
                    if "--create-home" in argv or "-m" in argv:
                        owner[f"/home/{name}"] = name
                elif argv[:2] == ["install", "-d"]:
                    who = argv[argv.index("-o") + 1] if "-o" in argv else user
                    owner[argv[-1]] = who
                elif argv[:1] == ["mkdir"]:
                    owner.setdefault(argv[-1], user)
                elif argv[:1] == ["chown"]:
                    owner[argv[-1]] = argv[-2].split(":")[0]
        elif word == "WORKDIR":
            workdir = args
            owner.setdefault(workdir, user)  # created by the build's current user when missing
        elif word == "USER":
            user = args
    return {"user": user, "uid": uids.get(user), "workdir": workdir, "workdir_owner": owner.get(workdir)}


def test_the_container_user_owns_its_working_directory():
    layout = runtime_layout(DOCKERFILE.read_text())
    assert layout["user"] != "root", "the image should not run as root"
    assert layout["workdir_owner"] == layout["user"], layout


def test_the_check_catches_a_working_directory_created_by_root():
    """The layout before the fix: WORKDIR created by root, then USER zoo."""
    broken = "FROM python:3.11-slim\nRUN useradd --create-home --uid 1000 zoo\nWORKDIR /home/zoo/app\nUSER zoo\n"
    layout = runtime_layout(broken)
    assert layout["user"] == "zoo" and layout["workdir_owner"] == "root"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand a folder to another uid")
def test_the_container_user_can_write_runs_there(tmp_path):
    """A process with the container's uid and no privileges creates runs/ in a folder owned as the layout says."""
    layout = runtime_layout(DOCKERFILE.read_text())
    app = tmp_path / "app"
    app.mkdir()
    tmp_path.chmod(0o755)
    uid = layout["uid"] if layout["workdir_owner"] == layout["user"] else 0
    os.chown(app, uid, uid)
    script = "mkdir -p runs/lenet5_digits/version_0 && echo ok"  # the shell: this interpreter may be root's alone

    def drop() -> None:
        os.setgroups([])
        os.setgid(layout["uid"])
        os.setuid(layout["uid"])

    out = subprocess.run(["/bin/sh", "-c", script], cwd=app, preexec_fn=drop, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
