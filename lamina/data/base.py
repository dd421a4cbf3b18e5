""":class:`DataSetBase`: what every lamina data set offers, in memory or streamed from disk."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from lamina.data.augment import AugmentArg, Augmenter, parse_augment
from lamina.data.errors import DataError

__all__ = ["DataSetBase", "Plan", "SPLIT_ORDER", "is_int", "check_seed", "check_batch_args", "preprocessing_record",
           "split_order"]

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


@dataclass(frozen=True)
class Plan:
    """The arguments that fix one epoch's batches (checked by :meth:`DataSetBase.batches`).

    Attributes:
      split: which split.
      global_batch: examples per global batch.
      shuffle: shuffled order of ``(seed, epoch)`` or stored order.
      seed: shuffle/augmentation seed.
      epoch: epoch number.
      drop_remainder: drop a last, smaller global batch.
      skip_batches: global batches to skip at the start.
      worker: the worker's part (a :class:`~lamina.data.sharding.WorkerShard`),
        or ``None`` (one process gets whole batches).
    """

    split: str
    global_batch: int
    shuffle: bool
    seed: int
    epoch: int
    drop_remainder: bool = False
    skip_batches: int = 0
    worker: Optional[Any] = None

    @property
    def batch_size(self) -> int:
        """Examples per emitted batch: the global batch, or one replica's part of it."""
        if self.worker is None:
            return self.global_batch
        return math.ceil(self.global_batch / self.worker.replicas)


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

    def class_counts(self, split: str) -> List[int]:
        """Number of examples per class id in ``split`` (no decoding for streaming sets)."""
        raise NotImplementedError

    def raw_batches(
        self, split: str, batch_size: int, *, shuffle: bool = False, seed: Optional[int] = None, epoch: int = 0
    ) -> tf.data.Dataset:
        """Unnormalized batches ``(x_raw [B, ...], y int32 [B], index int64 [B])`` in stored or epoch order.

        Used by :func:`lamina.data.convert`, the statistics pass and the bounded
        reads (:meth:`arrays`, :meth:`sample`); ``index`` is each example's
        position in its split.

        Args:
          split: which split.
          batch_size: examples per batch.
          shuffle: in the order of ``(seed, epoch)`` instead of stored order.
          seed: shuffle seed (default: the data set's ``seed``).
          epoch: epoch of the order.

        Returns:
          A ``tf.data.Dataset`` (raw values in the stored dtype; for a
          streaming set, bad files skipped or failing as ``on_bad_file`` says).

        Raises:
          DataError: for an unknown split or bad arguments.
        """
        raise NotImplementedError

    def _epoch(self, plan: "Plan", augment: AugmentArg, one_hot: bool) -> tf.data.Dataset:
        """The batches of one checked plan (see :meth:`batches`)."""
        raise NotImplementedError

    # ------------------------------------------------------------- batching
    def _plan(
        self, split: str, batch_size: int, shuffle: Optional[bool], seed: Optional[int], epoch: int,
        drop_remainder: bool, skip_batches: int,
    ) -> "Plan":
        """Checks the arguments of an epoch and fixes them in a :class:`Plan`."""
        self._check_split(split)
        check_batch_args(batch_size, epoch, skip_batches)
        seed = check_seed(self.seed if seed is None else seed)
        return Plan(
            split=split, global_batch=int(batch_size), shuffle=(split == "train") if shuffle is None else bool(shuffle),
            seed=seed, epoch=int(epoch), drop_remainder=bool(drop_remainder), skip_batches=int(skip_batches),
        )

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: Optional[bool] = None,
        seed: Optional[int] = None,
        epoch: int = 0,
        augment: AugmentArg = False,
        drop_remainder: bool = False,
        skip_batches: int = 0,
        one_hot: bool = False,
    ) -> tf.data.Dataset:
        """One epoch of ``(x, y)`` batches of ``split``.

        The order is a pure function of ``(seed, epoch)``: the same arguments
        always give the same batches, in any process, so a resumed run can skip
        to where it stopped with ``skip_batches`` (a streaming set skips whole
        batches of file names or records: nothing it skips is decoded).

        Args:
          split: ``"train"``, ``"test"`` or ``"validation"``.
          batch_size: examples per batch.
          shuffle: shuffle the examples (default: only for ``"train"``).
          seed: shuffle/augmentation seed (default: the data set's ``seed``).
          epoch: epoch number; each epoch has its own order.
          augment: image augmentation, applied to the ``"train"`` split only:
            ``True`` (random crop), ``"crop,flip,translate"``, a list, or a dict
            (see :func:`lamina.data.augment.parse_augment`).
          drop_remainder: drop the last batch if it is smaller.
          skip_batches: skip this many batches at the start of the epoch.
          one_hot: labels as one-hot float32 ``[B, num_classes]``.

        Returns:
          A ``tf.data.Dataset`` of ``(x float32 [B, *input_shape], y int32 [B])``.
          A streaming set drops a bad file from its batch (that batch is one
          smaller) and under ``MultiWorkerMirroredStrategy``
          :func:`lamina.train.distribute.distribute_dataset` rebuilds its
          pipeline per worker.

        Raises:
          DataError: for an unknown split or bad arguments.
        """
        plan = self._plan(split, batch_size, shuffle, seed, epoch, drop_remainder, skip_batches)
        self._augmenter(split, augment)  # bad augment arguments fail here
        return self._epoch(plan, augment, bool(one_hot))

    # ------------------------------------------------------- bounded reads
    @staticmethod
    def _collect(ds: tf.data.Dataset, limit: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
        """Concatenates the ``(x, y, index)`` batches of ``ds`` (at most ``limit`` examples)."""
        from lamina.data.decode import pipeline_error

        xs: List[np.ndarray] = []
        ys: List[np.ndarray] = []
        have = 0
        try:
            for x, y, _ in ds:
                xs.append(x.numpy())
                ys.append(y.numpy())
                have += xs[-1].shape[0]
                if limit is not None and have >= limit:
                    break
        except tf.errors.OpError as err:
            raise (pipeline_error(err) or err) from None
        if not xs:
            spec = ds.element_spec[0]
            return np.zeros((0,) + tuple(spec.shape[1:]), spec.dtype.as_numpy_dtype), np.zeros([0], np.int32)
        x_all, y_all = np.concatenate(xs), np.concatenate(ys)
        return (x_all, y_all) if limit is None else (x_all[:limit], y_all[:limit])

    def arrays(self, split: str, limit: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Returns raw examples and labels of one split, in stored order.

        Args:
          split: which split.
          limit: at most this many (the first ones); required for a streaming
            set, which does not fit in memory.

        Returns:
          ``(x_raw [N, *input_shape], y [N] int32)`` (bad files left out).

        Raises:
          DataError: without ``limit`` for a streaming set, or for an unknown split.
        """
        self._check_split(split)
        if limit is None:
            raise DataError(
                f"{self.name}: streams from disk ({self.splits[split]} {split} examples); "
                "arrays() needs limit=N, or use sample(split, n)"
            )
        if not is_int(limit) or limit < 0:
            raise DataError(f"limit must be a non-negative integer or None, got {limit!r}")
        return self._collect(self.raw_batches(split, max(1, min(int(limit), 256))), int(limit))

    def sample(self, split: str, n: int, seed: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Returns a bounded, seeded random sample of raw examples (e.g. for int8 calibration).

        Args:
          split: which split.
          n: how many (fewer if the split is smaller or files are bad).
          seed: sample seed (default: the data set's ``seed``).

        Returns:
          ``(x_raw [n, *input_shape], y [n] int32)``: the first ``n`` examples
          of the shuffled epoch-0 order of ``seed`` (only those are decoded).

        Raises:
          DataError: for an unknown split, a bad ``n`` or seed.
        """
        self._check_split(split)
        if not is_int(n) or n < 0:
            raise DataError(f"n must be a non-negative integer, got {n!r}")
        return self._collect(self.raw_batches(split, max(1, min(int(n), 256)), shuffle=True, seed=seed), int(n))

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


def preprocessing_record(record: Mapping[str, Any]) -> Dict[str, Any]:
    """A copy of a ``{"scale", "mean", "std"}`` record with plain floats (from JSON, NumPy, ...)."""
    return {
        "scale": float(record["scale"]),
        "mean": [float(v) for v in record["mean"]],
        "std": [float(v) for v in record["std"]],
    }


def split_order(names: Sequence[str]) -> List[str]:
    """Orders split names: train, validation, test, then the others sorted."""
    return [s for s in SPLIT_ORDER if s in names] + sorted(s for s in names if s not in SPLIT_ORDER)
