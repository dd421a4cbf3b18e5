""":class:`StreamingDataSet`: image data read from disk batch by batch, never all in memory.

Every streaming source (image folders, TFRecord shards, prepared tfds data)
plugs into the same pipeline::

    plan of one epoch  ->  per-batch payloads  ->  parallel decode  ->  augment, normalize
    (pure function of     (file paths or raw     (bad files counted    (as for in-memory sets)
     (seed, epoch))        records, no decode)    and skipped)

* The **plan** says which examples form the k-th batch of an epoch before
  anything is read, so ``skip_batches=k`` drops whole batches of file names
  or raw records and decodes nothing it skips: a resumed epoch is
  bit-identical to an uninterrupted one.
* The **decode** stage runs one small ``tf.data`` pipeline per batch
  (``interleave`` over batches, ``num_parallel_calls=AUTOTUNE``, deterministic
  order): a file that cannot be read or decoded is dropped from its batch and
  reported by a :class:`~lamina.data.decode.BadFileLog` (warning naming the
  file, or :class:`DataError` with ``on_bad_file="fail"``); the other batches
  keep their place in the plan.
* Under ``MultiWorkerMirroredStrategy`` the same plan is cut per worker
  (:class:`~lamina.data.sharding.WorkerShard`), so every worker reads only its
  files and all run the same number of steps.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from lamina.data.augment import AugmentArg, Augmenter
from lamina.data.base import DataSetBase, Plan, check_seed, is_int, preprocessing_record, split_order
from lamina.data.decode import RESIZE_MODES, BadFileLog, check_on_bad_file, decode_image_tensor
from lamina.data.errors import DataError
from lamina.data.sharding import register_worker_builder
from lamina.data.stats import channel_histogram, stats_record

__all__ = ["STREAM_THRESHOLD_BYTES", "Plan", "StreamingDataSet", "position_batches", "replica_slices"]

# Above this many bytes of decoded training images, load() streams instead of
# loading into memory (the in-memory path holds the images twice: NumPy + tensor).
STREAM_THRESHOLD_BYTES = 256 * 2**20
_PARALLEL = max(2, min(16, os.cpu_count() or 2))


def replica_slices(plan: Plan) -> Callable[[Any], tf.data.Dataset]:
    """A ``flat_map`` function: one global batch -> this worker's per-replica slices of it.

    Replica ``r`` (over all workers) gets rows ``[r * b, (r + 1) * b)`` of each
    global batch (``b = ceil(B / replicas)``; a short last batch gives empty
    slices), the same split as one process would make.

    Args:
      plan: a plan with a ``worker``.

    Returns:
      ``fn(batch) -> Dataset`` of ``local_replicas`` slices (``batch`` may be a
      tuple of equally long tensors).
    """
    assert plan.worker is not None
    local = plan.worker.local_replicas
    first = plan.worker.index * local
    b = plan.batch_size

    def slices(*batch: tf.Tensor) -> tf.data.Dataset:
        n = tf.shape(batch[0], out_type=tf.int64)[0]

        def piece(l: tf.Tensor) -> Tuple[tf.Tensor, ...]:
            start = tf.minimum((first + l) * b, n)
            end = tf.minimum((first + l + 1) * b, n)
            return tuple(t[start:end] for t in batch)

        out = tf.data.Dataset.range(local).map(piece)
        return out if len(batch) > 1 else out.map(lambda t: t)

    return slices


def position_batches(order: np.ndarray, plan: Plan) -> tf.data.Dataset:
    """Batches of example positions for a random-access source (one file per example).

    Args:
      order: the epoch's order of positions ``[n]``.
      plan: the epoch's plan (skipping happens here, on positions).

    Returns:
      A dataset of int64 position batches (per replica under a worker plan).
    """
    size = plan.global_batch
    order = np.asarray(order, np.int64)[plan.skip_batches * size :]
    if plan.drop_remainder:
        order = order[: (order.shape[0] // size) * size]
    ds = tf.data.Dataset.from_tensor_slices(order).batch(size)
    if plan.worker is not None:
        ds = ds.flat_map(replica_slices(plan))
    return ds


class StreamingDataSet(DataSetBase):
    """An image classification data set streamed from disk (see the module docstring).

    Subclasses (:class:`~lamina.data.folder_stream.ImageFolderStream`,
    :class:`~lamina.data.tfrecord.TFRecordStream`, ...) say how an epoch is
    planned and how one payload becomes encoded image bytes; batching,
    decoding, bad files, augmentation, normalization, statistics and worker
    sharding live here. Built by :func:`lamina.data.load`.

    Attributes (besides those of :class:`~lamina.data.base.DataSetBase`):
      on_bad_file: ``"skip"`` or ``"fail"``.
      bad_files: how many bad files were met so far (all pipelines of this set).
    """

    streaming = True
    raw_scale = 1.0 / 255.0  # raw-to-unit multiplier of the stored pixels (a subclass may change it)

    def __init__(
        self,
        name: str,
        source: str,
        *,
        class_names: Sequence[str],
        input_shape: Sequence[int],
        split_sizes: Mapping[str, int],
        seed: int = 0,
        on_bad_file: Optional[str] = "skip",
        resize: bool = True,
        fast_resize: str = "cond",
        normalize: Optional[str] = "scale",
        preprocessing: Optional[Mapping[str, Any]] = None,
        stats_sample: Optional[int] = None,
    ) -> None:
        """Sets the shared state; subclasses set theirs first.

        Args:
          name: short name.
          source: the ``source`` string.
          class_names: one name per class id.
          input_shape: ``(height, width, channels)``, channels 1 or 3.
          split_sizes: examples per split; needs ``"train"``.
          seed: default seed of :meth:`batches`.
          on_bad_file: ``"skip"`` (warn and drop) or ``"fail"``.
          resize: resize images of another size (else they are bad files).
          fast_resize: how the fast decode path resizes: ``"no"`` (images are
            expected at the data set's size; others take the slow path),
            ``"cond"`` or ``"always"`` (see
            :func:`~lamina.data.decode.decode_image_tensor`).
          normalize: ``"scale"``, ``"standardize"`` or ``"none"``.
          preprocessing: use this record (e.g. statistics stored with the data).
          stats_sample: for ``"standardize"``: compute the statistics on this
            many training examples (seeded sample) instead of all of them.

        Raises:
          DataError: for bad arguments.
        """
        if "train" not in split_sizes:
            raise DataError(f"{name}: a data set needs a 'train' split, got {sorted(split_sizes)}")
        self.name = str(name)
        self.source = str(source)
        self.seed = check_seed(seed)
        self.class_names: List[str] = [str(c) for c in class_names]
        self.num_classes = len(self.class_names)
        shape = tuple(int(d) for d in input_shape)
        if len(shape) != 3 or shape[-1] not in (1, 3):
            raise DataError(f"{name}: streaming needs images (H, W, 1 or 3), got input shape {shape}")
        self.input_shape: Tuple[int, ...] = shape
        self._sizes = {s: int(split_sizes[s]) for s in split_order(list(split_sizes))}
        self._resize = bool(resize)
        if fast_resize not in RESIZE_MODES or (fast_resize != "no" and not resize):
            raise DataError(f"{name}: fast_resize must be one of {', '.join(RESIZE_MODES)} (and 'no' without resize), "
                            f"got {fast_resize!r}")
        self._fast_resize = fast_resize
        self.on_bad_file = check_on_bad_file(on_bad_file)
        self._log = BadFileLog(self.name, self.on_bad_file, self._describe)
        if preprocessing is not None:
            self.preprocessing = preprocessing_record(preprocessing)
        else:
            self.preprocessing = self._compute_preprocessing(normalize, stats_sample)

    # ------------------------------------------------------- subclass hooks
    def num_files(self, split: str) -> int:
        """Number of files ``split`` is stored in (image files or shards)."""
        raise NotImplementedError

    def _index_space(self, split: str) -> int:
        """Size of the example index space of ``split`` (augmentation tables are indexed by it)."""
        return self._sizes[split]

    def _raw_plan(self, plan: Plan) -> tf.data.Dataset:
        """Batches of ``(payload string [b], label int32 [b], index int64 [b])`` of one epoch."""
        raise NotImplementedError

    def _element(self, payload: tf.Tensor, label: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        """One payload -> ``(encoded image bytes, label)``, checking everything (inside the pipeline)."""
        raise NotImplementedError

    def _fast_element(self, payload: tf.Tensor) -> tf.Tensor:
        """One payload -> encoded image bytes, with as few ops as possible (the plan holds the label)."""
        raise NotImplementedError

    def _describe(self, split: str, index: int) -> Tuple[str, str]:
        """``(file name, reason)`` of a bad example, for the warning."""
        raise NotImplementedError

    # ------------------------------------------------------------------ info
    @property
    def splits(self) -> Dict[str, int]:
        """Number of examples per split (bad files met later are still counted here)."""
        return dict(self._sizes)

    @property
    def bad_files(self) -> int:
        """Bad files met so far by this data set's pipelines."""
        return self._log.count

    def info(self) -> Dict[str, Any]:
        """The summary of :meth:`DataSetBase.info`, plus ``files`` per split and ``on_bad_file``."""
        out = super().info()
        out["files"] = {s: self.num_files(s) for s in self._sizes}
        out["on_bad_file"] = self.on_bad_file
        return out

    # -------------------------------------------------------------- decoding
    def _decoded(
        self, raw: tf.data.Dataset, split: str, batch_size: int, keep_empty: bool,
        augmenter: Optional[Augmenter] = None, tables: Optional[Mapping[str, tf.Tensor]] = None,
    ) -> tf.data.Dataset:
        """Decodes (and augments) payload batches to ``(x uint8 [b, H, W, C], y int32 [b], index int64 [b])``.

        Each batch first goes down a fast path: decoded with no per-image
        branch (images at the data set's size, or all resized) and augmented
        image by image. Only a batch that comes out short (a bad file, or an
        image of another size) is decoded again, example by example, with
        checks, so that its bad files can be named and the others kept; it is
        augmented as a batch (the same result).
        """
        h, w, c = self.input_shape
        slow_resize = "cond" if self._resize else "no"
        fast_resize = self._fast_resize
        element, fast_element = self._element, self._fast_element
        num_classes = self.num_classes
        log = self._log
        empty = (tf.zeros([0, h, w, c], tf.uint8), tf.zeros([0], tf.int32), tf.zeros([0], tf.int64))

        def fast_one(payload: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
            image = decode_image_tensor(fast_element(payload), c, (h, w), fast_resize)
            if augmenter is not None:
                image = augmenter.apply_one(image, index, tables)
            return image

        def slow_one(payload: tf.Tensor, label: tf.Tensor, index: tf.Tensor):
            data, label = element(payload, label)
            return decode_image_tensor(data, c, (h, w), slow_resize), tf.cast(label, tf.int32), index

        def report(planned: tf.Tensor, got: tf.Tensor) -> np.int32:
            log.report(split, np.setdiff1d(planned.numpy(), got.numpy()))
            return np.int32(0)

        def decode_batch(payload: tf.Tensor, label: tf.Tensor, index: tf.Tensor) -> tf.data.Dataset:
            n = tf.shape(index)[0]

            def complete(x: tf.Tensor) -> tf.Tensor:
                # every image decoded, every label (from the plan) a class id
                in_range = tf.reduce_all((label >= 0) & (label < num_classes))
                return tf.logical_and(tf.equal(tf.shape(x)[0], n), in_range)

            fast = tf.data.Dataset.from_tensor_slices((payload, index)).map(fast_one).ignore_errors()
            fast = fast.batch(batch_size).filter(complete).map(lambda x: (x, label, index))

            def check(x: tf.Tensor, y: tf.Tensor, i: tf.Tensor):
                done = tf.cond(
                    tf.shape(i)[0] < n,
                    lambda: tf.py_function(report, [index, i], tf.int32),
                    lambda: tf.constant(0, tf.int32),
                )
                if augmenter is not None:
                    x = augmenter.apply(x, i, tables)
                with tf.control_dependencies([done]):
                    return tf.identity(x), y, i

            slow = tf.data.Dataset.from_tensor_slices((payload, label, index)).map(slow_one).ignore_errors()
            slow = slow.batch(batch_size).concatenate(tf.data.Dataset.from_tensors(empty)).take(1).map(check)
            if not keep_empty:
                # A batch whose every file is bad is dropped (the epoch is one step shorter).
                slow = slow.filter(lambda x, y, i: tf.shape(i)[0] > 0)
            # The slow path is only iterated when the fast one yielded nothing.
            return fast.concatenate(slow).take(1)

        # Everything per batch runs inside the interleave's parallel workers; the
        # batches come out in plan order.
        return raw.interleave(
            decode_batch, cycle_length=_PARALLEL, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )

    # ---------------------------------------------------------------- public
    def raw_batches(
        self, split: str, batch_size: int, *, shuffle: bool = False, seed: Optional[int] = None, epoch: int = 0
    ) -> tf.data.Dataset:
        """Decoded 8-bit batches ``(x uint8 [B, H, W, C], y, index)``; see :meth:`DataSetBase.raw_batches`."""
        plan = self._plan(split, batch_size, shuffle, seed, epoch, False, 0)
        return self._decoded(self._raw_plan(plan), split, plan.batch_size, keep_empty=False)

    def _build(self, plan: Plan, augment: AugmentArg, one_hot: bool) -> tf.data.Dataset:
        augmenter = self._augmenter(plan.split, augment)
        tables = augmenter.tables(self._index_space(plan.split), plan.seed, plan.epoch) if augmenter else None
        finish = self._finisher(None, None, one_hot)  # augmented while decoding
        ds = self._decoded(self._raw_plan(plan), plan.split, plan.batch_size, keep_empty=plan.worker is not None,
                           augmenter=augmenter, tables=tables)
        ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    def _epoch(self, plan: Plan, augment: AugmentArg, one_hot: bool) -> tf.data.Dataset:
        ds = self._build(plan, augment, one_hot)
        register_worker_builder(
            ds, lambda worker: self._build(replace(plan, worker=worker), augment, one_hot), self.num_files(plan.split)
        )
        return ds

    def class_counts(self, split: str) -> List[int]:
        """Number of examples per class id in ``split`` (from the file list or index; no decoding)."""
        raise NotImplementedError

    # ------------------------------------------------------------ statistics
    def _compute_preprocessing(self, normalize: Optional[str], stats_sample: Optional[int]) -> Dict[str, Any]:
        from lamina.data.dataset import NORMALIZE_MODES

        mode = "none" if normalize is None else str(normalize)
        if mode not in NORMALIZE_MODES:
            raise DataError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, got {normalize!r}")
        if stats_sample is not None and (not is_int(stats_sample) or stats_sample < 1 or mode != "standardize"):
            raise DataError(
                f"{self.name}: stats_sample applies to normalize='standardize' and must be a positive integer, "
                f"got {stats_sample!r} with normalize={normalize!r}"
            )
        channels = self.input_shape[-1]
        if mode == "none":
            return {"scale": 1.0, "mean": [0.0] * channels, "std": [1.0] * channels}
        if mode == "scale":
            return {"scale": float(self.raw_scale), "mean": [0.0] * channels, "std": [1.0] * channels}
        return stats_record(self.channel_histogram("train", stats_sample), self.raw_scale)

    def channel_histogram(self, split: str = "train", sample: Optional[int] = None) -> np.ndarray:
        """Counts of every 8-bit value per channel over ``split``, in one streaming pass.

        Args:
          split: which split.
          sample: only this many examples of the seeded shuffled order (default: all).

        Returns:
          ``[C, 256]`` int64 counts (bad files left out).
        """
        if sample is None:
            images = self.raw_batches(split, 256).map(lambda x, y, i: x)
        else:
            images = self.raw_batches(split, 256, shuffle=True).map(lambda x, y, i: x).unbatch().take(int(sample))
            images = images.batch(256)
        return channel_histogram(images, self.input_shape[-1])

    def materialize(self, normalize: Optional[str] = "scale") -> "DataSetBase":
        """Decodes every split into memory (for sets small enough), as an in-memory :class:`DataSet`.

        Args:
          normalize: as for :func:`lamina.data.load`.

        Returns:
          A :class:`~lamina.data.DataSet` with the same splits in stored order
          (bad files skipped or failing as ``on_bad_file`` says).
        """
        from lamina.data.dataset import DataSet

        splits = {s: self._collect(self.raw_batches(s, 256), None) for s in self._sizes}
        return DataSet(self.name, splits, class_names=self.class_names, scale=self.raw_scale, normalize=normalize,
                       seed=self.seed, source=self.source)
