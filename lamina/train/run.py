"""Run directories: the effective config, and rebuilding a trained model from one.

A run directory written by ``lamina train`` holds::

    config.json        the effective configuration (model, data, hyper-parameters,
                       input shape, classes, preprocessing); ``resumes`` lists
                       what each resume changed (old and new values)
    .lamina.lock       locked by the ``lamina train`` writing the folder (lock.py)
    checkpoints/       latest checkpoints (SafeCheckpointManager)
    best/              the best checkpoint by the validation metric
    metrics.jsonl      one JSON line per epoch
    tensorboard/       TensorBoard scalars and the step graph
    history.png        loss / accuracy curves, train vs validation
    confusion.png      confusion matrix of the test split
    results.json       final test metrics and timings

Everything read back from a run directory must lie inside it: a
``config.json``, ``checkpoints/`` or ``best/`` that is a symbolic link
leading elsewhere, or a checkpoint state file listing another run's files,
is refused (or ignored with a warning).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Dict, Optional, Tuple

import tensorflow as tf

from lamina.fileio import atomic_write_json, is_inside
from lamina.train.config import ConfigError, RunConfig, RunRecord

__all__ = ["RunDirError", "CONFIG_NAME", "RESUMABLE_OPTIONS", "MAX_CLASSES", "MAX_INPUT_ELEMENTS", "write_record",
           "read_record", "read_config", "original_config", "check_compatible", "has_checkpoint", "epochs_done",
           "run_lock", "load_run", "load_run_checkpoint", "checkpoint_info", "describe_checkpoint",
           "checkpoint_path", "default_run_dir"]

CONFIG_NAME = "config.json"

# What must match to train on in an existing run directory: the model and what its data looks like...
_IDENTITY_KEYS = ("model", "model_kwargs", "num_classes", "input_shape", "class_names", "preprocessing")
# ...and every option, except these, which a resumed run may change: they change how long it
# trains, how often it saves and how it runs, not what a step computes (``epochs`` may not go
# below the epochs already done). Any other change (batch size, learning rate or schedule,
# optimizer, seed, data, validation split, augmentation, ...) would silently train another run.
RESUMABLE_OPTIONS = ("epochs", "max_steps", "checkpoint_every", "keep_checkpoints", "patience", "check_numerics",
                     "strategy", "jit", "deterministic", "mlflow", "run_dir")

# Limits for a config.json read back: a tampered file must not make lamina allocate without bound.
MAX_CLASSES = 1_000_000
MAX_INPUT_ELEMENTS = 1 << 28

_EPOCH_KEY = "epoch/.ATTRIBUTES/VARIABLE_VALUE"


class RunDirError(ValueError):
    """A run directory is missing, incomplete, in use, or holds something else."""


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def write_record(run_dir: str, record: RunRecord) -> str:
    """Writes ``config.json`` atomically (temporary file, fsync, rename), keeping what resumes changed.

    When the folder holds a trained run (a checkpoint) whose recorded options
    differ from ``record``'s (only :data:`RESUMABLE_OPTIONS` can, see
    :func:`check_compatible`), the change is appended to the file's
    ``resumes`` list (``{"changed": {option: [old, new]}, "epochs_done": N,
    "time": ...}``), so the original configuration is never lost
    (:func:`original_config` rebuilds it).

    Args:
      run_dir: the run directory (created if needed).
      record: the run's record.

    Returns:
      The file's path.

    Raises:
      OSError: if the file cannot be written (the old one is then unchanged).
    """
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, CONFIG_NAME)
    data = record.to_json()
    if os.path.isfile(path) and is_inside(run_dir, path) and has_checkpoint(run_dir):
        try:
            old = read_config(run_dir)
        except RunDirError:
            old = {}
        resumes = list(old["resumes"]) if isinstance(old.get("resumes"), list) else []
        changed = {f.name: [old[f.name], data.get(f.name)] for f in RunConfig.options()
                   if f.name in old and not _same(old[f.name], data.get(f.name))}
        if changed:
            resumes.append({"changed": changed, "epochs_done": epochs_done(run_dir),
                            "time": time.strftime("%Y-%m-%d %H:%M:%S")})
        if resumes:
            data["resumes"] = resumes
    atomic_write_json(path, data, indent=2, sort_keys=True)
    return path


def original_config(run_dir: str) -> Dict[str, Any]:
    """The configuration a run was started with: ``config.json`` with every recorded resume change undone.

    Args:
      run_dir: the run directory.

    Returns:
      The options and resolved fields as first written (without ``resumes``).

    Raises:
      RunDirError: for a missing or unreadable ``config.json``.
    """
    data = dict(read_config(run_dir))
    resumes = data.pop("resumes", None)
    for entry in reversed(resumes if isinstance(resumes, list) else []):
        changed = entry.get("changed") if isinstance(entry, dict) else None
        for key, pair in (changed.items() if isinstance(changed, dict) else ()):
            if isinstance(pair, list) and len(pair) == 2:
                data[key] = pair[0]
    return data


def read_config(run_dir: str) -> Dict[str, Any]:
    """Reads a run directory's ``config.json`` as it is (a dict).

    Args:
      run_dir: the run directory.

    Returns:
      The parsed JSON object.

    Raises:
      RunDirError: if the folder or its config is missing or unreadable, or
        the config is a symbolic link leading outside the folder.
    """
    if not os.path.isdir(run_dir):
        raise RunDirError(f"run directory {run_dir!r} does not exist")
    path = os.path.join(run_dir, CONFIG_NAME)
    if not os.path.lexists(path):
        raise RunDirError(f"{run_dir!r} is not a lamina run directory (no {CONFIG_NAME})")
    if not is_inside(run_dir, path):
        raise RunDirError(f"{path} is a symbolic link to {os.path.realpath(path)}, outside the run directory; "
                          "refusing to read it")
    if not os.path.isfile(path):
        raise RunDirError(f"{path} is not a regular file")
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 24)
        data = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise RunDirError(f"cannot read {path}: {' '.join(str(e).split())[:200]}") from None
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
        record = RunRecord.from_json(read_config(run_dir), source=path)
    except ConfigError as e:
        raise RunDirError(str(e)) from None
    _check_record(record, path)
    return record


def _numbers(value: Any, count: int) -> bool:
    return (isinstance(value, list) and len(value) in (1, count) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))


def _check_record(record: RunRecord, path: str) -> None:
    """What ``RunRecord.from_json`` leaves unchecked: sizes within reason, names and preprocessing that fit."""
    if record.num_classes > MAX_CLASSES:
        raise RunDirError(f"{path}: num_classes {record.num_classes} is more than {MAX_CLASSES:,} (tampered?)")
    elements = math.prod(record.input_shape)
    if elements > MAX_INPUT_ELEMENTS:
        raise RunDirError(f"{path}: input_shape {record.input_shape} has {elements:,} values per example, "
                          f"more than {MAX_INPUT_ELEMENTS:,} (tampered?)")
    names = record.class_names
    if names and (len(names) != record.num_classes or not all(isinstance(n, str) for n in names)):
        raise RunDirError(f"{path}: class_names must be {record.num_classes} strings, got {len(names)} entries")
    pre = record.preprocessing
    if pre:
        channels = record.input_shape[-1]
        scale = pre.get("scale")
        if (not _numbers([scale], 1) or scale <= 0 or not _numbers(pre.get("mean"), channels)
                or not _numbers(pre.get("std"), channels) or min(pre["std"]) <= 0):
            raise RunDirError(f"{path}: preprocessing must hold a positive scale, and {channels} finite means and "
                              f"positive stds, got {json.dumps(pre)[:200]}")
    if record.config.image_size is not None and math.prod(record.config.image_size) > MAX_INPUT_ELEMENTS:
        raise RunDirError(f"{path}: image_size {record.config.image_size} is too large (tampered?)")


def has_checkpoint(run_dir: str) -> bool:
    """Whether ``run_dir/checkpoints`` holds at least one checkpoint (something a new run would overwrite)."""
    folder = os.path.join(run_dir, "checkpoints")
    try:
        return os.path.isdir(folder) and any(n.endswith(".index") for n in os.listdir(folder))
    except OSError:
        return False


def epochs_done(run_dir: str) -> int:
    """How many epochs a run has finished: its newest intact checkpoint's epoch counter.

    The checkpoint, not ``metrics.jsonl``, is the truth; the log is used only
    when no checkpoint can be read.

    Args:
      run_dir: the run directory.

    Returns:
      The number of finished epochs (0 for a fresh folder).
    """
    from lamina.train.checkpoints import CheckpointError, latest_good_checkpoint

    folder = os.path.join(run_dir, "checkpoints")
    if os.path.isdir(folder) and is_inside(run_dir, folder):
        try:
            path = latest_good_checkpoint(folder, warn=None)
            if path:
                return int(tf.train.load_checkpoint(path).get_tensor(_EPOCH_KEY))
        except (CheckpointError, tf.errors.OpError, ValueError):
            pass
    log = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(log):
        return 0
    from lamina.train.callbacks.metrics_log import read_metrics

    try:
        records = read_metrics(log, warn=False)
        return max((int(r.get("epoch", 0)) for r in records), default=0)
    except (OSError, ValueError, TypeError):
        return 0


def check_compatible(run_dir: str, record: RunRecord) -> None:
    """Refuses to train in a run directory whose run this configuration would not continue.

    A folder without checkpoints holds nothing to continue (a run that failed
    before its first save): any configuration may start there. Otherwise the
    model (and the classes, input shape and preprocessing of its data) must be
    the same and every option equal to the recorded one, except
    :data:`RESUMABLE_OPTIONS`; ``epochs`` may not go below the epochs done.

    Args:
      run_dir: an existing or new run directory.
      record: the record about to be used.

    Raises:
      RunDirError: naming the option and both values.
    """
    path = os.path.join(run_dir, CONFIG_NAME)
    if not os.path.lexists(path):
        if os.path.isdir(os.path.join(run_dir, "checkpoints")):
            raise RunDirError(f"{run_dir!r} holds checkpoints but no {CONFIG_NAME}; use another --run-dir")
        return
    if not has_checkpoint(run_dir):
        return
    old = read_config(run_dir)
    new = record.to_json()
    for key in _IDENTITY_KEYS:
        a, b = old.get(key), new.get(key)
        if not _same(a, b):
            raise RunDirError(
                f"run directory {run_dir!r} holds a different run ({key}: {a!r} there, {b!r} now); "
                "use another --run-dir"
            )
    old_config = read_record(run_dir).config
    for f in RunConfig.options():
        if f.name in RESUMABLE_OPTIONS:
            continue
        a, b = getattr(old_config, f.name), getattr(record.config, f.name)
        if not _same(a, b):
            raise RunDirError(
                f"cannot resume {run_dir!r} with {RunConfig.flag(f.name)} {b!r}: it was trained with {a!r} "
                f"(only {', '.join(RunConfig.flag(n) for n in RESUMABLE_OPTIONS if n != 'run_dir')} may change "
                "on resume); use another --run-dir"
            )
    done = epochs_done(run_dir)
    if record.config.epochs < done:
        raise RunDirError(
            f"cannot resume {run_dir!r} with --epochs {record.config.epochs}: it has already trained {done} epochs"
        )


def run_lock(run_dir: str, strategy: Any = None) -> Any:
    """The lock this process takes to train in ``run_dir`` (see :mod:`lamina.train.lock`).

    Args:
      run_dir: the run directory.
      strategy: the distribution strategy: a multi-worker worker other than
        the chief locks its own ``_workers/<task>/`` folder.

    Returns:
      An unacquired :class:`~lamina.train.lock.RunLock`.
    """
    from lamina.train.distribute import worker_dir
    from lamina.train.lock import RunLock

    return RunLock(os.path.normpath(worker_dir(run_dir, "", strategy)))


def _sub_folder(run_dir: str, sub: str) -> Optional[str]:
    folder = os.path.join(run_dir, sub)
    if not os.path.isdir(folder):
        return None
    if not is_inside(run_dir, folder):
        raise RunDirError(f"{folder} is a symbolic link to {os.path.realpath(folder)}, outside the run directory; "
                          "refusing to read it")
    return folder


def _warn(message: str) -> None:
    from lamina.train.checkpoints import _warn as warn

    warn(message)


def checkpoint_path(run_dir: str, which: str = "best") -> str:
    """Returns the checkpoint prefix to load from a run directory.

    Args:
      run_dir: the run directory.
      which: ``"best"`` (falls back to the latest, with a warning when
        ``best/`` holds only corrupt checkpoints) or ``"latest"``.

    Returns:
      A checkpoint prefix.

    Raises:
      RunDirError: when the run has no checkpoint, or a checkpoint folder
        leads outside the run directory.
      CheckpointError: when it has checkpoints but none is intact.
    """
    from lamina.train.checkpoints import CheckpointError, latest_good_checkpoint

    if which not in ("best", "latest"):
        raise RunDirError(f"which must be 'best' or 'latest', got {which!r}")
    damaged = None
    for sub in (["best", "checkpoints"] if which == "best" else ["checkpoints"]):
        folder = _sub_folder(run_dir, sub)
        if folder is None:
            continue
        try:
            # The newest intact checkpoint: corrupt ones are skipped with a warning.
            path = latest_good_checkpoint(folder)
        except CheckpointError as e:
            if sub != "best":
                raise
            damaged = e
            continue
        if path:
            if damaged is not None:
                _warn(f"{str(damaged).split('; move the folder')[0]}; using the latest checkpoint {os.path.normpath(path)}")
            return path
    if damaged is not None:
        raise damaged
    raise RunDirError(f"run directory {run_dir!r} has no checkpoint yet")


def load_run_checkpoint(run_dir: str, which: str = "best", weights: str = "live") -> Tuple[Any, RunRecord, str]:
    """Rebuilds the model of a run directory, restores its weights, and says from which checkpoint.

    A run that is training meanwhile may delete a checkpoint between its
    verification and its restore (retention, a new best): the newest intact
    one is then looked up again (a few times).

    Args:
      run_dir: a directory written by ``lamina train``.
      which: ``"best"`` or ``"latest"`` checkpoint.
      weights: ``"live"`` (the trained weights) or ``"ema"`` (their moving
        average, for a run trained with ``--ema``).

    Returns:
      ``(model, record, checkpoint prefix)``; the model is built and holds the chosen weights.

    Raises:
      RunDirError: if the directory, its config or its checkpoint is missing,
        the checkpoint does not fit the model, or ``weights="ema"`` for a run
        without an average.
      CheckpointError: when it has checkpoints but none is intact.
    """
    from lamina.models.registry import create_model

    if weights not in ("live", "ema"):
        raise RunDirError(f"weights must be 'live' or 'ema', got {weights!r}")
    record = read_record(run_dir)
    if weights == "ema" and record.config.ema is None:
        raise RunDirError(f"run directory {run_dir!r} was trained without --ema: it has no weight average")
    source = os.path.join(run_dir, CONFIG_NAME)

    path = checkpoint_path(run_dir, which)
    _check_model_size(record, path, source)
    try:
        model = create_model(record.config.model, record.num_classes, **record.model_kwargs)
        model(tf.zeros((1, *record.input_shape), _input_dtype(record)), training=False)
    except (TypeError, ValueError, KeyError, tf.errors.InvalidArgumentError) as e:
        raise RunDirError(f"{source}: cannot build model {record.config.model!r} with input shape "
                          f"{tuple(record.input_shape)} and {record.model_kwargs}: "
                          f"{' '.join(str(e).split())[:200]}") from None
    except (MemoryError, tf.errors.ResourceExhaustedError):
        raise RunDirError(f"{source}: model {record.config.model!r} with input shape {tuple(record.input_shape)} "
                          f"and {record.num_classes} classes does not fit in memory (edited config.json?)") from None
    parts: Dict[str, Any] = {"model": model}
    ema = None
    if weights == "ema":
        from lamina.train.ema import WeightEMA

        ema = parts["ema"] = WeightEMA(model, record.config.ema)
    for attempt in range(4):
        if attempt:
            path = checkpoint_path(run_dir, which)
        try:
            status = tf.train.Checkpoint(**parts).restore(path)
            status.expect_partial().assert_existing_objects_matched()
            break
        except tf.errors.NotFoundError:
            if attempt == 3:  # pragma: no cover - a run saving faster than it can be read
                raise RunDirError(f"checkpoint {path} disappeared while it was read (the run is training); retry")
        except AssertionError as e:
            raise RunDirError(f"checkpoint {path} does not match the model in {run_dir!r}: {e}") from None
        except (tf.errors.InvalidArgumentError, ValueError) as e:
            raise RunDirError(f"checkpoint {path} does not match the model in {run_dir!r}: "
                              f"{' '.join(str(e).split())[:200]}") from None
    if ema is not None:
        ema.copy_to()
    return model, record, path


def checkpoint_info(path: str, which: str = "best") -> Dict[str, Any]:
    """What a run's checkpoint holds: its epoch, step and (for ``best``) the monitored value.

    Args:
      path: a checkpoint prefix written by the Trainer.
      which: ``"best"`` or ``"latest"``, recorded as given (``"latest"`` for a
        ``best`` request answered from ``checkpoints/``).

    Returns:
      ``{"which", "path", "epoch", "step"}`` and ``"value"`` when the best
      score is stored (``None`` for what the checkpoint does not hold).
    """
    if which == "best" and os.path.basename(os.path.dirname(path)) == "checkpoints":
        which = "latest"  # best/ was damaged: checkpoint_path fell back to the latest
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


def _input_dtype(record: RunRecord) -> tf.DType:
    """The dtype a run's model is built with: int32 token ids for a language model, float32 otherwise."""
    from lamina.models.registry import model_task

    return tf.int32 if model_task(record.config.model) == "language_model" else tf.float32


def _check_model_size(record: RunRecord, path: str, source: str) -> None:
    """Refuses, before anything is allocated, a config.json that describes more weights than its checkpoint holds.

    The model is first built in a throw-away graph, where variables take no
    memory (and no seed is consumed): a ``model_kwargs`` or input shape edited
    to something huge is one line, not an out-of-memory kill. A model that
    cannot be built that way is not checked here.
    """
    from lamina.models.registry import create_model
    from lamina.random import preserved_seeds

    try:
        with preserved_seeds(), tf.Graph().as_default():
            model = create_model(record.config.model, record.num_classes, **record.model_kwargs)
            model(tf.zeros((1, *record.input_shape), _input_dtype(record)), training=False)
            wanted = sum(math.prod(v.shape.as_list()) for v in model.variables)
        shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    except Exception:  # noqa: BLE001 - the real build below reports what is wrong
        return
    saved = sum(math.prod(shape) for key, shape in shapes.items() if key.startswith("model/"))
    if wanted > saved:
        raise RunDirError(f"{source} describes a model of {wanted:,} weights, but its checkpoint {path} holds "
                          f"{saved:,}: they do not match (an edited config.json?)")


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
      CheckpointError: when it has checkpoints but none is intact.
    """
    model, record, _ = load_run_checkpoint(run_dir, which, weights)
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
    from lamina.data.load import split_source_options

    tag = os.path.basename(os.path.normpath(split_source_options(str(data))[0])).replace(":", "_") or "data"
    return os.path.join(root, f"{model}-{tag}-{time.strftime('%Y%m%d-%H%M%S')}")
