"""The ``lamina export`` and ``lamina predict`` sub-commands (loaded by :mod:`lamina.cli`).

``lamina export RUN_DIR --format savedmodel|tflite|onnx [--quantize float16|int8] [--output PATH] [--version N]``
writes ``RUN_DIR/export/<format>`` (``tflite-float16`` / ``tflite-int8`` when
quantized; a SavedModel goes into ``RUN_DIR/export/savedmodel/<N>/``, TF
Serving's layout) and prints the difference measured against the original model.

``lamina predict RUN_DIR|EXPORT_DIR IMAGE [IMAGE|FOLDER ...] [--top-k 3] [--json] [--batch-size 64]``
prints the top classes per image as a table, or JSON lines with ``--json``.
Notes (resized, converted) go to standard error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Dict

from lamina.cli.common import choice, positive_int
from lamina.export.run_export import FORMATS, export_run

__all__ = ["add_parsers", "handlers"]


def add_parsers(sub: Any) -> None:
    """Adds ``export`` and ``predict`` to the ``lamina`` sub-command parsers.

    Args:
      sub: the ``add_subparsers()`` object of :func:`lamina.cli.build_parser`
        (its parser class raises :class:`lamina.cli.CLIError` on bad usage).
    """
    p = sub.add_parser("export", help="export a run's model (SavedModel, TFLite, ONNX)",
                       description="Export a trained run for serving; raw pixels in, logits/probabilities/class_id out.")
    p.add_argument("run_dir", help="a run directory written by `lamina train`")
    p.add_argument("--format", dest="format", type=choice("--format", FORMATS), required=True,
                   help="savedmodel, tflite or onnx")
    p.add_argument("--quantize", type=choice("--quantize", ("float16", "int8")), default=None,
                   help="TFLite only: float16 weights, or int8 (full integer, calibrated on the training split)")
    p.add_argument("--output", default=None, help="output directory (default RUN_DIR/export/<format>)")
    p.add_argument("--checkpoint", type=choice("--checkpoint", ("best", "latest")), default="best",
                   help="which checkpoint: best (by validation) or latest [default: best]")
    p.add_argument("--weights", type=choice("--weights", ("live", "ema")), default="live",
                   help="the trained weights, or their moving average for a run trained with --ema [default: live]")
    p.add_argument("--opset", type=positive_int("--opset"), default=17, help="ONNX opset (default 17)")
    p.add_argument("--version", dest="serving_version", type=positive_int("--version"), default=None,
                   help="SavedModel only: write OUTPUT/<version>/ (TF Serving's layout; default: the next integer)")

    q = sub.add_parser("predict", help="classify image files with a run or an export",
                       description="Print the top-k classes and probabilities of each image.")
    q.add_argument("model_path", help="a run directory, an export directory, or a SavedModel base folder (highest version)")
    q.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, GIF) or folders of them")
    q.add_argument("--top-k", dest="top_k", type=positive_int("--top-k"), default=3,
                   help="how many classes to show per image (at most the number of classes) [default: 3]")
    q.add_argument("--json", action="store_true", help="print one JSON object per image")
    q.add_argument("--batch-size", dest="batch_size", type=positive_int("--batch-size"), default=64)
    q.add_argument("--checkpoint", type=choice("--checkpoint", ("best", "latest")), default="best")


def handlers() -> Dict[str, Callable[[argparse.Namespace], int]]:
    """Returns the sub-command functions.

    Returns:
      ``{"export": fn, "predict": fn}``; each takes the parsed arguments and
      returns an exit code.
    """
    return {"export": _export, "predict": _predict}


def _export(args: argparse.Namespace) -> int:
    export_run(args.run_dir, args.format, output=args.output, quantize=args.quantize, which=args.checkpoint, opset=args.opset,
               version=args.serving_version, weights=args.weights)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from lamina.export.predict import format_table, load_predictor, predict_files, results_json

    predictor = load_predictor(args.model_path, args.checkpoint)
    results = predict_files(predictor, args.images, top_k=args.top_k, batch_size=args.batch_size)
    for note in predictor.notes:  # after the work: a failure stays one line
        print(f"lamina: note: {note}", file=sys.stderr)
    for r in results:
        if r["notes"]:
            print(f"lamina: note: {r['image']}: {'; '.join(r['notes'])}", file=sys.stderr)
    print(results_json(results) if args.json else format_table(results), flush=True)
    return 0
