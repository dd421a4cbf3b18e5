""":class:`DataSetBase`: what every lamina data set offers, in memory or streamed from disk."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from lamina.data.augment import AugmentArg, Augmenter, parse_augment
from lamina.data.errors import DataError

__all__ = ["DataSetBase", "SPLIT_ORDER", "is_int", "check_seed", "check_batch_args", "split_order"]

SPLIT_ORDER: Tuple[str, ...] = ("train", "validation", "test")


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (``bool`` excluded)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_seed(seed: Any, what: str = "seed") -> int:
    """Checks a non-negative integer seed.

    Args:
      seed: the value.
      what: its name in the error message.

    Returns:
      ``int(seed)``.

    Raises:
      DataError: for anything else.
    """
    if not is_int(seed) or seed < 0:
        raise DataError(f"{what} must be a non-negative integer, got {seed!r}")
    return int(seed)


def check_batch_args(batch_size: Any, epoch: Any, skip_batches: Any) -> None:
    """Checks the integer arguments of ``batches()``.

    Raises:
      DataError: for a non-positive batch size or a negative epoch/skip.
    """
    if not is_int(batch_size) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not is_int(epoch) or epoch < 0:
        raise DataError(f"epoch must be a non-negative integer, got {epoch!r}")
    if not is_int(skip_batches) or skip_batches < 0:
        raise DataError(f"skip_batches must be a non-negative integer, got {skip_batches!r}")


class DataSetBase:
    """The interface shared by in-memory (:class:`~lamina.data.DataSet`) and
    streaming (:class:`~lamina.data.StreamingDataSet`) classification data sets.

    Attributes:
      name: short name (``"digits"``, a file or folder name, ``"tfds:NAME"``).
      source: the ``source`` string it was loaded from.
      num_classes: number of classes; labels are ids in ``[0, num_classes)``.
      input_shape: per-example shape, e.g. ``(8, 8, 1)`` or ``(num_features,)``.
      class_names: one name per class id.
      preprocessing: ``{"scale", "mean", "std"}``; ``(raw * scale - mean) / std``.
      seed: default shuffle/augmentation seed of :meth:`batches`.
      streaming: ``True`` when examples are read from disk batch by batch.
      task: always ``"classification"``.
    """

    task = "classification"
    streaming = False
    name: str
    source: str
    num_classes: int
    class_names: List[str]
    input_shape: Tuple[int, ...]
    preprocessing: Dict[str, Any]
    seed: int

    # ----------------------------------------------------------- to override
    @property
    def splits(self) -> Dict[str, int]:
        """Number of examples per split, e.g. ``{"train": 1437, "test": 360}``."""
        raise NotImplementedError

    def arrays(self, split: str, limit: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Returns raw examples and labels of one split, in stored order.

        Args:
          split: which split.
          limit: at most this many (the first ones); required for streaming sets.

        Returns:
          ``(x_raw [N, *input_shape], y [N] int32)``.
        """
        raise NotImplementedError

    def sample(self, split: str, n: int, seed: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Returns a bounded, seeded random sample of raw examples (e.g. for int8 calibration).

        Args:
          split: which split.
          n: how many (fewer if the split is smaller).
          seed: sample seed (default: the data set's ``seed``).

        Returns:
          ``(x_raw [n, *input_shape], y [n] int32)``: the first ``n`` examples
          of the shuffled epoch 0 order of ``(seed)``.
        """
        raise NotImplementedError

    def class_counts(self, split: str) -> List[int]:
        """Number of examples per class id in ``split`` (no decoding for streaming sets)."""
        raise NotImplementedError

    def batches(self, split: str, batch_size: int, **kwargs: Any) -> tf.data.Dataset:
        """One epoch of ``(x, y)`` batches; see :meth:`lamina.data.DataSet.batches`."""
        raise NotImplementedError

    # ---------------------------------------------------------------- shared
    def info(self) -> Dict[str, Any]:
        """Returns a JSON-serializable summary (name, shapes, classes, splits, preprocessing)."""
        return {
            "name": self.name,
            "source": self.source,
            "task": self.task,
            "streaming": bool(self.streaming),
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "class_names": list(self.class_names),
            "splits": self.splits,
            "preprocessing": {k: (list(v) if isinstance(v, list) else v) for k, v in self.preprocessing.items()},
        }

    def __repr__(self) -> str:
        splits = ", ".join(f"{k}={v}" for k, v in self.splits.items())
        kind = "StreamingDataSet" if self.streaming else "DataSet"
        return f"{kind}({self.name!r}, input_shape={self.input_shape}, num_classes={self.num_classes}, {splits})"

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise DataError(f"{self.name}: unknown split {split!r}; available: {', '.join(self.splits)}")

    def sample_raw(self, n: int = 8, split: str = "test") -> Tuple[np.ndarray, np.ndarray]:
        """Returns the first ``n`` raw examples and labels of ``split``.

        Args:
          n: how many (fewer if the split is smaller).
          split: which split.

        Returns:
          ``(x_raw [n, ...], y [n])``.

        Raises:
          DataError: for an unknown split.
        """
        return self.arrays(split, limit=max(0, int(n)))

    def normalize(self, x_raw: Any) -> np.ndarray:
        """Applies :attr:`preprocessing` to raw values in NumPy.

        Args:
          x_raw: raw examples ``[..., C]``.

        Returns:
          float32 model inputs.
        """
        p = self.preprocessing
        x = np.asarray(x_raw, dtype=np.float32)
        mean = np.asarray(p["mean"], np.float32)
        std = np.asarray(p["std"], np.float32)
        return ((x * np.float32(p["scale"]) - mean) / std).astype(np.float32)

    def num_batches(self, split: str, batch_size: int, drop_remainder: bool = False) -> int:
        """Number of batches in one pass over ``split``.

        Args:
          split: which split.
          batch_size: examples per batch (positive).
          drop_remainder: drop a last, smaller batch.

        Returns:
          ``floor(n / batch_size)`` or ``ceil(n / batch_size)``.

        Raises:
          DataError: for an unknown split or a bad batch size.
        """
        self._check_split(split)
        if not is_int(batch_size) or batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
        n = self.splits[split]
        return n // batch_size if drop_remainder else math.ceil(n / batch_size)

    def _augmenter(self, split: str, augment: AugmentArg) -> Optional[Augmenter]:
        """The parsed augmentation (training split only)."""
        return parse_augment(augment, self.input_shape) if split == "train" else None

    def _finisher(self, augmenter: Optional[Augmenter], tables: Any, one_hot: bool):
        """The per-batch function ``(x raw, y, index) -> (x float32 model input, y)``."""
        p = self.preprocessing
        scale = tf.constant(p["scale"], tf.float32)
        mean = tf.constant(p["mean"], tf.float32)
        std = tf.constant(p["std"], tf.float32)
        # (x * scale - 0) / 1 is x * scale exactly: one pass over the batch instead of three
        scale_only = all(m == 0.0 for m in p["mean"]) and all(s == 1.0 for s in p["std"])
        num_classes = self.num_classes

        def finish(x: tf.Tensor, y: tf.Tensor, index: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
            if augmenter is not None:
                # pixel moves only: exact in the stored dtype, on 4x fewer bytes than float32
                x = augmenter.apply(x, index, tables)
            x = tf.cast(x, tf.float32)
            x = x * scale if scale_only else (x * scale - mean) / std
            if one_hot:
                y = tf.one_hot(y, num_classes, dtype=tf.float32)
            return x, y

        return finish


def split_order(names: Sequence[str]) -> List[str]:
    """Orders split names: train, validation, test, then the others sorted."""
    return [s for s in SPLIT_ORDER if s in names] + sorted(s for s in names if s not in SPLIT_ORDER)
