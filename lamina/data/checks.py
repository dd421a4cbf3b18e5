"""Shared checks for loaders: labels are class ids in range, examples are numeric, inputs are regular files.

What a data file says about itself (a label, a header's sizes) is checked
before it decides how much lamina allocates: a label of ``10**9`` would
otherwise mean a billion classes, an IDX or ``.npy`` header a terabyte array.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO, Optional

import numpy as np

from lamina.data.errors import DataError

__all__ = ["as_labels", "as_examples", "MAX_LABEL", "max_classes", "check_num_classes", "open_regular",
           "check_allocation"]

# Class ids are int32 on the way into TensorFlow: [0, 2**31).
MAX_LABEL = 2**31 - 1
# Labels implying more classes than this are refused unless asked for ($LAMINA_MAX_CLASSES).
DEFAULT_MAX_CLASSES = 100_000


def max_classes() -> int:
    """The most classes a data set's labels may imply: ``$LAMINA_MAX_CLASSES``, default 100,000.

    Returns:
      The limit.

    Raises:
      DataError: for a ``$LAMINA_MAX_CLASSES`` that is not a positive integer.
    """
    text = os.environ.get("LAMINA_MAX_CLASSES")
    if text is None or not text.strip():
        return DEFAULT_MAX_CLASSES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise DataError(f"$LAMINA_MAX_CLASSES must be a positive integer, got {text!r}")
    return min(value, MAX_LABEL)


def check_num_classes(max_label: int, what: str) -> None:
    """Refuses labels that imply an absurd number of classes (``max_label + 1`` above :func:`max_classes`).

    Args:
      max_label: the largest class id found.
      what: names the file/array in the message.

    Raises:
      DataError: naming the file, the label and the limit.
    """
    limit = max_classes()
    if max_label + 1 > limit:
        raise DataError(f"{what}: label {max_label} implies {max_label + 1:,} classes, more than {limit:,} "
                        "(a corrupt file? set $LAMINA_MAX_CLASSES to allow more)")


def check_allocation(nbytes: int, what: str) -> None:
    """Refuses to allocate more than this machine's physical memory.

    Args:
      nbytes: the size about to be allocated.
      what: what needs it, for the message.

    Raises:
      DataError: naming ``what`` and both sizes.
    """
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - platforms without sysconf
        total = 1 << 46
    if nbytes > total:
        raise DataError(f"{what} needs {nbytes / 1e9:,.1f} GB, more than this machine's {total / 1e9:,.1f} GB of memory")


def open_regular(path: str, what: Optional[str] = None) -> BinaryIO:
    """Opens a file for reading, refusing FIFOs, devices and sockets (reading one would block or never end).

    Args:
      path: the file.
      what: names it in errors (default ``path``).

    Returns:
      The open binary file.

    Raises:
      DataError: for a file that is not a regular file, or cannot be opened.
    """
    what = what or path
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise DataError(f"{what}: cannot read ({err.strerror or err})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) \
                else "a socket" if stat.S_ISSOCK(mode) else "a folder" if stat.S_ISDIR(mode) else "not a file"
            raise DataError(f"{what}: is {kind}, not a regular file; refusing to read it")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def as_labels(y: np.ndarray, what: str) -> np.ndarray:
    """Checks class-id labels and returns them as a 1-D ``int64`` array.

    Args:
      y: ``[N]`` or ``[N, 1]`` labels (integers, or floats holding integers).
      what: names the file/array in error messages.

    Returns:
      ``[N]`` int64 labels.

    Raises:
      DataError: for a bad shape, non-integer, non-finite or negative labels.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{what}: labels must be a 1-D array of class ids, got shape {y.shape}")
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.dtype.kind == "f":
        if y.size and not np.all(np.isfinite(y)):
            raise DataError(f"{what}: labels contain NaN or infinity")
        if y.size and not np.all(np.equal(np.floor(y), y)):
            bad = y[np.not_equal(np.floor(y), y)][0]
            raise DataError(f"{what}: labels must be integer class ids, found {bad!r}")
    elif y.dtype.kind not in "iu":
        raise DataError(f"{what}: labels must be integer class ids, got dtype {y.dtype}")
    if y.size and y.min() < 0:
        raise DataError(f"{what}: labels must be >= 0, found {int(y.min())}")
    if y.size:
        top = y.max()
        if top > MAX_LABEL:  # int32 class ids: 2**32 + 1 would wrap around to class 1
            raise DataError(f"{what}: label {int(top) if y.dtype.kind in 'iu' else float(top)!r} is out of range "
                            f"[0, 2**31) for a class id")
        check_num_classes(int(top), what)
    return y.astype(np.int64)


def as_examples(x: np.ndarray, what: str) -> np.ndarray:
    """Checks raw examples: numeric, and shaped ``[N, F]``, ``[N, H, W]`` or ``[N, H, W, C]``.

    Args:
      x: the raw array.
      what: names the file/array in error messages.

    Returns:
      ``x`` with a channel axis added to ``[N, H, W]`` (and bools as uint8).

    Raises:
      DataError: for a non-numeric dtype or an unsupported rank.
    """
    x = np.asarray(x)
    if x.dtype.kind == "b":
        x = x.astype(np.uint8)
    if x.dtype.kind not in "iuf":
        raise DataError(f"{what}: examples must be numeric, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim not in (2, 4):
        raise DataError(f"{what}: expected examples of shape (N, features), (N, H, W) or (N, H, W, C), got {x.shape}")
    if x.dtype.kind == "f" and x.size and not np.all(np.isfinite(x)):
        raise DataError(f"{what}: examples contain NaN or infinity")
    return x
