"""The :class:`DataSet` class: in-memory splits served as seeded ``tf.data`` pipelines."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from lamina.data.augment import AugmentArg
from lamina.data.base import DataSetBase, Plan, check_seed, is_int, preprocessing_record, split_order
from lamina.data.checks import as_labels
from lamina.data.errors import DataError
from lamina.data.split import epoch_permutation
from lamina.data.stats import histogram_stats

__all__ = ["DataSet", "NORMALIZE_MODES", "compute_preprocessing"]

NORMALIZE_MODES: Tuple[str, ...] = ("scale", "standardize", "none")

def _channel_stats(x: np.ndarray, scale: float, chunk: int = 1 << 20) -> Tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of ``x * scale`` (channels = last axis), in float64 chunks."""
    channels = x.shape[-1] if x.ndim > 1 else 1
    flat = x.reshape(-1, channels)
    if x.dtype == np.uint8 and flat.shape[0]:
        # exact and fast for 8-bit data: a histogram per channel
        offsets = (np.arange(channels, dtype=np.int32) * 256)[None, :]
        counts = np.zeros(256 * channels, np.int64)
        for start in range(0, flat.shape[0], chunk):
            codes = flat[start : start + chunk].astype(np.int32) + offsets
            counts += np.bincount(codes.ravel(), minlength=256 * channels)
        return histogram_stats(counts.reshape(channels, 256), scale)
    total = np.zeros(channels, np.float64)
    total_sq = np.zeros(channels, np.float64)
    for start in range(0, flat.shape[0], chunk):
        part = flat[start : start + chunk].astype(np.float64) * scale
        total += part.sum(axis=0)
        total_sq += np.square(part).sum(axis=0)
    count = max(1, flat.shape[0])
    mean = total / count
    var = np.maximum(total_sq / count - np.square(mean), 0.0)
    return mean, np.sqrt(var)


def compute_preprocessing(x_train: np.ndarray, scale: float, normalize: Optional[str]) -> Dict[str, Any]:
    """Builds the JSON-serializable preprocessing record.

    ``model_input = (raw * scale - mean) / std`` with per-channel ``mean``/``std``
    (channels = the last axis: colour channels for images, features for tables).

    Args:
      x_train: raw training examples ``[N, ...]``.
      scale: multiplier from raw values to ``[0, 1]``-ish values (``1/255`` for uint8).
      normalize: ``"scale"`` (mean 0, std 1), ``"standardize"`` (statistics of
        ``x_train * scale``), or ``"none"``/``None`` (scale 1, mean 0, std 1).

    Returns:
      ``{"scale": float, "mean": [float, ...], "std": [float, ...]}``.

    Raises:
      DataError: for an unknown ``normalize`` mode.
    """
    mode = "none" if normalize is None else str(normalize)
    if mode not in NORMALIZE_MODES:
        raise DataError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, got {normalize!r}")
    channels = int(x_train.shape[-1]) if x_train.ndim > 1 else 1
    if mode == "none":
        return {"scale": 1.0, "mean": [0.0] * channels, "std": [1.0] * channels}
    if mode == "scale":
        return {"scale": float(scale), "mean": [0.0] * channels, "std": [1.0] * channels}
    mean, std = _channel_stats(x_train, float(scale))
    std = np.where(std < 1e-7, 1.0, std)
    return {"scale": float(scale), "mean": [float(m) for m in mean], "std": [float(s) for s in std]}


class DataSet(DataSetBase):
    """A classification data set held in memory, served as ``tf.data`` batches.

    Built by :func:`lamina.data.load`; you rarely construct one yourself. See
    :class:`~lamina.data.base.DataSetBase` for the attributes.
    """

    def __init__(
        self,
        name: str,
        splits: Mapping[str, Tuple[np.ndarray, np.ndarray]],
        *,
        class_names: Optional[Sequence[str]] = None,
        num_classes: Optional[int] = None,
        scale: float = 1.0,
        normalize: Optional[str] = "scale",
        seed: int = 0,
        source: Optional[str] = None,
        preprocessing: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """Checks the arrays and computes the preprocessing record.

        Args:
          name: short name of the data set.
          splits: ``{split: (x_raw [N, ...], y [N] int)}``; needs ``"train"``.
          class_names: names per class id (default ``"0"``, ``"1"``, ...).
          num_classes: number of classes (default ``len(class_names)`` or ``max(y) + 1``).
          scale: raw-to-unit multiplier (``1/255`` for uint8 images).
          normalize: ``"scale"``, ``"standardize"`` or ``"none"``.
          seed: default seed for :meth:`batches`.
          source: the original ``source`` string (default ``name``).
          preprocessing: use this record instead of computing one.

        Raises:
          DataError: for inconsistent arrays or labels out of range.
        """
        if "train" not in splits:
            raise DataError(f"{name}: a data set needs a 'train' split, got {sorted(splits)}")
        if not is_int(seed) or seed < 0:
            raise DataError(f"{name}: seed must be a non-negative integer, got {seed!r}")
        self._x: Dict[str, np.ndarray] = {}
        self._y: Dict[str, np.ndarray] = {}
        shape: Optional[Tuple[int, ...]] = None
        for split in split_order(list(splits)):
            x, y = splits[split]
            x = np.asarray(x)
            y = as_labels(y, f"{name} ({split})")
            if x.shape[0] != y.shape[0]:
                raise DataError(f"{name}: split {split!r} has {x.shape[0]} examples but {y.shape[0]} labels")
            if shape is None:
                shape = tuple(int(d) for d in x.shape[1:])
            elif tuple(x.shape[1:]) != shape:
                raise DataError(f"{name}: split {split!r} has example shape {tuple(x.shape[1:])}, expected {shape}")
            x = x.view()
            x.setflags(write=False)
            y = y.astype(np.int32)
            y.setflags(write=False)
            self._x[split] = x
            self._y[split] = y
        assert shape is not None
        max_label = max((int(y.max()) for y in self._y.values() if y.size), default=-1)
        if num_classes is None:
            num_classes = len(class_names) if class_names is not None else max_label + 1
        if class_names is None:
            class_names = [str(i) for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise DataError(f"{name}: {len(class_names)} class names for {num_classes} classes")
        if max_label >= num_classes:
            raise DataError(f"{name}: label {max_label} is outside [0, {num_classes})")
        self.name = str(name)
        self.source = str(source if source is not None else name)
        self.num_classes = int(num_classes)
        self.class_names: List[str] = [str(c) for c in class_names]
        self.input_shape: Tuple[int, ...] = shape
        self.seed = int(seed)
        if preprocessing is not None:
            self.preprocessing = preprocessing_record(preprocessing)
        else:
            self.preprocessing = compute_preprocessing(self._x["train"], scale, normalize)
        self._tensors: Dict[str, Tuple[tf.Tensor, tf.Tensor]] = {}

    # ------------------------------------------------------------------ info
    @property
    def splits(self) -> Dict[str, int]:
        """Number of examples per split, e.g. ``{"train": 1437, "test": 360}``."""
        return {s: int(self._y[s].shape[0]) for s in self._y}

    def class_counts(self, split: str) -> List[int]:
        """Number of examples per class id in ``split``.

        Raises:
          DataError: for an unknown split.
        """
        self._check_split(split)
        return np.bincount(self._y[split], minlength=self.num_classes).astype(int).tolist()

    # ---------------------------------------------------------------- arrays
    def arrays(self, split: str, limit: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Returns the raw examples and labels of one split (read-only arrays).

        Args:
          split: ``"train"``, ``"test"`` or ``"validation"``.
          limit: only the first ``limit`` examples (default: all).

        Returns:
          ``(x_raw [N, *input_shape], y [N] int32)``.

        Raises:
          DataError: for an unknown split or a negative limit.
        """
        self._check_split(split)
        if limit is None:
            return self._x[split], self._y[split]
        if not is_int(limit) or limit < 0:
            raise DataError(f"limit must be a non-negative integer or None, got {limit!r}")
        return self._x[split][: int(limit)], self._y[split][: int(limit)]

    def sample(self, split: str, n: int, seed: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Returns ``n`` raw examples drawn without replacement (seeded).

        Args:
          split: which split.
          n: how many (fewer if the split is smaller).
          seed: sample seed (default: the data set's ``seed``).

        Returns:
          ``(x_raw [n, ...], y [n] int32)``: the first ``n`` examples of the
          shuffled epoch-0 order of ``seed`` (the order :meth:`batches` uses).

        Raises:
          DataError: for an unknown split, a bad ``n`` or seed.
        """
        self._check_split(split)
        if not is_int(n) or n < 0:
            raise DataError(f"n must be a non-negative integer, got {n!r}")
        seed = check_seed(self.seed if seed is None else seed)
        index = epoch_permutation(self.splits[split], seed, 0)[: int(n)]
        return self._x[split][index], self._y[split][index]

    # -------------------------------------------------------------- tf.data
    def _split_tensors(self, split: str) -> Tuple[tf.Tensor, tf.Tensor]:
        if split not in self._tensors:
            with tf.device("/cpu:0"):
                self._tensors[split] = (tf.constant(self._x[split]), tf.constant(self._y[split]))
        return self._tensors[split]

    def raw_batches(
        self, split: str, batch_size: int, *, shuffle: bool = False, seed: Optional[int] = None, epoch: int = 0
    ) -> tf.data.Dataset:
        """Raw batches ``(x_raw [B, ...], y, index)`` gathered from memory; see :meth:`DataSetBase.raw_batches`."""
        plan = self._plan(split, batch_size, shuffle, seed, epoch, False, 0)
        n = self.splits[split]
        order = epoch_permutation(n, plan.seed, epoch) if shuffle else np.arange(n, dtype=np.int64)
        x_all, y_all = self._split_tensors(split)
        ds = tf.data.Dataset.from_tensor_slices(order).batch(int(batch_size))
        # plain TensorFlow ops: traced as written (autograph's conversion cost ~0.15 s per pipeline)
        return ds.map(tf.autograph.experimental.do_not_convert(lambda i: (tf.gather(x_all, i), tf.gather(y_all, i), i)))

    def _epoch(self, plan: Plan, augment: AugmentArg, one_hot: bool) -> tf.data.Dataset:
        n = self.splits[plan.split]
        order = epoch_permutation(n, plan.seed, plan.epoch) if plan.shuffle else np.arange(n, dtype=np.int64)
        augmenter = self._augmenter(plan.split, augment)
        tables = augmenter.tables(n, plan.seed, plan.epoch) if augmenter is not None else None
        finish = self._finisher(augmenter, tables, one_hot)
        x_all, y_all = self._split_tensors(plan.split)

        def fetch(index: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
            """Gathers one batch by index, augments, normalizes; returns ``(x, y)``."""
            return finish(tf.gather(x_all, index), tf.gather(y_all, index), index)

        ds = tf.data.Dataset.from_tensor_slices(order)
        ds = ds.batch(plan.global_batch, drop_remainder=plan.drop_remainder)
        if plan.skip_batches:
            ds = ds.skip(plan.skip_batches)
        # fetch is plain TensorFlow ops (no Python control flow on tensors): traced as written, without
        # autograph's conversion (~0.15 s for every epoch's pipeline)
        ds = ds.map(tf.autograph.experimental.do_not_convert(fetch), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)
