"""TFLite export: the ``serving_default`` signature converted with ``tf.lite.TFLiteConverter``.

The export directory holds ``model.tflite`` and ``lamina_export.json``. The
model keeps the SavedModel's interface (raw ``float32`` pixels in; ``logits``,
``probabilities``, ``class_id`` out) whatever the quantization: ``float16``
stores float16 weights; ``int8`` quantizes weights and activations with a
representative data set (float input and output, integer kernels inside).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from lamina.export.signature import feed_inputs
from lamina.export.saved_model import (
    SIGNATURE_KEY,
    ExportError,
    ServingModule,
    sample_batch,
    printer,
    base_metadata,
    check_difference,
    max_difference,
    one_line,
    save_serving,
    write_export_dir,
)

__all__ = ["tflite", "TFLiteRunner", "QUANTIZE_MODES", "TFLITE_TOLERANCE", "TFLITE_FILE"]

QUANTIZE_MODES = ("float16", "int8")
TFLITE_FILE = "model.tflite"
# Allowed self-check difference per mode; int8 is judged by accuracy instead (None: reported, not enforced).
TFLITE_TOLERANCE: Dict[Optional[str], Optional[float]] = {None: 1e-4, "float16": 5e-2, "int8": None}


# TFLite's C++ logger prints this once per process on stderr when it applies the default CPU delegate.
_XNNPACK_INFO = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


@contextlib.contextmanager
def _without_stderr_lines(drop: Sequence[str]) -> Iterator[None]:
    """Filters lines out of file descriptor 2 while the block runs (C++ code writes there, not to ``sys.stderr``).

    Everything else written meanwhile (real errors, Python warnings) is written
    back to stderr when the block ends. TFLite's logger has no Python switch
    (``TF_CPP_MIN_LOG_LEVEL`` does not reach it), hence the descriptor-level
    filter; it is process-wide for the short time of the block.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a daemon): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = "".join(line for line in text.splitlines(True) if not any(d in line for d in drop))
            if kept:
                os.write(2, kept.encode("utf-8"))


def _interpreter_class() -> Tuple[str, Any]:
    """LiteRT's interpreter when ``ai-edge-litert`` is installed (the ``litert`` extra), else ``tf.lite``'s."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return "litert", Interpreter
    except ImportError:
        return "tf.lite", tf.lite.Interpreter


class TFLiteRunner:
    """Runs a ``.tflite`` file's ``serving_default`` signature on any batch size.

    Uses LiteRT (``ai_edge_litert.interpreter``) when it is installed and
    ``tf.lite.Interpreter`` otherwise, without its deprecation warning and
    without TFLite's ``INFO: Created TensorFlow Lite XNNPACK delegate`` line.

    Args:
      path: a ``.tflite`` file, or ``content`` bytes instead.
      content: the flatbuffer bytes.

    Attributes:
      runtime: ``"litert"`` or ``"tf.lite"``.
      input_names: the signature's inputs (``["image"]`` for a classifier export).

    Raises:
      ValueError: for a file that cannot be loaded or has no signature.
    """

    def __init__(self, path: Optional[str] = None, content: Optional[bytes] = None) -> None:
        self.runtime, interpreter_class = _interpreter_class()
        with warnings.catch_warnings(), _without_stderr_lines([_XNNPACK_INFO]):
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice (use ai_edge_litert)
            try:
                self.interpreter = interpreter_class(model_path=path, model_content=content)
                self.interpreter.allocate_tensors()  # applies the XNNPACK delegate now, inside the filter
            except (ValueError, RuntimeError) as e:
                raise ValueError(f"cannot load TFLite model {path or '(bytes)'}: {str(e).splitlines()[0]}") from None
        signatures = self.interpreter.get_signature_list()
        key = SIGNATURE_KEY if SIGNATURE_KEY in signatures else next(iter(signatures), None)
        if key is None:
            raise ValueError(f"TFLite model {path or '(bytes)'} has no signature")
        self.runner = self.interpreter.get_signature_runner(key)
        self.input_names = list(signatures[key]["inputs"])
        self._dtypes = {name: detail["dtype"] for name, detail in self.runner.get_input_details().items()}

    def __call__(self, *args: np.ndarray, **inputs: np.ndarray) -> Dict[str, np.ndarray]:
        """Runs a batch.

        Args:
          *args: the inputs in the order of :attr:`input_names` (TFLite lists
            them by name; a classifier export has one: the raw ``float32
            [batch, *input_shape]`` images).
          **inputs: or the inputs by name.

        Returns:
          ``{output name: array}`` (a classifier: ``logits``, ``probabilities``, ``class_id``).

        Raises:
          ValueError: for missing or unknown inputs.
        """
        feed = feed_inputs(self.input_names, args, inputs, "TFLite model")
        out = self.runner(**{k: np.ascontiguousarray(v, self._dtypes[k]) for k, v in feed.items()})
        return {k: np.array(v) for k, v in out.items()}


def _run_batched(runner: Callable[[np.ndarray], Dict[str, np.ndarray]], x: np.ndarray, batch: int = 256) -> Dict[str, np.ndarray]:
    parts = [runner(x[i : i + batch]) for i in range(0, len(x), batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _representative(data: Any, input_shape: Sequence[int], limit: int = 200) -> Callable[[], Iterable[list]]:
    """Turns an array or an iterable of raw batches into the converter's generator of single examples."""
    if data is None:
        raise ValueError("lamina.export: int8 quantization needs representative_data (raw training inputs)")

    def batches() -> Iterable[np.ndarray]:
        if isinstance(data, np.ndarray) or hasattr(data, "shape"):
            array = np.asarray(data)
            # A seeded random subset, so a split stored in class order still calibrates on every class.
            yield array[np.sort(np.random.RandomState(0).permutation(len(array))[:limit])]
        else:
            for item in data() if callable(data) else data:
                yield np.asarray(item[0] if isinstance(item, (tuple, list)) else item)

    def gen() -> Iterable[list]:
        count = 0
        for b in batches():
            b = b.astype(np.float32).reshape(-1, *input_shape)
            for example in b:
                if count >= limit:
                    return
                count += 1
                yield [example[None]]
        if count == 0:
            raise ValueError("lamina.export: representative_data yielded no examples")

    return gen


def _convert(serving: Any, tmp: str, quantize: Optional[str], representative: Any) -> Tuple[bytes, "TFLiteRunner"]:
    """Converts ``serving``'s ``serve`` signature to ``tmp/model.tflite``; returns its bytes and a runner on it."""
    content = _converted_bytes(serving, tmp, quantize, representative)
    file = os.path.join(tmp, TFLITE_FILE)
    with open(file, "wb") as f:
        f.write(content)
    return content, TFLiteRunner(file)


def _converted_bytes(serving: Any, tmp: str, quantize: Optional[str], representative: Any) -> bytes:
    """The TFLite flatbuffer of ``serving.serve`` (saved to a scratch SavedModel in ``tmp`` first)."""
    with tempfile.TemporaryDirectory(dir=tmp) as scratch:
        save_serving(serving, scratch)
        converter = tf.lite.TFLiteConverter.from_saved_model(scratch, signature_keys=[SIGNATURE_KEY])
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        try:
            return converter.convert()
        except ValueError:
            raise
        except Exception as e:  # the converter raises ConverterError and friends
            raise ExportError(f"lamina.export.tflite: conversion failed: {one_line(e, 300)}") from None


def _module_tflite(model: Any, path: str, input_signature: Any, quantize: Optional[str], tolerance: Optional[float],
                   sample: Any, source_run: Optional[str], verbose: bool) -> str:
    """:func:`tflite` with ``input_signature``: the module served as it is."""
    from lamina.export.signature import ModuleServing, check_outputs, first_batch, module_metadata, module_sample, output_differences

    if quantize == "int8":
        raise ValueError("lamina.export.tflite: int8 quantization is available for the image-classifier export "
                         "(input_shape=...) only; use quantize=None or 'float16' with input_signature")
    serving = ModuleServing(model, input_signature)
    feed = module_sample(serving.specs, sample)
    tol = TFLITE_TOLERANCE[quantize] if tolerance is None else float(tolerance)
    fmt = "tflite" + (f" ({quantize})" if quantize else "")

    def fill(tmp: str) -> Dict[str, Any]:
        content, runner = _convert(serving, tmp, quantize, None)
        try:
            diff = output_differences(runner(**feed), serving.reference(feed))
        except ValueError as e:
            raise ExportError(f"lamina.export.tflite: the converted model does not match the module: {e}") from None
        check_outputs(fmt, diff, tol, first_batch(feed), printer(verbose))
        meta = module_metadata(serving, "tflite", source_run)
        meta.update(file=TFLITE_FILE, quantize=quantize, size_bytes=len(content), runtime=runner.runtime,
                    verification=dict(diff, examples=first_batch(feed), tolerance=tol))
        return meta

    return write_export_dir(path, fill)


def tflite(
    model: Any,
    path: str,
    input_shape: Optional[Sequence[int]] = None,
    preprocessing: Optional[Mapping[str, Any]] = None,
    class_names: Optional[Sequence[str]] = None,
    *,
    input_signature: Any = None,
    quantize: Optional[str] = None,
    representative_data: Any = None,
    test_data: Optional[Tuple[Any, Any]] = None,
    sample: Optional[Any] = None,
    source_run: Optional[str] = None,
    source_checkpoint: Optional[Dict[str, Any]] = None,
    tolerance: Optional[float] = None,
    verbose: bool = True,
) -> str:
    """Exports a model to TFLite (``path/model.tflite`` + ``lamina_export.json``).

    The file is checked with LiteRT when ``ai-edge-litert`` is installed
    (``lamina[litert]``), else with ``tf.lite.Interpreter``.

    Args:
      model: a lamina model called as ``model(x, training=False) -> logits``.
      path: the output directory (replaced if it holds a previous export).
      input_shape: per-example shape, e.g. ``(8, 8, 1)``.
      preprocessing: ``{"scale", "mean", "std"[, "raw_max"]}`` used in training.
      class_names: one name per class.
      input_signature: export any module as it is instead (see
        :func:`lamina.export.saved_model`); ``quantize`` may then be
        ``None`` or ``"float16"``, and ``sample`` is an array / list / dict.
      quantize: ``None`` (float32), ``"float16"`` (float16 weights) or
        ``"int8"`` (full integer kernels, float interface).
      representative_data: raw training inputs for ``int8``: an array
        ``[N, *input_shape]``, or an iterable (or a callable returning one) of
        batches or ``(x, y)`` pairs; 200 examples are used (a seeded random
        subset of an array, the first 200 of an iterable).
      test_data: ``(x_raw, y)`` to report accuracy (and the float model's) on.
      sample: raw inputs for the self-check (default 32 random inputs).
      source_run: run directory recorded in ``lamina_export.json``.
      source_checkpoint: which checkpoint of the run (``lamina.train.run.checkpoint_info``), recorded too.
      tolerance: allowed difference (default 1e-4 float32, 5e-2 float16; for
        int8 the difference and the accuracy are reported, not enforced).
      verbose: print the measured difference (and accuracy).

    Returns:
      ``path``.

    Raises:
      ValueError: for a bad quantize mode, shape, preprocessing or data.
      ExportError: if conversion fails or the difference is above tolerance
        (nothing is written).
    """
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ValueError(f"lamina.export.tflite: quantize must be one of {', '.join(QUANTIZE_MODES)} or None, got {quantize!r}")
    if input_signature is not None:
        from lamina.export.signature import reject_classifier_args

        reject_classifier_args(input_shape, preprocessing, class_names)
        for name, value in (("representative_data", representative_data), ("test_data", test_data)):
            if value is not None:
                raise ValueError(f"lamina.export.tflite: {name} applies to the image-classifier export only")
        return _module_tflite(model, path, input_signature, quantize, tolerance, sample, source_run, verbose)
    if input_shape is None:
        raise TypeError("lamina.export.tflite: pass input_shape (image classifier) or input_signature (any module)")
    serving = ServingModule(model, input_shape, preprocessing, class_names)
    x = sample_batch(serving, sample)
    tol = TFLITE_TOLERANCE[quantize] if tolerance is None else float(tolerance)
    say = printer(verbose)
    fmt = "tflite" + (f" ({quantize})" if quantize else "")
    rep = _representative(representative_data, serving.input_shape_list) if quantize == "int8" else None

    def fill(tmp: str) -> Dict[str, Any]:
        content, runner = _convert(serving, tmp, quantize, rep)
        diff = max_difference(_run_batched(runner, x), serving.reference(x))
        meta = base_metadata(serving, "tflite", source_run, source_checkpoint)
        meta.update(file=TFLITE_FILE, quantize=quantize, size_bytes=len(content), runtime=runner.runtime)
        if tol is not None:
            check_difference(fmt, diff, tol, len(x), say)
        else:
            say(f"{fmt}: {len(x)} examples: max |difference| logits {diff['logits']:.3g}, probabilities "
                f"{diff['probabilities']:.3g}; {diff['class_id_mismatches']} class_id changes (not enforced for int8)")
        meta["verification"] = dict(diff, examples=int(len(x)), tolerance=tol)
        if test_data is not None:
            tx, ty = np.asarray(test_data[0], np.float32), np.asarray(test_data[1]).astype(np.int64).ravel()
            if len(tx):
                got = _run_batched(runner, tx)["class_id"]
                ref = _run_batched(serving.reference, tx)["class_id"]
                acc, ref_acc = float(np.mean(got == ty)), float(np.mean(ref == ty))
                meta["test_accuracy"] = {"exported": acc, "original": ref_acc, "examples": int(len(ty))}
                say(f"{fmt}: test accuracy {acc:.2%} (original model {ref_acc:.2%}) on {len(ty)} examples")
        return meta

    return write_export_dir(path, fill)

