"""Inference on image files from a run directory or an export directory.

Images are decoded with ``tf.io`` (PNG, JPEG, BMP, GIF; first frame of an
animation), converted to the model's channel count (RGB <-> grayscale, alpha
dropped) and resized to its input size when they differ (area averaging when
shrinking, bilinear otherwise; each change is reported as a note). Pixels ``p`` in ``0..255`` become raw model values
``raw = p / 255 * raw_max``, so the preprocessing baked into the model (or
applied from the run's config) sees the same range as in training.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from lamina.export.versions import resolve_export_dir
from lamina.export.saved_model import (
    INPUT_NAME,
    METADATA_NAME,
    ServingModule,
    load_signature,
    normalize_preprocessing,
    resize_policy,
    read_metadata,
    run_preprocessing,
)

__all__ = ["IMAGE_EXTENSIONS", "Predictor", "load_predictor", "collect_images", "load_image", "predict_files", "format_table", "results_json"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


class Predictor:
    """A loaded model that maps raw inputs to class probabilities.

    Attributes:
      source: the run or export directory.
      kind: ``"run"``, ``"savedmodel"``, ``"tflite"`` or ``"onnx"``.
      input_shape: per-example shape ``[H, W, C]``.
      class_names: one name per class.
      raw_max: raw value of a full-intensity pixel (``p = 255``).
      notes: remarks made while loading (e.g. an assumed ``raw_max``).
      resize: the recorded resize / centre-crop policy (``{}``: resize to the input size).
    """

    def __init__(
        self,
        source: str,
        kind: str,
        input_shape: Sequence[int],
        class_names: Sequence[str],
        raw_max: float,
        fn: Callable[[np.ndarray], Mapping[str, Any]],
        notes: Optional[List[str]] = None,
        resize: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.source = source
        self.kind = kind
        self.input_shape = [int(d) for d in input_shape]
        self.class_names = [str(c) for c in class_names]
        self.raw_max = float(raw_max)
        self._fn = fn
        self.notes = list(notes or [])
        self.resize = dict(resize or {})  # the weights' resize/crop policy (see saved_model.resize_policy)

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        """Class probabilities of a batch of raw inputs.

        Args:
          raw: ``float32 [batch, *input_shape]`` in ``[0, raw_max]``.

        Returns:
          ``float32 [batch, num_classes]``.
        """
        out = self._fn(np.ascontiguousarray(raw, np.float32))
        value = out["probabilities"]
        return np.asarray(value.numpy() if hasattr(value, "numpy") else value, np.float32)


def _from_run(path: str, which: str) -> Predictor:
    from lamina.train.run import checkpoint_info, checkpoint_path, describe_checkpoint, load_run

    model, record = load_run(path, which)
    config = record.to_json()
    preprocessing = run_preprocessing(config)
    serving = ServingModule(model, config["input_shape"], preprocessing, config.get("class_names"))
    predictor = Predictor(path, "run", serving.input_shape_list, serving.class_name_list, preprocessing["raw_max"],
                          lambda x: serving.serve(tf.constant(x)), resize=resize_policy(preprocessing))
    predictor.notes.append(f"using the {describe_checkpoint(checkpoint_info(checkpoint_path(path, which), which))} of {path}")
    return predictor


def _from_saved_model(path: str, meta: Optional[Dict[str, Any]]) -> Predictor:
    fn = load_signature(path)
    loaded = fn.loaded
    specs = fn.structured_input_signature[1]
    outputs = fn.structured_outputs
    if INPUT_NAME not in specs or "probabilities" not in outputs:
        raise ValueError(f"SavedModel {path}: expected input 'image' and output 'probabilities', got inputs {sorted(specs)} and outputs {sorted(outputs)}")
    notes: List[str] = []
    if meta is not None:
        shape, names = meta["input_shape"], meta["class_names"]
        norm = normalize_preprocessing(meta["preprocessing"], int(shape[-1]))
        raw_max, policy = norm["raw_max"], resize_policy(norm)
    else:
        shape = [int(d) for d in specs[INPUT_NAME].shape[1:]]
        num = int(outputs["probabilities"].shape[-1])
        names = [n.decode() for n in loaded.class_names.numpy()] if hasattr(loaded, "class_names") else [str(i) for i in range(num)]
        raw_max, policy = 255.0, {}
        notes.append(f"{path} has no {METADATA_NAME}: assuming raw pixel range 0..255")
    return Predictor(path, "savedmodel", shape, names, raw_max, lambda x: fn(**{INPUT_NAME: tf.constant(x)}), notes,
                     resize=policy)


def _from_file_export(path: str, meta: Dict[str, Any]) -> Predictor:
    fmt = meta.get("format")
    from lamina.fileio import resolve_inside

    file = resolve_inside(path, meta.get("file"), f"{METADATA_NAME} names")
    if not os.path.isfile(file):
        raise ValueError(f"export directory {path}: {METADATA_NAME} names {meta.get('file')!r}, which is missing")
    if fmt == "tflite":
        from lamina.export.tflite import TFLiteRunner

        runner: Callable[[np.ndarray], Mapping[str, Any]] = TFLiteRunner(file)
    else:
        from lamina.export.onnx import ONNXRunner

        runner = ONNXRunner(file)
    shape = meta["input_shape"]
    norm = normalize_preprocessing(meta["preprocessing"], int(shape[-1]))
    return Predictor(path, str(fmt), shape, meta["class_names"], norm["raw_max"], runner, resize=resize_policy(norm))


def load_predictor(path: str, which: str = "best") -> Predictor:
    """Loads a run directory (``config.json``) or an export directory.

    Args:
      path: a directory from ``lamina train`` or ``lamina export`` (or any
        SavedModel with a ``serving_default`` signature taking ``image``); for
        a SavedModel in TF Serving's layout, the model's base folder (its
        highest version is used) or one version folder.
      which: checkpoint of a run directory, ``"best"`` or ``"latest"``.

    Returns:
      A :class:`Predictor`.

    Raises:
      ValueError: if the path is missing or is neither kind of directory.
    """
    if not os.path.exists(path):
        raise ValueError(f"{path} does not exist (expected a run directory or an export directory)")
    if not os.path.isdir(path):
        raise ValueError(f"{path} is a file; expected a run directory (config.json) or an export directory ({METADATA_NAME})")
    if os.path.exists(os.path.join(path, "config.json")):
        return _from_run(path, which)
    path = resolve_export_dir(path)
    meta = read_metadata(path) if os.path.exists(os.path.join(path, METADATA_NAME)) else None
    if meta is not None and meta.get("kind") == "module":
        inputs = ", ".join(f"{n} {s['dtype']} {s['shape']}" for n, s in meta["signature"]["inputs"].items())
        raise ValueError(f"{path} exports a module with inputs {inputs}, not an image classifier; "
                         f"lamina predict classifies images: load it with lamina.export.load({path!r})")
    if meta is not None:
        for key in ("format", "input_shape", "class_names", "preprocessing"):
            if key not in meta:
                raise ValueError(f"{os.path.join(path, METADATA_NAME)}: missing key {key!r}")
        if meta["format"] in ("tflite", "onnx"):
            return _from_file_export(path, meta)
        if meta["format"] != "savedmodel":
            raise ValueError(f"{os.path.join(path, METADATA_NAME)}: unknown format {meta['format']!r}, expected savedmodel, tflite or onnx")
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return _from_saved_model(path, meta)
    raise ValueError(f"{path} is neither a run directory (no config.json) nor an export directory (no {METADATA_NAME} or saved_model.pb)")


def collect_images(paths: Sequence[str]) -> List[str]:
    """Expands folders into their image files (sorted, not recursive).

    Args:
      paths: files and folders.

    Returns:
      Image file paths, in the given order.

    Raises:
      ValueError: for a missing path or a folder without images.
    """
    out: List[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(os.path.join(p, f) for f in os.listdir(p)
                           if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(p, f)))
            if not found:
                raise ValueError(f"folder {p} has no images ({', '.join(IMAGE_EXTENSIONS)})")
            out.extend(found)
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise ValueError(f"image {p} does not exist")
    return out


def load_image(path: str, input_shape: Sequence[int], raw_max: float,
               resize: Optional[Mapping[str, Any]] = None) -> Tuple[np.ndarray, List[str]]:
    """Decodes an image file into one raw model input.

    Args:
      path: a PNG, JPEG, BMP or GIF file.
      input_shape: the model's ``[H, W, C]``.
      raw_max: raw value of pixel 255.
      resize: a recorded policy (``resize`` the shorter side, centre ``crop``,
        ``interpolation``), as pretrained weights expect; ``None``: resize
        straight to the input size.

    Returns:
      ``(raw float32 [H, W, C], notes)``; notes say what was converted.

    Raises:
      ValueError: for an unreadable file, a model that does not take images,
        or channels that cannot be converted; the message names the file.
    """
    shape = [int(d) for d in input_shape]
    if len(shape) != 3:
        raise ValueError(f"predicting on images needs a model with input shape (height, width, channels), this one takes {tuple(shape)}")
    height, width, channels = shape
    try:
        data = tf.io.read_file(path)
        image = tf.io.decode_image(data, expand_animations=False, dtype=tf.uint8)
    except (tf.errors.OpError, ValueError) as e:
        text = re.sub(r"\{\{[^}]*\}\}", "", getattr(e, "message", None) or str(e))
        text = re.sub(r"\s*\[Op:[^\]]*\].*$", "", " ".join(text.split()))
        first = text or type(e).__name__
        raise ValueError(f"{path}: cannot read image (expected PNG, JPEG, BMP or GIF): {first[:200]}") from None
    notes: List[str] = []
    have = int(image.shape[-1])
    x = tf.cast(image, tf.float32)
    if have != channels:
        if have in (2, 4) and channels in (1, 3):
            x = x[..., : have - 1]
            have -= 1
            notes.append("dropped the alpha channel")
        if have == 3 and channels == 1:
            x = tf.image.rgb_to_grayscale(x)
            notes.append("converted RGB to grayscale")
        elif have == 1 and channels == 3:
            x = tf.image.grayscale_to_rgb(x)
            notes.append("converted grayscale to RGB")
        elif have != channels:
            raise ValueError(f"{path}: image has {int(image.shape[-1])} channels, the model expects {channels}; cannot convert")
    if resize and resize.get("resize"):
        h0, w0 = int(x.shape[0]), int(x.shape[1])
        short = int(resize["resize"])
        new = (max(1, round(h0 * short / min(h0, w0))), max(1, round(w0 * short / min(h0, w0))))
        x = tf.clip_by_value(tf.image.resize(x, new, method=resize.get("interpolation", "bilinear"), antialias=True),
                             0.0, 255.0)
        top, left = max(0, (new[0] - height) // 2), max(0, (new[1] - width) // 2)
        x = x[top: top + height, left: left + width]
        notes.append(f"resized {w0}x{h0} to {new[1]}x{new[0]} (shorter side {short}) and centre-cropped {width}x{height}"
                     " (the weights' preprocessing)")
    if (int(x.shape[0]), int(x.shape[1])) != (height, width):
        notes.append(f"resized {int(x.shape[1])}x{int(x.shape[0])} to {width}x{height}")
        shrink = int(x.shape[0]) >= height and int(x.shape[1]) >= width
        # Area averaging when shrinking (each output pixel is the mean of the pixels it covers), else bilinear.
        x = tf.image.resize(x, (height, width), method="area" if shrink else "bilinear", antialias=not shrink)
        x = tf.clip_by_value(x, 0.0, 255.0)
    raw = x.numpy().astype(np.float32) / np.float32(255.0) * np.float32(raw_max)
    return raw, notes


def predict_files(predictor: Predictor, paths: Sequence[str], top_k: int = 3, batch_size: int = 64) -> List[Dict[str, Any]]:
    """Predicts the top classes of image files.

    Args:
      predictor: from :func:`load_predictor`.
      paths: image files (folders are expanded by :func:`collect_images`).
      top_k: classes per image (capped at the number of classes).
      batch_size: images per model call.

    Returns:
      One dict per image: ``{"image", "predictions": [{"class_id",
      "class_name", "probability"}], "notes"}``.

    Raises:
      ValueError: for an unreadable or unconvertible image (naming the file)
        or a non-positive ``top_k``/``batch_size``.
    """
    if top_k < 1 or batch_size < 1:
        raise ValueError(f"top_k and batch_size must be positive, got {top_k} and {batch_size}")
    files = collect_images(paths)
    loaded = [load_image(f, predictor.input_shape, predictor.raw_max, predictor.resize) for f in files]
    k = min(int(top_k), len(predictor.class_names))
    results: List[Dict[str, Any]] = []
    for start in range(0, len(files), batch_size):
        batch = np.stack([raw for raw, _ in loaded[start : start + batch_size]])
        probs = predictor.probabilities(batch)
        for i, row in enumerate(probs):
            order = np.argsort(-row, kind="stable")[:k]
            results.append({
                "image": files[start + i],
                "predictions": [
                    {"class_id": int(c), "class_name": predictor.class_names[int(c)], "probability": float(row[c])} for c in order
                ],
                "notes": loaded[start + i][1],
            })
    return results


def format_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Formats predictions as a text table, one row per image.

    Args:
      results: from :func:`predict_files`.

    Returns:
      The table (no trailing newline).
    """
    if not results:
        return ""
    k = max(len(r["predictions"]) for r in results)
    cells = [[str(r["image"])] + [f"{p['class_name']} ({p['probability']:.2%})" for p in r["predictions"]] for r in results]
    header = ["image"] + [f"top-{i + 1}" for i in range(k)]
    widths = [max(len(row[j]) if j < len(row) else 0 for row in cells + [header]) for j in range(k + 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header] + cells]
    return "\n".join(lines)


def results_json(results: Sequence[Mapping[str, Any]]) -> str:
    """Formats predictions as JSON lines (one object per image).

    Args:
      results: from :func:`predict_files`.

    Returns:
      The lines joined by newlines.
    """
    return "\n".join(json.dumps(r, sort_keys=True) for r in results)

