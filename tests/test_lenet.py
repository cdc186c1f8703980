"""LeNet-5: the modern form and the 1998 paper's network (C3 table, subsampling, RBF output)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from zoo.errors import ConfigurationError, InputShapeError
from zoo.models.lenet import C3_TABLE, ConnectionTableConv2d


def n_params(m: nn.Module, trainable: bool = True) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad or not trainable)


def test_modern_lenet5_layer_by_layer():
    m = zoo.create("lenet5")
    assert n_params(m) == 61_706
    sizes = [156, 2_416, 48_120, 10_164, 850]  # C1, C3, C5 (as linear), F6, output
    layers = [m.stages[0][0].conv, m.stages[1][1].conv, m.pre_logits[0], m.pre_logits[2], m.fc]
    assert [n_params(layer) for layer in layers] == sizes
    stages = m.forward_stages(torch.randn(1, 1, 32, 32))
    assert [tuple(s.shape[1:]) for s in stages] == [(6, 28, 28), (16, 10, 10)]


def test_modern_lenet5_other_input_sizes():
    m = zoo.create("lenet5", input_size=28)
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert m.pre_logits[0].in_features == 16 * 4 * 4
    with pytest.raises(InputShapeError, match="takes exactly 28x28 .* got 32x32; resize or pad"):
        m(torch.randn(1, 1, 32, 32))
    with pytest.raises(ConfigurationError, match="input_size must be at least 16, got 12"):
        zoo.create("lenet5", input_size=12)
    assert zoo.create("lenet5", input_size=16)(torch.randn(1, 1, 16, 16)).shape == (1, 10)


def test_modern_lenet5_classic_look():
    m = zoo.create("lenet5", act_layer=nn.Tanh, pool_layer=nn.AvgPool2d)
    assert isinstance(m.head_pool, nn.AvgPool2d) and isinstance(m.stages[0][0].act, nn.Tanh)
    assert n_params(m) == 61_706


def test_lenet5_1998_has_60000_trainable_parameters_by_layer():
    m = zoo.create("lenet5_1998")
    assert n_params(m) == 60_000
    c1, s2, c3 = m.stages[0][0], m.stages[1][0], m.stages[1][2]
    s4, c5, f6 = m.pre_logits[0], m.pre_logits[2], m.pre_logits[5]
    assert [n_params(x) for x in (c1, s2, c3, s4, c5, f6)] == [156, 12, 1_516, 32, 48_120, 10_164]
    # the RBF centres are fixed: a buffer, not a parameter
    assert n_params(m.fc) == 0 and m.fc.centres.shape == (10, 84)
    assert set(m.fc.centres.unique().tolist()) == {-1.0, 1.0}


def test_c3_follows_the_connection_table():
    """Output map i depends on input map j exactly when the paper's Table I connects them."""
    torch.manual_seed(0)
    conv = ConnectionTableConv2d(C3_TABLE, 5)
    for j in range(6):
        x = torch.randn(1, 6, 14, 14)
        y = x.clone()
        y[:, j] += 1.0
        changed = (conv(x) - conv(y)).abs().amax((0, 2, 3)) > 0
        assert changed.tolist() == [j in row for row in C3_TABLE], f"input map {j}"


def test_rbf_output_is_negative_squared_distance():
    m = zoo.create("lenet5_1998").eval()
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        f6 = m.forward_head(m.forward_features(x), pre_logits=True)
        logits = m(x)
    expected = -((f6[:, None, :] - m.fc.centres[None]) ** 2).sum(-1)
    torch.testing.assert_close(logits, expected)
    assert f6.abs().max() <= 1.7159  # the scaled tanh bounds F6


def test_lenet5_1998_takes_only_32x32():
    m = zoo.create("lenet5_1998")
    with pytest.raises(InputShapeError, match="takes exactly 32x32"):
        m(torch.randn(1, 1, 28, 28))


def test_lenet_learns_the_digits():
    """Six epochs on scikit-learn's bundled digits reach > 85% held-out accuracy (chance: 10%): they really train."""
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = nn.functional.pad(nn.functional.interpolate(x, size=28, mode="bilinear"), (2, 2, 2, 2))  # 32x32
    x = (x - x.mean()) / x.std()
    y = torch.tensor(digits.target)
    train, test = slice(0, 1400), slice(1400, None)
    for name in ("lenet5", "lenet5_1998"):
        torch.manual_seed(0)
        m = zoo.create(name)
        opt = torch.optim.Adam(m.parameters(), lr=2e-3)
        for _ in range(6):
            for i in torch.randperm(1400).split(64):
                loss = nn.functional.cross_entropy(m(x[train][i]), y[train][i])
                opt.zero_grad()
                loss.backward()
                opt.step()
        m.eval()
        with torch.no_grad():
            accuracy = (m(x[test]).argmax(1) == y[test]).float().mean().item()
        assert accuracy > 0.85, f"{name}: test accuracy {accuracy:.3f}"
