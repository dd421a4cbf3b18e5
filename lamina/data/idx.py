"""IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed.

An IDX file is a 4-byte magic number ``00 00 TT NN`` (``TT`` the element
type, ``0x08`` = unsigned byte; ``NN`` the number of dimensions), ``NN``
big-endian uint32 sizes, then the elements in C order, big-endian.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from typing import Dict, List, Optional, Tuple

import numpy as np

from lamina.data.checks import as_labels, check_allocation, open_regular
from lamina.data.errors import DataError

__all__ = ["IDX_DTYPES", "IDX_FILES", "read_idx", "find_idx_files", "is_idx_folder", "load_idx_folder", "load_idx_pair"]

IDX_DTYPES: Dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# role -> base names accepted for it (each also with ".gz").
IDX_FILES: Dict[str, Tuple[str, ...]] = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _read_bytes(path: str) -> bytes:
    """Reads a file, gunzipping it when it starts with the gzip magic."""
    try:
        with open_regular(path) as f:
            data = f.read()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = _gunzip(data, path)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: corrupt or truncated gzip data ({err})") from None
    elif path.endswith(".gz"):
        raise DataError(f"{path}: not a gzip file (bad gzip magic)")
    return data


def _gunzip(data: bytes, path: str) -> bytes:
    """Decompresses gzip data in chunks, refusing more output than this machine's memory (a gzip bomb)."""
    out = []
    size = 0
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
        while True:
            chunk = stream.read(1 << 26)
            if not chunk:
                return b"".join(out)
            size += len(chunk)
            check_allocation(size, f"{path}: decompressing it")
            out.append(chunk)


def read_idx(path: str, ndim: Optional[int] = None) -> np.ndarray:
    """Reads one IDX file into a native-endian NumPy array.

    Args:
      path: the file (``.gz`` or plain).
      ndim: the expected number of dimensions (3 for images, 1 for labels);
        a different magic number is an error.

    Returns:
      The array (``uint8`` for ubyte files).

    Raises:
      DataError: for a bad magic number, an unknown element type, a truncated
        file or trailing bytes, each naming ``path``.
    """
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes, no complete header)")
    zero, type_code, dims = struct.unpack(">HBB", data[:4])
    magic = struct.unpack(">I", data[:4])[0]
    if zero != 0 or type_code not in IDX_DTYPES or dims == 0:
        raise DataError(f"{path}: bad magic number 0x{magic:08x}: not an IDX file")
    if ndim is not None and dims != ndim:
        raise DataError(
            f"{path}: bad magic number 0x{magic:08x}: expected {ndim}-D data (0x{0x800 + ndim:08x}), found {dims}-D"
        )
    header = 4 + 4 * dims
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} of {header} bytes)")
    shape = struct.unpack(f">{dims}I", data[4:header])
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = math.prod(shape) * dtype.itemsize  # Python ints: sizes in the header cannot overflow
    found = len(data) - header
    if found < expected:
        raise DataError(f"{path}: truncated IDX file: shape {tuple(shape)} needs {expected} data bytes, found {found}")
    if found > expected:
        raise DataError(f"{path}: {found - expected} unexpected bytes after the IDX data of shape {tuple(shape)}")
    arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _find(folder: str, names: Tuple[str, ...]) -> Optional[str]:
    for base in names:
        for name in (base, base + ".gz"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


def is_idx_folder(folder: str) -> bool:
    """True if ``folder`` holds at least one file named like an MNIST IDX file.

    Args:
      folder: a directory.

    Returns:
      Whether to treat it as an IDX folder.
    """
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return any(("idx1-ubyte" in n or "idx3-ubyte" in n) and os.path.isfile(os.path.join(folder, n)) for n in names)


def find_idx_files(folder: str) -> Dict[str, str]:
    """Finds the four MNIST-layout files in ``folder``.

    Args:
      folder: a directory.

    Returns:
      ``{"train_images": path, "train_labels": ..., "test_images": ..., "test_labels": ...}``.

    Raises:
      DataError: naming the missing files.
    """
    found: Dict[str, str] = {}
    missing: List[str] = []
    for role, names in IDX_FILES.items():
        path = _find(folder, names)
        if path is None:
            missing.append(names[0] + "[.gz]")
        else:
            found[role] = path
    if missing:
        raise DataError(f"{folder}: IDX folder is missing {', '.join(missing)}")
    return found


def load_idx_pair(images_path: str, labels_path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Reads an images file and its labels file, checking the counts agree.

    Args:
      images_path: ``*-images-idx3-ubyte[.gz]``.
      labels_path: ``*-labels-idx1-ubyte[.gz]``.

    Returns:
      ``(x [N, H, W, 1], y [N] int64)``.

    Raises:
      DataError: for unreadable files or a count mismatch.
    """
    x = read_idx(images_path, ndim=3)
    y = as_labels(read_idx(labels_path, ndim=1), labels_path)
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{images_path} has {x.shape[0]} images but {labels_path} has {y.shape[0]} labels")
    return x[..., None], y


def load_idx_folder(folder: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Loads an MNIST-layout IDX folder.

    Args:
      folder: holds ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
        ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``
        (``train-images.idx3-ubyte`` spellings accepted).

    Returns:
      ``{"train": (x, y), "test": (x, y)}``.

    Raises:
      DataError: for missing, corrupt or inconsistent files.
    """
    files = find_idx_files(folder)
    train = load_idx_pair(files["train_images"], files["train_labels"])
    test = load_idx_pair(files["test_images"], files["test_labels"])
    if train[0].shape[1:] != test[0].shape[1:]:
        raise DataError(
            f"{files['test_images']}: images are {test[0].shape[1:3]}, but {files['train_images']} has {train[0].shape[1:3]}"
        )
    return {"train": train, "test": test}
