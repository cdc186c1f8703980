"""Screenshots of every page of the documentation site, at a desktop and a phone width.

    python docs/screenshots.py [OUT_DIR] [--site SITE_DIR]

Builds the site (`mkdocs build --strict`) into a temporary folder unless ``--site`` names
a built one, serves it on localhost, and opens each page in headless Chromium (through
Playwright, with the Chromium of the system: ``apt install chromium``; the browser that
``playwright install`` downloads also works). For each page it writes
``OUT_DIR/<page>-desktop.png`` (1280x900) and ``OUT_DIR/<page>-phone.png`` (390x844), full
length, and prints what a reader would trip over: tables and code blocks wider than the
content column (they scroll sideways), and requests to any host other than the local server
(web fonts, for instance). Exits 0 with a message saying why when Playwright or Chromium is
missing, and 1 when a page has one of those defects.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
BROWSERS = ["chromium", "chromium-browser", "google-chrome"]

# What scrolls sideways inside the content column: tables, and console blocks (commands a
# reader copies; Python code may scroll), as (what, first words, overflow in px).
OVERFLOW_JS = """() => {
  const out = [];
  const found = [
    ...[...document.querySelectorAll('.md-content table')]
      .map(el => ['table', el.closest('.md-typeset__scrollwrap') || el]),
    ...[...document.querySelectorAll('.md-content .language-console pre > code')].map(el => ['console', el]),
  ];
  for (const [what, el] of found) {
    const over = el.scrollWidth - el.clientWidth;
    if (over > 2) out.push([what, el.innerText.slice(0, 60), over]);
  }
  return out;
}"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # one line per request would bury the report
        pass


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def build(site: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(site)],
        cwd=ROOT,
        check=True,
        env={"NO_MKDOCS_2_WARNING": "1", **os.environ},
    )


def pages(site: Path) -> list[str]:
    """The site's pages as URL paths ("" for the home page), in file order."""
    found = sorted(p.relative_to(site).parent.as_posix() for p in site.rglob("index.html"))
    return ["" if p == "." else p + "/" for p in found]


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def shoot(site: Path, out: Path, browser: str) -> list[str]:
    """Screenshots of every page at every width; returns the defects found, one line each."""
    from playwright.sync_api import sync_playwright

    server, base = serve(site)
    problems: list[str] = []
    try:
        with sync_playwright() as p:
            chromium = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
            for kind, (w, h) in WIDTHS.items():
                page = chromium.new_page(viewport={"width": w, "height": h})
                foreign: list[str] = []  # one list per page object, cleared per page

                def note(request, foreign=foreign):
                    if not request.url.startswith(base):
                        foreign.append(request.url)

                page.on("request", note)
                for path in pages(site):
                    foreign.clear()
                    page.goto(base + path, wait_until="networkidle")
                    name = (path.strip("/") or "index").replace("/", "-")
                    page.screenshot(path=str(out / f"{name}-{kind}.png"), full_page=True)
                    where = f"{path or '/'} ({kind})"
                    for what, text, over in page.evaluate(OVERFLOW_JS):
                        problems.append(f"{where}: {what} {over}px too wide: {text!r}")
                    problems += [f"{where}: request to {url}" for url in dict.fromkeys(foreign)]
                page.close()
            chromium.close()
    finally:
        server.shutdown()
    return problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("screenshots"))
    parser.add_argument("--site", type=Path, help="a built site (default: build one)")
    args = parser.parse_args(argv)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        print("skipped: Playwright is not installed (pip install playwright)")
        return 0
    browser = find_browser()
    if browser is None:
        print(f"skipped: no headless Chromium on PATH (looked for {', '.join(BROWSERS)}; apt install chromium)")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        site = args.site or Path(tmp) / "site"
        if args.site is None:
            build(site)
        problems = shoot(site, args.out, browser)
    shots = len(list(args.out.glob("*.png")))
    print(f"{shots} screenshots in {args.out}")
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
