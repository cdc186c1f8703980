"""What `zoo fit|validate|test|predict` does with its arguments before LightningCLI parses them: run folders,
saved configs and config files, and the checks that fail before anything starts."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from zoo.errors import ZooError

SUBCOMMANDS = ("fit", "validate", "test", "predict")


class RecipeError(ZooError, ValueError):
    """A recipe or command line that LightningCLI cannot parse (bad YAML, unknown key, wrong type)."""


def _local_checkpoint(ckpt: Any) -> bool:
    """Whether `ckpt` names a local file (not best/last, a URL, or Lightning's hpc/registry)."""
    return bool(ckpt) and "://" not in str(ckpt) and ckpt not in ("last", "best", "hpc", "registry")


def _run_of(ckpt: Path) -> Path | None:
    """The run folder a checkpoint belongs to (``RUN/checkpoints/X.ckpt`` with ``RUN/config.yaml``), or None."""
    for folder in (ckpt.parent, ckpt.parent.parent):
        if (folder / "config.yaml").is_file() or (folder / "hparams.yaml").is_file():
            return folder
    return None


def _with_run_config(argv: list[str]) -> list[str]:
    """`argv` with ``--config RUN/config.yaml`` when validating, testing or predicting a run's checkpoint
    without a recipe."""
    if not argv or argv[0] not in ("validate", "test", "predict") or _config_files(argv):
        return argv
    ckpt = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--ckpt_path"), None)
    ckpt = ckpt or next((a.split("=", 1)[1] for a in argv if a.startswith("--ckpt_path=")), None)
    run = _run_of(Path(ckpt)) if ckpt and Path(ckpt).is_file() else None
    if run is None or not (run / "config.yaml").is_file():
        return argv
    return [argv[0], "--config", str(run / "config.yaml"), *argv[1:]]


SECTIONS = ("seed_everything", "trainer", "model", "data", "checkpoint", "optimizer", "lr_scheduler")


def _options(subcommand: str) -> set[str]:
    """The top-level options a subcommand takes besides the sections: its Trainer method's arguments."""
    import inspect

    from lightning.pytorch import Trainer

    names = set(inspect.signature(getattr(Trainer, subcommand)).parameters) - {"self"}
    return names | ({"test_after_fit", "test_ckpt"} if subcommand == "fit" else set())


def _with_saved_configs(argv: list[str], folder: Path) -> list[str]:
    """`argv` with every saved config (a run's ``config.yaml``: Lightning's ``# lightning.pytorch==`` header)
    replaced by a copy in `folder` that runs again under this command: the options of other commands left out
    (``return_predictions`` is predict's), the logger's fixed folder dropped, and for ``fit`` a new run rather
    than a resume of the saved ``ckpt_path`` (said in one line). The copy is named after the recipe."""
    if not argv or argv[0] not in SUBCOMMANDS:
        return argv
    out = list(argv)
    for i, arg in enumerate(argv):
        name = (
            argv[i + 1]
            if arg == "--config" and i + 1 < len(argv)
            else arg.split("=", 1)[1]
            if arg.startswith("--config=")
            else None
        )
        if name is None or not Path(name).is_file():
            continue
        text = Path(name).read_text(errors="replace")
        if not text.startswith("# lightning.pytorch=="):
            continue
        config = yaml.safe_load(text)
        if not isinstance(config, dict):
            continue
        options = _options(argv[0])
        config = {k: v for k, v in config.items() if k in SECTIONS or k in options}
        logger = (config.get("trainer") or {}).get("logger")
        args = logger.get("init_args") if isinstance(logger, dict) else None
        if isinstance(args, dict):
            args.pop("version", None)  # a new version folder (evaluation of a run's checkpoint: RUN/<command>/)
            args.pop("append", None)
        saved_ckpt = config.get("ckpt_path")
        if argv[0] == "fit" and saved_ckpt:
            config["ckpt_path"] = None
            print(
                f"zoo: {name} is a saved config: it trains a new run; to resume from its checkpoint "
                f"add --ckpt_path {saved_ckpt}",
                file=sys.stderr,
            )
        recipe = args.get("name") if isinstance(args, dict) and args.get("name") else Path(name).parent.parent.name
        adapted = folder / f"{len(list(folder.iterdir()))}" / f"{recipe or 'config'}.yaml"
        adapted.parent.mkdir()
        adapted.write_text(yaml.safe_dump(config, sort_keys=False))
        if arg == "--config":
            out[i + 1] = str(adapted)
        else:
            out[i] = f"--config={adapted}"
    return out


def _plain_config(config: Any) -> Any:
    """A jsonargparse Namespace (or a value inside one) as plain dicts and lists, for hparams.yaml."""
    if hasattr(config, "as_dict"):
        config = config.as_dict()
    if isinstance(config, dict):
        return {k: _plain_config(v) for k, v in config.items() if not str(k).startswith("__")}
    if isinstance(config, list | tuple):
        return [_plain_config(v) for v in config]
    return config if isinstance(config, str | int | float | bool | type(None)) else str(config)


def _config_files(argv: list[str]) -> list[str]:
    """The values of every ``--config`` in `argv`."""
    files = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    return files + [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]


def _check_configs(argv: list[str]) -> None:
    """A config file that is empty, a list or a scalar says what a config must be (before jsonargparse's
    "Unexpected config"); YAML syntax errors are left to jsonargparse, which names the line."""
    for name in _config_files(argv):
        path = Path(name)
        if not path.is_file():
            continue
        try:
            config = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        if not isinstance(config, dict):
            what = "a list" if isinstance(config, list) else f"a single value ({config!r})"
            raise RecipeError(
                f"the config {name} is {'empty' if config is None else what}, not a mapping; a config must be "
                "a mapping with model:, data: and trainer: sections (see recipes/lenet5_digits.yaml)"
            )


def _check_epochs(trainer: Any) -> None:
    """A fit that trains nothing (0 epochs), or without end (-1), is a mistake to say before anything starts."""
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps")
    if epochs == 0 and (steps is None or steps <= 0):
        raise RecipeError(
            "--trainer.max_epochs 0 trains nothing (the test would score an untrained network); give 1 or more, "
            "or evaluate a checkpoint with `zoo test --ckpt_path RUN/checkpoints/best.ckpt`"
        )
    if epochs == -1 and (steps is None or steps <= 0):
        raise RecipeError(
            "--trainer.max_epochs -1 would train without end (and cannot size the learning-rate schedule); "
            "give a number of epochs, or --trainer.max_steps N"
        )
    if epochs is not None and epochs < -1:
        raise RecipeError(f"--trainer.max_epochs must be a positive number of epochs, got {epochs}")


def _check_writable(folder: Path) -> None:
    """Fail before training, not after the first epoch, if the run folder cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise RecipeError(
            f"cannot write the run folder {folder}: {e.strerror or e}; "
            "choose another with --trainer.logger.init_args.save_dir DIR"
        ) from None


def _task_class(model_config: Any) -> type | None:
    path = model_config.get("class_path") if hasattr(model_config, "get") else None
    if not path:
        return None
    module, _, name = str(path).rpartition(".")
    try:
        import importlib

        return getattr(importlib.import_module(module or "zoo.training"), name)
    except (ImportError, AttributeError):
        return None


def _recipe_name(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return Path(argv[i + 1]).stem
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1]).stem
    return "default"
