"""``export_run``: export a run directory's model (SavedModel, TFLite, ONNX), checked on its data."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

__all__ = ["export_run", "FORMATS"]

FORMATS = ("savedmodel", "tflite", "onnx")
_STREAM_CHECK = 2048  # test examples a streaming data set lends to the export check
_STREAM_CALIBRATION = 1024  # training examples it lends to int8 calibration (tflite uses up to 200)


def _load_data(config: Dict[str, Any]) -> Tuple[Any, Optional[str]]:
    """The run's data set, or ``(None, reason)`` when it cannot be loaded."""
    try:
        from lamina import data as ld

        size = config.get("image_size")
        ds = ld.load(config.get("data", "digits"), image_size=tuple(size) if size else None,
                     validation_split=config.get("val_split", 0.0) or 0.0, seed=config.get("seed", 0) or 0)
    except Exception as e:  # any failure: fall back to random inputs for the check
        return None, " ".join(str(e).split())[:200] or type(e).__name__
    if list(ds.input_shape) != list(config["input_shape"]):
        return None, f"its input shape {tuple(ds.input_shape)} differs from the model's {tuple(config['input_shape'])}"
    return ds, None


def export_run(
    run_dir: str,
    fmt: str,
    output: Optional[str] = None,
    quantize: Optional[str] = None,
    which: str = "best",
    opset: int = 17,
    verbose: bool = True,
    version: Optional[int] = None,
    weights: str = "live",
) -> str:
    """Exports a run directory's model, checked on real test examples when the data loads.

    Args:
      run_dir: a run directory written by ``lamina train``.
      fmt: ``"savedmodel"``, ``"tflite"`` or ``"onnx"``.
      output: output directory (default ``RUN_DIR/export/<format>``, with
        ``-float16``/``-int8`` appended for quantized TFLite). For a
        SavedModel it is the model's base folder in TF Serving's layout: the
        export goes to ``output/<version>/``.
      quantize: TFLite only: ``None``, ``"float16"`` or ``"int8"``.
      which: ``"best"`` or ``"latest"`` checkpoint.
      weights: ``"live"`` (the trained weights) or ``"ema"`` (their moving
        average, for a run trained with ``--ema``).
      opset: ONNX opset.
      verbose: print progress and the measured difference.
      version: SavedModel only: the version folder (a positive integer;
        default one more than the highest version already there, or 1).

    Returns:
      The export directory (``.../savedmodel/<version>`` for a SavedModel).

    Raises:
      ValueError: for a bad format/quantize combination or a bad run directory.
      ExportError: if the export fails or does not match the original model.
    """
    from lamina.export.onnx import onnx
    from lamina.export.saved_model import ExportError, printer, run_preprocessing, saved_model
    from lamina.export.tflite import tflite
    from lamina.train.run import checkpoint_info, checkpoint_path, describe_checkpoint, load_run

    if fmt not in FORMATS:
        raise ValueError(f"lamina export: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if quantize is not None and fmt != "tflite":
        raise ValueError(f"lamina export: --quantize applies to --format tflite only, got --format {fmt}")
    if version is not None and fmt != "savedmodel":
        raise ValueError(f"lamina export: --version applies to --format savedmodel only (TF Serving's layout), got --format {fmt}")
    say = printer(verbose)
    model, record = load_run(run_dir, which, weights=weights)
    config = record.to_json()
    from lamina.models.registry import model_task

    task = model_task(str(config.get("model", "")))
    if task != "classification":
        doc = "docs/sequence.md" if task == "language_model" else "docs/models.md"
        raise ValueError(
            f"lamina export: exports classifiers (one class per example); --model {config.get('model')} "
            f"({task.replace('_', ' ')}) is exported from Python: lm.export.saved_model(model, path, "
            f"input_signature=[tf.TensorSpec(...)]) (see {doc})")
    info = checkpoint_info(checkpoint_path(run_dir, which), which)
    info["weights"] = weights
    say(f"exporting the {describe_checkpoint(info)} of {run_dir}" + (" (its weight average)" if weights == "ema" else ""))
    preprocessing = run_preprocessing(config)
    ds, reason = _load_data(config)
    sample = None
    test = None
    if ds is not None:
        split = "test" if "test" in ds.splits else "train"
        # a streaming set (too big for memory) gives a bounded seeded sample instead of the whole split
        x, y = ds.sample(split, _STREAM_CHECK) if ds.streaming else ds.arrays(split)
        sample = x[:256]
        test = (x, y) if split == "test" else None
        say(f"checking on {len(sample)} {split} examples of {config.get('data')}")
    else:
        say(f"note: data {config.get('data')!r} could not be loaded ({reason}); checking on random inputs")
    if output is None:
        output = os.path.join(run_dir, "export", fmt + (f"-{quantize}" if quantize else ""))
    common = dict(input_shape=config["input_shape"], preprocessing=preprocessing,
                  class_names=config.get("class_names"), sample=sample, source_run=run_dir, source_checkpoint=info, verbose=verbose)
    if fmt == "savedmodel":
        path = saved_model(model, output, version=version if version is not None else "next", **common)
    elif fmt == "onnx":
        path = onnx(model, output, opset=opset, **common)
    else:
        rep = None
        if quantize == "int8":
            if ds is None:
                raise ExportError(f"lamina export: int8 quantization calibrates on the training split of {config.get('data')!r}, which could not be loaded: {reason}")
            rep = (ds.sample("train", _STREAM_CALIBRATION) if ds.streaming else ds.arrays("train"))[0]
        path = tflite(model, output, quantize=quantize, representative_data=rep,
                      test_data=test if quantize else None, **common)
    say(f"exported {fmt}{f' ({quantize})' if quantize else ''} to {path}")
    return path
