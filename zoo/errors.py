"""The errors `zoo` raises for mistakes a user can fix.

Every one carries a single line that says what was wrong and what to do. They
subclass the built-in exception a Python user would expect (`ValueError`,
`TypeError`, `KeyError`-like lookups are `ValueError`), so ordinary `except`
clauses keep working, and share `ZooError` so the CLI can tell a user's mistake
from a bug and print one line instead of a traceback.
"""

from __future__ import annotations


class ZooError(Exception):
    """Base class of every user-facing error raised by `zoo`."""


class UnknownModelError(ZooError, ValueError):
    """A model name that is not in the registry."""


class InvalidArgumentError(ZooError, TypeError):
    """A keyword argument the model does not take, or a value of the wrong kind."""


class ConfigurationError(ZooError, ValueError):
    """A layer or model configuration that cannot work (e.g. a kernel larger than its input)."""


class InputShapeError(ZooError, ValueError):
    """An input tensor the model cannot take: wrong rank, dtype, channels or size."""


class WeightsError(ZooError, ValueError):
    """Weights that do not fit the model: missing, unexpected or mis-shaped keys."""


class DatasetNotFoundError(ZooError, FileNotFoundError):
    """A dataset that is not where it was looked for (the message says where, and how to get it)."""


class DatasetError(ZooError, ValueError):
    """A dataset that is there but cannot be used: empty, unreadable, or in the wrong layout."""


class NonFiniteLossError(ZooError, FloatingPointError):
    """A training loss that became NaN or infinite (the message names the step and the likely causes)."""
