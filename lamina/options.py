"""Option values: converters that check one value and say, in one line, what was expected.

Each ``kind("--flag")`` returns a function ``value -> checked value`` that
raises :class:`OptionError` (a ``ValueError``) naming the option, e.g.
``--epochs must be a positive integer, got '0'``. The run configuration
(:mod:`lamina.train.config`), config files and the command line all use them.
"""

from __future__ import annotations

import math
from typing import Any, Callable, List, Sequence

__all__ = [
    "OptionError", "int_at_least", "positive_int", "nonneg_int", "float_where", "positive_float",
    "fraction", "choice", "string", "boolean", "dims", "optional",
]


class OptionError(ValueError):
    """A bad option value; the message names the option and says what was expected."""


def int_at_least(name: str, minimum: int, noun: str) -> Callable[[Any], int]:
    """A converter to an int >= ``minimum``; errors say ``{name} must be a {noun}``."""

    def conv(value: Any) -> int:
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            out = int(value)
        except (TypeError, ValueError):
            raise OptionError(f"{name} must be a {noun}, got {value!r}") from None
        if out < minimum:
            raise OptionError(f"{name} must be a {noun}, got {value!r}")
        return out

    return conv


def positive_int(name: str) -> Callable[[Any], int]:
    """A converter to an int >= 1 (``name`` is used in the error)."""
    return int_at_least(name, 1, "positive integer")


def nonneg_int(name: str) -> Callable[[Any], int]:
    """A converter to an int >= 0."""
    return int_at_least(name, 0, "non-negative integer")


def float_where(name: str, ok: Callable[[float], bool], noun: str) -> Callable[[Any], float]:
    """A converter to a float for which ``ok`` holds; errors say ``{name} must be a {noun}``."""

    def conv(value: Any) -> float:
        try:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
        except (TypeError, ValueError):
            raise OptionError(f"{name} must be a {noun}, got {value!r}") from None
        if not ok(out):
            raise OptionError(f"{name} must be a {noun}, got {value!r}")
        return out

    return conv


def positive_float(name: str) -> Callable[[Any], float]:
    """A converter to a finite float > 0."""
    return float_where(name, lambda v: v > 0 and math.isfinite(v), "positive number")


def fraction(name: str) -> Callable[[Any], float]:
    """A converter to a float in ``[0, 1)``."""
    return float_where(name, lambda v: 0.0 <= v < 1.0, "number in [0, 1)")


def choice(name: str, choices: Sequence[str]) -> Callable[[Any], str]:
    """A converter to one of ``choices`` (case-insensitive; returned lower-cased)."""
    def conv(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise OptionError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value.lower()

    return conv


def string(name: str) -> Callable[[Any], str]:
    """A converter to a non-empty string."""
    def conv(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise OptionError(f"{name} must be a non-empty string, got {value!r}")
        return value

    return conv


def boolean(name: str) -> Callable[[Any], bool]:
    """A converter of true/false, yes/no, on/off, 1/0 to a bool."""
    def conv(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise OptionError(f"{name} must be true or false, got {value!r}")

    return conv


def dims(name: str) -> Callable[[Any], List[int]]:
    """A converter of ``"28,28,1"`` (or a list) to a list of positive ints."""
    def conv(value: Any) -> List[int]:
        items = value.split(",") if isinstance(value, str) else value
        try:
            out = [int(v) for v in items]
        except (TypeError, ValueError):
            raise OptionError(f"{name} must be comma-separated positive integers like 28,28,1, got {value!r}") from None
        if not out or any(v < 1 for v in out):
            raise OptionError(f"{name} must be comma-separated positive integers like 28,28,1, got {value!r}")
        return out

    return conv


def optional(conv: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wraps ``conv`` so that ``None``, ``"none"``, ``"null"`` and ``""`` give ``None``."""
    return lambda v: None if v is None or (isinstance(v, str) and v.lower() in ("none", "null", "")) else conv(v)
