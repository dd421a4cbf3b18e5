"""``RunLock``: one ``lamina train`` per run directory at a time.

Two processes training into the same folder would interleave
``metrics.jsonl`` and overwrite each other's checkpoints. The lock is an
``flock`` on ``<run_dir>/.lamina.lock``: the operating system releases it when
the process ends in any way (``kill -9`` and crashes included), so a lock is
never left stale; the file itself stays and only records who holds it (pid,
host, start time) for the refusal message. Under ``--strategy multiworker``
every worker writes into the run directory: the chief locks the run
directory itself, each other worker its own ``_workers/<task>/`` folder.

Readers (``lamina evaluate``, ``export``, ``predict``) take no lock: they
read only published, verified files.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; msvcrt locks a byte range instead
    fcntl = None  # type: ignore[assignment]

__all__ = ["RunLock", "LOCK_NAME", "RunLockedError"]

LOCK_NAME = ".lamina.lock"


class RunLockedError(ValueError):
    """Another process holds the run directory's lock (one line naming it and the holder)."""


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return "another process"
    if not isinstance(info, dict):
        return "another process"
    parts = [f"pid {info.get('pid')}" if info.get("pid") else "another process"]
    if info.get("host"):
        parts.append(f"on {info['host']}")
    if info.get("since"):
        parts.append(f"since {info['since']}")
    return " ".join(parts)


def _lock_fd(fd: int) -> bool:
    """Takes the lock without waiting; ``False`` if another process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    import msvcrt  # pragma: no cover

    try:  # pragma: no cover
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:  # pragma: no cover
        return False
    return True  # pragma: no cover


class RunLock:
    """An exclusive lock on a run directory, held from :meth:`acquire` to :meth:`release` (or process exit).

    Use it as a context manager::

        with RunLock("runs/x"):
            ...  # train

    Args:
      folder: the folder to lock (created if missing): the run directory, or
        a worker's own folder inside it.
      what: how the refusal names the holder's activity.

    Raises:
      RunLockedError: from :meth:`acquire`, when another process holds it.
    """

    def __init__(self, folder: str, what: str = "lamina train") -> None:
        self.folder = str(folder)
        self.path = os.path.join(self.folder, LOCK_NAME)
        self.what = what
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> "RunLock":
        """Takes the lock, or refuses at once if another process (or another ``RunLock``) holds it.

        Returns:
          ``self``.

        Raises:
          RunLockedError: naming the folder and the holder (pid, host, since when).
          OSError: if the lock file cannot be created (an unwritable folder).
        """
        if self._fd is not None:
            return self
        os.makedirs(self.folder, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.path, flags, 0o644)
        if not _lock_fd(fd):
            holder = _holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"run directory {self.folder!r} is in use by another {self.what} ({holder}); "
                "wait for it to finish or use another --run-dir"
            )
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(info).encode("utf-8"))
        except OSError:  # the lock holds even if its note cannot be written (a full disk)
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        """Releases the lock (closing the file releases the ``flock``); the file stays."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:  # pragma: no cover - a lock dropped without release
        try:
            self.release()
        except Exception:  # noqa: BLE001
            pass
