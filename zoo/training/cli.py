"""``zoo fit | validate | test | predict --config RECIPE.yaml [--trainer.max_epochs 3 ...]``: LightningCLI.

Everything LightningCLI offers works: ``--print_config``, overrides of any key on the
command line (``--data.root ../shared/data``), several ``--config`` files. On top of it:

- Each run writes to its own folder, ``runs/<recipe>/version_<N>/`` (a CSVLogger named
  after the recipe file): ``config.yaml`` (the resolved config), ``hparams.yaml``,
  ``metrics.csv``, ``checkpoints/best.ckpt`` and ``checkpoints/last.ckpt``, ``curves.png``,
  and after testing ``metrics.json`` and the confusion matrix (see `zoo.training.report`).
- The best checkpoint is chosen by the task's own metric (``val/acc`` for classification,
  ``val/iou`` for segmentation) unless ``--checkpoint.monitor`` says otherwise.
- ``fit`` tests the best checkpoint at the end and prints the test metrics
  (``--test_after_fit false`` to skip; ``--test_ckpt last`` tests the last checkpoint
  instead, for datasets whose validation and test data are the same).
- ``--ckpt_path last`` (or ``best``) means the newest run of the same recipe: ``fit``
  resumes it in its own folder; ``validate``, ``test`` and ``predict`` evaluate that checkpoint.
- ``validate``, ``test`` and ``predict`` of a checkpoint in a run folder
  (``RUN/checkpoints/best.ckpt``) write into a sub-folder of their own, ``RUN/test/`` (its
  config, hparams, metrics, ``metrics.json``, confusion matrix), ``RUN/validate/``,
  ``RUN/predict/``, and never touch what fit wrote; they need no ``--config`` (the run's own
  ``config.yaml`` is used; other options still override it), and build the network without its
  pretrained ``weights`` (the checkpoint holds every weight: nothing is downloaded).
- A saved ``config.yaml`` (Lightning's ``# lightning.pytorch==`` header) runs again under any
  command: the options of other commands are left out, and ``fit`` starts a new run in a new
  folder instead of resuming the saved ``ckpt_path`` (it says so, and how to resume).
- ``--ckpt_path`` is checked before anything reads it (`read_checkpoint`): a missing, corrupt
  or unsafe file is one line.
- ``zoo predict --ckpt_path RUN/checkpoints/best.ckpt --data.predict_root FOLDER`` predicts
  the unlabelled images in FOLDER (any layout) and writes ``RUN/predict/predictions.csv``: path,
  class name, confidence and the next most probable classes (`ImageFolderDataModule` runs).
- The number of classes and of input channels go from the data module to the task.
- Checkpoints are written atomically (`zoo.training.checkpoint.AtomicCheckpointIO`): a kill
  while saving leaves the previous one intact.
- A user's mistake (bad YAML, an unknown key, a wrong type, a missing dataset, an unknown
  model) prints one line and exits with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks import ProgressBar as ProgressBarBase
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from zoo.errors import ZooError
from zoo.training.checkpoint import AtomicCheckpointIO, read_checkpoint
from zoo.training.cli_args import (
    SUBCOMMANDS,
    RecipeError,
    _check_configs,
    _check_epochs,
    _check_writable,
    _local_checkpoint,
    _plain_config,
    _recipe_name,
    _run_of,
    _task_class,
    _with_run_config,
    _with_saved_configs,
)
from zoo.training.health import RunHealth
from zoo.training.report import ProgressBar, ProgressLines, RunReport, run_folder
from zoo.training.tasks import weights_from_checkpoint

RUNS_DIR = "runs"


def _one_line(message: str) -> str:
    """jsonargparse's multi-line messages, squeezed into one line that keeps what matters."""
    message = re.sub(r" \(see `[^`]*`\)", "", str(message))
    key = re.search(r'Parser key "([^"]+)"', message)
    errors = [ln.strip()[2:] for ln in message.splitlines() if ln.strip().startswith("- ")]
    real = [e for e in errors if not e.startswith("Expected a <class")]
    if key and real:
        return _one_line(f"{key.group(1)}: {'; '.join(real)}")
    expected = re.findall(r"Expected a <class '([\w.]+)'>", message)
    given = re.search(r"Given value: (.*)", message)
    if key and expected and given:
        types = " or ".join(t.replace("NoneType", "null") for t in dict.fromkeys(expected))
        return f"{key.group(1)}: expected {types}, got {given.group(1).strip()!r}"
    lines = [ln.strip(" -") for ln in message.splitlines() if ln.strip(" -")]
    text = re.sub(r"\s+", " ", "; ".join(dict.fromkeys(lines)))
    return text if len(text) <= 400 else text[:397] + "..."


def _unwrapped(message: str) -> str:
    """The message of an error raised in a DataLoader worker, without the worker's traceback around it."""
    lines = message.strip().splitlines()
    if len(lines) > 1 and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        return lines[-1].split(": ", 1)[-1]  # "zoo.errors.DatasetError: cannot decode ..."
    return message


#: torch's OneCycleLR when stepped past the total it was built for
_SCHEDULE_OVERRUN = re.compile(r"Tried to step (\d+) times\. The specified number of total steps is (\d+)")


def _user_error(e: BaseException) -> ZooError | None:
    """The `ZooError` behind `e` (jsonargparse wraps errors raised while instantiating classes)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, ZooError):
            return e
        overrun = _SCHEDULE_OVERRUN.search(str(e)) if isinstance(e, ValueError) else None
        if overrun:  # a resumed run asked to train longer than the schedule it restored
            return RecipeError(
                f"the one-cycle learning-rate schedule was sized for {overrun[2]} steps and training reached step "
                f"{overrun[1]}: a run resumed with --ckpt_path keeps the schedule of the run it continues, so it "
                "cannot train for more epochs than that run planned; start a new run with the larger "
                "--trainer.max_epochs (from the old run's weights: --model.init_args.weights RUN/checkpoints/last.ckpt)"
            )
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


class ZooArgumentParser(LightningArgumentParser):
    """Parse errors become a `RecipeError` (one line) instead of usage text and `sys.exit`."""

    def error(self, message: str, ex: Exception | None = None) -> Any:
        command = self.prog.split()[-1] if self.prog.split()[-1] in SUBCOMMANDS else "fit"
        hint = f"see `zoo {command} --help`"
        if re.search(r"arguments are required: \w+\.(data|model)\b", message):
            hint = "give a recipe: --config recipes/NAME.yaml"
        text = _one_line(message)
        if text.endswith(("--help`)", "NAME.yaml)")):  # raised again by an enclosing parser: hinted already
            raise RecipeError(text) from ex
        raise RecipeError(f"{text} ({hint})") from ex


class ZooCLI(LightningCLI):
    """LightningCLI with zoo's run folders, best/last checkpoints, test after fit and reports."""

    def __init__(self, *args: Any, recipe: str = "default", **kwargs: Any) -> None:
        self.recipe = recipe
        self.started = time.perf_counter()
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.filename": "best",
                "checkpoint.save_last": True,
                "checkpoint.enable_version_counter": False,
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.init_args.in_channels", apply_on="instantiate")

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "fit":
            parser.add_argument(
                "--test_after_fit",
                type=bool,
                default=True,
                help="test the best checkpoint when fitting ends and print the test metrics",
            )
            parser.add_argument(
                "--test_ckpt",
                type=Literal["best", "last"],
                default="best",
                help="which checkpoint the test after fit uses: 'last' where the validation data are "
                "also the test data (ISBI 2012), so that no choice was made on them",
            )
        return parser

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        # LightningCLI reads the checkpoint's hyperparameters next: a missing, corrupt or unsafe file is
        # one line here, before it (or Lightning) loads it
        subcommand = self.config.get("subcommand")
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        if _local_checkpoint(ckpt):
            read_checkpoint(ckpt)

    # ------------------------------------------------------------------ before instantiation
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        checkpoint = config["checkpoint"]
        if checkpoint.get("monitor") is None:
            task = _task_class(config["model"])
            if task is not None and hasattr(task, "monitor"):
                checkpoint["monitor"], checkpoint["mode"] = task.monitor
        if self.subcommand == "fit":
            _check_epochs(config["trainer"])
        root = self._run_root(config)
        if root is not None:
            _check_writable(root)
        ckpt = config.get("ckpt_path")
        if ckpt in ("last", "best"):
            self._resolve_checkpoint(config, ckpt)
        elif _local_checkpoint(ckpt):
            run = _run_of(Path(ckpt))
            if run is not None and self.subcommand != "fit":
                self._log_into(config, run)

    def instantiate_classes(self) -> None:
        # evaluating a checkpoint: it holds every weight, so the pretrained ones are not loaded (nor downloaded)
        from_checkpoint = self.subcommand != "fit" and bool(self.config[self.subcommand].get("ckpt_path"))
        with weights_from_checkpoint() if from_checkpoint else contextlib.nullcontext():
            super().instantiate_classes()

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        # hparams.yaml (and the checkpoint) record the data module's class and arguments under `data`,
        # beside the task's own (a key of their own: a task and a data module may share argument names)
        data = self.config[self.subcommand]["data"] if self.subcommand else None
        if data is not None and self.datamodule is not None:
            self.datamodule.save_hyperparameters({"data": _plain_config(data)})

    def _log_into(self, config: Any, run: Path) -> None:
        """Write this command's outputs (its config, metrics, predictions) into ``RUN/<command>/``, a sub-folder
        of the checkpoint's run folder: evaluation never touches the files that fit wrote."""
        if self._run_root(config) is None:
            return
        args = config["trainer"]["logger"]["init_args"]
        try:  # as fit named it, when run from the same folder
            save_dir = os.path.relpath(run.parent.parent)
        except ValueError:  # another drive
            save_dir = ".."
        save_dir = str(run.parent.parent.resolve()) if save_dir.startswith("..") else save_dir
        args["save_dir"], args["name"], args["version"] = save_dir, run.parent.name, f"{run.name}/{self.subcommand}"

    def _run_root(self, config: Any) -> Path | None:
        logger = config["trainer"].get("logger")
        if hasattr(logger, "get") and str(logger.get("class_path", "")).endswith("CSVLogger"):
            args = logger.get("init_args") or {}
            return Path(args.get("save_dir") or RUNS_DIR) / (args.get("name") or "lightning_logs")
        return None

    def _resolve_checkpoint(self, config: Any, which: str) -> None:
        """``last``/``best``: the newest run of this recipe that has that checkpoint; log into its folder."""
        root = self._run_root(config)
        if root is None:
            return
        runs = sorted(
            (p for p in root.glob("version_*") if (p / "checkpoints" / f"{which}.ckpt").is_file()),
            key=lambda p: int(p.name.split("_")[-1]) if p.name.split("_")[-1].isdigit() else -1,
        )
        if not runs:
            if self.subcommand == "fit" and which == "last":
                print(
                    f"zoo: no earlier run of {self.recipe} under {root} to resume: starting a new one", file=sys.stderr
                )
                config["ckpt_path"] = None
                return
            raise RecipeError(
                f"no {which}.ckpt under {root}/version_*/checkpoints: train first (zoo fit --config ...) "
                f"or pass --ckpt_path PATH"
            )
        run = runs[-1]
        config["ckpt_path"] = str(run / "checkpoints" / f"{which}.ckpt")
        if self.subcommand == "fit":  # resume in the run's own folder; its metrics.csv goes on
            config["trainer"]["logger"]["init_args"]["version"] = run.name
            config["trainer"]["logger"]["init_args"]["append"] = True
        else:
            self._log_into(config, run)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        # a throttled bar on a terminal, plain lines into a file or pipe; unless the config turns progress off
        # or brings its own display
        config = self._get(self.config_init, "trainer", default={})
        callbacks = list(config.get("callbacks") or [])
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBarBase) for c in callbacks
        ):
            kwargs["callbacks"] = [*callbacks, ProgressBar() if sys.stdout.isatty() else ProgressLines()]
        # checkpoints written atomically (temporary file, fsync, rename), unless the config brings a CheckpointIO
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

    # ------------------------------------------------------------------ after fit
    def after_fit(self) -> None:
        if not self.config["fit"].get("test_after_fit", True) or self.trainer.interrupted:
            return
        ckpt = self.trainer.checkpoint_callback
        which = self.config["fit"].get("test_ckpt", "best")
        path = getattr(ckpt, f"{which}_model_path", "") if ckpt is not None else ""
        # no file (checkpointing off): the weights in memory, which are the last ones
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=path or None, verbose=False)
        self.print_summary()

    def after_test(self) -> None:
        self.print_summary()

    def after_validate(self) -> None:
        self.print_summary(prefix="val/")

    def print_summary(self, prefix: str = "test/") -> None:
        if not self.trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith(prefix)}
        shown = "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
        wall = time.perf_counter() - self.started
        folder = run_folder(self.trainer) or self.trainer.default_root_dir  # fast_dev_run: no logger folder
        health = next((c for c in self.trainer.callbacks if isinstance(c, RunHealth)), None)
        said = f"; {health.summary()}" if health is not None and health.findings else ""  # the warnings above
        print(f"zoo: {self.recipe}: {shown}  (wall {wall:.1f} s; run folder {folder}{said})")


def run(argv: list[str] | None) -> ZooCLI:
    """Run the CLI on `argv` (``["fit", "--config", ...]``; None: ``sys.argv``); errors propagate (see `main`)."""
    import zoo.training  # noqa: F401  (makes the short class names resolvable)

    recipe = _recipe_name(sys.argv[1:] if argv is None else argv)
    return ZooCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_class=ZooArgumentParser,
        recipe=recipe,
        args=argv,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            # where Lightning puts what has no logger folder: --trainer.fast_dev_run's checkpoint
            # (it turns the logger off) goes under runs/RECIPE, not into the working directory
            "default_root_dir": f"{RUNS_DIR}/{recipe}",
            "logger": {
                "class_path": "zoo.training.report.CSVLogger",
                "init_args": {"save_dir": RUNS_DIR, "name": recipe},
            },
            "callbacks": [RunReport(), RunHealth()],
        },
    )


# Lightning's and torch's messages that a zoo user can do nothing about (warnings, as regexes of their start)
QUIET_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # torch's pytree, called inside Lightning
    r"The number of training batches \(\d+\) is smaller than the logging interval",  # epoch values are all logged
    r"The dirpath has changed from",  # evaluating a run's checkpoint: its callback state is not needed
    # ema_decay, testing after fit: the checkpoint's weights already are the average
    r"You're using the WeightAveraging callback, but loading a checkpoint outside the 'fit' stage",
)

# Lightning's informational log lines that a zoo user can do nothing about (their start)
QUIET_LOGS = (
    "💡 Tip",  # the advertisement for Lightning's cloud logger ("💡 Tip: ... litlogger")
    # ema_decay: the task's own EMA callback, returned again for the test after fit, replaces itself
    "The following callbacks returned in `LightningModule.configure_callbacks` will override existing "
    "callbacks passed to Trainer: EMAWeightAveraging",
)


class _NoTips(logging.Filter):
    """Drops the log lines of `QUIET_LOGS` (Lightning's tips among them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(QUIET_LOGS)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Within this block, the dependencies' messages in `QUIET_WARNINGS` and `QUIET_LOGS` are not shown."""
    lightning_log = logging.getLogger("lightning.pytorch")
    tips = _NoTips()
    handlers = [*lightning_log.handlers, *logging.getLogger().handlers]
    with warnings.catch_warnings():
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        for handler in handlers:
            handler.addFilter(tips)
        try:
            yield
        finally:
            for handler in handlers:
                handler.removeFilter(tips)


def main(argv: list[str] | None = None) -> int:
    """The ``zoo fit|validate|test|predict`` entry point: 0 on success, 2 on a user's mistake."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    saved = sys.argv
    scratch = tempfile.TemporaryDirectory(prefix="zoo-")
    try:
        _check_configs(argv)
        argv = _with_saved_configs(_with_run_config(argv), Path(scratch.name))
        sys.argv = [saved[0] if saved else "zoo", *argv]  # LightningCLI reads sys.argv
        with _quiet():
            run(None)
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # --help, --print_config
        return e.code if isinstance(e.code, int) else 0
    except Exception as e:
        error = e if isinstance(e, MisconfigurationException) else _user_error(e)
        if error is None or debug:
            raise
        text = str(error) if isinstance(error, RecipeError) else _one_line(_unwrapped(str(error)))
        if getattr(rank_zero_only, "rank", 0) == 0:  # under DDP every process stops; one of them says why
            print(f"zoo: error: {text}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
