"""``lm.export.load(path)``: run any lamina export (SavedModel, TFLite, ONNX) from Python.

The loaded model is called with the inputs in order or by name and returns
``{output name: NumPy array}``: ``logits``, ``probabilities``, ``class_id``
for an image classifier (raw pixels in), the module's own outputs for an
``input_signature`` export. ``lamina predict`` is the image-file front end of
the same exports.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Mapping

import numpy as np

from lamina.export.saved_model import METADATA_NAME, load_signature, read_metadata
from lamina.export.signature import feed_inputs
from lamina.export.versions import resolve_export_dir

__all__ = ["ExportedModel", "load"]


class ExportedModel:
    """A loaded export: ``model(*inputs)`` or ``model(**inputs)`` -> ``{name: array}``.

    Attributes:
      path: the export folder loaded (a version folder for a versioned SavedModel).
      format: ``"savedmodel"``, ``"tflite"`` or ``"onnx"``.
      input_names: the inputs, in call order.
      metadata: ``lamina_export.json`` (``{}`` for a foreign SavedModel).
    """

    def __init__(self, path: str, fmt: str, input_names: List[str], run: Callable[[Dict[str, Any]], Mapping[str, Any]],
                 metadata: Dict[str, Any]) -> None:
        self.path = path
        self.format = fmt
        self.input_names = list(input_names)
        self.metadata = metadata
        self._run = run

    def __call__(self, *args: Any, **inputs: Any) -> Dict[str, np.ndarray]:
        """Runs one batch.

        Args:
          *args: the inputs in order.
          **inputs: or by name.

        Returns:
          ``{output name: array}``.

        Raises:
          ValueError: for missing or unknown inputs.
        """
        feed = feed_inputs(self.input_names, args, inputs, f"export {self.path}")
        out = self._run(feed)
        return {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in out.items()}


def _saved_model(path: str, meta: Dict[str, Any]) -> ExportedModel:
    import tensorflow as tf

    fn = load_signature(path)
    specs = fn.structured_input_signature[1]
    names = meta.get("input_names") or sorted(specs)  # the order of positional inputs

    def run(feed: Dict[str, Any]) -> Mapping[str, Any]:
        tensors = {}
        for k, v in feed.items():
            t = tf.constant(v, specs[k].dtype)
            if not specs[k].shape.is_compatible_with(t.shape):
                raise ValueError(f"export {path}: input {k!r} has shape {tuple(t.shape)}, the signature takes {specs[k].shape}")
            tensors[k] = t
        return fn(**tensors)

    return ExportedModel(path, "savedmodel", names, run, meta)


def load(path: str) -> ExportedModel:
    """Loads an export folder written by ``lm.export`` / ``lamina export``.

    Args:
      path: an export folder (``lamina_export.json``), a SavedModel folder, or
        a model base folder in TF Serving's layout (its highest version).

    Returns:
      An :class:`ExportedModel`.

    Raises:
      ValueError: if the path is missing or holds no export.
      ExportError: if an ONNX export is loaded without onnxruntime.
    """
    if not os.path.isdir(path):
        raise ValueError(f"{path} is not a folder (expected an export folder)")
    path = resolve_export_dir(path)
    has_meta = os.path.exists(os.path.join(path, METADATA_NAME))
    meta = read_metadata(path) if has_meta else {}
    fmt = meta.get("format", "savedmodel" if os.path.exists(os.path.join(path, "saved_model.pb")) else None)
    if fmt == "savedmodel":
        return _saved_model(path, meta)
    if fmt in ("tflite", "onnx"):
        from lamina.fileio import resolve_inside

        file = resolve_inside(path, meta.get("file"), f"{METADATA_NAME} names")
        if not os.path.isfile(file):
            raise ValueError(f"export folder {path}: {METADATA_NAME} names {meta.get('file')!r}, which is missing")
        if fmt == "tflite":
            from lamina.export.tflite import TFLiteRunner

            runner: Any = TFLiteRunner(file)
        else:
            from lamina.export.onnx import ONNXRunner

            runner = ONNXRunner(file)
        names = meta.get("input_names") or runner.input_names  # TFLite lists its inputs sorted by name
        return ExportedModel(path, fmt, names, lambda feed: runner(**feed), meta)
    raise ValueError(f"{path} holds no lamina export (no {METADATA_NAME} or saved_model.pb)"
                     if fmt is None else f"{os.path.join(path, METADATA_NAME)}: unknown format {fmt!r}")
