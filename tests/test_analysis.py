"""zoo.analysis: exact counts against torchvision's metadata, per-layer summaries, compare tables and plots."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

import zoo
from zoo import analysis
from zoo.arithmetic import module_chain
from zoo.cli import main

torchvision = pytest.importorskip("torchvision")


def torchvision_name(card: zoo.ModelCard) -> str | None:
    """The torchvision builder a model card names as its reference, if any."""
    return card.torchvision


SHARED = [n for n in zoo.list_models() if torchvision_name(zoo.model_info(n))]
# torchvision's GoogLeNet weights ship without the auxiliary classifiers (its metadata counts
# 6,624,904 parameters); its Inception-v3 weights keep them.
WITHOUT_AUX = {"googlenet_tv"}


# --------------------------------------------------------------------------- the references


def test_every_architecture_torchvision_documents_is_checked():
    names = {torchvision_name(zoo.model_info(n)) for n in SHARED}
    assert {"resnet50", "vgg16", "convnext_tiny", "googlenet", "inception_v3", "alexnet"} <= names


@pytest.mark.parametrize("name", SHARED)
def test_params_and_macs_match_torchvision_metadata(name):
    """Parameters equal and MACs within 0.5% of torchvision's weights metadata (its "GFLOPS" are GMACs)."""
    meta = torchvision.models.get_model_weights(torchvision_name(zoo.model_info(name))).DEFAULT.meta
    stats = analysis.analyze(name)
    assert stats.error is None
    params = stats.params - stats.params_unused if name in WITHOUT_AUX else stats.params
    assert params == meta["num_params"]
    assert stats.macs == pytest.approx(meta["_ops"] * 1e9, rel=0.005), f"{stats.gmacs:.3f} vs {meta['_ops']}"
    assert stats.flops == 2 * stats.macs


def test_googlenet_without_aux_is_torchvision_googlenet():
    stats = analysis.analyze(zoo.create("googlenet_tv", aux_logits=False))
    assert stats.params == 6_624_904 and stats.params_unused == 0
    assert stats.macs == pytest.approx(1.498e9, rel=0.005)


def test_inception_v3_counts_at_299_and_aux_heads_are_not_run():
    stats = analysis.analyze("inception_v3")
    assert stats.input_size == (3, 299, 299)
    assert stats.params_unused == 3_326_696  # the auxiliary classifier: training only
    assert stats.params_stem + stats.params_stages + stats.params_head + stats.params_unused == stats.params


def test_convnext_linear_layers_on_4d_tensors_count_every_position():
    """torchinfo counts ConvNeXt's MLP (nn.Linear on (B, H, W, C)) once per image: 0.32 GMACs in all."""
    rows = {r.name: r for r in analysis.summary("convnext_tiny").layers}
    assert rows["stages.0.blocks.0.fc1"].macs == 56 * 56 * 96 * 384
    assert rows["stages.3.blocks.2.fc2"].macs == 7 * 7 * 4 * 768 * 768
    assert analysis.analyze("convnext_tiny").macs == pytest.approx(4.456e9, rel=0.001)


# --------------------------------------------------------------------------- counting rules


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)  # 8x8 out
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)  # 4x4
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2)  # 2x2
        self.up = nn.ConvTranspose2d(16, 4, 2, stride=2)  # 4x4
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn(self.conv1(x))))
        x = self.up(self.conv2(x) + 1)
        return self.fc(x.flatten(1))


def test_hand_checked_macs_of_a_tiny_net():
    torch.manual_seed(0)
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = analysis.analyze(model, "3x8x8")
    conv1 = 8 * 8 * 8 * (3 * 3 * 3)  # output positions x channels x (cin x k x k)
    conv2 = 2 * 2 * 16 * (4 * 3 * 3)  # groups=2: each output channel sees 4 input channels
    up = 2 * 2 * 16 * (4 * 2 * 2)  # every input position spreads to 4 channels x 2x2
    fc = 64 * 10
    assert stats.macs == conv1 + conv2 + up + fc == 17_792
    assert stats.params == sum(p.numel() for p in model.parameters())
    assert stats.layers == 4
    # the model itself is untouched: real weights, still in training mode
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    # activations: conv1, bn, pool, conv2, +1, up, fc outputs (relu makes a new tensor here), fp32
    assert stats.activations_mb == pytest.approx(4 * (512 + 512 + 512 + 128 + 64 + 64 + 64 + 10) / 1e6, abs=1e-6)


class Check(TorchDispatchMode):
    """Runs every operator for real and checks what `analysis._fast` and `analysis._macs` say about it."""

    def __init__(self) -> None:
        super().__init__()
        self.fast = self.macs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        real = func(*args, **kwargs)
        fast = analysis._fast(func, args, kwargs)
        if fast is not None:
            self.fast += 1
            ours, theirs = tree_flatten(fast)[0], tree_flatten(real)[0]
            for a, b in zip(ours, theirs, strict=True):
                assert (a.shape, a.stride(), a.dtype) == (b.shape, b.stride(), b.dtype), func
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.macs += 1
            assert analysis._macs(func, args, kwargs, real) == formula(*args, **kwargs, out_val=real) // 2, func
        return real


@pytest.mark.parametrize("name", zoo.list_models())
def test_fast_paths_agree_with_torch(name):
    """The shortcuts for hot operators give torch's shapes, strides and dtypes, and MACs as torch's formulas."""
    model, size = analysis._build(name, None)
    check = Check()
    with torch.no_grad(), check:
        model(torch.empty(1, *size, device="meta"))
    assert check.fast and check.macs


def _meta(*shape: int, channels_last: bool = False) -> torch.Tensor:
    t = torch.empty(shape, device="meta")
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


aten = torch.ops.aten
_CL = _meta(2, 8, 7, 5, channels_last=True)
EDGE_CASES = {  # layouts and sizes the registered models' default inputs may not reach
    "max pool, ceil mode, last window in the padding": (
        aten.max_pool2d_with_indices.default,
        (_meta(1, 3, 7, 6), [3, 3], [2, 2], [1, 1], [1, 1], True),
    ),
    "max pool, dilated, channels_last": (
        aten.max_pool2d_with_indices.default,
        (_CL, [2, 2], [1, 1], [0, 0], [2, 2], False),
    ),
    "avg pool, ceil mode, odd": (aten.avg_pool2d.default, (_meta(1, 3, 9, 10), [2, 2], [2, 2], [0, 0], True)),
    "avg pool 3d (LRN)": (aten.avg_pool3d.default, (_meta(1, 1, 12, 5, 5), [5, 1, 1], [1, 1, 1])),
    "add, channels_last + per-channel": (aten.add.Tensor, (_CL, _meta(8, 1, 1))),
    "mul, contiguous + broadcast rows": (aten.mul.Tensor, (_meta(2, 1, 5), _meta(3, 5))),
    "div by a number": (aten.div.Tensor, (_CL, 3)),
    "addcmul": (aten.addcmul.default, (_meta(8, 1, 1), _meta(8, 1, 1), _CL)),
    "cat, channels_last + contiguous": (aten.cat.default, ([_CL, _meta(2, 3, 7, 5)], 1)),
    "cat, channels_last": (aten.cat.default, ([_CL, _CL], 1)),
    "cat, cropped view": (aten.cat.default, ([_meta(1, 4, 9, 9)[:, :, 1:8, 1:8], _meta(1, 2, 7, 7)], 1)),
    "mean over H, W of channels_last": (aten.mean.dim, (_CL, [-2, -1])),
    "mean over C, kept": (aten.mean.dim, (_CL, [1], True)),
    "vector norm over H, W, kept": (aten.linalg_vector_norm.default, (_meta(2, 7, 5, 8), 2, [1, 2], True)),
    "upsample, channels_last": (aten.upsample_nearest2d.default, (_CL, [14, 10])),
    "adaptive pool": (aten._adaptive_avg_pool2d.default, (_meta(2, 8, 7, 5), [3, 3])),
    "constant pad, negative": (aten.constant_pad_nd.default, (_meta(1, 2, 6, 6), [1, -2, 0, 3])),
    "gelu of channels_last": (aten.gelu.default, (_CL,)),
}


@pytest.mark.parametrize("case", EDGE_CASES)
def test_fast_paths_agree_with_torch_at_edge_cases(case):
    func, args = EDGE_CASES[case]
    fast = analysis.counting._fast(func, args, {})
    real = func(*args)
    assert fast is not None, "the fast path should take this case"
    for a, b in zip(tree_flatten(fast)[0], tree_flatten(real)[0], strict=True):
        assert (a.shape, a.stride(), a.dtype) == (b.shape, b.stride(), b.dtype)


@pytest.mark.parametrize(
    ("func", "args"),
    [
        (aten.max_pool2d_with_indices.default, (_meta(1, 3, 2, 2), [3, 3], [1, 1], [0, 0])),  # window > input
        (aten.max_pool2d_with_indices.default, (_meta(1, 3, 8, 8), [2, 2], [2, 2], [2, 2])),  # padding > half
        (aten.add.Tensor, (_meta(2, 3), _meta(4, 3))),  # not broadcastable
        (aten.add_.Tensor, (_meta(1, 3), _meta(2, 3))),  # in place, but the result would be larger
        (aten.cat.default, ([_meta(1, 2, 4, 4), _meta(1, 2, 5, 4)], 1)),  # sizes differ off the cat dim
    ],
)
def test_fast_paths_leave_errors_to_torch(func, args):
    assert analysis.counting._fast(func, args, {}) is None
    with pytest.raises(RuntimeError):
        func(*args)


def test_receptive_field_and_output_stride():
    cases = {"alexnet": (195, 32), "vgg16": (212, 32), "resnet50": (427, 32), "lenet5": (16, 4)}
    for name, (rf, stride) in cases.items():
        stats = analysis.analyze(name)
        assert stats.receptive_field == (rf, rf) and stats.output_stride == (stride, stride), name
        assert stats.min_input_size == zoo.model_info(name).min_input_size


def test_receptive_field_through_transposed_convs_matches_gradients():
    """Where a transposed conv spreads each input position over its kernel, the field is what the gradient sees."""
    for up in (nn.ConvTranspose2d(1, 1, 2, stride=2), nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1)):
        net = nn.Sequential(
            nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 2, stride=2), nn.Conv2d(1, 1, 3), up, nn.Conv2d(1, 1, 3)
        )
        for p in net.parameters():
            nn.init.constant_(p, 1.0)
        _, rf, jump = analysis._chain_fields(module_chain(net.named_modules()))[-1]
        x = torch.ones(1, 1, 40, 40, requires_grad=True)
        y = net(x)
        widest = 0
        for i in range(4, y.shape[-1] - 4):  # every output position away from the border
            (g,) = torch.autograd.grad(y[0, 0, i, i], x, retain_graph=True)
            rows = g[0, 0].abs().sum(1).nonzero()
            widest = max(widest, int(rows.max() - rows.min()) + 1)
        assert rf == (widest, widest) and jump == (1.0, 1.0)


def test_dropped_border_flags():
    def flagged(name, size):
        return {r.name: r.note for r in analysis.summary(name, size).layers if "never reads" in r.note}

    # (226 + 2*2 - 11) % 4 = 3 rows of the padded input unused, one more than the padding
    assert flagged("alexnet", 226) == {
        "stages.0.0.conv": "stride 4 never reads the last 1 row and 1 column of its 226x226 input"
    }
    # at 224, (224 + 4 - 11) % 4 = 1: only a padding row is unused, every image row is read
    assert flagged("alexnet", 224) == {}
    # 227 suits the 2012 paper's unpadded conv1; torchvision's padded one then gives 56, odd for the pool
    assert list(flagged("alexnet", 227)) == ["stages.1.0"]
    assert list(flagged("vgg16", 225)) == ["stages.1.0"]  # the first 2x2 pool on an odd size
    assert flagged("resnet50", 225) == {}  # odd sizes are fine for ResNet's padded convs and pool
    # a 1x1/2 shortcut skips every other row by design: not a border drop
    assert flagged("resnet50", 224) == {}


def test_summary_rows_add_up_to_the_totals():
    for name in ("alexnet", "googlenet", "convnext_tiny", "lenet5_1998"):
        s = analysis.summary(name)
        assert sum(r.params for r in s.layers) + (s.stats.params_unused or 0) == s.stats.params, name
        assert sum(r.macs for r in s.layers) == s.stats.macs, name


@pytest.mark.skipif("unet" not in zoo.list_models(), reason="the paper's U-Net is not registered")
def test_summary_shows_the_unet_skip_crops():
    s = analysis.summary("unet")
    crops = [r for r in s.layers if r.type == "(skip crop)"]
    assert [r.note.split(" (")[0] for r in crops] == [
        "skip cropped 64x64 -> 56x56",
        "skip cropped 136x136 -> 104x104",
        "skip cropped 280x280 -> 200x200",
        "skip cropped 568x568 -> 392x392",  # the paper's Figure 1
    ]
    assert s.stats.output_stride == (1, 1)


def test_analysis_on_meta_is_fast():
    analysis.analyze("convnext_xlarge")  # warm-up: imports
    start = time.perf_counter()
    stats = analysis.analyze("convnext_xlarge")
    assert time.perf_counter() - start < 1.0
    assert stats.params == 350_196_968 and stats.weights_mb_fp32 == pytest.approx(1400.8, abs=0.1)


def test_import_zoo_stays_light():
    code = "import sys, zoo; print(sorted(m for m in ('matplotlib', 'zoo.analysis', 'timm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- compare


def test_compare_lists_models_that_cannot_take_the_input():
    rows = zoo.compare(["alexnet", "lenet5", "vgg11"], input_size=224, sort="macs")
    assert [r.name for r in rows] == ["alexnet", "vgg11", "lenet5"]  # without a value: last
    lenet = rows[-1]
    assert lenet.macs is None and lenet.params == 61_706
    assert "takes exactly 32x32" in lenet.error
    text = analysis.render(rows)
    assert "Cannot take the requested input:" in text and "lenet5: lenet5 takes exactly 32x32" in text


def test_compare_other_channel_count_builds_the_model_for_it():
    (row,) = zoo.compare(["lenet5"], input_size="3x32x32")
    assert row.input_size == (3, 32, 32) and row.params == 61_706 + 2 * 6 * 25


def test_compare_cli_formats(capsys):
    assert main(["compare", "alexnet", "resnet50", "--sort", "macs"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["model", "family", "input"]
    assert lines[2].startswith("alexnet") and lines[3].startswith("resnet50")
    assert "61,100,840" in out and "4.089" in out and "8.178" in out

    assert main(["compare", "alexnet", "resnet50", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[1]["macs"] * 2 == data[1]["flops"] and data[1]["receptive_field"] == [427, 427]

    assert main(["compare", "alexnet", "lenet5", "--input", "224", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["params"] == "61100840" and rows[1]["error"].startswith("lenet5 takes exactly 32x32")

    assert main(["compare", "vgg16", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| model | family |") and "| vgg16 | vgg | 3x224x224 | 138,357,544 |" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare"], "give model names or --all"),
        (["compare", "vgg16", "--input", "3x"], "input size '3x' is not understood"),
        (["compare", "vgg166"], "unknown model 'vgg166'"),
        (["summary", "alexnet", "--input", "32"], "alexnet cannot take a 3x32x32 input"),
        (["compare", "vgg16", "--plot", "/no/such/folder/p.png"], "its folder does not exist"),
    ],
)
def test_cli_user_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zoo: error: ") and message in err[0]


def test_summary_cli(capsys):
    assert main(["summary", "alexnet", "--input", "3x224x224"]) == 0
    out = capsys.readouterr().out
    assert "stages.0.0.conv  Conv2d" in out and "64x55x55" in out
    assert "MACs:         714,188,480 (0.714 G); FLOPs = 2 x MACs = 1.428 G" in out
    assert "never read" not in out
    assert main(["summary", "alexnet", "--input", "226"]) == 0
    assert "1 layer(s) never read the last rows/columns of their input at this size" in capsys.readouterr().out


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    rows = zoo.compare(["vgg16", "resnet50", "convnext_tiny", "googlenet", "alexnet", "lenet5"])
    path = analysis.plot(rows, tmp_path / "params_vs_macs.png")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 30_000  # a real picture, not an empty canvas


def test_cli_sort_choices_are_the_sort_keys():
    from zoo.cli import build_parser

    compare_parser = build_parser()._subparsers._group_actions[0].choices["compare"]
    (sort,) = [a for a in compare_parser._actions if a.dest == "sort"]
    assert set(sort.choices) == set(analysis.SORT_KEYS)


def test_compare_table_fits_a_terminal_and_says_what_it_left_out(monkeypatch, capsys):
    """On an 80-column terminal every line of `zoo compare --all` fits; piped or with --wide, every column."""
    import shutil
    import sys

    from zoo.analysis import compare, render
    from zoo.cli import main

    rows = compare(["resnet18", "vgg16", "googlenet"])
    full = render(rows, "table")
    assert "GFLOPs" in full and "left out" not in full and render(rows, "table", width=None) == full
    narrow = render(rows, "table", width=80)
    assert max(len(line) for line in narrow.splitlines()) <= 80
    assert "left out to fit 80 columns" in narrow and "GFLOPs" not in narrow.splitlines()[0]
    assert narrow.splitlines()[0].split()[:2] == ["model", "input"]  # the name and the size stay

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *a, **k: os.terminal_size((80, 24)))
    assert main(["compare", "--all"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80 and "--wide shows every column" in out
    assert main(["compare", "--all", "--wide"]) == 0
    assert "GFLOPs" in capsys.readouterr().out.splitlines()[0]


def test_comparing_every_model_imports_neither_dynamo_nor_sympy():
    # `zoo compare --all` stays fast: importing zoo does not import torch._dynamo (1-2 s), and the
    # counting run makes the outputs of the operators whose meta kernels are Python (behind a
    # wrapper that imports dynamo, or calling torch._check, which imports sympy: 0.4 s) itself,
    # for every registered model
    import subprocess
    import sys

    code = (
        "import sys, zoo\n"
        "assert 'torch._dynamo' not in sys.modules, 'import zoo imported torch._dynamo'\n"
        "from zoo.analysis import compare\n"
        "rows = compare()\n"
        "assert len(rows) == len(zoo.list_models()) and all(r.macs for r in rows if r.error is None)\n"
        "imported = [m for m in ('torch._dynamo', 'sympy') if m in sys.modules]\n"
        "assert not imported, f'compare() imported {imported}'\n"
    )
    env = {**os.environ, "ZOO_COMPARE_WORKERS": "1"}  # in this process: a worker's imports would not show here
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr


def test_compare_in_worker_processes_gives_the_rows_of_one_process(monkeypatch):
    """Every registered model, and one registered by the user here: the forked workers (2, whatever the
    machine has) return what one process computes, in the same order."""
    from zoo.analysis import compare, tables
    from zoo.models.lenet import LeNet5, LeNetConfig
    from zoo.registry import Variant, register_model

    names = zoo.list_models()
    monkeypatch.setenv("ZOO_COMPARE_WORKERS", "2")
    if sys.platform != "linux":
        assert tables._workers(len(names)) == 1
        pytest.skip("the workers are forked: Linux only")
    assert tables._workers(len(names)) == 2 and tables._workers(11) == 1  # too few models to share
    parallel = compare(input_size=64)
    monkeypatch.setenv("ZOO_COMPARE_WORKERS", "1")
    assert tables._workers(len(names)) == 1
    assert [r.as_dict() for r in parallel] == [r.as_dict() for r in compare(input_size=64)]
    assert [r.name for r in parallel] == names

    card = zoo.model_info("lenet5")
    monkeypatch.setattr(zoo.registry, "_REGISTRY", dict(zoo.registry._REGISTRY))  # restored after the test
    register_model(
        family="custom",
        paper=card.paper,
        input_size=card.input_size,
        min_input_size=card.min_input_size,
        mean=card.mean,
        std=card.std,
        num_classes=10,
        variants={"my_lenet": Variant(LeNetConfig(widths=(8, 16)), 62_558, "mine")},
    )(type("MyLeNet", (LeNet5,), {}))
    monkeypatch.setenv("ZOO_COMPARE_WORKERS", "2")
    rows = compare(["my_lenet", *names[:11]])
    assert [r.name for r in rows] == ["my_lenet", *names[:11]]
    assert rows[0].params == 62_558 and rows[0].family == "custom"  # (6, 16) -> (8, 16): lenet5's 61,706 + 852


def test_compare_workers_variable_is_checked(monkeypatch):
    from zoo.analysis import compare
    from zoo.errors import InvalidArgumentError

    monkeypatch.setenv("ZOO_COMPARE_WORKERS", "two")
    with pytest.raises(InvalidArgumentError, match="ZOO_COMPARE_WORKERS must be a whole number"):
        compare(["lenet5"])
