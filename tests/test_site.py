"""The documentation site as a reader sees it: the built HTML, checked page by page.

The site is built once (`mkdocs build --strict`, a few seconds) into a temporary folder. Each
check looks for one class of defect that a browser shows and `--strict` does not: examples
that render as quotes, lists that collapse into paragraphs, docstrings shown as plain text,
commands that look like output, tables wider than the content column, an API page without
`zoo.training`, requests to a font host. `docs/screenshots.py` takes the pictures a person
looks at; these tests keep what was fixed from coming back.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Material's content column at a 1280 px window with both sidebars (measured in Chromium by
# docs/screenshots.py), the same without the table of contents (front matter `hide: [toc]`),
# and the widths a table cell needs: 0.64rem (12.8 px) text, 16 px of padding each side, and
# Material's minimum column width (5rem of the header cell: 104 px with its padding). Checked
# against Chromium's min-content widths of the site's tables.
CONTENT_PX, WIDE_CONTENT_PX = 720, 960
CELL_PADDING_PX, MIN_COLUMN_PX, TEXT_PX_PER_CHAR, CODE_PX_PER_CHAR = 32, 104, 7.4, 7.0
CONSOLE_LINE_CHARS = 80  # a command line the desktop column shows whole (checked in Chromium)


@dataclass
class Block:
    language: str
    text: str


@dataclass
class Page:
    """What the checks need from one built page."""

    path: str
    title: str = ""  # the text of its <h1>
    wide: bool = False
    blocks: list[Block] = field(default_factory=list)
    paragraphs: list[str] = field(default_factory=list)
    loose_text: list[str] = field(default_factory=list)  # text outside <pre> and <code>
    tables: list[list[list[tuple[str, bool]]]] = field(default_factory=list)  # rows of (cell text, is code)
    ids: set[str] = field(default_factory=set)
    external: list[str] = field(default_factory=list)


class _Reader(HTMLParser):
    def __init__(self, page: Page):
        super().__init__(convert_charrefs=True)
        self.page = page
        self.stack: list[str] = []
        self.in_content = 0
        self.language: str | None = None
        self.buffer: list[str] = []
        self.paragraph: list[str] | None = None
        self.row: list[tuple[str, bool]] | None = None
        self.cell: list[tuple[str, bool]] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag in ("link", "script") and re.match(r"(https?:)?//", a.get("href") or a.get("src") or ""):
            self.page.external.append(a.get("href") or a.get("src"))
        if a.get("id"):
            self.page.ids.add(a["id"])
        if tag == "article":
            self.in_content += 1
        if tag == "div" and "highlight" in classes:
            self.language = next((c[9:] for c in classes if c.startswith("language-")), "")
            self.buffer = []
        if tag == "p":
            self.paragraph = []
        if tag == "table":
            self.page.tables.append([])
        if tag == "tr":
            self.row = []
        if tag in ("td", "th"):
            self.cell = []
        if tag not in ("br", "img", "input", "meta", "link", "hr"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop() != tag:
            pass
        if tag == "article":
            self.in_content -= 1
        if tag == "pre" and self.language is not None:
            self.page.blocks.append(Block(self.language, "".join(self.buffer)))
            self.language = None
        if tag == "p" and self.paragraph is not None:
            self.page.paragraphs.append("".join(self.paragraph))
            self.paragraph = None
        if tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append(("".join(t for t, _ in self.cell), any(c for _, c in self.cell)))
            self.cell = None
        if tag == "tr" and self.row is not None and self.page.tables:
            self.page.tables[-1].append(self.row)
            self.row = None

    def handle_data(self, data):
        if "pre" in self.stack and self.language is not None:
            self.buffer.append(data)
            return
        if not self.in_content:
            return
        if "h1" in self.stack and "a" not in self.stack:
            self.page.title += data
        if self.paragraph is not None:
            self.paragraph.append(data)
        if self.cell is not None:
            self.cell.append((data, "code" in self.stack))
        if "code" not in self.stack and "pre" not in self.stack:
            self.page.loose_text.append(data)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict[str, Page]:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)]
    r = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    pages = {}
    for html in sorted(out.rglob("index.html")):
        path = html.parent.relative_to(out).as_posix()
        path = "" if path == "." else path + "/"
        page = Page(path)
        _Reader(page).feed(html.read_text())
        source = ROOT / "docs" / ((path.rstrip("/") or "index") + ".md")
        page.wide = source.is_file() and re.search(r"^hide:.*\btoc\b", source.read_text(), re.M) is not None
        pages[path] = page
    return pages


def test_every_page_is_read(site):
    assert len(site) >= 18 and "api/" in site and "families/resnet/" in site
    assert all(p.blocks or p.paragraphs for p in site.values())


# ---- the checks, each a function of one page, so that a test can show it catches its defect


def quoted_examples(page: Page) -> list[str]:
    """`>>>` lines outside a code block (Markdown reads them as nested quotes)."""
    return [t.strip()[:60] for t in page.loose_text if ">>>" in t]


def collapsed_lists(page: Page) -> list[str]:
    """A list marker inside a paragraph: a list that Markdown did not see as one."""
    marker = re.compile(r"(^|\n)\s*(- |\* |\d+\. )\S|- \*\*")
    return [p.strip()[:60] for p in page.paragraphs if marker.search(p)]


def text_docstrings(page: Page) -> list[str]:
    """A family page's docstring shown as a plain-text block (more than a small diagram)."""
    if not page.path.startswith("families/"):
        return []
    return [b.text[:60] for b in page.blocks if b.language in ("text", "") and b.text.count("\n") > 5]


def console_without_prompt(page: Page) -> list[str]:
    """A console block must start with a `$ ` command, and each command line fits the column."""
    bad = []
    for b in page.blocks:
        if b.language != "console":
            continue
        lines = b.text.strip("\n").splitlines()
        if not lines or not lines[0].startswith("$ "):
            bad.append(f"no $ prompt: {b.text[:60]!r}")
        commands = [line for line in lines if line.startswith("$ ") or line.startswith("    ")]
        bad += [
            f"command line of {len(line)} characters: {line[:60]!r}"
            for line in commands
            if len(line) > CONSOLE_LINE_CHARS
        ]
    return bad


def table_width(table: list[list[tuple[str, bool]]]) -> float:
    """The width (px) a table needs so that no word breaks: per column its longest word, plus padding."""
    columns: dict[int, float] = {}
    for row in table:
        for i, (text, code) in enumerate(row):
            longest = max((len(w) for w in text.split()), default=0)
            columns[i] = max(columns.get(i, 0.0), longest * (CODE_PX_PER_CHAR if code else TEXT_PX_PER_CHAR))
    return sum(max(w + CELL_PADDING_PX, MIN_COLUMN_PX) for w in columns.values())


def wide_tables(page: Page) -> list[str]:
    """Tables that need more than the content column (they would scroll, or break words)."""
    if page.path.startswith("api/"):  # mkdocstrings' parameter tables: Name, Type, Description, Default
        return []
    room = WIDE_CONTENT_PX if page.wide else CONTENT_PX
    out = []
    for table in page.tables:
        width = table_width(table)
        columns = max(len(r) for r in table)
        if width > room:
            out.append(f"{columns} columns, about {width:.0f} px (room: {room} px): {table[0]}")
        commands = [
            t for row in table for t, code in row if code and re.match(r"(zoo|python) \S+ .*--", t) and len(t) > 40
        ]
        out += [f"a command in a table cell (put it below the table): {t[:60]!r}" for t in commands]
    return out


def font_requests(page: Page) -> list[str]:
    return [url for url in page.external if re.search(r"fonts\.(googleapis|gstatic)\.com", url)]


CHECKS = [quoted_examples, collapsed_lists, text_docstrings, console_without_prompt, wide_tables, font_requests]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_no_page_has(site, check):
    found = {path or "/": problems for path, page in site.items() if (problems := check(page))}
    assert not found, f"{check.__name__}: {found}"


def test_api_documents_training(site):
    ids = site["api/"].ids
    for name in [
        "zoo.training.ClassificationTask",
        "zoo.training.SegmentationTask",
        "zoo.training.data.MNISTDataModule",
        "zoo.training.data.ImageFolderDataModule",
        "zoo.training.checkpoint.AtomicCheckpointIO",
        "zoo.training.report.ProgressBar",
    ]:
        assert name in ids, f"the API page does not document {name}"
    assert "zoo.bench.main" not in ids, "zoo.bench.main is the CLI's entry point, not API"


def test_titles_match_the_navigation(site):
    nav = dict(re.findall(r"^\s*- ([^:\n]+): ([\w/-]+)\.md\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))
    nav = {title: ("" if page == "index" else page + "/") for title, page in nav.items()}
    assert len(nav) > 15
    for title, path in nav.items():
        assert site[path].title.strip() == title, f"{path}: heading {site[path].title.strip()!r}, nav {title!r}"


def test_no_development_paths_or_notes_for_editors(site):
    for path, page in site.items():
        commands = [line for b in page.blocks if b.language == "console" for line in b.text.splitlines()]
        commands = [line for line in commands if line.startswith(("$ ", "    "))]  # not the output
        assert not [c for c in commands if "../shared/data" in c], f"{path or '/'}: a development-only path"
        assert "a test fails when" not in " ".join(page.loose_text), f"{path or '/'}: a note for editors"


# ---- each check catches its defect: the same checks on pages built to have it


def _page(html: str, path: str = "x/") -> Page:
    page = Page(path)
    _Reader(page).feed(f"<html><body><article>{html}</article></body></html>")
    return page


def _block(language: str, text: str) -> str:
    return f'<div class="language-{language} highlight"><pre><code>{text}</code></pre></div>'


def _row(*cells: str) -> str:
    return "<table><tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr></table>"


@pytest.mark.parametrize(
    ("check", "html", "path"),
    [
        (quoted_examples, "<blockquote><blockquote><p>&gt;&gt;&gt; conv(1)</p></blockquote></blockquote>", "x/"),
        (collapsed_lists, "<p>Notes:\n- <strong>unet_isbi2012</strong> reached</p>", "x/"),
        (collapsed_lists, "<p>What it does:\n1. eval mode;\n2. folds</p>", "x/"),
        (text_docstrings, _block("text", "VGG: Simonyan &amp; Zisserman, a paper\n" * 8), "families/vgg/"),
        (console_without_prompt, _block("console", "zoo fit --config a.yaml"), "x/"),
        (console_without_prompt, _block("console", "$ zoo fit " + "--flag " * 12), "x/"),
        (wide_tables, _row(*["a cell"] * 7), "x/"),
        (wide_tables, _row("<code>wide_resnet50_2</code>", "Convolutional " * 3, *["Representations"] * 4), "x/"),
        (wide_tables, _row("<code>zoo fit --config recipes/lenet5_mnist.yaml --data.root DATA</code>"), "x/"),
        (font_requests, '<link href="https://fonts.googleapis.com/css?family=Roboto" rel="stylesheet">', "x/"),
    ],
)
def test_each_check_catches_its_defect(check, html, path):
    assert check(_page(html, path))


def test_api_check_catches_a_missing_module():
    page = _page('<h2 id="zoo.registry.create">create</h2>', "api/")
    with pytest.raises(AssertionError, match=r"zoo\.training"):
        test_api_documents_training({"api/": page})
