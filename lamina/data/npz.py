"""``.npz`` archives holding ``x_train``, ``y_train``, ``x_test``, ``y_test`` (the common MNIST/CIFAR layout)."""

from __future__ import annotations

import math
import os
import zipfile
from typing import Dict, Tuple

import numpy as np

from lamina.data.checks import as_examples, as_labels, check_allocation, open_regular
from lamina.data.errors import DataError

__all__ = ["NPZ_KEYS", "load_npz_arrays", "scale_for"]

NPZ_KEYS: Tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")
_VALIDATION_KEYS = (("x_val", "y_val"), ("x_validation", "y_validation"), ("x_valid", "y_valid"))
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError)


def scale_for(x: np.ndarray) -> float:
    """The raw-to-unit scale of an array: ``1/255`` for uint8, else ``1.0``.

    Args:
      x: raw examples.

    Returns:
      The ``scale`` entry of the preprocessing record.
    """
    return 1.0 / 255.0 if np.asarray(x).dtype == np.uint8 else 1.0


def _check_header(archive: "np.lib.npyio.NpzFile", key: str, path: str) -> None:
    """Checks one member's ``.npy`` header against its size before NumPy allocates what the header says."""
    names = archive.zip.namelist()
    member = key + ".npy" if key + ".npy" in names else key
    info = archive.zip.getinfo(member)
    with archive.zip.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    if dtype.hasobject:
        return  # NumPy refuses it (pickles) with its own message
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: a header's sizes cannot overflow
    held = info.file_size - offset
    if nbytes != held:
        raise DataError(f"{path}: array {key!r}: its header says shape {tuple(shape)} of {dtype} ({nbytes:,} bytes), "
                        f"but the archive holds {max(held, 0):,} bytes for it (corrupt or truncated file)")
    check_allocation(nbytes, f"{path}: array {key!r}")


def _read(archive: "np.lib.npyio.NpzFile", key: str, path: str) -> np.ndarray:
    """Reads one array, turning pickle refusals, size lies and zip damage into DataError."""
    try:
        _check_header(archive, key, path)
        return np.asarray(archive[key])
    except DataError:
        raise
    except MemoryError as err:
        raise DataError(f"{path}: not enough memory to load array {key!r} ({err})") from None
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise DataError(f"{path}: array {key!r} contains pickled objects; refusing to load") from None
        raise DataError(f"{path}: cannot read array {key!r}: {err}") from None
    except _READ_ERRORS as err:
        raise DataError(f"{path}: cannot read array {key!r} (corrupt or truncated file: {err})") from None


def load_npz_arrays(path: str) -> Tuple[Dict[str, Tuple[np.ndarray, np.ndarray]], float]:
    """Loads a ``.npz`` file without unpickling anything.

    ``x`` may be ``[N, H, W]`` (a channel is added), ``[N, H, W, C]`` or
    ``[N, F]``; ``y`` holds non-negative integer class ids. Optional
    ``x_val``/``y_val`` arrays become the ``"validation"`` split.

    Args:
      path: the ``.npz`` file.

    Returns:
      ``({"train": (x, y), "test": (x, y)[, "validation": ...]}, scale)``.

    Raises:
      DataError: if the file is missing, not an ``.npz``, holds pickled
        objects, lacks keys, or has inconsistent arrays.
    """
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    try:
        with open_regular(path) as f:
            magic = f.read(6)
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    if magic[:1] == b"\x80":
        raise DataError(f"{path}: is a Python pickle, it contains pickled objects; refusing to load")
    if magic[:4] != b"PK\x03\x04" and magic[:6] != b"\x93NUMPY":
        raise DataError(f"{path}: not a valid .npz file (not a zip archive)")
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise DataError(f"{path}: contains pickled objects; refusing to load") from None
        raise DataError(f"{path}: not a valid .npz file ({err})") from None
    except _READ_ERRORS as err:
        raise DataError(f"{path}: not a valid .npz file ({err})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: is a single .npy array, not an .npz archive with {', '.join(NPZ_KEYS)}")
    with archive:
        present = set(archive.files)
        missing = [k for k in NPZ_KEYS if k not in present]
        if missing:
            found = ", ".join(sorted(present)) or "nothing"
            raise DataError(f"{path}: missing array(s) {', '.join(missing)} (found: {found})")
        pairs = [("train", "x_train", "y_train"), ("test", "x_test", "y_test")]
        for xk, yk in _VALIDATION_KEYS:
            if xk in present and yk in present:
                pairs.append(("validation", xk, yk))
                break
        splits: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        shape = None
        dtype = None
        for split, xk, yk in pairs:
            x = as_examples(_read(archive, xk, path), f"{path} [{xk}]")
            y = as_labels(_read(archive, yk, path), f"{path} [{yk}]")
            if x.shape[0] != y.shape[0]:
                raise DataError(f"{path}: {xk} has {x.shape[0]} examples but {yk} has {y.shape[0]} labels")
            if shape is None:
                shape, dtype = x.shape[1:], x.dtype
            elif x.shape[1:] != shape:
                raise DataError(f"{path}: {xk} has example shape {x.shape[1:]}, but x_train has {shape}")
            splits[split] = (x, y)
    if splits["train"][0].shape[0] == 0:
        raise DataError(f"{path}: x_train is empty")
    return splits, scale_for(np.empty(0, dtype))
