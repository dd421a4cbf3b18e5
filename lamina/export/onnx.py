"""ONNX export through ``tf2onnx``, checked with ``onnxruntime``.

The export directory holds ``model.onnx`` and ``lamina_export.json``. The
graph has one input ``image`` (raw ``float32 [N, *input_shape]``, NHWC like the
TensorFlow model) and the outputs ``logits``, ``probabilities``, ``class_id``
(int64). ``tf2onnx``, ``onnx`` and ``onnxruntime`` are the optional extra
``lamina[onnx]`` and are imported only when an ONNX export or run happens.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence

import numpy as np

from lamina.export.saved_model import (
    INPUT_NAME,
    ExportError,
    ServingModule,
    sample_batch,
    printer,
    base_metadata,
    check_difference,
    max_difference,
    one_line,
    write_export_dir,
)

__all__ = ["onnx", "ONNXRunner", "ONNX_TOLERANCE", "ONNX_FILE", "DEFAULT_OPSET", "MISSING_MESSAGE"]

ONNX_TOLERANCE = 1e-4
ONNX_FILE = "model.onnx"
DEFAULT_OPSET = 17
MISSING_MESSAGE = "ONNX export needs tf2onnx and onnxruntime: pip install 'lamina[onnx]'"


def _import_runtime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(MISSING_MESSAGE) from None
    return onnxruntime


def _import_converter() -> Any:
    # tf2onnx.convert imports keras only on its keras-model paths (from_keras); from_function does not.
    try:
        import tf2onnx
        import tf2onnx.convert  # noqa: F401
    except ImportError:
        raise ExportError(MISSING_MESSAGE) from None
    except Exception as e:  # e.g. an incompatible numpy/protobuf at import time
        raise ExportError(f"ONNX export: tf2onnx cannot be imported here ({type(e).__name__}: {one_line(e, 200)})") from None
    return tf2onnx


def _erfc_handler(ctx: Any, node: Any, name: str, args: Any) -> None:
    """tf2onnx handler for ``Erfc`` (exact GELU lowers to it; tf2onnx 1.17 has none): ``1 - Erf(x)``."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    node.type = "Erf"
    node.domain = ""
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype=dtype))
    ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(f"{name}_sub"),
                                  inputs=[one.output[0], node.output[0]])


@contextlib.contextmanager
def _without_reshape_optimizer(tf2onnx: Any) -> Iterator[None]:
    """Skips tf2onnx's ``reshape_optimizer`` while converting.

    With tf2onnx 1.17 that pass rewrites a dynamic reshape target such as
    ``[tf.shape(y)[0], tf.shape(y)[1], 4, 16]`` into ``[0, 0, 4, 16]`` (ONNX: 0 =
    copy the input's dimension), and the later ``remove_back_to_back`` pass then
    merges that Reshape with the one before it (``tf.tensordot``'s), so the 0s
    copy the wrong dimensions and onnxruntime fails (seen in multi-head
    attention). Without the pass the target stays a small Shape/Gather/Concat
    computation, which is correct.
    """
    module = getattr(tf2onnx, "optimizer", None)
    table = getattr(module, "_optimizers", None)
    if not isinstance(table, dict) or "reshape_optimizer" not in table:
        yield
        return
    module._optimizers = type(table)((k, v) for k, v in table.items() if k != "reshape_optimizer")
    try:
        yield
    finally:
        module._optimizers = table


# TensorFlow ops tf2onnx lacks, mapped with the (legacy but supported) custom_op_handlers API.
CUSTOM_OP_HANDLERS = {"Erfc": (_erfc_handler, [])}


class ONNXRunner:
    """Runs a ``.onnx`` file with ``onnxruntime`` on the CPU.

    Args:
      path: the ``.onnx`` file.

    Attributes:
      input_names: the graph's inputs (``["image"]`` for a classifier export).
      output_names: its outputs.

    Raises:
      ExportError: if onnxruntime is missing.
      ValueError: if the file cannot be loaded.
    """

    _NUMPY = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int32)": np.int32,
              "tensor(int64)": np.int64, "tensor(bool)": np.bool_, "tensor(float16)": np.float16,
              "tensor(int8)": np.int8, "tensor(uint8)": np.uint8}

    def __init__(self, path: str) -> None:
        ort = _import_runtime()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph classes
            raise ValueError(f"cannot load ONNX model {path}: {one_line(e, 200)}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_name = self.input_names[0]
        self._dtypes = {i.name: self._NUMPY.get(i.type) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, *args: np.ndarray, **inputs: np.ndarray) -> Dict[str, np.ndarray]:
        """Runs a batch.

        Args:
          *args: the inputs in graph order (a classifier export: the raw
            ``float32 [batch, *input_shape]`` images).
          **inputs: or the inputs by name.

        Returns:
          ``{output name: array}`` (a classifier: ``logits``, ``probabilities``, ``class_id``).

        Raises:
          ValueError: for missing or unknown inputs.
        """
        from lamina.export.signature import feed_inputs

        feed = feed_inputs(self.input_names, args, inputs, "ONNX model")
        values = self.session.run(None, {k: np.ascontiguousarray(v, self._dtypes[k]) for k, v in feed.items()})
        return dict(zip(self.output_names, values))


def _convert(tf2onnx: Any, serving: Any, spec: Sequence[Any], opset: int) -> Any:
    """Converts ``serving.serve`` with tf2onnx (lamina's two workarounds applied); returns the ONNX proto."""
    try:
        with _without_reshape_optimizer(tf2onnx):
            proto, _ = tf2onnx.convert.from_function(serving.serve, input_signature=list(spec), opset=int(opset),
                                                     custom_op_handlers=CUSTOM_OP_HANDLERS)
    except Exception as e:  # tf2onnx raises many kinds of errors
        raise ExportError(f"ONNX export: tf2onnx failed to convert the model (opset {opset}): {type(e).__name__}: {one_line(e, 300)}") from None
    return proto


def _open_runner(file: str) -> "ONNXRunner":
    """An :class:`ONNXRunner` for a freshly converted file; a load failure is an :class:`ExportError`."""
    try:
        return ONNXRunner(file)
    except ValueError as e:
        detail = str(e).split(": ", 1)[-1]
        raise ExportError(f"ONNX export: tf2onnx produced a model onnxruntime rejects (an unsupported TensorFlow op? "
                          f"see the tf2onnx log above): {detail}") from None


def _run_converted(runner: "ONNXRunner", feed: Any) -> Dict[str, np.ndarray]:
    """Runs the converted model on the self-check inputs; a failure is an :class:`ExportError`."""
    try:
        return runner(**feed) if isinstance(feed, Mapping) else runner(feed)
    except Exception as e:  # onnxruntime's Fail / InvalidArgument on a mis-converted graph
        raise ExportError(f"ONNX export: onnxruntime cannot run the converted model: {one_line(e, 300)}") from None


def _module_onnx(tf2onnx: Any, model: Any, path: str, input_signature: Any, opset: int, tolerance: float,
                 sample: Any, source_run: Optional[str], verbose: bool) -> str:
    """:func:`onnx` with ``input_signature``: the module served as it is."""
    from lamina.export.signature import ModuleServing, check_outputs, first_batch, module_metadata, module_sample, output_differences

    serving = ModuleServing(model, input_signature)
    feed = module_sample(serving.specs, sample)

    def fill(tmp: str) -> Dict[str, Any]:
        file = os.path.join(tmp, ONNX_FILE)
        proto = _convert(tf2onnx, serving, serving.specs.values(), opset)
        with open(file, "wb") as f:
            f.write(proto.SerializeToString())
        runner = _open_runner(file)
        if runner.input_names != serving.input_names or set(runner.output_names) != set(serving.output_names):
            raise ExportError(f"ONNX export: expected inputs {serving.input_names} and outputs {serving.output_names}, "
                              f"got {runner.input_names} and {runner.output_names}")
        diff = output_differences(_run_converted(runner, feed), serving.reference(feed))
        check_outputs(f"onnx (opset {opset})", diff, tolerance, first_batch(feed), printer(verbose))
        meta = module_metadata(serving, "onnx", source_run)
        meta.update(file=ONNX_FILE, opset=int(opset), verification=dict(diff, examples=first_batch(feed), tolerance=tolerance))
        return meta

    return write_export_dir(path, fill)


def onnx(
    model: Any,
    path: str,
    input_shape: Optional[Sequence[int]] = None,
    preprocessing: Optional[Mapping[str, Any]] = None,
    class_names: Optional[Sequence[str]] = None,
    *,
    input_signature: Any = None,
    opset: int = DEFAULT_OPSET,
    sample: Optional[Any] = None,
    source_run: Optional[str] = None,
    source_checkpoint: Optional[Dict[str, Any]] = None,
    tolerance: float = ONNX_TOLERANCE,
    verbose: bool = True,
) -> str:
    """Exports a model to ONNX (``path/model.onnx`` + ``lamina_export.json``).

    Args:
      model: a lamina model called as ``model(x, training=False) -> logits``.
      path: the output directory (replaced if it holds a previous export).
      input_shape: per-example shape, e.g. ``(8, 8, 1)``.
      preprocessing: ``{"scale", "mean", "std"[, "raw_max"]}`` used in training.
      class_names: one name per class.
      input_signature: export any module as it is instead (see
        :func:`lamina.export.saved_model`); ``sample`` is then an array /
        list / dict.
      opset: ONNX opset (default 17).
      sample: raw inputs for the self-check (default 32 random inputs).
      source_run: run directory recorded in ``lamina_export.json``.
      source_checkpoint: which checkpoint of the run (``lamina.train.run.checkpoint_info``), recorded too.
      tolerance: allowed difference (probabilities, scaled logits).
      verbose: print the measured difference.

    Returns:
      ``path``.

    Raises:
      ExportError: if tf2onnx/onnxruntime are missing, conversion fails, or the
        onnxruntime output differs by more than ``tolerance`` (nothing is written).
      ValueError: for a bad shape, preprocessing or sample.
    """
    tf2onnx = _import_converter()
    _import_runtime()
    import tensorflow as tf

    if input_signature is not None:
        from lamina.export.signature import reject_classifier_args

        reject_classifier_args(input_shape, preprocessing, class_names)
        return _module_onnx(tf2onnx, model, path, input_signature, opset, tolerance, sample, source_run, verbose)
    if input_shape is None:
        raise TypeError("lamina.export.onnx: pass input_shape (image classifier) or input_signature (any module)")
    serving = ServingModule(model, input_shape, preprocessing, class_names)
    x = sample_batch(serving, sample)
    say = printer(verbose)
    spec = [tf.TensorSpec([None, *serving.input_shape_list], tf.float32, name=INPUT_NAME)]

    def fill(tmp: str) -> Dict[str, Any]:
        file = os.path.join(tmp, ONNX_FILE)
        proto = _convert(tf2onnx, serving, spec, opset)
        with open(file, "wb") as f:
            f.write(proto.SerializeToString())
        runner = _open_runner(file)
        missing = {"logits", "probabilities", "class_id"} - set(runner.output_names)
        if missing or runner.input_name != INPUT_NAME:
            raise ExportError(f"ONNX export: expected input 'image' and outputs logits/probabilities/class_id, got {runner.input_name!r} and {runner.output_names}")
        got = _run_converted(runner, x)
        diff = max_difference(got, serving.reference(x))
        check_difference(f"onnx (opset {opset})", diff, tolerance, len(x), say)
        meta = base_metadata(serving, "onnx", source_run, source_checkpoint)
        meta.update(file=ONNX_FILE, opset=int(opset), verification=dict(diff, examples=int(len(x)), tolerance=tolerance))
        return meta

    return write_export_dir(path, fill)
