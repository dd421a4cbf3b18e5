"""Shared pieces of the ``lamina`` command line: the one-line error, the parser, value converters.

The value converters are the library's (:mod:`lamina.options`), wrapped so
that a bad value raises :class:`CLIError`: argparse would otherwise turn the
``ValueError`` into its own "invalid value" message and lose ours.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any, Callable

from lamina import options
from lamina.options import OptionError

__all__ = [
    "CLIError", "Parser", "int_at_least", "positive_int", "nonneg_int", "float_where", "positive_float",
    "fraction", "choice", "string", "boolean", "dims", "optional",
]


class CLIError(Exception):
    """A usage or input error: printed as one line, exit code 2."""


def _cli(factory: Callable[..., Callable[[Any], Any]]) -> Callable[..., Callable[[Any], Any]]:
    @functools.wraps(factory)
    def make(*args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        conv = factory(*args, **kwargs)

        def checked(value: Any) -> Any:
            try:
                return conv(value)
            except OptionError as e:
                raise CLIError(str(e)) from None

        return checked

    return make


int_at_least = _cli(options.int_at_least)
positive_int = _cli(options.positive_int)
nonneg_int = _cli(options.nonneg_int)
float_where = _cli(options.float_where)
positive_float = _cli(options.positive_float)
fraction = _cli(options.fraction)
choice = _cli(options.choice)
string = _cli(options.string)
boolean = _cli(options.boolean)
dims = _cli(options.dims)
optional = _cli(options.optional)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors raise :class:`CLIError` (one line, exit 2)."""

    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own convention)
        raise CLIError(f"{self.prog}: {message}")
