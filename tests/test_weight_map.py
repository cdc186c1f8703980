"""The U-Net paper's weight map (Ronneberger et al. 2015, eq. 2) on labels with hand-computed distances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zoo.errors import ConfigurationError, InvalidArgumentError
from zoo.training.weight_map import WeightMapCache, class_balance, nearest_two_distances, unet_weight_map


def _strip() -> np.ndarray:
    """One row: cell A at columns 0-1, membrane at 2-5, cell B at 6-7 (4 cell and 4 membrane pixels)."""
    return np.array([[1, 1, 0, 0, 0, 0, 1, 1]])


def test_distances_to_the_two_nearest_cells_by_hand():
    d1, d2 = nearest_two_distances(_strip())
    # column 2: 1 px from A (column 1), 4 px from B (column 6); column 3: 2 and 3; symmetric on the right
    np.testing.assert_array_equal(d1[0, 2:6], [1, 2, 2, 1])
    np.testing.assert_array_equal(d2[0, 2:6], [4, 3, 3, 4])
    np.testing.assert_array_equal(d1[0, [0, 1, 6, 7]], [0, 0, 0, 0])  # inside a cell


def test_weight_map_equals_the_formula_by_hand():
    w = unet_weight_map(_strip(), w0=10, sigma=5)
    assert w.dtype == torch.float32 and w.shape == (1, 8)
    # 4 of 8 pixels per class: w_c = 1 everywhere; the border term on membrane pixels only,
    # d1 + d2 = 5 at every membrane pixel of this strip: 10 * exp(-25 / 50)
    border = 10 * math.exp(-0.5)
    torch.testing.assert_close(w, torch.tensor([[1, 1, 1 + border, 1 + border, 1 + border, 1 + border, 1, 1]]))


def test_two_dimensional_cells_and_class_balance():
    """Two 2x2 cells 3 px apart diagonally in a 6x6 slice: Euclidean distances, balance N / (2 N_class)."""
    label = np.zeros((6, 6), dtype=np.uint8)
    label[0:2, 0:2] = 1
    label[4:6, 4:6] = 1
    d1, d2 = nearest_two_distances(label)
    assert d1[2, 2] == pytest.approx(math.sqrt(2)) and d2[2, 2] == pytest.approx(math.sqrt(8))
    assert d1[0, 5] == 4 and d2[0, 5] == 4  # 4 px from A's (0, 1) and from B's (4, 5)
    wc = class_balance(label)
    assert wc[0, 0] == pytest.approx(36 / (2 * 8)) and wc[3, 3] == pytest.approx(36 / (2 * 28))
    assert float(wc.mean()) == pytest.approx(1.0)
    w = unet_weight_map(label, w0=10, sigma=5).numpy()
    expected = 36 / 56 + 10 * math.exp(-((math.sqrt(2) + math.sqrt(8)) ** 2) / 50)
    assert w[2, 2] == pytest.approx(expected, rel=1e-6)
    assert w[0, 0] == pytest.approx(36 / 16)  # inside a cell: class weight only


def test_one_cell_has_no_second_distance_and_no_border_term():
    label = np.zeros((5, 5))
    label[2, 2] = 1
    d1, d2 = nearest_two_distances(label)
    assert d1[0, 0] == pytest.approx(math.sqrt(8)) and np.isinf(d2).all()
    w = unet_weight_map(label)
    torch.testing.assert_close(w, torch.from_numpy(class_balance(label.astype(bool))))


def test_reach_limits_the_work_without_changing_the_map():
    """Cells far apart: the windowed computation gives the same map as the unwindowed formula."""
    rng = np.random.default_rng(0)
    label = (rng.random((64, 64)) > 0.6).astype(np.uint8)
    d1, d2 = nearest_two_distances(label)  # no reach: every distance
    full = class_balance(label) + np.where(label == 0, 10 * np.exp(-((d1 + d2) ** 2) / 50), 0)
    np.testing.assert_allclose(unet_weight_map(label).numpy(), full, rtol=1e-5, atol=1e-5)


def test_cache_computes_each_slice_once():
    cache = WeightMapCache()
    a = cache(0, _strip())
    assert cache(0, np.zeros((1, 8))) is a and len(cache) == 1  # keyed by index, not recomputed


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"label": np.zeros((2, 3, 3))}, InvalidArgumentError, "one \\(H, W\\) label slice"),
        ({"label": np.zeros((3, 3)), "sigma": 0}, InvalidArgumentError, "sigma must be positive"),
        ({"label": np.zeros((3, 3)), "w0": -1}, ConfigurationError, "w0 must be a number"),
    ],
)
def test_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        unet_weight_map(**kwargs)


def _cells_slice(n: int) -> np.ndarray:
    """A 64x64 label: 8x8 grid of 6x6 cells (255) separated by 2-px membranes (0), shifted per slice."""
    label = np.zeros((64, 64), dtype=np.uint8)
    for r in range(0, 64, 8):
        for c in range(0, 64, 8):
            label[r + 1 + n % 2 : r + 7, c + 1 : c + 7] = 255
    return label


def test_isbi_data_module_carries_the_weight_map_through_augmentation(tmp_path):
    from torchvision.io import write_png

    from zoo.training import ISBI2012DataModule
    from zoo.training.weight_map import WeightedLabels

    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    for n in range(4):
        label = torch.from_numpy(_cells_slice(n))[None]
        write_png(label, str(tmp_path / "labels" / f"{n}.png"))
        write_png(255 - label, str(tmp_path / "images" / f"{n}.png"))
    dm = ISBI2012DataModule(str(tmp_path), crop_size=32, val_slices=(3,), weight_map=True, batch_size=2)
    dm.setup("fit")
    x, y = dm.splits["train"].__getitems__([0, 1])
    assert y.shape == (2, 2, 64, 64) and y.dtype == torch.float32  # label and weights, stacked
    torch.testing.assert_close(y[1, 1], unet_weight_map(_cells_slice(1) > 0))  # slice 1, computed once
    torch.manual_seed(0)
    xb, target = dm.on_after_batch_transfer((x, y), 0)
    assert isinstance(target, WeightedLabels) and xb.shape == (2, 1, 32, 32)
    assert target.labels.dtype == torch.long and set(target.labels.unique().tolist()) <= {0, 1}
    # membranes between cells weigh more than cell interiors; every weight is at least a class weight
    membrane, cell = target.weights[target.labels == 0], target.weights[target.labels == 1]
    assert membrane.mean() > 2 * cell.mean() and float(target.weights.min()) > 0
    _, val_y = dm.splits["val"].__getitems__([0])
    assert val_y.dim() == 3  # evaluation keeps plain labels


def test_segmentation_loss_weighs_each_pixel():
    from zoo.training import SegmentationTask
    from zoo.training.weight_map import WeightedLabels

    task = SegmentationTask("unet_padded", model_args={"width": 4}, num_classes=2, in_channels=1)
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 2, 16, 16), torch.randint(0, 2, (2, 16, 16))
    weights = torch.rand(2, 16, 16) * 5
    per_pixel = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    torch.testing.assert_close(task._loss(logits, WeightedLabels(labels, weights)), (per_pixel * weights).mean())
    torch.testing.assert_close(task._loss(logits, labels), per_pixel.mean())  # plain labels: unweighted
