"""SavedModel export: raw pixels in, ``logits`` / ``probabilities`` / ``class_id`` out.

Also holds what every export format shares: :class:`ExportError`, the
preprocessing record, the :class:`ServingModule` wrapper whose ``serve``
function TFLite and ONNX are converted from, the self-check on a sample batch
and the atomic write of an export directory with its ``lamina_export.json``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from lamina.export.versions import versioned_path
from lamina.module import call_with_training

__all__ = [
    "ExportError",
    "ServingModule",
    "METADATA_NAME",
    "SIGNATURE_KEY",
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "SAVED_MODEL_TOLERANCE",
    "normalize_preprocessing",
    "run_preprocessing",
    "random_sample",
    "max_difference",
    "saved_model",
    "read_metadata",
    "load_signature",
    "ensure_built",
    "check_difference",
    "enforce_tolerance",
    "write_export_dir",
    "base_metadata",
    "save_serving",
    "printer",
    "one_line",
    "sample_batch",
]

METADATA_NAME = "lamina_export.json"
SIGNATURE_KEY = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "probabilities", "class_id")
SAVED_MODEL_TOLERANCE = 1e-5


class ExportError(ValueError):
    """An export failed: conversion error, missing package, or a self-check above tolerance."""


def normalize_preprocessing(preprocessing: Optional[Mapping[str, Any]], channels: int) -> Dict[str, Any]:
    """Checks a preprocessing record and fills in ``raw_max``.

    ``model_input = (raw * scale - mean) / std`` with ``mean``/``std`` per
    channel (the last axis; one value broadcasts). ``raw_max`` is the largest
    raw value (16 for the digits, 255 for uint8 images): the stored value when
    the record has one, else ``1 / scale``. ``lamina predict`` maps an image
    pixel ``p`` in ``0..255`` to ``raw = p / 255 * raw_max``.

    Args:
      preprocessing: ``{"scale", "mean", "std"[, "raw_max"]}`` or ``None``
        (identity: scale 1, mean 0, std 1, raw_max 1).
      channels: size of the input's last axis.

    Returns:
      ``{"scale": float, "mean": [float], "std": [float], "raw_max": float}``.

    Raises:
      ValueError: for a missing key, a non-positive scale/std/raw_max, or
        mean/std lengths other than 1 or ``channels``.
    """
    p = dict(preprocessing or {"scale": 1.0, "mean": [0.0], "std": [1.0]})
    try:
        scale = float(p["scale"])
        mean = [float(v) for v in np.ravel(p["mean"])]
        std = [float(v) for v in np.ravel(p["std"])]
    except KeyError as e:
        raise ValueError(f"lamina.export: preprocessing needs keys scale, mean, std; {e} is missing") from None
    except (TypeError, ValueError):
        raise ValueError(f"lamina.export: preprocessing values must be numbers, got {p!r}") from None
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"lamina.export: preprocessing scale must be a positive number, got {scale!r}")
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels) or not all(np.isfinite(values)):
            raise ValueError(f"lamina.export: preprocessing {name} must hold 1 or {channels} finite numbers, got {values!r}")
    if any(s <= 0 for s in std):
        raise ValueError(f"lamina.export: preprocessing std must be positive, got {std!r}")
    raw_max = float(p["raw_max"]) if p.get("raw_max") is not None else 1.0 / scale
    if not (np.isfinite(raw_max) and raw_max > 0):
        raise ValueError(f"lamina.export: preprocessing raw_max must be a positive number, got {p.get('raw_max')!r}")
    out = {"scale": scale, "mean": mean, "std": std, "raw_max": raw_max}
    out.update(resize_policy(p))
    return out


RESIZE_KEYS = ("resize", "crop", "interpolation")


def resize_policy(preprocessing: Mapping[str, Any]) -> Dict[str, Any]:
    """The image resizing a record asks for before the model (pretrained weights record one).

    ``resize``: the shorter side is scaled to this many pixels (aspect kept);
    ``crop``: then a centred square of this size is cut (the model's input);
    ``interpolation``: ``"bilinear"`` (default), ``"bicubic"``, ``"area"`` or ``"nearest"``.

    Args:
      preprocessing: a preprocessing record.

    Returns:
      The keys present, checked (``{}`` for none: resize straight to the input size).

    Raises:
      ValueError: for a non-positive size or an unknown interpolation.
    """
    out: Dict[str, Any] = {}
    for key in ("resize", "crop"):
        if preprocessing.get(key) is not None:
            value = preprocessing[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 1:
                raise ValueError(f"lamina.export: preprocessing {key} must be a positive integer, got {value!r}")
            out[key] = int(value)
    if preprocessing.get("interpolation") is not None:
        method = str(preprocessing["interpolation"])
        if method not in ("bilinear", "bicubic", "area", "nearest"):
            raise ValueError(f"lamina.export: preprocessing interpolation must be bilinear, bicubic, area or nearest, "
                             f"got {method!r}")
        out["interpolation"] = method
    if "crop" in out and "resize" in out and out["crop"] > out["resize"]:
        raise ValueError(f"lamina.export: preprocessing crop {out['crop']} is larger than resize {out['resize']}")
    return out


def run_preprocessing(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The preprocessing record of a run's ``config.json``, with ``raw_max``.

    ``raw_max`` comes from ``config["preprocessing"]["raw_max"]``, else
    ``config["raw_max"]``, else ``1 / scale`` (see :func:`normalize_preprocessing`).

    Args:
      config: a run configuration (``input_shape``, ``preprocessing``).

    Returns:
      The checked record.

    Raises:
      ValueError: if the record is malformed.
    """
    p = dict(config.get("preprocessing") or {"scale": 1.0, "mean": [0.0], "std": [1.0]})
    if p.get("raw_max") is None and config.get("raw_max") is not None:
        p["raw_max"] = config["raw_max"]
    shape = config.get("input_shape") or [1]
    return normalize_preprocessing(p, int(shape[-1]))


def _check_input_shape(input_shape: Sequence[int]) -> List[int]:
    try:
        shape = [int(d) for d in input_shape]
    except (TypeError, ValueError):
        raise ValueError(f"lamina.export: input_shape must be a sequence of positive integers like (8, 8, 1), got {input_shape!r}") from None
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"lamina.export: input_shape must be a sequence of positive integers like (8, 8, 1), got {input_shape!r}")
    return shape


class ServingModule(tf.Module):
    """Wraps a model with its preprocessing behind one batch-polymorphic function.

    ``serve(image)`` takes raw values ``float32 [batch, *input_shape]`` and
    returns ``{"logits", "probabilities", "class_id" (int64)}``. The
    preprocessing constants are created inside the traced function, so they
    are graph constants (no captured inputs; tf2onnx and TFLite see plain
    ``Const`` ops). ``class_names`` and ``metadata`` (JSON) are stored as
    non-trainable string variables, readable after ``tf.saved_model.load``.

    Args:
      model: a built model called as ``model(x, training=False) -> logits``.
      input_shape: per-example shape, e.g. ``(8, 8, 1)``.
      preprocessing: the training preprocessing record (see
        :func:`normalize_preprocessing`).
      class_names: one name per class (default ``"0"``, ``"1"``, ...).
      metadata: JSON-serializable dict stored in the ``metadata`` variable.
    """

    def __init__(
        self,
        model: Any,
        input_shape: Sequence[int],
        preprocessing: Optional[Mapping[str, Any]] = None,
        class_names: Optional[Sequence[str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(name="lamina_serving")
        self.input_shape_list = _check_input_shape(input_shape)
        self.preprocessing = normalize_preprocessing(preprocessing, self.input_shape_list[-1])
        self.model = model
        ensure_built(model, self.input_shape_list)
        probe = call_with_training(model, tf.zeros([1, *self.input_shape_list], tf.float32), False)
        if len(probe.shape) != 2:
            raise ValueError(f"lamina.export: the model must return logits of shape (batch, classes), got shape {tuple(probe.shape)}")
        self.num_classes = int(probe.shape[-1])
        names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"lamina.export: {len(names)} class names for a model with {self.num_classes} outputs")
        self.class_name_list = names
        self.class_names = tf.Variable(names, dtype=tf.string, trainable=False, name="class_names")
        self.metadata = tf.Variable(json.dumps(dict(metadata or {}), sort_keys=True), dtype=tf.string, trainable=False, name="metadata")
        self.serve = tf.function(
            self._serve,
            input_signature=[tf.TensorSpec([None, *self.input_shape_list], tf.float32, name=INPUT_NAME)],
        )

    def _serve(self, image: tf.Tensor) -> Dict[str, tf.Tensor]:
        p = self.preprocessing
        x = (image * tf.constant(p["scale"], tf.float32) - tf.constant(p["mean"], tf.float32)) / tf.constant(p["std"], tf.float32)
        logits = tf.cast(call_with_training(self.model, x, False), tf.float32)
        return {
            "logits": tf.identity(logits, name="logits"),
            "probabilities": tf.nn.softmax(logits, axis=-1, name="probabilities"),
            "class_id": tf.argmax(logits, axis=-1, output_type=tf.int64, name="class_id"),
        }

    def reference(self, raw: np.ndarray) -> Dict[str, np.ndarray]:
        """Runs the original model eagerly (preprocessing in NumPy) on raw inputs.

        Args:
          raw: ``[batch, *input_shape]`` raw values.

        Returns:
          ``{"logits", "probabilities", "class_id"}`` as NumPy arrays.
        """
        p = self.preprocessing
        x = ((np.asarray(raw, np.float32) * np.float32(p["scale"]) - np.asarray(p["mean"], np.float32)) / np.asarray(p["std"], np.float32))
        logits = tf.cast(call_with_training(self.model, tf.constant(x, tf.float32), False), tf.float32)
        return {
            "logits": logits.numpy(),
            "probabilities": tf.nn.softmax(logits, axis=-1).numpy(),
            "class_id": tf.argmax(logits, axis=-1, output_type=tf.int64).numpy(),
        }


def ensure_built(model: Any, input_shape: Sequence[int]) -> None:
    """Calls an unbuilt model once on zeros so its variables exist.

    Args:
      model: the model.
      input_shape: per-example shape.

    Raises:
      ValueError: if the model rejects an input of that shape.
    """
    if getattr(model, "built", True) and getattr(model, "variables", None):
        return
    try:
        call_with_training(model, tf.zeros([1, *input_shape], tf.float32), False)
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as e:
        raise ValueError(f"lamina.export: the model rejects inputs of shape {tuple(input_shape)}: {str(e).splitlines()[0]}") from None


def random_sample(input_shape: Sequence[int], raw_max: float, n: int = 32, seed: int = 0) -> np.ndarray:
    """Random raw inputs uniform in ``[0, raw_max]`` for the self-check.

    Args:
      input_shape: per-example shape.
      raw_max: the largest raw value.
      n: batch size.
      seed: NumPy seed.

    Returns:
      ``float32 [n, *input_shape]``.
    """
    return np.random.RandomState(seed).uniform(0.0, raw_max, size=(n, *input_shape)).astype(np.float32)


def max_difference(got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """Compares exported outputs with the original model's.

    Args:
      got: outputs of the exported model.
      ref: outputs of :meth:`ServingModule.reference`.

    Returns:
      ``{"logits": max abs diff, "probabilities": max abs diff,
      "logits_scaled": logits diff / max(1, max |ref logits|),
      "class_id_mismatches": count, "max_difference": max(logits_scaled, probabilities)}``.
    """
    dl = float(np.max(np.abs(np.asarray(got["logits"], np.float64) - ref["logits"]))) if ref["logits"].size else 0.0
    dp = float(np.max(np.abs(np.asarray(got["probabilities"], np.float64) - ref["probabilities"]))) if ref["probabilities"].size else 0.0
    magnitude = max(1.0, float(np.max(np.abs(ref["logits"]))) if ref["logits"].size else 1.0)
    mism = int(np.sum(np.asarray(got["class_id"]).astype(np.int64) != ref["class_id"]))
    return {"logits": dl, "probabilities": dp, "logits_scaled": dl / magnitude, "class_id_mismatches": mism,
            "max_difference": max(dl / magnitude, dp)}


def check_difference(fmt: str, diff: Mapping[str, float], tolerance: float, n: int, say: Callable[[str], None]) -> None:
    """Prints the self-check result and raises if it is above tolerance.

    Args:
      fmt: format name for the message.
      diff: from :func:`max_difference`.
      tolerance: the allowed ``max_difference``.
      n: number of examples compared.
      say: print function.

    Raises:
      ExportError: if ``diff["max_difference"] > tolerance``.
    """
    text = (f"{fmt}: verified on {n} examples: max |difference| logits {diff['logits']:.3g}, "
            f"probabilities {diff['probabilities']:.3g} (tolerance {tolerance:g}); "
            f"{diff['class_id_mismatches']} class_id mismatches")
    enforce_tolerance(fmt, text, diff["max_difference"], tolerance, n, say, "model")


def enforce_tolerance(fmt: str, text: str, difference: float, tolerance: float, n: int, say: Callable[[str], None],
                      what: str) -> None:
    """Prints a self-check line and raises if the difference is above tolerance.

    Args:
      fmt: format name for the message.
      text: the line to print.
      difference: the checked quantity.
      tolerance: its allowed maximum.
      n: number of examples compared.
      say: print function.
      what: ``"model"`` or ``"module"``, for the message.

    Raises:
      ExportError: if ``difference > tolerance`` (or is NaN).
    """
    say(text)
    if not difference <= tolerance:
        raise ExportError(
            f"lamina.export: {fmt} output differs from the original {what}: max difference "
            f"{difference:.3g} > tolerance {tolerance:g} on {n} examples; nothing was written"
        )


def _is_replaceable(path: str) -> bool:
    if not os.path.exists(path):
        return True
    if not os.path.isdir(path):
        return False
    return not os.listdir(path) or os.path.exists(os.path.join(path, METADATA_NAME))


def write_export_dir(path: str, fill: Callable[[str], Dict[str, Any]]) -> str:
    """Builds an export directory in a hidden temporary folder, then publishes it in one step.

    A crash at any point leaves the previous export or the new one at
    ``path`` (see :func:`lamina.fileio.publish_dir`); what a killed export
    left beside it is removed by the next export to the same path.

    Args:
      path: the final directory. An existing one is replaced only if it is
        empty or a previous lamina export (holds ``lamina_export.json``).
      fill: ``fill(tmp_dir) -> metadata``: writes and verifies the files in
        ``tmp_dir`` and returns the metadata written to ``lamina_export.json``.

    Returns:
      ``path``.

    Raises:
      ExportError: if ``path`` exists and is not a lamina export.
      Exception: whatever ``fill`` raises; nothing is left behind.
    """
    from lamina.fileio import clean_stale_dirs, publish_dir

    path = os.path.normpath(path)
    clean_stale_dirs(path)  # puts back an export a crash left aside, before looking at it
    if not _is_replaceable(path):
        raise ExportError(f"lamina.export: {path} exists and is not a lamina export (no {METADATA_NAME}); choose another output path")

    def build(tmp: str) -> None:
        metadata = fill(tmp)
        with open(os.path.join(tmp, METADATA_NAME), "w") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)
            f.write("\n")

    try:
        publish_dir(path, build)
    except OSError as e:  # a full disk, an unwritable folder: name the export, not its temporary folder
        reason = f"[Errno {e.errno}] {e.strerror}" if e.errno and e.strerror else str(e)
        raise ExportError(f"lamina.export: cannot write {path}: {reason}; the previous export (if any) is unchanged") from None
    return path


def base_metadata(serving: ServingModule, fmt: str, source_run: Optional[str],
                  source_checkpoint: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The ``lamina_export.json`` fields every format shares.

    Args:
      serving: the wrapper.
      fmt: ``"savedmodel"``, ``"tflite"`` or ``"onnx"``.
      source_run: the run directory exported, if any.
      source_checkpoint: which of its checkpoints (best/latest, epoch, step), if any.

    Returns:
      A JSON-serializable dict.
    """
    from lamina import __version__

    return {
        "format": fmt,
        "lamina_version": __version__,
        "input_shape": list(serving.input_shape_list),
        "num_classes": serving.num_classes,
        "class_names": list(serving.class_name_list),
        "preprocessing": dict(serving.preprocessing),
        "pixel_rule": "PNG/JPEG pixel p in 0..255 -> raw = p / 255 * raw_max",
        "source_run": os.path.abspath(source_run) if source_run else None,
        "checkpoint": dict(source_checkpoint) if source_checkpoint else None,
        "signature": {
            "key": SIGNATURE_KEY,
            "inputs": {INPUT_NAME: {"dtype": "float32", "shape": [None, *serving.input_shape_list]}},
            "outputs": {
                "logits": {"dtype": "float32", "shape": [None, serving.num_classes]},
                "probabilities": {"dtype": "float32", "shape": [None, serving.num_classes]},
                "class_id": {"dtype": "int64", "shape": [None]},
            },
        },
    }


def save_serving(serving: Any, directory: str) -> None:
    """Writes ``serving`` as a SavedModel with its ``serving_default`` signature.

    Args:
      serving: the wrapper (:class:`ServingModule` or
        :class:`lamina.export.signature.ModuleServing`).
      directory: an empty or new directory.
    """
    tf.saved_model.save(serving, directory, signatures={SIGNATURE_KEY: serving.serve.get_concrete_function()})


def printer(verbose: bool) -> Callable[[str], None]:
    """Returns ``print`` (flushed) when ``verbose``, else a function that prints nothing.

    Args:
      verbose: whether to print.

    Returns:
      A one-argument print function.
    """
    return (lambda text: print(text, flush=True)) if verbose else (lambda text: None)


def one_line(error: BaseException, limit: int) -> str:
    """An exception's message on one line (whitespace runs collapsed), cut to ``limit`` characters.

    Args:
      error: the exception.
      limit: the most characters kept.

    Returns:
      The shortened message (empty if the exception has none).
    """
    return " ".join(str(error).split())[:limit]


def sample_batch(serving: ServingModule, sample: Optional[Any]) -> np.ndarray:
    """The self-check batch: ``sample`` checked against the input shape, or random raw inputs.

    Args:
      serving: the wrapper (its input shape and ``raw_max``).
      sample: raw inputs ``[batch, *input_shape]`` or ``None``.

    Returns:
      ``float32 [batch, *input_shape]``.

    Raises:
      ValueError: if ``sample`` has the wrong shape or is empty.
    """
    if sample is None:
        return random_sample(serving.input_shape_list, serving.preprocessing["raw_max"])
    x = np.asarray(sample, np.float32)
    if x.ndim != len(serving.input_shape_list) + 1 or list(x.shape[1:]) != serving.input_shape_list or x.shape[0] < 1:
        raise ValueError(f"lamina.export: sample must have shape (batch, {', '.join(map(str, serving.input_shape_list))}), got {x.shape}")
    return x


def saved_model(
    model: Any,
    path: str,
    input_shape: Optional[Sequence[int]] = None,
    preprocessing: Optional[Mapping[str, Any]] = None,
    class_names: Optional[Sequence[str]] = None,
    *,
    input_signature: Any = None,
    version: Union[int, str, None] = None,
    sample: Optional[Any] = None,
    source_run: Optional[str] = None,
    source_checkpoint: Optional[Dict[str, Any]] = None,
    tolerance: float = SAVED_MODEL_TOLERANCE,
    verbose: bool = True,
) -> str:
    """Exports a model as a SavedModel: an image classifier taking raw pixels, or any module.

    With ``input_shape`` (the image-classifier default) the ``serving_default``
    signature takes ``image: float32 [None, *input_shape]`` (raw values, e.g.
    0..16 for the digits) and returns ``logits``, ``probabilities`` and
    ``class_id`` (int64). With ``input_signature`` instead, the module is
    served as it is (see :mod:`lamina.export.signature`): inputs named after
    the specs, outputs after what the module returns. Either way the export is
    reloaded with ``tf.saved_model.load`` and compared with the original model
    on ``sample`` before it is moved into place.

    Args:
      model: a lamina model (or any ``tf.Module`` called as ``model(x, training=False)``).
      path: the output directory (replaced if it holds a previous export); with
        ``version``, the model's base folder.
      input_shape: per-example shape, e.g. ``(8, 8, 1)``.
      preprocessing: ``{"scale", "mean", "std"[, "raw_max"]}`` used in training.
      class_names: one name per class.
      input_signature: ``tf.TensorSpec`` s (a list: positional inputs; a dict:
        one dict input) with the batch axis ``None``; replaces
        ``input_shape``, ``preprocessing`` and ``class_names``.
      version: write TF Serving's layout ``path/<version>/``: a positive
        integer, or ``"next"`` (one more than the highest version in ``path``).
      sample: inputs for the self-check: raw images ``[batch, *input_shape]``
        (default: 32 random inputs in ``[0, raw_max]``), or for
        ``input_signature`` an array / list / dict of arrays (default: random
        inputs, see :func:`lamina.export.signature.module_sample`).
      source_run: run directory recorded in ``lamina_export.json``.
      source_checkpoint: which checkpoint of the run (``lamina.train.run.checkpoint_info``), recorded too.
      tolerance: largest allowed difference (probabilities, and logits divided
        by ``max(1, max |logit|)``; for modules every floating output divided by
        ``max(1, max |output|)``, and the fraction of differing integer entries).
      verbose: print the measured difference.

    Returns:
      The export directory (``path``, or ``path/<version>``).

    Raises:
      ValueError: for a bad shape, signature, preprocessing, sample or version,
        or both ``input_shape`` and ``input_signature``.
      ExportError: if the reloaded model differs by more than ``tolerance``
        (nothing is written) or the target is not a previous export.
    """
    if version is not None:
        path = versioned_path(path, version)
    if input_signature is not None:
        return _module_saved_model(model, path, input_signature, input_shape, preprocessing, class_names,
                                   sample=sample, source_run=source_run, tolerance=tolerance, verbose=verbose)
    if input_shape is None:
        raise TypeError("lamina.export.saved_model: pass input_shape (image classifier) or input_signature (any module)")
    serving = ServingModule(model, input_shape, preprocessing, class_names)
    x = sample_batch(serving, sample)
    say = printer(verbose)

    def fill(tmp: str) -> Dict[str, Any]:
        meta = base_metadata(serving, "savedmodel", source_run, source_checkpoint)
        serving.metadata.assign(json.dumps(meta, sort_keys=True))
        save_serving(serving, tmp)
        loaded = tf.saved_model.load(tmp)
        out = loaded.signatures[SIGNATURE_KEY](image=tf.constant(x))
        diff = max_difference({k: v.numpy() for k, v in out.items()}, serving.reference(x))
        check_difference("savedmodel", diff, tolerance, len(x), say)
        meta["verification"] = dict(diff, examples=int(len(x)), tolerance=tolerance)
        return meta

    return write_export_dir(path, fill)


def _module_saved_model(model: Any, path: str, input_signature: Any, input_shape: Any, preprocessing: Any,
                        class_names: Any, *, sample: Any, source_run: Optional[str], tolerance: float,
                        verbose: bool) -> str:
    """:func:`saved_model` with ``input_signature``: the module served as it is."""
    from lamina.export.signature import (ModuleServing, check_outputs, first_batch, module_metadata, module_sample,
                                         output_differences, reject_classifier_args)

    reject_classifier_args(input_shape, preprocessing, class_names)
    serving = ModuleServing(model, input_signature)
    feed = module_sample(serving.specs, sample)
    say = printer(verbose)

    def fill(tmp: str) -> Dict[str, Any]:
        meta = module_metadata(serving, "savedmodel", source_run)
        serving.metadata.assign(json.dumps(meta, sort_keys=True))
        save_serving(serving, tmp)
        loaded = tf.saved_model.load(tmp)
        out = loaded.signatures[SIGNATURE_KEY](**{k: tf.constant(v) for k, v in feed.items()})
        diff = output_differences({k: v.numpy() for k, v in out.items()}, serving.reference(feed))
        check_outputs("savedmodel", diff, tolerance, first_batch(feed), say)
        meta["verification"] = dict(diff, examples=first_batch(feed), tolerance=tolerance)
        return meta

    return write_export_dir(path, fill)


def load_signature(path: str) -> Any:
    """Loads a SavedModel and returns its ``serving_default`` function (it keeps the loaded object alive).

    Args:
      path: a SavedModel folder.

    Returns:
      The signature's concrete function.

    Raises:
      ValueError: if it cannot be loaded or has no ``serving_default`` signature.
    """
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # unreadable or foreign SavedModel
        raise ValueError(f"cannot load SavedModel {path}: {one_line(e, 200)}") from None
    if SIGNATURE_KEY not in loaded.signatures:
        raise ValueError(f"SavedModel {path} has no {SIGNATURE_KEY!r} signature, got {sorted(loaded.signatures)}")
    fn = loaded.signatures[SIGNATURE_KEY]
    fn.loaded = loaded  # the variables live as long as the function
    return fn


def read_metadata(path: str) -> Dict[str, Any]:
    """Reads an export directory's ``lamina_export.json``.

    Args:
      path: an export directory.

    Returns:
      The metadata dict.

    Raises:
      ValueError: if the file is missing or unreadable.
    """
    from lamina.fileio import resolve_inside

    file = os.path.join(path, METADATA_NAME)
    if not os.path.isfile(file):
        raise ValueError(f"{path} is not a lamina export directory (no {METADATA_NAME})")
    resolve_inside(path, METADATA_NAME, "its metadata file")  # a symbolic link out of the folder is refused
    try:
        with open(file) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {file}: {e}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(meta).__name__}")
    return meta
