"""Export and inference: SavedModel, TFLite and ONNX that give the same answers.

``lm.export.saved_model(model, path, input_shape, preprocessing, class_names)``,
``lm.export.tflite(...)`` and ``lm.export.onnx(...)`` write an export directory
(the format's files plus ``lamina_export.json``) after checking it against the
original model on a sample batch; with ``input_signature=[tf.TensorSpec(...)]``
instead of ``input_shape`` they export any module as it is.
``lm.export.load(path)`` runs any export; ``lm.save_weights`` /
``lm.load_weights`` exchange weights as safetensors. See ``docs/export.md``.

Note: the names ``saved_model``, ``tflite``, ``onnx`` and ``load`` in this package are the
export *functions*; import the modules' other names with
``from lamina.export.saved_model import ...``.
"""

from lamina.export.saved_model import (
    METADATA_NAME,
    ExportError,
    ServingModule,
    normalize_preprocessing,
    read_metadata,
    run_preprocessing,
)
from lamina.export.saved_model import saved_model
from lamina.export.tflite import QUANTIZE_MODES, TFLiteRunner
from lamina.export.tflite import tflite
from lamina.export.onnx import ONNXRunner
from lamina.export.onnx import onnx
from lamina.export.safetensors import load_file, load_weights, save_file, save_weights
from lamina.export.predict import Predictor, load_predictor, predict_files
from lamina.export.run_export import export_run
from lamina.export.signature import ModuleServing
from lamina.export.versions import latest_version, next_version, resolve_export_dir, version_dirs
from lamina.export.load import ExportedModel
from lamina.export.load import load

__all__ = [
    "METADATA_NAME",
    "QUANTIZE_MODES",
    "ExportError",
    "ExportedModel",
    "ModuleServing",
    "ONNXRunner",
    "Predictor",
    "ServingModule",
    "TFLiteRunner",
    "export_run",
    "latest_version",
    "load",
    "next_version",
    "resolve_export_dir",
    "version_dirs",
    "load_file",
    "load_predictor",
    "load_weights",
    "normalize_preprocessing",
    "onnx",
    "predict_files",
    "read_metadata",
    "run_preprocessing",
    "save_file",
    "save_weights",
    "saved_model",
    "tflite",
]
