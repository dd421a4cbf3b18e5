"""``exclusive``: one call at a time on an object shared between threads (the ``Trainer``).

A ``Trainer`` holds one step counter, one set of metric accumulators and one
compiled step: ``fit`` in one thread and ``evaluate`` in another would mix
their metrics, and two ``fit`` calls would interleave their steps and
checkpoints. Methods decorated with :func:`exclusive` refuse, with
:class:`TrainerBusyError`, to start while another thread is inside one of
them; calls from the thread already inside (``fit`` calling ``evaluate``)
go through.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable, TypeVar

__all__ = ["exclusive", "TrainerBusyError"]

F = TypeVar("F", bound=Callable[..., Any])

_CREATE = threading.Lock()


class TrainerBusyError(RuntimeError):
    """A method was called while another thread is running one on the same object."""


class _Owner:
    """Which thread is inside the object's exclusive methods, and how deep."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.thread: Any = None
        self.method = ""
        self.depth = 0


def _owner(obj: Any) -> _Owner:
    owner = obj.__dict__.get("_exclusive_owner")
    if owner is None:
        with _CREATE:
            owner = obj.__dict__.setdefault("_exclusive_owner", _Owner())
    return owner


def exclusive(method: F) -> F:
    """Makes ``method`` refuse to run while another thread runs an exclusive method of the same object.

    Args:
      method: an instance method.

    Returns:
      The wrapped method; it raises :class:`TrainerBusyError` (naming both
      methods) instead of running concurrently.
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        owner = _owner(self)
        me = threading.get_ident()
        with owner.lock:
            if owner.depth and owner.thread != me:
                raise TrainerBusyError(
                    f"{type(self).__name__}.{method.__name__}: this {type(self).__name__} is running "
                    f"{owner.method}() in another thread; it runs one call at a time (use one per thread)"
                )
            if not owner.depth:
                owner.thread, owner.method = me, method.__name__
            owner.depth += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            with owner.lock:
                owner.depth -= 1
                if not owner.depth:
                    owner.thread, owner.method = None, ""

    return wrapper  # type: ignore[return-value]
