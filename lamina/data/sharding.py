"""Per-worker input pipelines for streaming data sets under ``MultiWorkerMirroredStrategy``.

A streaming data set knows which files every batch of an epoch comes from (its
order is a pure function of ``(seed, epoch)``), so it can build, for each
worker, a pipeline that reads only that worker's files. :meth:`batches`
registers here how to rebuild its pipeline for one worker;
:func:`lamina.train.distribute.distribute_dataset` looks it up.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import tensorflow as tf

__all__ = ["SHARD_MODES", "WorkerShard", "register_worker_builder", "worker_builder"]

SHARD_MODES: Tuple[str, ...] = ("file", "data")


@dataclass(frozen=True)
class WorkerShard:
    """Which part of every global batch one worker's pipeline produces.

    Attributes:
      index: this worker's index (``input_pipeline_id``).
      count: number of workers.
      replicas: replicas in sync over all workers (a multiple of ``count``).
      mode: ``"file"`` (the worker reads only its own files; every worker
        gets the same number of full per-replica batches per epoch) or
        ``"data"`` (every worker plans the same global batches and decodes
        only its replicas' slice of each).
    """

    index: int
    count: int
    replicas: int
    mode: str = "data"

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"WorkerShard: index {self.index} out of range for {self.count} workers")
        if self.replicas < self.count or self.replicas % self.count:
            raise ValueError(f"WorkerShard: {self.replicas} replicas is not a multiple of {self.count} workers")
        if self.mode not in SHARD_MODES:
            raise ValueError(f"WorkerShard: mode must be one of {', '.join(SHARD_MODES)}, got {self.mode!r}")

    @property
    def local_replicas(self) -> int:
        """Replicas on this worker."""
        return self.replicas // self.count


Builder = Callable[[WorkerShard], tf.data.Dataset]
_BUILDERS: "weakref.WeakKeyDictionary[tf.data.Dataset, Tuple[Builder, int]]" = weakref.WeakKeyDictionary()


def register_worker_builder(dataset: tf.data.Dataset, builder: Builder, num_files: int) -> None:
    """Records how to rebuild ``dataset`` for one worker.

    Args:
      dataset: the single-process pipeline returned by ``batches()``.
      builder: ``builder(WorkerShard) -> tf.data.Dataset`` of per-replica batches.
      num_files: the number of files the split is stored in (decides file or
        data sharding).
    """
    _BUILDERS[dataset] = (builder, int(num_files))


def worker_builder(dataset: tf.data.Dataset) -> Optional[Tuple[Builder, int]]:
    """The ``(builder, num_files)`` registered for ``dataset``, or ``None`` (not a streaming pipeline)."""
    try:
        return _BUILDERS.get(dataset)
    except TypeError:  # not weak-referenceable: not one of ours
        return None
