"""Draw the documentation's figures: `python docs/figures.py [OUT_DIR]` (default docs/img).

The code is the same as the doctests on the arithmetic page; tests/test_docs.py runs it
into a temporary folder so it cannot rot.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

FILTERS = {
    "box blur 5x5": torch.full((5, 5), 1 / 25),
    "Gaussian blur 5x5": torch.outer(*(2 * [torch.tensor([1.0, 4, 6, 4, 1]) / 16])),
    "sharpen": torch.tensor([[0.0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
    "edges (Laplacian)": torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]),
    "Sobel x": torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]),
    "Sobel y": torch.tensor([[-1.0, -2, -1], [0, 0, 0], [1, 2, 1]]),
}


def grey_photo() -> torch.Tensor:
    """scikit-learn's bundled photo of a Chinese temple, as a (1, 1, H, W) grey image in [0, 1]."""
    from sklearn.datasets import load_sample_image

    rgb = torch.tensor(load_sample_image("china.jpg"), dtype=torch.float32) / 255
    return (rgb @ torch.tensor([0.299, 0.587, 0.114]))[None, None]


def filtered(image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each classic filter applied as a convolution (reflect-padded, so the size is kept)."""
    out = {}
    for name, k in FILTERS.items():
        pad = k.shape[-1] // 2
        out[name] = F.conv2d(F.pad(image, (pad,) * 4, mode="reflect"), k[None, None])
    return out


def draw_filters(path: Path) -> None:
    image = grey_photo()
    results = {"original": image, **filtered(image)}
    fig, axes = plt.subplots(2, 4, figsize=(16, 6.2))
    for ax, (name, img) in zip(axes.flat, results.items(), strict=False):
        shown = img[0, 0]
        if name.startswith(("edges", "Sobel")):
            shown = shown.abs()
        ax.imshow((shown.clamp(0, 1) if name != "original" else shown).numpy(), cmap="gray")
        ax.set_title(name, fontsize=13)
        ax.axis("off")
    axes.flat[-1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def draw_compare(path: Path) -> None:
    """The comparison plot of the Quickstart and the comparing page: parameters against MACs."""
    from generate import COMPARED

    import zoo
    from zoo.analysis import plot

    plot(zoo.compare(COMPARED), path)


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "img"
    out.mkdir(parents=True, exist_ok=True)
    draw_filters(out / "filters.png")
    draw_compare(out / "compare.png")
    print(f"wrote {out / 'filters.png'} and {out / 'compare.png'}")
