"""Scaling out with ``tf.distribute``: strategies by name, the chief, per-worker data.

* :func:`make_strategy` builds a strategy from a name: ``"default"`` (``None``:
  one device), ``"mirrored"`` (``MirroredStrategy`` over all local GPUs or the
  given devices) or ``"multiworker"`` (``MultiWorkerMirroredStrategy`` over the
  machines described by the ``TF_CONFIG`` environment variable).
* :func:`is_chief` tells whether this process writes checkpoints, logs and plots
  (``chief`` in ``TF_CONFIG`` if there is one, else worker 0).
* :func:`distribute_dataset` splits each global batch over the replicas. An
  in-memory (or any plain) dataset is sharded per worker by *data* (every worker
  runs the whole pipeline and keeps its part of each global batch, so all
  workers run the same number of steps). A lamina streaming dataset is rebuilt
  per worker so that each worker reads only its own files: by *file* when the
  split has at least as many files as there are workers
  (:func:`shard_policy`), by *data* otherwise (each worker still decodes only
  its part of every global batch).
* :func:`configure_cpu_devices` splits the CPU into logical devices, to try a
  ``MirroredStrategy`` on a machine without GPUs (must run before TensorFlow
  initializes its devices).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

__all__ = [
    "STRATEGY_NAMES",
    "DistributeError",
    "make_strategy",
    "parse_tf_config",
    "is_chief",
    "worker_info",
    "worker_dir",
    "shard_by_data",
    "shard_policy",
    "distribute_dataset",
    "configure_cpu_devices",
]

STRATEGY_NAMES = ("default", "mirrored", "multiworker")
_COMMUNICATIONS = ("auto", "ring", "nccl")


class DistributeError(ValueError):
    """A strategy cannot be built from the given name, devices or ``TF_CONFIG``."""


def parse_tf_config(value: Optional[str] = None) -> Dict[str, Any]:
    """Parses and checks a ``TF_CONFIG`` (the environment variable by default).

    Args:
      value: the JSON text; ``None`` reads ``os.environ["TF_CONFIG"]``.

    Returns:
      The parsed dict, with ``cluster`` (task type -> list of ``host:port``) and
      ``task`` (``type``, ``index``).

    Raises:
      DistributeError: if it is missing, not JSON, or inconsistent.
    """
    if value is None:
        value = os.environ.get("TF_CONFIG")
        if not value:
            raise DistributeError("multiworker training needs the TF_CONFIG environment variable (see docs/distributed.md)")
    try:
        config = json.loads(value)
    except json.JSONDecodeError as e:
        raise DistributeError(f"TF_CONFIG is not valid JSON: {e.msg} at position {e.pos}") from None
    if not isinstance(config, dict):
        raise DistributeError(f"TF_CONFIG must be a JSON object, got {type(config).__name__}")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise DistributeError('TF_CONFIG needs a "cluster" object like {"worker": ["host1:port", "host2:port"]}')
    for kind, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses or not all(isinstance(a, str) and ":" in a for a in addresses):
            raise DistributeError(f'TF_CONFIG cluster "{kind}" must be a non-empty list of "host:port" strings, got {addresses!r}')
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise DistributeError('TF_CONFIG needs a "task" object like {"type": "worker", "index": 0}')
    kind, index = task["type"], task["index"]
    if kind not in cluster:
        raise DistributeError(f"TF_CONFIG task type {kind!r} is not in the cluster ({', '.join(cluster)})")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise DistributeError(f"TF_CONFIG task index {index!r} is out of range for {len(cluster[kind])} {kind!r} task(s)")
    return config


def make_strategy(
    name: Optional[str] = "default",
    devices: Optional[Sequence[str]] = None,
    *,
    communication: str = "auto",
) -> Optional[tf.distribute.Strategy]:
    """Builds a distribution strategy from its name.

    Create it first thing in the program: ``MultiWorkerMirroredStrategy`` must
    be built before TensorFlow runs any op.

    Args:
      name: ``"default"`` / ``None`` (no strategy: one device), ``"mirrored"``
        (synchronous data parallelism on this machine's GPUs, or ``devices``) or
        ``"multiworker"`` (the same across the machines in ``TF_CONFIG``).
      devices: for ``"mirrored"``, the devices, e.g. ``["/gpu:0", "/gpu:1"]``
        (default: all local GPUs, else the CPU).
      communication: for ``"multiworker"``, the all-reduce implementation:
        ``"auto"`` (``"ring"`` when there is no GPU, else TensorFlow's choice),
        ``"ring"`` (gRPC, works on CPUs) or ``"nccl"`` (GPUs).

    Returns:
      The strategy, or ``None`` for ``"default"``.

    Raises:
      DistributeError: for an unknown name or communication, devices given for a
        strategy that does not take them, or a missing or malformed ``TF_CONFIG``.
    """
    key = "default" if name is None else str(name).lower()
    if key not in STRATEGY_NAMES:
        raise DistributeError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGY_NAMES)}")
    if communication not in _COMMUNICATIONS:
        raise DistributeError(f"communication must be one of {', '.join(_COMMUNICATIONS)}, got {communication!r}")
    if devices is not None and key != "mirrored":
        raise DistributeError(f"devices can only be given for the 'mirrored' strategy, not {key!r}")
    if key == "default":
        return None
    if key == "mirrored":
        if devices is not None:
            devices = list(devices)
            if not devices or not all(isinstance(d, str) and d for d in devices):
                raise DistributeError(f"devices must be a non-empty list of device names, got {devices!r}")
        return tf.distribute.MirroredStrategy(devices)
    parse_tf_config()
    impl = tf.distribute.experimental.CommunicationImplementation
    if communication == "auto":
        # Ring (gRPC) all-reduce is the one that works between CPU-only processes.
        chosen = impl.AUTO if tf.config.list_physical_devices("GPU") else impl.RING
    else:
        chosen = impl.RING if communication == "ring" else impl.NCCL
    options = tf.distribute.experimental.CommunicationOptions(implementation=chosen)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def worker_info(strategy: Optional[tf.distribute.Strategy]) -> Tuple[Optional[str], int, int]:
    """Returns ``(task_type, task_id, num_workers)`` of this process.

    Args:
      strategy: a strategy or ``None``.

    Returns:
      ``(None, 0, 1)`` without a cluster (one process), else the task type
      (``"worker"`` or ``"chief"``), its index and the number of
      chief + worker tasks.
    """
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is None or not getattr(resolver, "task_type", None):
        return None, 0, 1
    cluster = resolver.cluster_spec().as_dict()
    workers = sum(len(cluster.get(k, [])) for k in ("chief", "worker")) or 1
    return resolver.task_type, int(resolver.task_id or 0), workers


def is_chief(strategy: Optional[tf.distribute.Strategy]) -> bool:
    """Whether this process is the chief: the one that writes checkpoints, logs and plots.

    Args:
      strategy: a strategy or ``None``.

    Returns:
      ``True`` without a cluster; else ``True`` for the ``chief`` task if the
      cluster has one, otherwise for ``worker`` 0.
    """
    task_type, task_id, _ = worker_info(strategy)
    if task_type is None:
        return True
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and task_id == 0


def worker_dir(run_dir: str, sub: str, strategy: Optional[tf.distribute.Strategy]) -> str:
    """The folder this process writes ``sub`` (e.g. ``"checkpoints"``) to.

    Under ``MultiWorkerMirroredStrategy`` every worker must take part in saving
    (reading replica-summed variables is a collective), but only the chief's
    copy is the run's: the others write under ``run_dir/_workers/<task>_<id>/``.

    Args:
      run_dir: the run folder.
      sub: the sub-folder name.
      strategy: a strategy or ``None``.

    Returns:
      ``run_dir/sub`` on the chief, the worker's private folder elsewhere.
    """
    if is_chief(strategy):
        return os.path.join(run_dir, sub)
    task_type, task_id, _ = worker_info(strategy)
    return os.path.join(run_dir, "_workers", f"{task_type}_{task_id}", sub)


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Sets the auto-shard policy of ``dataset`` to ``DATA``.

    Each worker then runs the whole pipeline and keeps its own part of every
    global batch: right for in-memory data (nothing to shard by file) and it
    gives every worker the same number of steps, which synchronous training
    needs.

    Args:
      dataset: a batched ``tf.data.Dataset`` (batches are global batches).

    Returns:
      The dataset with the option set.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def shard_policy(num_files: int, num_workers: int) -> "tf.data.experimental.AutoShardPolicy":
    """How a file-backed dataset is split over workers.

    Args:
      num_files: files the split is stored in (image files, TFRecord shards).
      num_workers: workers in the cluster.

    Returns:
      ``AutoShardPolicy.FILE`` (each worker reads its own files) when there
      are at least as many files as workers, else ``AutoShardPolicy.DATA``.
    """
    policy = tf.data.experimental.AutoShardPolicy
    return policy.FILE if int(num_files) >= int(num_workers) else policy.DATA


def distribute_dataset(strategy: Optional[tf.distribute.Strategy], dataset: Any) -> Any:
    """Distributes a dataset of global batches over the strategy's replicas.

    A streaming lamina dataset (``StreamingDataSet.batches``) under several
    workers is rebuilt on each worker with ``distribute_datasets_from_function``
    for its part of the epoch plan: by :func:`shard_policy`, file sharding
    (the worker reads only its shards; every worker gets the same number of
    full batches) or data sharding (the common global batches, cut per replica
    before decoding). Either way, the position in the epoch stays a pure
    function of ``(seed, epoch, step)``, so resuming is exact.

    Args:
      strategy: a strategy, or ``None`` (the dataset is returned as is).
      dataset: a batched ``tf.data.Dataset`` (or any iterable, returned as is).

    Returns:
      A distributed dataset whose elements are per-replica values, each worker
      holding its replicas' parts of the global batch.
    """
    if strategy is None or not isinstance(dataset, tf.data.Dataset):
        return dataset
    from lamina.data.sharding import WorkerShard, worker_builder

    entry = worker_builder(dataset)
    _, _, workers = worker_info(strategy)
    if entry is not None and workers > 1:
        builder, num_files = entry
        file_policy = shard_policy(num_files, workers) == tf.data.experimental.AutoShardPolicy.FILE
        replicas = int(strategy.num_replicas_in_sync)

        def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
            shard = WorkerShard(int(context.input_pipeline_id), int(context.num_input_pipelines), replicas,
                                "file" if file_policy else "data")
            options = tf.data.Options()
            # Sharded by the plan already: tf.data must not shard again.
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
            return builder(shard).with_options(options)

        return strategy.distribute_datasets_from_function(per_worker)
    return strategy.experimental_distribute_dataset(shard_by_data(dataset))


def configure_cpu_devices(count: int) -> List[str]:
    """Splits the (first) physical CPU into ``count`` logical devices.

    Useful to run a ``MirroredStrategy`` on a machine without GPUs (tests,
    demos). It does not add compute: the logical devices share the cores.

    Args:
      count: the number of logical CPU devices (>= 1).

    Returns:
      Their names, e.g. ``["/cpu:0", "/cpu:1"]``.

    Raises:
      ValueError: for a bad ``count``.
      RuntimeError: if TensorFlow has already initialized its devices with
        another configuration.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"configure_cpu_devices: count must be a positive int, got {count!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        existing = tf.config.list_logical_devices("CPU")
        if len(existing) != count:
            raise RuntimeError(
                f"configure_cpu_devices: TensorFlow is already initialized with {len(existing)} CPU device(s); "
                "call this before running any TensorFlow op"
            ) from None
    return [f"/cpu:{i}" for i in range(count)]
