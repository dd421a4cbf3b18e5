""":class:`PairedDataSet`: in-memory examples whose targets are arrays too (next tokens, per-pixel classes).

A classification :class:`~lamina.data.DataSet` has one class id per example;
here each example ``x`` comes with a target array ``y`` of class ids — a
language model's next tokens ``(T,)`` for token windows ``(T,)``, or a
segmentation mask ``(H, W)`` for an image ``(H, W, C)``. Batches are
``(x, y int32)`` in the same seeded, exactly resumable order as every lamina
data set (:func:`~lamina.data.split.epoch_permutation` of ``(seed, epoch)``).
Token inputs stay int32 (no normalization); image inputs are scaled to
float32 as a ``DataSet`` does.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from lamina.data.augment import AugmentArg
from lamina.data.base import Plan, check_seed, split_order
from lamina.data.dataset import DataSet, compute_preprocessing
from lamina.data.errors import DataError
from lamina.data.split import epoch_permutation

__all__ = ["PairedDataSet", "TASKS"]

TASKS = ("language_model", "segmentation")


class PairedDataSet(DataSet):
    """In-memory ``(x, y)`` splits where ``y`` holds one class id per position.

    A :class:`~lamina.data.DataSet` (its ``splits``, ``arrays``, ``sample``,
    ``raw_batches``, ...) whose targets are arrays; its batches are ``(x, y)``
    without augmentation or one-hot labels.

    Attributes (besides :class:`~lamina.data.base.DataSetBase`'s):
      task: ``"language_model"`` (token windows) or ``"segmentation"`` (image + mask).
      ids_input: ``x`` holds integer ids served as int32 (no preprocessing).

    Args:
      name: short name.
      splits: ``{split: (x [N, ...], y [N, ...] integer ids)}``; needs ``"train"``.
      task: one of :data:`TASKS`.
      num_classes: the number of ids ``y`` (and token ``x``) may hold.
      class_names: one name per id (default ``"0"``, ``"1"``, ...).
      scale: raw-to-unit multiplier of float inputs (``1/255`` for uint8 images).
      normalize: ``"scale"``, ``"standardize"`` or ``"none"`` (float inputs only).
      seed: default seed of :meth:`batches`.
      source: the ``source`` string.
      extra: free-form facts about the data kept in :meth:`info` (e.g. the tokenization).

    Raises:
      DataError: for inconsistent arrays or ids out of range.
    """

    def __init__(
        self,
        name: str,
        splits: Mapping[str, Tuple[np.ndarray, np.ndarray]],
        *,
        task: str,
        num_classes: int,
        class_names: Optional[Sequence[str]] = None,
        scale: float = 1.0,
        normalize: Optional[str] = "scale",
        seed: int = 0,
        source: Optional[str] = None,
        extra: Optional[Mapping[str, Any]] = None,
    ) -> None:
        # Not DataSet.__init__: it checks 1-D class-id labels; the fields it sets are set here.
        if task not in TASKS:
            raise DataError(f"{name}: task must be one of {', '.join(TASKS)}, got {task!r}")
        if "train" not in splits:
            raise DataError(f"{name}: a data set needs a 'train' split, got {sorted(splits)}")
        self.task = task
        self.name = str(name)
        self.source = str(source if source is not None else name)
        self.num_classes = int(num_classes)
        self.class_names: List[str] = [str(c) for c in (class_names or range(self.num_classes))]
        if len(self.class_names) != self.num_classes:
            raise DataError(f"{name}: {len(self.class_names)} class names for {self.num_classes} classes")
        self.seed = check_seed(seed)
        self.extra = dict(extra or {})
        self._x: Dict[str, np.ndarray] = {}
        self._y: Dict[str, np.ndarray] = {}
        for split in split_order(list(splits)):
            x, y = (np.asarray(a) for a in splits[split])
            if x.shape[0] != y.shape[0]:
                raise DataError(f"{name}: split {split!r} has {x.shape[0]} examples but {y.shape[0]} targets")
            if y.dtype.kind not in "iu":
                raise DataError(f"{name}: targets must be integer ids, got dtype {y.dtype}")
            if y.size and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise DataError(f"{name}: split {split!r} has target ids outside [0, {self.num_classes}): "
                                f"{int(y.min())}..{int(y.max())}")
            if self._x and (x.shape[1:], y.shape[1:]) != (self._x["train"].shape[1:], self._y["train"].shape[1:]):
                raise DataError(f"{name}: split {split!r} has shapes {x.shape[1:]} / {y.shape[1:]}, "
                                f"expected {self._x['train'].shape[1:]} / {self._y['train'].shape[1:]}")
            x, y = x.view(), y.astype(np.int32)
            x.setflags(write=False)
            y.setflags(write=False)
            self._x[split], self._y[split] = x, y
        self.ids_input = self._x["train"].dtype.kind in "iu" and task == "language_model"
        self.input_shape: Tuple[int, ...] = tuple(int(d) for d in self._x["train"].shape[1:])
        self.target_shape: Tuple[int, ...] = tuple(int(d) for d in self._y["train"].shape[1:])
        if self.ids_input:
            self.preprocessing = {"scale": 1.0, "mean": [0.0], "std": [1.0]}
        else:
            self.preprocessing = compute_preprocessing(self._x["train"], scale, normalize)
        self._tensors: Dict[str, Tuple[tf.Tensor, tf.Tensor]] = {}

    # ------------------------------------------------------------------ info
    def class_counts(self, split: str) -> List[int]:
        """How often each id occurs among the targets of ``split`` (tokens or pixels).

        Raises:
          DataError: for an unknown split.
        """
        self._check_split(split)
        return np.bincount(self._y[split].ravel(), minlength=self.num_classes).astype(int).tolist()

    def info(self) -> Dict[str, Any]:
        """The base summary plus the target shape and :attr:`extra`."""
        out = super().info()
        out.update(target_shape=list(self.target_shape), **self.extra)
        return out

    def __repr__(self) -> str:
        splits = ", ".join(f"{k}={v}" for k, v in self.splits.items())
        return (f"PairedDataSet({self.name!r}, task={self.task!r}, input_shape={self.input_shape}, "
                f"target_shape={self.target_shape}, num_classes={self.num_classes}, {splits})")

    # ---------------------------------------------------------------- inputs
    def normalize(self, x_raw: Any) -> np.ndarray:
        """Model inputs from raw examples: int32 ids as they are, images scaled like the batches.

        Args:
          x_raw: raw examples.

        Returns:
          int32 ids or float32 inputs.
        """
        if self.ids_input:
            return np.asarray(x_raw, np.int32)
        return super().normalize(x_raw)

    # -------------------------------------------------------------- tf.data
    def _epoch(self, plan: Plan, augment: AugmentArg, one_hot: bool) -> tf.data.Dataset:
        if augment:
            raise DataError(f"{self.name}: augmentation applies to classification images, not to {self.task} data "
                            "(it would have to move the targets too)")
        if one_hot:
            raise DataError(f"{self.name}: one_hot applies to classification labels; {self.task} targets stay ids")
        n = self.splits[plan.split]
        order = epoch_permutation(n, plan.seed, plan.epoch) if plan.shuffle else np.arange(n, dtype=np.int64)
        x_all, y_all = self._split_tensors(plan.split)
        p = self.preprocessing
        scale, mean, std = (tf.constant(p[k], tf.float32) for k in ("scale", "mean", "std"))
        ids = self.ids_input

        def fetch(index: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
            x = tf.gather(x_all, index)
            x = tf.cast(x, tf.int32) if ids else (tf.cast(x, tf.float32) * scale - mean) / std
            return x, tf.gather(y_all, index)

        ds = tf.data.Dataset.from_tensor_slices(order).batch(plan.global_batch, drop_remainder=plan.drop_remainder)
        if plan.skip_batches:
            ds = ds.skip(plan.skip_batches)
        return ds.map(fetch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
