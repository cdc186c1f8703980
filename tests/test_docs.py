"""The documentation cannot drift from the code: generated pages are current and every code block runs.

`>>>` examples in docs/*.md run as doctests (pytest's --doctest-glob); the ```python blocks of
README.md and docs/*.md run here, each block in a fresh namespace (as a reader who copies only
that block), the blocks of a page one after the other in one temporary folder.
"""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "recipes" / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text()) if path.is_file() else []


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(page, tmp_path, monkeypatch):
    """Each block in a namespace of its own, as a reader who copies only that block runs it."""
    monkeypatch.chdir(tmp_path)
    for i, block in enumerate(python_blocks(page)):
        module = types.ModuleType("__docs__")  # a real module, so that a block can define dataclasses
        monkeypatch.setitem(sys.modules, "__docs__", module)
        try:
            exec(compile(block, f"{page.name} block {i + 1}", "exec"), module.__dict__)
        except Exception as e:  # the page and block in the failure, not only the traceback
            pytest.fail(f"{page.relative_to(ROOT)}, python block {i + 1} raised {type(e).__name__}: {e}")


def test_generated_pages_are_current():
    r = subprocess.run([sys.executable, str(ROOT / "docs" / "generate.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_figures_script_runs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "docs"))
    monkeypatch.setattr(sys, "argv", ["figures.py", str(tmp_path)])
    runpy.run_path(str(ROOT / "docs" / "figures.py"), run_name="__main__")
    for name in ("filters.png", "compare.png"):
        assert (tmp_path / name).stat().st_size > 20_000


def test_every_nav_page_exists():
    nav = re.findall(r":\s*([\w/]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert len(nav) > 15
    missing = [p for p in nav if not (ROOT / "docs" / p).is_file()]
    assert not missing, f"mkdocs.yml names pages that do not exist: {missing}"
