"""The `zoo` command line: ``zoo list [PATTERN]``, ``zoo info NAME``, ``zoo summary NAME``,
``zoo compare NAME... | --all``, ``zoo bench NAME``, and ``zoo fit | validate | test | predict --config RECIPE.yaml``
(handed to `zoo.training.cli`, LightningCLI).

A user's mistake prints one line on stderr and exits with status 2; ``--debug`` shows
the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys

from zoo.errors import InvalidArgumentError, ZooError

DEFAULT_OPSET = 17  # zoo.deploy.DEFAULT_OPSET (not imported here: `zoo --help` stays fast)


def _cmd_list(args: argparse.Namespace) -> int:
    from zoo.registry import list_models, model_info

    names = list_models(args.pattern, task=args.task)
    if not names:
        print(f"zoo: no model matches {args.pattern!r}; run `zoo list` to see them all", file=sys.stderr)
        return 1
    if args.names_only:
        print("\n".join(names))
        return 0
    rows = [(n, model_info(n)) for n in names]
    width = max(len(n) for n in names)
    print(f"{'name':<{width}}  {'family':<8}  {'task':<14}  {'params':>12}  {'input':>11}  paper")
    for n, c in rows:
        size = "x".join(map(str, c.input_size))
        print(f"{n:<{width}}  {c.family:<8}  {c.task:<14}  {c.num_params:>12,}  {size:>11}  {c.paper.year}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from zoo.registry import model_info
    from zoo.weights import list_weights

    card = model_info(args.name)
    weights = list_weights(card.name)
    if args.json:
        print(json.dumps({**card.as_dict(), "pretrained": weights}, indent=2))
        return 0
    lines = [card.to_text()]
    if not weights:
        lines.append("  weights:        none pretrained; train with a recipe (zoo fit) or pass weights=PATH")
    else:
        lines.append(
            f"  weights:        {len(weights)} pretrained; zoo.create({card.name!r}, weights=NAME) downloads one"
        )
    for w in weights:
        acc = w.get("accuracy") or {}
        known = isinstance(acc.get("top1"), float) and not math.isnan(acc["top1"])  # VGG16's FEATURES: nan
        top1 = f"top-1 {acc['top1']:.2f}% ({acc['dataset']})" if known else "top-1 not in its metadata"
        size = f"resize {w['resize_size']} crop {w['crop_size']} {w['interpolation']}" if "crop_size" in w else ""
        lines.append(f"    {w['weights']:<37} {w.get('num_classes') or '-'!s:>6} classes  {top1:<30} {size}")
    print("\n".join(lines))
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from zoo.analysis import summary

    print(summary(args.name, args.input).to_text())
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from zoo.analysis import compare, plot, render

    if bool(args.names) == args.all:
        raise InvalidArgumentError("give model names or --all (not both), e.g. `zoo compare vgg16 resnet50`")
    if args.plot and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        raise InvalidArgumentError(f"cannot write the plot to {args.plot}: its folder does not exist")
    rows = compare(None if args.all else args.names, args.input, sort=args.sort)
    # on a terminal the table fits its width; piped (a file, a script) it keeps every column
    width = None if args.wide or not sys.stdout.isatty() else shutil.get_terminal_size().columns
    print(render(rows, args.format, width=width))
    if args.plot:
        path = plot(rows, args.plot)
        print(f"plot written to {path}", file=sys.stderr)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from zoo.bench import main as bench_main

    return bench_main(args)


def _cmd_export(args: argparse.Namespace) -> int:
    if args.output and args.output.endswith(".onnx"):
        from zoo.deploy import export_run

        path = export_run(
            args.checkpoint,
            args.output,
            model=args.model,
            input_size=args.input,
            dynamic_batch=args.dynamic_batch,
            dynamic_size=args.dynamic_size,
            opset=args.opset,
        )
        print(f"wrote {path}; run it with onnxruntime, or zoo predict --ckpt_path {path} --data.predict_root IMAGES")
        return 0
    onnx_only = {
        "--model": args.model,
        "--input": args.input,
        "--dynamic-batch": args.dynamic_batch,
        "--dynamic-size": args.dynamic_size,
        "--opset": args.opset != DEFAULT_OPSET,
    }
    given = [flag for flag, value in onnx_only.items() if value]
    if given:
        raise InvalidArgumentError(f"{given[0]} is for an ONNX export: give an output file ending in .onnx")
    from zoo.weights import export_weights

    path = export_weights(args.checkpoint, args.output, name=args.name)
    card = path.with_suffix(".json")
    also = f" and its card {card}" if path.suffix == ".safetensors" and card.is_file() else ""
    print(f"wrote {path}{also}; load it with zoo.create(MODEL, weights={str(path)!r})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo",
        description="The classic convolutional networks, by name.",
        epilog="Training: zoo fit|validate|test|predict --config RECIPE.yaml [--trainer.max_epochs N ...] "
        "(LightningCLI; `zoo fit --help`, docs/training.md).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'vgg*'")
    p.add_argument("--task", choices=["classification", "segmentation"])
    p.add_argument("--names-only", action="store_true", help="print only the names")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="show a model's card")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print the card as JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("summary", help="per-layer table: output shape, parameters, MACs, receptive field")
    p.add_argument("name")
    p.add_argument("--input", help="input size: S, HxW or CxHxW (default: the model card's)")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("compare", help="parameters, MACs, memory and receptive field of models side by side")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--all", action="store_true", help="every registered model")
    p.add_argument("--input", help="input size for every model: S, HxW or CxHxW (default: each card's)")
    p.add_argument("--sort", choices=["name", "family", "year", "params", "macs", "flops", "activations",
                                      "weights", "layers", "rf"])  # fmt: skip
    p.add_argument("--format", choices=["table", "markdown", "csv", "json"], default="table")
    p.add_argument("--plot", metavar="FILE.png", help="also write parameters against MACs as a plot")
    p.add_argument("--wide", action="store_true", help="every column, however wide the terminal")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser(
        "bench",
        help="time a model against its torchvision/timm counterpart, side by side",
        description="Time zoo's model and its reference (torchvision, timm, or zoo's own optimized and ONNX Runtime "
        "paths) on the same input, alternating between them, and print the medians and their ratio. Compare "
        "ratios measured in one run, on a quiet machine.",
    )
    p.add_argument("name", help="a registered model (zoo list)")
    p.add_argument(
        "--mode",
        choices=["train", "infer", "create"],
        default="infer",
        help="what is timed: a forward (infer, the default), a training step, or building the model",
    )
    p.add_argument("--batch-size", type=int, default=8, help="images per step (default: 8)")
    p.add_argument("--input", type=int, help="square input size (default: the model card's)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (both sides)")
    p.add_argument(
        "--precision", choices=["fp32", "bf16"], default="fp32", help="fp32 (the default) or bf16 autocast (both sides)"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--optimize", action="store_true", help="ours through zoo.optimize_for_inference (infer)")
    p.add_argument(
        "--recipe-defaults", action="store_true", help="ours with the recipes' CPU defaults: channels_last + bf16"
    )
    p.add_argument(
        "--against",
        choices=["torchvision", "timm", "onnxruntime"],
        default="torchvision",
        help="the reference library; onnxruntime: zoo's model eager, optimized (fp32, bf16) and in ONNX Runtime",
    )
    p.add_argument("--repeat", type=int, default=5, help="timed runs of each model; medians are reported (default: 5)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("export", help="write a run's network as safetensors with a JSON card, or as ONNX (OUT.onnx)")
    p.add_argument("checkpoint", help="a `zoo fit` run folder, checkpoint (.ckpt) or weights file")
    p.add_argument(
        "output", nargs="?", help="OUT.safetensors (or OUT.pt; with --name, a folder), or OUT.onnx for ONNX Runtime"
    )
    p.add_argument("--name", help="write NAME.safetensors and NAME.json (model, recipe, data, metrics, sha256)")
    p.add_argument("--model", help="ONNX: the model the weights are for (when the file does not say)")
    p.add_argument("--input", help="ONNX: input size S, HxW or CxHxW (default: the run's, else the model card's)")
    p.add_argument("--dynamic-batch", action="store_true", help="ONNX: any batch size at run time")
    p.add_argument("--dynamic-size", action="store_true", help="ONNX: any valid height and width (where possible)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.set_defaults(func=_cmd_export)
    return parser


TRAINING_COMMANDS = ("fit", "validate", "test", "predict")


def _onnx_file(argv: list[str]) -> bool:
    """Whether ``zoo predict``'s --ckpt_path is an exported .onnx file (zoo.deploy runs it, not LightningCLI)."""
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--ckpt_path" and i + 1 < len(argv) else arg.partition("=")[2]
        if (arg == "--ckpt_path" or arg.startswith("--ckpt_path=")) and value.endswith(".onnx"):
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "predict" and _onnx_file(argv):  # an exported file needs no training stack
        from zoo.deploy import predict_main

        debug = "--debug" in argv
        try:
            return predict_main([a for a in argv[1:] if a != "--debug"])
        except ZooError as e:
            if debug:
                raise
            print(f"zoo: error: {e}", file=sys.stderr)
            return 2
    if argv and argv[0] in TRAINING_COMMANDS:  # LightningCLI parses these (imported only here)
        from zoo.training.cli import main as training_main

        return training_main(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ZooError as e:
        if args.debug:
            raise
        print(f"zoo: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
