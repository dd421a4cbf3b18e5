"""Shared pieces of the ``lamina`` command line: the one-line error, the parser, value converters."""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, List, Sequence

__all__ = [
    "CLIError", "Parser", "int_at_least", "positive_int", "nonneg_int", "float_where", "positive_float",
    "fraction", "choice", "string", "boolean", "dims", "optional",
]


class CLIError(Exception):
    """A usage or input error: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors raise :class:`CLIError` (one line, exit 2)."""

    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own convention)
        raise CLIError(f"{self.prog}: {message}")


def int_at_least(name: str, minimum: int, noun: str) -> Callable[[Any], int]:
    """A converter to an int >= ``minimum``; errors say ``{name} must be a {noun}``."""

    def conv(value: Any) -> int:
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            out = int(value)
        except (TypeError, ValueError):
            raise CLIError(f"{name} must be a {noun}, got {value!r}") from None
        if out < minimum:
            raise CLIError(f"{name} must be a {noun}, got {value!r}")
        return out

    return conv


def positive_int(name: str) -> Callable[[Any], int]:
    return int_at_least(name, 1, "positive integer")


def nonneg_int(name: str) -> Callable[[Any], int]:
    return int_at_least(name, 0, "non-negative integer")


def float_where(name: str, ok: Callable[[float], bool], noun: str) -> Callable[[Any], float]:
    """A converter to a float for which ``ok`` holds; errors say ``{name} must be a {noun}``."""

    def conv(value: Any) -> float:
        try:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
        except (TypeError, ValueError):
            raise CLIError(f"{name} must be a {noun}, got {value!r}") from None
        if not ok(out):
            raise CLIError(f"{name} must be a {noun}, got {value!r}")
        return out

    return conv


def positive_float(name: str) -> Callable[[Any], float]:
    return float_where(name, lambda v: v > 0 and math.isfinite(v), "positive number")


def fraction(name: str) -> Callable[[Any], float]:
    return float_where(name, lambda v: 0.0 <= v < 1.0, "number in [0, 1)")


def choice(name: str, choices: Sequence[str]) -> Callable[[Any], str]:
    def conv(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise CLIError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value.lower()

    return conv


def string(name: str) -> Callable[[Any], str]:
    def conv(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise CLIError(f"{name} must be a non-empty string, got {value!r}")
        return value

    return conv


def boolean(name: str) -> Callable[[Any], bool]:
    def conv(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise CLIError(f"{name} must be true or false, got {value!r}")

    return conv


def dims(name: str) -> Callable[[Any], List[int]]:
    def conv(value: Any) -> List[int]:
        items = value.split(",") if isinstance(value, str) else value
        try:
            out = [int(v) for v in items]
        except (TypeError, ValueError):
            raise CLIError(f"{name} must be comma-separated positive integers like 28,28,1, got {value!r}") from None
        if not out or any(v < 1 for v in out):
            raise CLIError(f"{name} must be comma-separated positive integers like 28,28,1, got {value!r}")
        return out

    return conv


def optional(conv: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None or (isinstance(v, str) and v.lower() in ("none", "null", "")) else conv(v)
