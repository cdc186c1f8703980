"""`zoo bench`: our model against its torchvision or timm counterpart, side by side.

Both models get the same weights (imported through the family's key map), the same
input and the same settings; after a warm-up they run alternately (ours, theirs, ours,
...) so that the noise of a shared machine hits both alike, and the report gives the
median step time of each and the ratio ours / theirs (below 1: we are faster).

Modes:

- ``infer``: one forward pass in eval mode under ``torch.inference_mode``.
- ``train``: zero_grad, forward, cross-entropy on every output (aux heads included),
  backward and an SGD step.
- ``create``: whole-process runs of ``python -c "import zoo; zoo.create(NAME)"`` against
  the reference library's equivalent, alternating.

``--against onnxruntime`` times the ways to run zoo's own model for inference on this machine
instead, side by side and alternating (`bench_deployment`): eager fp32, `zoo.optimize_for_inference`
in fp32 and in bf16, and the same weights exported to ONNX (`zoo.deploy.export_onnx`, fixed
shapes) in ONNX Runtime with as many threads as torch uses.

``--optimize`` (infer) runs ours through `zoo.optimize_for_inference` and
``--recipe-defaults`` (train) runs ours with the training recipes' CPU defaults
(channels_last and bf16 autocast), while the reference keeps its plain fp32 defaults:
these measure what a user gains by using zoo's defaults rather than parity.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from zoo.checks import check_int
from zoo.errors import InvalidArgumentError
from zoo.registry import ModelCard, create, model_info

MODES = ("train", "infer", "create")


@dataclass(frozen=True)
class Settings:
    """How one side of the comparison runs."""

    channels_last: bool = False
    precision: str = "fp32"  # or "bf16" (autocast in train, bf16 weights after optimize in infer)
    compile: bool = False
    optimize: bool = False  # zoo.optimize_for_inference (ours only)


@dataclass
class BenchResult:
    name: str
    reference: str
    mode: str
    batch_size: int
    input_size: tuple[int, ...]
    ours: Settings
    theirs: Settings
    ours_times: list[float] = field(default_factory=list)
    theirs_times: list[float] = field(default_factory=list)

    @property
    def ours_median(self) -> float:
        return statistics.median(self.ours_times)

    @property
    def theirs_median(self) -> float:
        return statistics.median(self.theirs_times)

    @property
    def ratio(self) -> float:
        return self.ours_median / self.theirs_median

    def as_dict(self) -> dict:
        d = asdict(self)
        per_step = self.batch_size if self.mode != "create" else 1
        d.update(
            ours_median_s=self.ours_median,
            theirs_median_s=self.theirs_median,
            ours_images_per_s=per_step / self.ours_median,
            theirs_images_per_s=per_step / self.theirs_median,
            ratio=self.ratio,
        )
        return d

    def render(self) -> str:
        unit = "img/s" if self.mode != "create" else "runs/s"
        per_step = self.batch_size if self.mode != "create" else 1
        lines = [
            f"{self.name} vs {self.reference}: mode={self.mode}, batch {self.batch_size}, "
            f"input {'x'.join(map(str, self.input_size))}, {len(self.ours_times)} alternating runs each",
            f"  ours    {_describe(self.ours):<40} median {self.ours_median * 1e3:9.1f} ms  "
            f"{per_step / self.ours_median:8.1f} {unit}",
            f"  theirs  {_describe(self.theirs):<40} median {self.theirs_median * 1e3:9.1f} ms  "
            f"{per_step / self.theirs_median:8.1f} {unit}",
            f"  ratio ours/theirs: {self.ratio:.3f} ({'faster' if self.ratio < 1 else 'slower'} by "
            f"{abs(1 - self.ratio) * 100:.1f}%)",
        ]
        return "\n".join(lines)


def _describe(s: Settings) -> str:
    parts = [s.precision, "channels_last" if s.channels_last else "channels_first"]
    if s.compile:
        parts.append("compiled")
    if s.optimize:
        parts.append("optimize_for_inference")
    return ", ".join(parts)


def _counterpart(card: ModelCard, against: str) -> str:
    """The name of the model card's counterpart in `against` (its structured reference field)."""
    ref_name = getattr(card, against, None)
    if ref_name is None:
        has = [s for s in ("torchvision", "timm") if getattr(card, s)]
        hint = f"choose --against {' or '.join(has)}" if has else "it has no reference library model to time against"
        raise InvalidArgumentError(f"{card.name} has no {against} counterpart; {hint}")
    return ref_name


def reference_model(name: str, against: str, **kwargs) -> tuple[nn.Module, str]:
    """The reference library's model that corresponds to zoo's `name`, and its label."""
    card = model_info(name)
    ref_name = _counterpart(card, against)
    if against == "torchvision":
        import torchvision

        return getattr(torchvision.models, ref_name)(**kwargs), f"torchvision.models.{ref_name}"
    import timm

    return timm.create_model(ref_name, **kwargs), f"timm {ref_name}"


def _tensors(out) -> Iterator[Tensor]:
    if isinstance(out, Tensor):
        yield out
    elif isinstance(out, (tuple, list)):
        for o in out:
            yield from _tensors(o)


def _prepare(model: nn.Module, settings: Settings, mode: str) -> nn.Module:
    if settings.optimize:
        from zoo.inference import optimize_for_inference

        dtype = torch.bfloat16 if settings.precision == "bf16" else None
        model = optimize_for_inference(model, channels_last=settings.channels_last, dtype=dtype)
    elif settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train(mode == "train")
    if settings.compile:
        model = torch.compile(model)
    return model


def _step_fn(model: nn.Module, settings: Settings, mode: str, x: Tensor, y: Tensor) -> Callable[[], None]:
    if settings.channels_last and not settings.optimize:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = settings.precision == "bf16" and not settings.optimize
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast else contextlib.nullcontext
    if mode == "infer":

        def infer() -> None:
            with torch.inference_mode(), amp():
                model(x)

        return infer
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def train() -> None:
        opt.zero_grad(set_to_none=True)
        with amp():
            out = model(x)
            loss = sum(nn.functional.cross_entropy(o.float(), y) for o in _tensors(out))
        loss.backward()
        opt.step()

    return train


def bench_models(
    name: str,
    *,
    mode: str = "infer",
    batch_size: int = 8,
    input_size: int | None = None,
    ours: Settings = Settings(),
    theirs: Settings = Settings(),
    against: str = "torchvision",
    repeat: int = 5,
    warmup: int = 2,
) -> BenchResult:
    """Time zoo's `name` against its reference, alternating; see the module docstring."""
    if mode not in MODES:
        raise InvalidArgumentError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "create":
        return bench_creation(name, against=against, repeat=repeat)
    check_int(batch_size, "batch_size", "bench")
    check_int(repeat, "repeat", "bench")
    card = model_info(name)
    c, h, w = card.input_size
    if input_size is not None:
        check_int(input_size, "input", "bench")
        h = w = input_size
    torch.manual_seed(0)
    ref, label = reference_model(name, against)
    from zoo.weights import import_weights

    model = import_weights(create(name), ref, source=against)
    x = torch.randn(batch_size, c, h, w)
    y = torch.randint(0, card.num_classes, (batch_size,))
    steps = {
        "ours": _step_fn(_prepare(model, ours, mode), ours, mode, x, y),
        "theirs": _step_fn(_prepare(ref, theirs, mode), theirs, mode, x, y),
    }
    result = BenchResult(name, label, mode, batch_size, (c, h, w), ours, theirs)
    for _ in range(warmup + (3 if ours.compile or theirs.compile else 0)):
        steps["ours"]()
        steps["theirs"]()
    for i in range(repeat):
        # alternate which side goes first, so neither always follows the other
        order = ("ours", "theirs") if i % 2 == 0 else ("theirs", "ours")
        for side in order:
            t = time.perf_counter()
            steps[side]()
            (result.ours_times if side == "ours" else result.theirs_times).append(time.perf_counter() - t)
    return result


def bench_creation(name: str, *, against: str = "torchvision", repeat: int = 5) -> BenchResult:
    """Whole-process `import + create` of ours against the reference library's, alternating."""
    card = model_info(name)
    ref_name = _counterpart(card, against)
    ours_code = f"import zoo; zoo.create({name!r})"
    if against == "torchvision":
        theirs_code = f"import torchvision; torchvision.models.{ref_name}()"
    else:
        theirs_code = f"import timm; timm.create_model({ref_name!r})"
    result = BenchResult(name, against, "create", 1, card.input_size, Settings(), Settings())
    for i in range(repeat + 1):
        order = ((ours_code, result.ours_times), (theirs_code, result.theirs_times))
        for code, times in order if i % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            if i > 0:  # the first round warms the file cache
                times.append(time.perf_counter() - t)
    return result


@dataclass
class DeployBenchResult:
    """`bench_deployment`'s times: one list per way of running the model."""

    name: str
    batch_size: int
    input_size: tuple[int, ...]
    threads: int
    times: dict[str, list[float]] = field(default_factory=dict)
    onnx_max_abs_diff: float = 0.0

    def medians(self) -> dict[str, float]:
        return {path: statistics.median(t) for path, t in self.times.items()}

    def as_dict(self) -> dict:
        eager = self.medians()[DEPLOY_PATHS[0]]
        return {
            **asdict(self),
            "median_s": self.medians(),
            "images_per_s": {p: self.batch_size / m for p, m in self.medians().items()},
            "speedup_vs_eager": {p: eager / m for p, m in self.medians().items()},
        }

    def render(self) -> str:
        medians = self.medians()
        eager = medians[DEPLOY_PATHS[0]]
        runs = len(next(iter(self.times.values())))
        lines = [
            f"{self.name}: inference, batch {self.batch_size}, input {'x'.join(map(str, self.input_size))}, "
            f"{runs} alternating runs each, {self.threads} threads",
            f"  {'path':<30} {'median ms':>10} {'img/s':>9} {'vs eager':>9}",
        ]
        for path, m in medians.items():
            lines.append(f"  {path:<30} {m * 1e3:10.2f} {self.batch_size / m:9.1f} {eager / m:8.2f}x")
        fastest = min(medians, key=medians.get)
        lines.append(f"  fastest: {fastest}; ONNX Runtime vs eager fp32: max |difference| {self.onnx_max_abs_diff:.1e}")
        return "\n".join(lines)


DEPLOY_PATHS = ("eager fp32", "optimize_for_inference fp32", "optimize_for_inference bf16", "onnxruntime fp32")


def bench_deployment(
    name: str, *, batch_size: int = 8, input_size: int | None = None, repeat: int = 5, warmup: int = 2
) -> DeployBenchResult:
    """Time zoo's `name` for inference: eager, optimize_for_inference (fp32, bf16) and ONNX Runtime, alternating.

    The same random weights (seed 0) and input for every path; the ONNX file is exported at
    this batch and size (fixed shapes, weights inside) into a temporary folder.
    """
    import tempfile

    from zoo.deploy import OnnxModel, export_onnx, max_abs_difference
    from zoo.inference import optimize_for_inference

    check_int(batch_size, "batch_size", "bench")
    check_int(repeat, "repeat", "bench")
    card = model_info(name)
    c, h, w = card.input_size
    if input_size is not None:
        check_int(input_size, "input", "bench")
        h = w = input_size
    torch.manual_seed(0)
    model = create(name).eval()
    x = torch.randn(batch_size, c, h, w)
    fp32 = optimize_for_inference(model)
    bf16 = optimize_for_inference(model, dtype=torch.bfloat16)
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as folder:
        path = export_onnx(model, Path(folder) / f"{name}.onnx", input_size=(c, h, w), batch_size=batch_size)
        session = OnnxModel(path)  # its threads: torch's
    with torch.inference_mode():
        reference = model(x)
    steps: dict[str, Callable[[], object]] = {
        DEPLOY_PATHS[0]: lambda: _eager(model, x),
        DEPLOY_PATHS[1]: lambda: fp32(x),
        DEPLOY_PATHS[2]: lambda: bf16(x),
        DEPLOY_PATHS[3]: lambda: session(x),
    }
    result = DeployBenchResult(name, batch_size, (c, h, w), torch.get_num_threads(), {p: [] for p in steps})
    result.onnx_max_abs_diff = max_abs_difference(session(x), reference)
    for _ in range(warmup):
        for step in steps.values():
            step()
    order = list(steps)
    for i in range(repeat):
        # rotate which path goes first, so that none always follows the same one
        for path in order[i % len(order) :] + order[: i % len(order)]:
            t = time.perf_counter()
            steps[path]()
            result.times[path].append(time.perf_counter() - t)
    return result


def _eager(model: nn.Module, x: Tensor) -> Tensor:
    with torch.inference_mode():
        return model(x)


def main(args) -> int:
    """Entry point of ``zoo bench`` (arguments parsed in zoo.cli)."""
    if args.against == "onnxruntime":
        others = [f for f, on in (("--optimize", args.optimize), ("--recipe-defaults", args.recipe_defaults),
                  ("--channels-last", args.channels_last), ("--precision", args.precision != "fp32"),
                  ("--compile", args.compile), ("--mode", args.mode != "infer")) if on]  # fmt: skip
        if others:
            raise InvalidArgumentError(
                f"{others[0]} is not for --against onnxruntime, which times every inference path of zoo's model "
                "(eager, optimize_for_inference fp32 and bf16, ONNX Runtime) side by side"
            )
        deployed = bench_deployment(args.name, batch_size=args.batch_size, input_size=args.input, repeat=args.repeat)
        print(json.dumps(deployed.as_dict(), indent=2) if args.format == "json" else deployed.render())
        return 0
    common = {"channels_last": args.channels_last, "precision": args.precision, "compile": args.compile}
    theirs = Settings(**common)
    ours = Settings(**common)
    if args.optimize:  # optimize_for_inference's defaults: channels_last, and bf16 weights if asked
        ours = Settings(channels_last=True, precision=args.precision, compile=args.compile, optimize=True)
    if args.recipe_defaults:
        ours = Settings(channels_last=True, precision="bf16", compile=args.compile)
    if args.optimize or args.recipe_defaults:
        theirs = Settings(compile=args.compile)  # the reference keeps its plain defaults
    result = bench_models(
        args.name,
        mode=args.mode,
        batch_size=args.batch_size,
        input_size=args.input,
        ours=ours,
        theirs=theirs,
        against=args.against,
        repeat=args.repeat,
    )
    print(json.dumps(result.as_dict(), indent=2) if args.format == "json" else result.render())
    return 0
