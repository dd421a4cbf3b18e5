"""Crash-safe file writes and contained reads: what every file lamina writes or trusts goes through.

* :func:`atomic_write` / :func:`atomic_write_json` / :func:`atomic_output`:
  the new content goes to a hidden, unpredictable temporary file in the same
  folder (created with ``O_EXCL``, so a symbolic link planted at a guessable
  name is never followed), is fsync'ed, then renamed over the target, and the
  folder is fsync'ed. A crash at any point leaves the old file or the new one,
  never a mix; a symbolic link at the target is replaced, not followed.
* :func:`append_line`: one fsync'ed ``O_APPEND`` write of a whole line that
  refuses to follow a symbolic link (an append-only log such as
  ``metrics.jsonl``; a torn last line is the reader's to drop).
* :func:`resolve_inside`: a path read from a run or export directory (a file
  named in ``lamina_export.json``, a checkpoint listed in a state file) must
  resolve, symbolic links included, inside that directory.
* :func:`exchange`: swaps two paths atomically where the system can
  (Linux ``renameat2(RENAME_EXCHANGE)``), so a published folder is replaced
  without a moment where it is missing; :func:`publish_dir` builds a folder in
  a hidden sibling and publishes it that way (an export directory), and
  :func:`clean_stale_dirs` removes what a killed publisher left.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import tempfile
from typing import Any, Callable, Iterator, Optional, TypeVar, Union

T = TypeVar("T")

__all__ = ["UnsafePathError", "fsync_dir", "fsync_file", "fsync_tree", "atomic_output", "atomic_write",
           "atomic_write_json", "append_line", "resolve_inside", "is_inside", "exchange", "hidden_temp_prefix",
           "publish_dir", "clean_stale_dirs", "remove_stale_temporaries"]


class UnsafePathError(ValueError):
    """A path named inside a run or export directory leads outside it."""


def fsync_file(path: str) -> None:
    """Flushes a file's content to the disk.

    Args:
      path: the file.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """Flushes a folder's entries (a rename in it) to the disk; best effort where folders cannot be opened.

    Args:
      path: the folder.
    """
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - e.g. some network file systems
        pass
    finally:
        os.close(fd)


def hidden_temp_prefix(path: str) -> str:
    """The name prefix of :func:`atomic_output`'s temporary files for ``path`` (``.<name>.tmp-``).

    Args:
      path: the target file.

    Returns:
      The prefix (a base name).
    """
    return f".{os.path.basename(path)}.tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """Yields a temporary path to write; on success it is fsync'ed and renamed to ``path``.

    On any exception (or interruption) inside the block the temporary file is
    removed and ``path`` is left as it was.

    Args:
      path: the file to create or replace.

    Yields:
      The temporary file's path (already created, empty, in ``path``'s folder).
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=hidden_temp_prefix(path), dir=folder)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: give the file the usual mode
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_dir(folder)


def remove_stale_temporaries(folder: str) -> None:
    """Removes the temporary files (``.<name>.tmp-*``) that a killed :func:`atomic_output` left in ``folder``.

    Call it only while no other process writes there (``lamina train`` holds
    the run directory's lock when it does).

    Args:
      folder: the folder.
    """
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        path = os.path.join(folder, name)
        if re.fullmatch(r"\..+\.tmp-[A-Za-z0-9_]+", name) and os.path.isfile(path) and not os.path.islink(path):
            with contextlib.suppress(OSError):
                os.remove(path)


def atomic_write(path: str, data: Union[bytes, str]) -> str:
    """Writes ``data`` to ``path`` atomically (see the module docstring).

    Args:
      path: the file.
      data: its whole new content (``str`` is written as UTF-8).

    Returns:
      ``path``.

    Raises:
      OSError: if it cannot be written (``path`` is then unchanged).
    """
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(raw)
    return path


def atomic_write_json(path: str, data: Any, **dump_kwargs: Any) -> str:
    """Writes ``data`` as JSON (``indent=2`` unless given) atomically.

    Args:
      path: the file.
      data: a JSON-serializable value.
      **dump_kwargs: passed to ``json.dumps``.

    Returns:
      ``path``.

    Raises:
      OSError: if it cannot be written.
      TypeError: for a value JSON cannot hold (nothing is written).
    """
    dump_kwargs.setdefault("indent", 2)
    return atomic_write(path, json.dumps(data, **dump_kwargs) + "\n")


def append_line(path: str, line: str) -> None:
    """Appends one line (a newline is added) with a single fsync'ed write, never through a symbolic link.

    Args:
      path: the log file (created if missing).
      line: the text, without its newline.

    Raises:
      OSError: if the file cannot be written, or ``path`` is a symbolic link.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "is a symbolic link; refusing to write through it", path) from None
        raise
    try:
        data = (line + "\n").encode("utf-8")
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)


def is_inside(root: str, path: str) -> bool:
    """Whether ``path`` resolves (symbolic links followed) to ``root`` or something under it.

    Args:
      root: a folder.
      path: any path (need not exist).

    Returns:
      ``True`` if it stays inside.
    """
    base = os.path.realpath(root)
    target = os.path.realpath(path)
    try:
        return os.path.commonpath([base, target]) == base
    except ValueError:  # different drives
        return False


def resolve_inside(root: str, name: Any, what: str) -> str:
    """Joins a name read from a file of ``root`` to ``root``, refusing anything that leads outside.

    Args:
      root: the run or export directory.
      name: the relative name read from one of its files.
      what: what named it, for the error (``"lamina_export.json names"``).

    Returns:
      ``os.path.join(root, name)``.

    Raises:
      UnsafePathError: for a non-string or empty name, an absolute path, or one
        that resolves (``..``, symbolic links) outside ``root``.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise UnsafePathError(f"{root}: {what} {name!r}, which is not a file name")
    if os.path.isabs(name):
        raise UnsafePathError(f"{root}: {what} {name!r}, an absolute path; only files inside the folder are read")
    path = os.path.join(root, name)
    if not is_inside(root, path):
        raise UnsafePathError(f"{root}: {what} {name!r}, which leads outside the folder; refusing to read it")
    return path


def _renameat2() -> Optional[Any]:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(a: str, b: str) -> bool:
    """Atomically swaps the paths ``a`` and ``b`` (both must exist), where the system supports it.

    Args:
      a: a file or folder.
      b: another one, on the same file system.

    Returns:
      ``True`` if they were swapped; ``False`` if the system or file system
      cannot (the caller falls back to two renames).

    Raises:
      OSError: for another failure (a missing path, permissions).
    """
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), a)


def fsync_tree(folder: str) -> None:
    """Flushes every file and folder under ``folder`` (a tree about to be published by a rename).

    Args:
      folder: the folder.
    """
    for top, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(top, name)
            if os.path.isfile(path) and not os.path.islink(path):
                fsync_file(path)
        fsync_dir(top)


def _remove_tree(path: str) -> None:
    if os.path.islink(path) or not os.path.isdir(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    else:
        shutil.rmtree(path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers are stale by the time we look
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def clean_stale_dirs(path: str) -> None:
    """Removes the hidden siblings (``.<name>.tmp-<pid>-*``, ``.<name>.old-<pid>-*``) that a killed :func:`publish_dir` left.

    Those of a process still running (a concurrent publisher) are left alone.
    When ``path`` itself is missing (a crash between the two renames of the
    fallback without :func:`exchange`), the old folder is put back first.

    Args:
      path: the published folder.
    """
    parent = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(os.path.normpath(path))
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return
    pattern = re.compile(r"\." + re.escape(base) + r"\.(tmp|old)-(?:(\d+)-)?.*")
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or (match.group(2) and _alive(int(match.group(2)))):
            continue
        stale = os.path.join(parent, name)
        with contextlib.suppress(OSError):
            if match.group(1) == "old" and not os.path.lexists(path):
                os.rename(stale, path)
            else:
                _remove_tree(stale)


def publish_dir(path: str, build: Callable[[str], T]) -> T:
    """Builds a folder in a hidden sibling, then puts it at ``path`` in one step.

    ``build(tmp)`` fills the new, empty folder ``tmp``; its files are fsync'ed
    and the folder replaces ``path``: swapped atomically with the old one
    where the file system can (:func:`exchange`), else by two renames (the old
    folder is put back if the second fails; after a crash between them, the
    next :func:`clean_stale_dirs` puts it back). A crash at any point leaves
    the old folder or the new one at ``path``; the hidden leftovers are removed
    by the next call for the same path.

    Args:
      path: the folder to create or replace (the caller checks it may be replaced).
      build: ``build(tmp) -> value`` writes the new content into ``tmp``.

    Returns:
      What ``build`` returned.

    Raises:
      Exception: whatever ``build`` raises, or an ``OSError`` from publishing;
        ``path`` is then as it was and nothing is left behind.
    """
    path = os.path.normpath(path)
    parent = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    os.makedirs(parent, exist_ok=True)
    clean_stale_dirs(path)
    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-{os.getpid()}-", dir=parent)
    old = None
    try:
        value = build(tmp)
        fsync_tree(tmp)
        if os.path.lexists(path):
            if not exchange(tmp, path):
                old = tempfile.mkdtemp(prefix=f".{base}.old-{os.getpid()}-", dir=parent)
                os.rmdir(old)
                os.rename(path, old)
                os.rename(tmp, path)
                tmp, old = old, None  # what is left to delete: the old folder
        else:
            os.rename(tmp, path)
            tmp = None
        fsync_dir(parent)
    except BaseException:
        if old is not None and os.path.lexists(old) and not os.path.lexists(path):
            os.rename(old, path)
        if tmp is not None:
            with contextlib.suppress(OSError):
                _remove_tree(tmp)
        raise
    if tmp is not None:  # the replaced folder (swapped into the temporary name)
        with contextlib.suppress(OSError):
            _remove_tree(tmp)
    return value
