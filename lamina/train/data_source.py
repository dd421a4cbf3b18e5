"""What ``Trainer.fit`` accepts as data, turned into one thing: ``epoch(e, skip) -> batches``.

* a lamina ``DataSet`` (``lamina.data.load(...)``) with ``batch_size``: its
  ``train`` split, reshuffled every epoch (the order a pure function of
  ``(seed, epoch)``), so resuming mid-epoch is exact;
* NumPy arrays or tensors, ``(x, y)`` or ``x`` alone, with ``batch_size``:
  likewise reshuffled every epoch from ``(seed, epoch)``;
* a function ``(epoch, skip_batches) -> tf.data.Dataset``: called every epoch;
* a ``tf.data.Dataset`` of batches: iterated as it is every epoch (the same
  order each time unless it shuffles itself; a note says so);
* any other re-iterable of batches (a list).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Optional

import numpy as np
import tensorflow as tf

__all__ = ["EpochData", "epoch_data", "eval_data"]


def _is_lamina_dataset(obj: Any) -> bool:
    return hasattr(obj, "batches") and hasattr(obj, "splits") and hasattr(obj, "num_batches")


def _is_array(obj: Any) -> bool:
    return isinstance(obj, (np.ndarray, tf.Tensor)) or (hasattr(obj, "__array__") and hasattr(obj, "shape"))


def _arrays(data: Any) -> Optional[tuple]:
    """``(x, y)`` / ``(x,)`` when ``data`` is arrays (a tuple/list of arrays, or one array), else ``None``."""
    if _is_array(data):
        return (data,)
    if isinstance(data, (tuple, list)) and 1 <= len(data) <= 3 and all(_is_array(a) for a in data):
        return tuple(data)
    return None


def _shuffles(ds: tf.data.Dataset) -> bool:
    """Whether a shuffle op appears anywhere in ``ds``'s pipeline."""
    seen, stack = set(), [ds]
    while stack:
        d = stack.pop()
        if id(d) in seen:
            continue
        seen.add(id(d))
        if "Shuffle" in type(d).__name__:
            return True
        try:
            stack.extend(d._inputs())  # every tf.data dataset lists its inputs
        except Exception:  # pragma: no cover - a dataset type without _inputs
            pass
    return False


class EpochData:
    """Batches per epoch, and what is known about them.

    Attributes:
      epoch: ``(epoch, skip_batches) -> iterable of batches``.
      steps: batches per epoch, or ``None`` if unknown.
      reshuffles: whether the order changes from epoch to epoch.
      note: a line to show the user about the data (or ``None``).
    """

    def __init__(self, epoch: Callable[[int, int], Iterable], steps: Optional[int], reshuffles: bool,
                 note: Optional[str] = None) -> None:
        self.epoch = epoch
        self.steps = steps
        self.reshuffles = reshuffles
        self.note = note

    def sample(self) -> Any:
        """The first batch of epoch 0.

        Raises:
          ValueError: if the data is empty.
        """
        for batch in itertools.islice(iter(self.epoch(0, 0)), 1):
            return batch
        raise ValueError("Trainer.fit: the training data is empty")


def _from_arrays(arrays: tuple, batch_size: int, seed: int, shuffle: bool) -> EpochData:
    n = int(arrays[0].shape[0])
    for a in arrays[1:]:
        if int(a.shape[0]) != n:
            raise ValueError(f"Trainer.fit: the arrays have different lengths ({[int(a.shape[0]) for a in arrays]})")
    arrays = tuple(np.asarray(a) if not isinstance(a, tf.Tensor) else a.numpy() for a in arrays)
    arrays = tuple(a.astype(np.float32) if a.dtype == np.float64 else a for a in arrays)

    def epoch(e: int, skip: int) -> tf.data.Dataset:
        order = np.random.default_rng([seed, e]).permutation(n) if shuffle else np.arange(n)
        order = order[skip * batch_size:]
        parts = tuple(a[order] for a in arrays)
        return tf.data.Dataset.from_tensor_slices(parts if len(parts) > 1 else parts[0]).batch(batch_size)

    return EpochData(epoch, -(-n // batch_size), reshuffles=shuffle)


def _check_batch_size(batch_size: Optional[int], what: str) -> int:
    if batch_size is None:
        raise ValueError(f"Trainer.fit: {what} needs batch_size=, e.g. fit(data, batch_size=32)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Trainer.fit: batch_size must be an int >= 1, got {batch_size!r}")
    return batch_size


def epoch_data(data: Any, batch_size: Optional[int] = None, seed: int = 0) -> EpochData:
    """Turns any accepted training data into :class:`EpochData`.

    Args:
      data: see the module docstring.
      batch_size: required for a ``DataSet`` and for arrays; refused otherwise
        (a dataset of batches is already batched).
      seed: the shuffling seed for ``DataSet`` s and arrays.

    Returns:
      The per-epoch batches.

    Raises:
      ValueError / TypeError: for data of another kind, or a missing/extra ``batch_size``.
    """
    if _is_lamina_dataset(data):
        bs = _check_batch_size(batch_size, "a lamina DataSet")
        return EpochData(
            lambda e, skip: data.batches("train", bs, shuffle=True, seed=seed, epoch=e, skip_batches=skip),
            data.num_batches("train", bs), reshuffles=True,
        )
    arrays = _arrays(data)
    if arrays is not None:
        return _from_arrays(arrays, _check_batch_size(batch_size, "arrays"), seed, shuffle=True)
    if batch_size is not None:
        raise ValueError(
            "Trainer.fit: batch_size applies to a lamina DataSet or arrays only; "
            f"this {type(data).__name__} already yields batches"
        )
    if isinstance(data, tf.data.Dataset):
        card = int(data.cardinality().numpy())
        reshuffles = _shuffles(data)
        note = None if reshuffles else (
            "the training tf.data.Dataset does not shuffle, so every epoch sees the same order; pass a lamina "
            "DataSet or arrays with batch_size=, or a function (epoch, skip_batches) -> Dataset, to reshuffle"
        )
        return EpochData(lambda e, skip: data.skip(skip) if skip else data, card if card > 0 else None,
                         reshuffles, note)
    if callable(data):
        return EpochData(lambda e, skip: data(epoch=e, skip_batches=skip), None, reshuffles=True)
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(
            "Trainer.fit: expected a lamina DataSet, (x, y) arrays with batch_size=, a tf.data.Dataset of batches, "
            f"or a function (epoch, skip_batches) -> Dataset; got {type(data).__name__}"
        )
    steps = len(data) if hasattr(data, "__len__") else None
    return EpochData(lambda e, skip: itertools.islice(data, skip, None), steps, reshuffles=False)


def eval_data(data: Any, batch_size: Optional[int] = None) -> Iterable:
    """Turns evaluation data into an iterable of batches (in a fixed order).

    Args:
      data: a lamina ``DataSet`` (its ``validation`` split, else ``test``),
        ``(x, y)`` arrays, a ``tf.data.Dataset`` or an iterable of batches.
      batch_size: batch size for a ``DataSet`` or arrays (default 256).

    Returns:
      The batches.

    Raises:
      ValueError: for a ``DataSet`` with neither split.
    """
    if _is_lamina_dataset(data):
        split = next((s for s in ("validation", "test") if data.splits.get(s)), None)
        if split is None:
            raise ValueError("Trainer: the DataSet given for evaluation has no validation or test split")
        return data.batches(split, batch_size or 256, shuffle=False)
    arrays = _arrays(data)
    if arrays is not None:
        return _from_arrays(arrays, batch_size or 256, 0, shuffle=False).epoch(0, 0)
    return data
