"""Weights as safetensors files: ``save_weights`` / ``load_weights`` for lamina modules, over the
``safetensors`` package.

Reading and writing the format (https://github.com/huggingface/safetensors) is
the ``safetensors`` package's (its Rust core validates headers, offsets and
dtypes; bfloat16 arrays are ``ml_dtypes.bfloat16``, which TensorFlow ships).
lamina adds an atomic write (a temporary file, fsynced, then renamed, so a
crash never leaves half a file), one-line errors naming the file, and the key
convention: tensors are keyed by the module's variable path
(``"blocks/0/conv/weights"``, see :meth:`lamina.Module.get_weights`).
Nothing here executes code from the file: it is JSON plus raw numbers.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import safetensors
import safetensors.numpy

from lamina import deferred

__all__ = ["save_file", "load_file", "read_metadata", "save_weights", "load_weights"]

# The NumPy dtypes safetensors stores (plus ml_dtypes' bfloat16 and float8 types, by name).
_SUPPORTED = {np.dtype(t) for t in (np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64,
                                    np.int64, np.float16, np.float32, np.float64, np.complex64)}
_ML_DTYPES = ("bfloat16", "float8_e4m3fn", "float8_e5m2")


def _as_array(value: Any, name: str, path: str) -> np.ndarray:
    array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    native = array.dtype.newbyteorder("=") if array.dtype.byteorder == ">" else array.dtype
    if native not in _SUPPORTED and array.dtype.name not in _ML_DTYPES:
        raise ValueError(
            f"safetensors: {path}: tensor {name!r} has dtype {array.dtype}, expected one of bool, uint8..uint64, "
            "int8..int64, float16, bfloat16, float32, float64, complex64"
        )
    if array.dtype.byteorder == ">":
        array = array.astype(native)
    return array if array.flags.c_contiguous else array.copy(order="C")  # (ascontiguousarray makes scalars 1-D)


def save_file(tensors: Mapping[str, Any], path: str, metadata: Optional[Mapping[str, str]] = None) -> str:
    """Writes arrays to a safetensors file (atomically: temp file, then rename).

    Args:
      tensors: ``{name: array}``; anything ``np.asarray`` accepts (tensors too).
      path: the output file.
      metadata: optional ``{str: str}`` stored under ``"__metadata__"``.

    Returns:
      ``path``.

    Raises:
      ValueError: for a non-string name, the reserved name ``__metadata__``, an
        unsupported dtype, or non-string metadata.
    """
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"safetensors: {path}: metadata must map str to str, got {dict(metadata)!r}")
    arrays: Dict[str, np.ndarray] = {}
    for name in tensors:
        if not isinstance(name, str) or not name:
            raise ValueError(f"safetensors: {path}: tensor names must be non-empty strings, got {name!r}")
        if name == "__metadata__":
            raise ValueError(f"safetensors: {path}: '__metadata__' is reserved and cannot name a tensor")
        arrays[name] = _as_array(tensors[name], name, path)
    from lamina.fileio import atomic_output

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_output(path) as tmp:
        safetensors.numpy.save_file(arrays, tmp, metadata=dict(metadata) if metadata is not None else None)
    return path


def _read(path: str, tensors: bool = True) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"safetensors: {path} does not exist")
    try:
        with safetensors.safe_open(path, framework="np") as f:
            metadata = dict(f.metadata() or {})
            # get_tensor copies out of the memory map: the arrays are writable and outlive the file.
            out = {name: f.get_tensor(name) for name in f.keys()} if tensors else {}
    except (safetensors.SafetensorError, OSError) as e:
        raise ValueError(f"safetensors: {path}: {' '.join(str(e).split())} (truncated or not a safetensors file?)") from None
    return out, metadata


def load_file(path: str) -> Dict[str, np.ndarray]:
    """Reads every tensor of a safetensors file.

    Args:
      path: the file.

    Returns:
      ``{name: array}`` (native-endian, writable copies).

    Raises:
      FileNotFoundError: if the file is missing.
      ValueError: for a truncated file, a bad header, an unknown dtype, or
        offsets that disagree with the shapes (the ``safetensors`` package's
        check, on one line naming the file).
    """
    return _read(path)[0]


def read_metadata(path: str) -> Dict[str, str]:
    """Returns a safetensors file's ``__metadata__`` (empty if none), without reading the tensors.

    Args:
      path: the file.

    Returns:
      ``{str: str}``.

    Raises:
      FileNotFoundError: if the file is missing.
      ValueError: for a malformed file.
    """
    return _read(path, tensors=False)[1]


def save_weights(model: Any, path: str, metadata: Optional[Mapping[str, str]] = None) -> str:
    """Saves a built module's variables to a safetensors file keyed by variable path.

    Args:
      model: a built :class:`lamina.Module` (called once on an input).
      path: the output ``.safetensors`` file.
      metadata: extra ``{str: str}`` entries (``"format": "lamina"`` is added).

    Returns:
      ``path``.

    Raises:
      ValueError: if the module has no variables yet.
    """
    weights = model.get_weights()
    if not weights:
        raise ValueError(f"save_weights: {type(model).__name__} has no variables yet; call it once on an input to build it")
    from lamina import __version__

    meta = {"format": "lamina", "lamina_version": __version__}
    meta.update(dict(metadata or {}))
    return save_file(weights, path, meta)


def _is_built(model: Any) -> bool:
    return bool(getattr(model, "built", True)) and bool(model.variable_paths())


def load_weights(model: Any, path: str, strict: bool = True) -> Any:
    """Loads a safetensors file into a module's variables, now or (unbuilt module) as they are created.

    A built module is loaded at once. An unbuilt one (never called) gets a
    deferred restore, like ``tf.train.Checkpoint``'s: each variable is assigned
    as soon as its layer builds, before that layer computes, so the first call
    (eager or traced) already uses the loaded values; the name checks below run
    when that first call returns (see :mod:`lamina.deferred`).

    Args:
      model: a :class:`lamina.Module` with the same variable paths.
      path: a safetensors file (ours, or written by ``safetensors`` elsewhere).
      strict: if true every variable must be in the file and every tensor must
        name a variable; if false, only matching names are loaded, and at least
        one must match.

    Returns:
      ``model``.

    Raises:
      FileNotFoundError: if the file is missing.
      ValueError: for a malformed file, missing/unknown names (strict), no
        matching name at all, a wrong shape, or a non-numeric tensor for a
        floating-point variable. For an unbuilt module the name and shape
        errors come from its first call.
    """
    weights = load_file(path)
    for name, value in list(weights.items()):
        if value.dtype.kind not in "fiu" and value.dtype.name not in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
            raise ValueError(f"load_weights: {path}: tensor {name!r} has dtype {value.dtype}, expected a number type")
        if value.dtype.kind not in "fiu":
            weights[name] = value.astype(np.float32)
    if not _is_built(model):
        deferred.defer_weights(model, weights, strict, f"load_weights: {path}")
        return model
    try:
        model.set_weights(weights, strict=strict)
    except ValueError as e:
        raise ValueError(f"load_weights: {path}: {e}") from None
    return model
