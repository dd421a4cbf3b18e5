"""``deferred_interrupts``: a block that ``SIGINT`` / ``SIGTERM`` cannot cut in the middle.

A checkpoint save is a short sequence of writes and renames; an interrupt in
the middle of it (a second Ctrl-C while the interrupt's own checkpoint is
being written, a scheduler's ``SIGTERM``) would stop it half-way. Inside
``with deferred_interrupts():`` those signals are only recorded; when the
block ends, the handlers in place before are restored and each recorded
signal is handed to them (Python's default ``SIGINT`` handler raises
``KeyboardInterrupt`` then, after the save completed). Blocks nest. Outside
the main thread (where Python cannot set handlers) the block defers nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Dict, Iterator, List, Tuple

__all__ = ["deferred_interrupts"]

_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Defers ``SIGINT`` and ``SIGTERM`` until the block ends, then delivers them to the previous handlers.

    Yields:
      Nothing; the block runs with the signals recorded instead of handled.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: List[Tuple[int, Any]] = []

    def record(signum: int, frame: Any) -> None:
        if all(s != signum for s, _ in pending):
            pending.append((signum, frame))

    previous: Dict[int, Any] = {}
    for sig in _SIGNALS:
        handler = signal.getsignal(sig)
        if handler is None:  # set outside Python: leave it alone
            continue
        try:
            signal.signal(sig, record)
        except (ValueError, OSError):  # pragma: no cover
            continue
        previous[sig] = handler
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum, frame in pending:
            handler = previous.get(signum)
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)
