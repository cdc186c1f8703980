"""The argument checks every constructor shares: one line naming the argument, what it must be, what it got.

Each returns the value (as a plain Python type) or raises `ConfigurationError` /
`InvalidArgumentError` with ``"{owner}: {name} must be ..., got {value!r}"``. NumPy's
integers and floats are numbers like any other (``num_classes=np.int64(10)`` is fine);
``True`` is not an integer here.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

from zoo.errors import ConfigurationError, InvalidArgumentError


def _where(owner: str) -> str:
    return f"{owner}: " if owner else ""


def check_int(value: object, name: str, owner: str = "", *, minimum: int = 1) -> int:
    """`value` as an int if it is an integer >= `minimum`."""
    kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigurationError(f"{_where(owner)}{name} must be {kind}, got {value!r}")
    return int(value)


def check_number(value: object, name: str, owner: str = "", *, below: float | None = None) -> float:
    """`value` as a float if it is a number >= 0 (and < `below`); rates are ``below=1``."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and value >= 0
    if not ok or (below is not None and value >= below):
        bounds = f"in [0, {below:g})" if below is not None else ">= 0"
        raise ConfigurationError(f"{_where(owner)}{name} must be a number {bounds}, got {value!r}")
    return float(value)


def check_choice(value: object, name: str, choices: Sequence[str], owner: str = "") -> str:
    """`value` if it is one of `choices`."""
    if value not in choices:
        raise ConfigurationError(f"{_where(owner)}{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value  # type: ignore[return-value]


def check_bool(value: object, name: str, owner: str = "") -> bool:
    """`value` if it is True or False."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{_where(owner)}{name} must be True or False, got {value!r}")
    return value


def check_layer(value: Any, name: str, owner: str = "") -> Callable[..., Any] | None:
    """`value` if it is None or a layer class / `functools.partial` (never a string)."""
    if value is not None and not callable(value):
        raise InvalidArgumentError(
            f"{_where(owner)}{name} must be a layer class or functools.partial (e.g. torch.nn.ReLU), got {value!r}; "
            "in a YAML recipe give the class by its import path"
        )
    return value
