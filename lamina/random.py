"""Global seeding: ``lm.set_seed(n)`` makes model creation (and training) reproducible."""

from __future__ import annotations

import contextlib
import os
import random as _py_random
import threading
from typing import Iterator, Optional

import numpy as np
import tensorflow as tf

__all__ = ["set_seed", "next_seed", "get_seed", "preserved_seeds"]

_lock = threading.Lock()
_state = {"seed": None, "counter": 0, "base": int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF}


def set_seed(seed: int) -> None:
    """Seeds lamina's initializers, TensorFlow, NumPy and Python's ``random``.

    After this call, creating the same model in the same order gives identical
    weights in every run.

    Args:
      seed: a non-negative integer.

    Raises:
      ValueError: if ``seed`` is negative or not an integer.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"set_seed: expected a non-negative integer, got {seed!r}")
    seed = int(seed)
    with _lock:
        _state["seed"] = seed
        _state["base"] = seed
        _state["counter"] = 0
    _py_random.seed(seed)
    np.random.seed(seed % (2**32))
    tf.random.set_seed(seed)


def get_seed() -> Optional[int]:
    """Returns the seed given to :func:`set_seed`, or ``None`` if never called."""
    return _state["seed"]


def next_seed() -> tf.Tensor:
    """Returns the next ``[2]`` int64 seed for a stateless random op.

    Returns:
      ``[base_seed, counter]``; the counter increments on each call.
    """
    with _lock:
        counter = _state["counter"]
        _state["counter"] += 1
        base = _state["base"]
    return tf.constant([base, counter], dtype=tf.int64)


@contextlib.contextmanager
def preserved_seeds() -> Iterator[None]:
    """Runs a block whose :func:`next_seed` calls leave no trace (a throw-away build of a model).

    Yields:
      Nothing; afterwards the seed counter is where it was before the block.
    """
    with _lock:
        saved = dict(_state)
    try:
        yield
    finally:
        with _lock:
            _state.update(saved)
