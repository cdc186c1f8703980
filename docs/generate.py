"""Generate the documentation pages that come from the code: `python docs/generate.py [--check]`.

- docs/models.md: every model in one table (`models_markdown`), and the
  shorter table of README.md (between its ``models:start`` / ``models:end`` markers);
- docs/compare.md: the comparison table of a few models (its columns chosen for the page),
  and docs/compare.csv, the full table;
- docs/families/<family>.md: one page per family: the paper, the stages of a
  representative model with their output shapes, every variant with its parameters and
  MACs, and the family module's docstring (rendered as Markdown), which states where the
  code departs from the paper;
- docs/recipes.md: recipes/README.md, made to render on the site (see `recipes_page`).

The pages are for readers: what they are generated from is said in an HTML comment at the top.

``--check`` writes nothing and exits 1 if a checked-in page differs (tests/test_docs.py runs it).
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path

import torch

import zoo
from zoo.analysis import analyze, compare, render
from zoo.analysis.tables import _COLUMNS, _cells
from zoo.analysis.text import _g

DOCS = Path(__file__).parent
README = DOCS.parent / "README.md"
START, END = "<!-- models:start -->", "<!-- models:end -->"
TITLES = {
    "lenet": "LeNet-5",
    "alexnet": "AlexNet",
    "vgg": "VGG",
    "inception": "Inception (GoogLeNet, Inception-v3)",
    "resnet": "ResNet",
    "convnext": "ConvNeXt",
    "unet": "U-Net",
}


def generated(source: str) -> str:
    """The note at the top of a generated page: invisible on the site, seen by whoever edits the file."""
    return f"<!-- generated from {source} by `python docs/generate.py`; a test fails when it is stale -->\n\n"


def table_order() -> list[str]:
    """Every model in the order of its family's variant table (tiny, small, base, large, xlarge)."""
    return list(zoo.registry._REGISTRY)


def short_reference(paper: zoo.registry.Paper) -> str:
    """ "LeCun et al. 1998", linked to the paper: a paper in a few words, for a table cell."""
    names = [a.split()[-1] for a in paper.authors.split(",") if a.strip()]
    who = names[0] if len(names) == 1 else f"{names[0]} & {names[1]}" if len(names) == 2 else f"{names[0]} et al."
    return f"[{who} {paper.year}]({paper.url})"


def models_markdown() -> str:
    """The page docs/models.md: every registered model at its default input size, oldest family first."""
    rows = compare()
    first_year: dict[str, int] = {}
    for r in rows:
        first_year[r.family] = min(r.year, first_year.get(r.family, r.year))
    order = {n: i for i, n in enumerate(table_order())}
    rows.sort(key=lambda r: (first_year[r.family], r.family, order[r.name]))
    lines = [
        generated("the registry") + "# Models",
        "",
        "Every registered model at its default input size, oldest family first; each family's page",
        "has its papers and where the code departs from them. `zoo compare --all` gives more columns",
        "(parameter split, activation memory, weight size, layers, receptive field, output stride;",
        "[the comparing page](compare.md) has them as a CSV file).",
        "",
        "- **parameters**: the model as `zoo.create(name)` builds it; GoogLeNet and Inception-v3 include their",
        "  auxiliary classifiers, which run only in training.",
        "- **GMACs**: multiply-accumulates of the convolutions and matrix products of one eval forward pass at",
        '  batch 1 (FLOPs = 2 x MACs). Torchvision\'s documentation calls the same numbers "GFLOPS".',
        "",
        "| model | family | paper | input | parameters | GMACs |",
        "|---|---|---|---|---:|---:|",
    ]
    for r in rows:
        card = zoo.model_info(r.name)
        size = "x".join(map(str, r.input_size))
        family = f"[{TITLES.get(r.family, r.family).split(' (')[0]}](families/{r.family}.md)"
        lines.append(
            f"| `{r.name}` | {family} | {short_reference(card.paper)} | {size} | {r.params:,} | {_g(r.macs)} |"
        )
    return "\n".join(lines) + "\n"


def families() -> dict[str, list[str]]:
    """Family -> its model names, families in order of their oldest paper."""
    out: dict[str, list[str]] = {}
    for name in sorted(table_order(), key=lambda n: zoo.model_info(n).paper.year):
        out.setdefault(zoo.model_info(name).family, []).append(name)
    return out


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape[1:]))


def _stage_table(name: str) -> list[str]:
    card = zoo.model_info(name)
    with torch.device("meta"):
        model = zoo.create(name).eval()
    x = torch.empty(1, *card.input_size, device="meta")
    size = "x".join(map(str, card.input_size))
    lines = [f"`{name}` on a {size} input (C x H x W):", ""]
    if card.task == "segmentation":
        out = model(x)
        lines += ["| input | output (per-pixel logits) |", "|---|---|", f"| {size} | {_shape(out)} |"]
        return lines
    stages = model.forward_stages(x)
    lines += ["| stage | output shape | stride |", "|---|---|---:|"]
    pairs = enumerate(zip(stages, model.stage_strides, strict=True))
    lines += [f"| {i} | {_shape(s)} | {stride} |" for i, (s, stride) in pairs]
    lines.append(f"| head | {model.num_classes} logits | |")
    return lines


_URL = re.compile(r"(?<![<(])(https?://[^\s<>()]+[^\s<>().,;:])")
_CODE_SPAN = re.compile(r"(`+[^`]*`+)")


def _prose(line: str) -> str:
    """One line of a docstring as Markdown: ``x`` -> `x`, bare URLs linked, literal `*` kept."""
    parts = _CODE_SPAN.split(re.sub(r"``([^`]+)``", r"`\1`", line))
    for i in range(0, len(parts), 2):  # the text between code spans
        parts[i] = _URL.sub(r"<\1>", parts[i].replace("*", r"\*"))
    return "".join(parts)


def docstring_markdown(doc: str) -> str:
    """A module docstring (plain text with `code`, ``code``, "- " lists, "::" blocks) as Markdown.

    Python-Markdown wants a blank line before a list and 4-space-indented code; a docstring
    has neither, so lists get their blank line and a "::" block becomes a fenced block.
    """
    out: list[str] = []
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):  # reST literal block: the indented lines after it
            out.append(_prose(line.rstrip()[:-1]))
            block, i = [], i + 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                block.append(lines[i])
                i += 1
            out += ["", "```text", *textwrap.dedent("\n".join(block)).strip("\n").splitlines(), "```", ""]
            continue
        if line.startswith("- ") and out and out[-1].strip() and not out[-1].startswith(("- ", " ")):
            out.append("")
        out.append(_prose(line))
        i += 1
    return "\n".join(out)


def family_page(family: str, names: list[str]) -> str:
    cards = [zoo.model_info(n) for n in names]
    papers = list(dict.fromkeys(c.paper for c in cards))
    module = importlib.import_module(zoo.registry.model_class(names[0]).__module__)
    lines = [generated(f"`{module.__name__}`'s docstring and the registry") + f"# {TITLES.get(family, family)}", ""]
    lines += [f"- {p.authors}, [{p.title}]({p.url}), {p.year}" for p in papers]
    lines += ["", "## Variants", "", "| model | parameters | GMACs | input | min input |"]
    lines += ["|---|---:|---:|---|---|"]
    for name, card in zip(names, cards, strict=True):
        stats = analyze(name)
        gmacs = f"{stats.macs / 1e9:.4g}" if stats.macs is not None else "n/a"
        lines.append(
            f"| `{name}` | {card.num_params:,} | {gmacs} | {'x'.join(map(str, card.input_size))} | "
            f"{'x'.join(map(str, card.min_input_size))} |"
        )
    lines += ["", "Where each parameter count comes from (the tests check it against the built model):", ""]
    lines += [f"- `{name}`: {_prose(card.reference)}" for name, card in zip(names, cards, strict=True)]
    lines += ["", "## Architecture", "", *_stage_table(names[0])]
    lines += ["", "## Paper, and where the code departs from it", "", docstring_markdown(inspect.getdoc(module)), ""]
    return "\n".join(lines)


COMPARED = ["lenet5", "alexnet", "vgg16", "googlenet_tv", "inception_v3", "resnet50", "convnext_tiny", "unet"]
# The page's columns out of `zoo compare`'s (header on the page, header in the table); the CSV has them all.
PAGE_COLUMNS = {
    "model": "model",
    "input": "input",
    "parameters": "params",
    "GMACs": "GMACs",
    "act. MB": "act. MB",
    "weights MB (fp32 / bf16)": "weights MB fp32 / bf16",
    "RF": "RF",
    "min input": "min input",
}


def compare_table(rows: list) -> str:
    """A few of `zoo compare`'s columns, as many as the page's width takes."""
    header = [name for name, _ in _COLUMNS]
    align = dict(_COLUMNS)
    lines = ["| " + " | ".join(PAGE_COLUMNS) + " |"]
    lines.append("|" + "|".join("---:" if align[c] == "r" else "---" for c in PAGE_COLUMNS.values()) + "|")
    for row in rows:
        cells = dict(zip(header, _cells(row), strict=True))
        cells["model"] = f"`{cells['model']}`"
        lines.append("| " + " | ".join(cells[c] for c in PAGE_COLUMNS.values()) + " |")
    return "\n".join(lines)


def compare_csv() -> str:
    """docs/compare.csv: every registered model, every column (`zoo compare --all --format csv`)."""
    return render(zoo.compare(zoo.list_models()), "csv") + "\n"


def compare_page() -> str:
    table = compare_table(zoo.compare(COMPARED))
    return (
        "---\nhide: [toc]  # a wide table: the page takes the table of contents' room\n---\n\n"
        + generated("`zoo.compare`")
        + f"""# Comparing models

`zoo compare` puts models side by side: parameters (split into stem, stages and head),
multiply-accumulates, activation memory, weight size, depth, receptive field, output stride
and minimum input size, each at the model's default input size unless `--input` says
otherwise. Everything is computed on the meta device, so no memory is allocated and every
registered model takes well under a second. On Linux, a comparison of a dozen models or more is
shared between forked worker processes, one per CPU (at most 4); `ZOO_COMPARE_WORKERS=1` keeps
it in one process.

```console
$ zoo compare {" ".join(COMPARED[:4])} \\
      {" ".join(COMPARED[4:])} --plot compare.png
$ zoo compare --all --sort macs --format csv
$ zoo compare vgg16 resnet50 --input 64
```

The same from Python returns plain data (`zoo.compare(names)` gives one `ModelStats` per
model; `zoo.analysis.render(rows, "markdown")` a table with every column). Some of the
columns, for a few models:

{table}

- **GMACs**: multiply-accumulates of the convolutions and matrix products at batch 1
  (FLOPs = 2 x MACs; torchvision's "GFLOPS" are GMACs).
- **act. MB**: megabytes of the tensors the forward pass writes at batch 1 (fp32).
- **RF**: receptive field of the last feature map.

Every registered model with every column (the split of the parameters into stem, stages and
head, the auxiliary classifiers' parameters, GFLOPs, layers, output stride):
[compare.csv](compare.csv), the output of `zoo compare --all --format csv`.

![parameters against MACs](img/compare.png)

Parameters and MACs agree with torchvision's published metadata for every architecture the
two share (tests/test_analysis.py reads it from the installed torchvision). Note the units:
torchvision's "GFLOPS" column holds GMACs; one multiply-accumulate is two FLOPs.

`zoo summary NAME [--input CxHxW]` gives the per-layer table: output shape, parameters,
MACs and receptive field of every layer, with a flag on each layer whose stride leaves
border rows or columns of its input unread, and, for the paper U-Net, the crop of every
skip connection.
"""
    )


def readme() -> str:
    """README.md with its model table (between the markers) regenerated."""
    rows = ["| model | family | paper | parameters | default input |", "|---|---|---|---:|---|"]
    for name in zoo.list_models():
        c = zoo.model_info(name)
        first = c.paper.authors.split(",")[0].split()[-1]
        size = "x".join(map(str, c.input_size))
        rows.append(f"| `{name}` | {c.family} | {first} et al. {c.paper.year} | {c.num_params:,} | {size} |")
    text = README.read_text()
    start, end = text.index(START) + len(START), text.index(END)
    return text[:start] + "\n" + "\n".join(rows) + "\n" + text[end:]


def _commands_out_of_table(table: list[str]) -> list[str]:
    """A table with a "command" column: the column goes, its commands follow in a console block."""
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in table]
    if "command" not in cells[0]:
        return table
    at = cells[0].index("command")
    rows = ["| " + " | ".join(c[:at] + c[at + 1 :]) + " |" for c in cells]
    commands = [c[at].strip("`") for c in cells[2:] if c[at].strip("`- ")]
    block = []
    for command in commands:  # a line a phone or the content column can show: long ones in two
        head, sep, tail = command.partition(" --data.root ")
        block += [f"$ {head} \\", f"      --data.root {tail}"] if sep and len(command) > 76 else [f"$ {command}"]
    return [*rows, "", "The commands of the table's rows:", "", "```console", *block, "```"]


def recipes_page() -> str:
    """recipes/README.md, made to render on the documentation site.

    The README is written for GitHub (CommonMark); the site's Python-Markdown differs:
    a list item's continuation lines need 4 spaces of indentation (GitHub takes 2), and
    commands in a narrow table column would break inside their flags, so they move below
    the table. Recipe files become names (they are not on the site), links to the docs
    become site links, and the development machine's data folder becomes ``DATA``.
    """
    text = (DOCS.parent / "recipes" / "README.md").read_text()
    text = re.sub(r"\[([\w.]+)\]\(([\w.]+\.yaml)\)", r"`\1`", text)  # recipe files: names, not links
    text = re.sub(r"\[docs/([\w.-]+\.md)\]\(\.\./docs/", r"[\1](", text).replace("](../docs/", "](")
    text = text.replace("../shared/data", "DATA")
    out: list[str] = []
    in_list = False
    table: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.lstrip().startswith("|"):
            table.append(line)
            continue
        if table:
            indent = table[0][: len(table[0]) - len(table[0].lstrip())]
            indent = "    " if in_list and indent else indent  # a table inside a list item
            out += [indent + row if row else "" for row in _commands_out_of_table([r.lstrip() for r in table])]
            table = []
        if line.startswith(("- ", "* ")):
            if in_list and out and out[-1].strip():  # Python-Markdown reads it as the paragraph's text
                out.append("")
            in_list = True
        elif line.strip() and not line.startswith(" "):
            in_list = False
        elif in_list and line.strip():
            spaces = len(line) - len(line.lstrip())
            line = " " * (4 - spaces) + line if spaces < 4 else line
        out.append(line)
    body = "\n".join(out).rstrip("\n") + "\n"
    if "DATA" in body:
        title, _, rest = body.partition("\n\n")
        body = (
            f"{title}\n\n`DATA` below stands for the folder that holds the datasets\n"
            "(MNIST in torchvision's layout, the CIFAR-10 archive, the ISBI 2012 slices).\n\n" + rest
        )
    return generated("recipes/README.md (edit that file)") + body


def pages() -> dict[Path, str]:
    out = {
        DOCS / "models.md": models_markdown(),
        DOCS / "compare.md": compare_page(),
        DOCS / "compare.csv": compare_csv(),
        DOCS / "recipes.md": recipes_page(),
        README: readme(),
    }
    for family, names in families().items():
        out[DOCS / "families" / f"{family}.md"] = family_page(family, names)
    return out


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, text in pages().items():
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    for path in stale:
        print(f"{path} is stale: run `python docs/generate.py`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
