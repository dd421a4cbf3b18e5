"""Run directories: the effective config, and rebuilding a trained model from one.

A run directory written by ``lamina train`` holds::

    config.json        the effective configuration (model, data, hyper-parameters,
                       input shape, classes, preprocessing)
    checkpoints/       latest checkpoints (tf.train.CheckpointManager)
    best/              the best checkpoint by the validation metric
    metrics.jsonl      one JSON line per epoch
    tensorboard/       TensorBoard scalars and the step graph
    history.png        loss / accuracy curves, train vs validation
    confusion.png      confusion matrix of the test split
    results.json       final test metrics and timings
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Tuple

import tensorflow as tf

from lamina.train.config import ConfigError, RunConfig, RunRecord

__all__ = ["RunDirError", "CONFIG_NAME", "RESUMABLE_OPTIONS", "write_record", "read_record", "read_config",
           "check_compatible", "has_checkpoint", "load_run", "checkpoint_info", "describe_checkpoint", "checkpoint_path", "default_run_dir"]

CONFIG_NAME = "config.json"

# What must match to train on in an existing run directory: the model itself...
_IDENTITY_KEYS = ("model", "model_kwargs", "num_classes", "input_shape")
# ...and every option, except these, which a resumed run may change.
RESUMABLE_OPTIONS = ("epochs", "max_steps", "checkpoint_every", "keep_checkpoints", "patience", "check_numerics",
                     "strategy", "jit", "mlflow", "run_dir")


class RunDirError(ValueError):
    """A run directory is missing, incomplete, or holds something else."""


def write_record(run_dir: str, record: RunRecord) -> str:
    """Writes ``config.json`` atomically (temporary file, fsync, rename).

    Args:
      run_dir: the run directory (created if needed).
      record: the run's record.

    Returns:
      The file's path.
    """
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, CONFIG_NAME)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record.to_json(), f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_config(run_dir: str) -> Dict[str, Any]:
    """Reads a run directory's ``config.json`` as it is (a dict).

    Args:
      run_dir: the run directory.

    Returns:
      The parsed JSON object.

    Raises:
      RunDirError: if the folder or its config is missing or unreadable.
    """
    if not os.path.isdir(run_dir):
        raise RunDirError(f"run directory {run_dir!r} does not exist")
    path = os.path.join(run_dir, CONFIG_NAME)
    if not os.path.exists(path):
        raise RunDirError(f"{run_dir!r} is not a lamina run directory (no {CONFIG_NAME})")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise RunDirError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_record(run_dir: str) -> RunRecord:
    """Reads and checks a run directory's ``config.json``.

    Args:
      run_dir: the run directory.

    Returns:
      The :class:`RunRecord`.

    Raises:
      RunDirError: for a missing, unreadable, incomplete or tampered config.
    """
    path = os.path.join(run_dir, CONFIG_NAME)
    try:
        return RunRecord.from_json(read_config(run_dir), source=path)
    except ConfigError as e:
        raise RunDirError(str(e)) from None


def has_checkpoint(run_dir: str) -> bool:
    """Whether ``run_dir/checkpoints`` holds at least one checkpoint (something a new run would overwrite)."""
    folder = os.path.join(run_dir, "checkpoints")
    return os.path.isdir(folder) and any(n.endswith(".index") for n in os.listdir(folder))


def _epochs_done(run_dir: str) -> int:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    from lamina.train.callbacks.metrics_log import read_metrics

    try:
        records = read_metrics(path, warn=False)
    except (OSError, ValueError):
        return 0
    return max((int(r.get("epoch", 0)) for r in records), default=0)


def check_compatible(run_dir: str, record: RunRecord) -> None:
    """Refuses to train in a run directory whose run this configuration would not continue.

    A folder without checkpoints holds nothing to continue (a run that failed
    before its first save): any configuration may start there. Otherwise the
    model must be the same and every option equal to the recorded one, except
    :data:`RESUMABLE_OPTIONS`; ``epochs`` may grow, not shrink below what was done.

    Args:
      run_dir: an existing or new run directory.
      record: the record about to be used.

    Raises:
      RunDirError: naming the option and both values.
    """
    path = os.path.join(run_dir, CONFIG_NAME)
    if not os.path.exists(path):
        if os.path.isdir(os.path.join(run_dir, "checkpoints")):
            raise RunDirError(f"{run_dir!r} holds checkpoints but no {CONFIG_NAME}; use another --run-dir")
        return
    if not has_checkpoint(run_dir):
        return
    old = read_config(run_dir)
    new = record.to_json()
    for key in _IDENTITY_KEYS:
        a, b = old.get(key), new.get(key)
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            raise RunDirError(
                f"run directory {run_dir!r} holds a different run ({key}: {a!r} there, {b!r} now); "
                "use another --run-dir"
            )
    old_config = read_record(run_dir).config
    for f in RunConfig.options():
        if f.name in RESUMABLE_OPTIONS:
            continue
        a, b = getattr(old_config, f.name), getattr(record.config, f.name)
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            raise RunDirError(
                f"cannot resume {run_dir!r} with {RunConfig.flag(f.name)} {b!r}: it was trained with {a!r} "
                f"(only {', '.join(RunConfig.flag(n) for n in RESUMABLE_OPTIONS if n != 'run_dir')} may change "
                "on resume); use another --run-dir"
            )
    done = _epochs_done(run_dir)
    if record.config.epochs < done:
        raise RunDirError(
            f"cannot resume {run_dir!r} with --epochs {record.config.epochs}: it has already trained {done} epochs"
        )


def checkpoint_path(run_dir: str, which: str = "best") -> str:
    """Returns the checkpoint prefix to load from a run directory.

    Args:
      run_dir: the run directory.
      which: ``"best"`` (falls back to the latest) or ``"latest"``.

    Returns:
      A checkpoint prefix.

    Raises:
      RunDirError: when the run has no checkpoint.
      CheckpointError: when it has checkpoints but none is intact.
    """
    from lamina.train.checkpoints import latest_good_checkpoint

    if which not in ("best", "latest"):
        raise RunDirError(f"which must be 'best' or 'latest', got {which!r}")
    candidates = ["best", "checkpoints"] if which == "best" else ["checkpoints"]
    for sub in candidates:
        folder = os.path.join(run_dir, sub)
        if os.path.isdir(folder):
            # The newest intact checkpoint: corrupt ones are skipped with a warning.
            path = latest_good_checkpoint(folder)
            if path:
                return path
    raise RunDirError(f"run directory {run_dir!r} has no checkpoint yet")


def checkpoint_info(path: str, which: str = "best") -> Dict[str, Any]:
    """What a run's checkpoint holds: its epoch, step and (for ``best``) the monitored value.

    Args:
      path: a checkpoint prefix written by the Trainer.
      which: ``"best"`` or ``"latest"``, recorded as given.

    Returns:
      ``{"which", "path", "epoch", "step"}`` and ``"value"`` when the best
      score is stored (``None`` for what the checkpoint does not hold).
    """
    info: Dict[str, Any] = {"which": which, "path": path, "epoch": None, "step": None}
    try:
        reader = tf.train.load_checkpoint(path)
        names = reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError):
        return info
    for key, name in (("epoch", "epoch/.ATTRIBUTES/VARIABLE_VALUE"), ("step", "step/.ATTRIBUTES/VARIABLE_VALUE"),
                      ("value", "callbacks/best_checkpoint/best_value/.ATTRIBUTES/VARIABLE_VALUE")):
        if name in names:
            value = reader.get_tensor(name)
            info[key] = float(value) if key == "value" else int(value)
    return info


def describe_checkpoint(info: Dict[str, Any]) -> str:
    """``"best checkpoint (epoch 15, step 615)"`` from :func:`checkpoint_info`."""
    where = ", ".join(f"{k} {info[k]}" for k in ("epoch", "step") if info.get(k) is not None)
    return f"{info['which']} checkpoint" + (f" ({where})" if where else "")


def load_run(run_dir: str, which: str = "best", weights: str = "live") -> Tuple[Any, RunRecord]:
    """Rebuilds the model of a run directory and restores its weights.

    Args:
      run_dir: a directory written by ``lamina train``.
      which: ``"best"`` or ``"latest"`` checkpoint.
      weights: ``"live"`` (the trained weights) or ``"ema"`` (their moving
        average, for a run trained with ``--ema``).

    Returns:
      ``(model, record)``; the model is built and holds the chosen weights.

    Raises:
      RunDirError: if the directory, its config or its checkpoint is missing,
        or ``weights="ema"`` for a run without an average.
    """
    from lamina.models.registry import create_model

    if weights not in ("live", "ema"):
        raise RunDirError(f"weights must be 'live' or 'ema', got {weights!r}")
    record = read_record(run_dir)
    path = checkpoint_path(run_dir, which)
    model = create_model(record.config.model, record.num_classes, **record.model_kwargs)
    from lamina.models.registry import model_task

    ids = model_task(record.config.model) == "language_model"  # token ids in, not pixels
    model(tf.zeros((1, *record.input_shape), tf.int32 if ids else tf.float32), training=False)
    parts: Dict[str, Any] = {"model": model}
    ema = None
    if weights == "ema":
        if record.config.ema is None:
            raise RunDirError(f"run directory {run_dir!r} was trained without --ema: it has no weight average")
        from lamina.train.ema import WeightEMA

        ema = parts["ema"] = WeightEMA(model, record.config.ema)
    status = tf.train.Checkpoint(**parts).restore(path)
    try:
        status.expect_partial().assert_existing_objects_matched()
    except AssertionError as e:
        raise RunDirError(f"checkpoint {path} does not match the model in {run_dir!r}: {e}") from None
    if ema is not None:
        ema.copy_to()
    return model, record


def default_run_dir(model: str, data: str, root: str = "runs") -> str:
    """Returns ``runs/<model>-<data>-<timestamp>``.

    Args:
      model: model name.
      data: data source (a path is reduced to its base name).
      root: parent folder.

    Returns:
      The path (not created).
    """
    import time

    from lamina.data.load import split_source_options

    tag = os.path.basename(os.path.normpath(split_source_options(str(data))[0])).replace(":", "_") or "data"
    return os.path.join(root, f"{model}-{tag}-{time.strftime('%Y%m%d-%H%M%S')}")
