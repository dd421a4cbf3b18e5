"""TensorBoard summaries: scalars, histograms and images, in the run's event files.

Everything goes through TensorBoard's own summary ops (``tf.summary.scalar``,
``tf.summary.histogram``, ``tf.summary.image``, which are implemented by the
``tensorboard`` package: lamina's ``cpu``/``gpu`` extras install it), so the
files read back in TensorBoard exactly as Keras' or any TensorFlow program's
do. Each writer function takes the ``tf.summary`` writer explicitly and makes
it the default only for its own writes.

The images lamina draws: :func:`confusion_matrix_image` (the same picture as
``confusion.png``) and :func:`sample_grid_image` (a grid of inputs titled with
their true and predicted classes, wrong ones in red).
"""

from __future__ import annotations

import numbers
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

__all__ = [
    "write_scalars",
    "write_histograms",
    "write_image",
    "figure_to_array",
    "confusion_matrix_image",
    "sample_grid_image",
    "MISSING_MESSAGE",
]

MISSING_MESSAGE = "TensorBoard summaries need the tensorboard package: pip install tensorboard (part of lamina[cpu] and lamina[gpu])"


def _require_tensorboard() -> None:
    try:
        import tensorboard.summary.v2  # noqa: F401
    except ImportError:
        raise ImportError(MISSING_MESSAGE) from None


def _number(value: Any) -> Optional[float]:
    """``value`` as a float if it is a real number (Python, NumPy or a 0-d tensor), else ``None``."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "shape") and hasattr(value, "dtype") and tuple(value.shape) == ():
        dtype = tf.as_dtype(value.dtype)
        if dtype.is_floating or dtype.is_integer or dtype.is_bool:
            return float(value.numpy() if hasattr(value, "numpy") else value)
    return None


def write_scalars(writer: Any, logs: Mapping[str, Any], step: int, *, prefix: str = "",
                  exclude: Sequence[str] = ("epoch", "step")) -> List[str]:
    """Writes every number in ``logs`` as a TensorBoard scalar.

    Args:
      writer: a ``tf.summary`` writer (``tf.summary.create_file_writer(dir)``).
      logs: ``{name: value}``, e.g. one line of ``metrics.jsonl``
        (``loss``, ``accuracy``, ``val_loss``, ``learning_rate``, ...).
      step: the x axis (the epoch, or the global step).
      prefix: prepended to each tag (``"train/"``).
      exclude: keys that are not plotted (the step counters themselves).

    Returns:
      The tags written, in order.

    Raises:
      TypeError: for a value that is not a real number (a string, a list, a
        non-scalar tensor), naming its key.
      ImportError: if the ``tensorboard`` package is missing.
    """
    _require_tensorboard()
    values: Dict[str, float] = {}
    for key, value in logs.items():
        if key in exclude:
            continue
        number = _number(value)
        if number is None:
            raise TypeError(f"write_scalars: {key!r} is not a number (got {type(value).__name__}); pass numbers only or list the key in exclude=")
        values[prefix + key] = number
    with writer.as_default():
        for tag, number in values.items():
            tf.summary.scalar(tag, number, step=int(step))
    return list(values)


def write_histograms(writer: Any, named_tensors: Mapping[str, Any], step: int, *, prefix: str = "",
                     buckets: int = 30) -> List[str]:
    """Writes one histogram per tensor (weights, gradients, activations).

    Args:
      writer: a ``tf.summary`` writer.
      named_tensors: ``{name: tensor or variable}``, e.g.
        ``model.variable_paths()`` for the weights, or the same paths zipped
        with their gradients (``None`` gradients are refused).
      step: the x axis.
      prefix: prepended to each tag (``"weights/"``, ``"gradients/"``).
      buckets: histogram buckets.

    Returns:
      The tags written.

    Raises:
      TypeError: for an entry that is not a numeric tensor (e.g. a ``None``
        gradient), naming it.
      ValueError: for a non-positive ``buckets``.
      ImportError: if the ``tensorboard`` package is missing.
    """
    _require_tensorboard()
    if int(buckets) < 1:
        raise ValueError(f"write_histograms: buckets must be a positive integer, got {buckets!r}")
    items = []
    for name, value in named_tensors.items():
        if value is None or not hasattr(value, "dtype"):
            raise TypeError(f"write_histograms: {name!r} is not a tensor (got {type(value).__name__})")
        dtype = tf.as_dtype(value.dtype)
        if not (dtype.is_floating or dtype.is_integer):
            raise TypeError(f"write_histograms: {name!r} has dtype {dtype.name}; expected a number type")
        items.append((prefix + name, tf.cast(tf.convert_to_tensor(value), tf.float64 if dtype == tf.float64 else tf.float32)))
    with writer.as_default():
        for tag, tensor in items:
            tf.summary.histogram(tag, tensor, step=int(step), buckets=int(buckets))
    return [tag for tag, _ in items]


def figure_to_array(figure: Any) -> np.ndarray:
    """Renders a matplotlib figure to an RGB image (with the Agg canvas).

    Args:
      figure: a ``matplotlib.figure.Figure``.

    Returns:
      ``uint8 (height, width, 3)``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    return np.array(canvas.buffer_rgba())[..., :3]


def _as_image(image: Any) -> np.ndarray:
    """``uint8 (H, W, C)`` from a figure, a uint8 array, or a float array in ``[0, 1]``."""
    if hasattr(image, "savefig"):
        return figure_to_array(image)
    array = np.asarray(image.numpy() if hasattr(image, "numpy") else image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise ValueError(f"write_image: expected an image (H, W), (H, W, 1|3|4) or a matplotlib figure, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
            raise ValueError("write_image: a float image must hold values in [0, 1]")
        return np.round(array * 255).astype(np.uint8)
    raise ValueError(f"write_image: expected uint8 or float values in [0, 1], got dtype {array.dtype}")


def write_image(writer: Any, tag: str, image: Any, step: int) -> np.ndarray:
    """Writes one image (PNG-encoded by TensorBoard's image summary).

    Args:
      writer: a ``tf.summary`` writer.
      tag: the image's name in TensorBoard (``"confusion_matrix"``).
      image: ``uint8`` or ``[0, 1]`` float array ``(H, W)``, ``(H, W, 1|3|4)``,
        or a matplotlib figure (rendered with :func:`figure_to_array`; not
        closed).
      step: the x axis.

    Returns:
      The ``uint8 (H, W, C)`` array written.

    Raises:
      ValueError: for another shape or value range.
      ImportError: if the ``tensorboard`` package is missing.
    """
    _require_tensorboard()
    array = _as_image(image)
    with writer.as_default():
        tf.summary.image(tag, array[None], step=int(step), max_outputs=1)
    return array


def confusion_matrix_image(matrix: Any, class_names: Optional[Sequence[str]] = None,
                           title: str = "confusion matrix") -> np.ndarray:
    """The confusion matrix as an image (:func:`lamina.train.plots.confusion_figure`).

    Args:
      matrix: ``(C, C)`` counts (rows true, columns predicted); a tensor or an array.
      class_names: one name per class.
      title: the figure title (the accuracy is appended).

    Returns:
      ``uint8 (height, width, 3)``.

    Raises:
      ValueError: for a matrix that is not square or a wrong number of names.
    """
    from lamina.train.plots import _pyplot, confusion_figure

    plt = _pyplot()
    fig = confusion_figure(np.asarray(matrix.numpy() if hasattr(matrix, "numpy") else matrix), class_names, title)
    try:
        return figure_to_array(fig)
    finally:
        plt.close(fig)


def sample_grid_image(
    images: Any,
    labels: Optional[Sequence[int]] = None,
    predictions: Optional[Sequence[int]] = None,
    class_names: Optional[Sequence[str]] = None,
    *,
    raw_max: Optional[float] = None,
    columns: int = 8,
) -> np.ndarray:
    """A grid of input images, each titled ``true -> predicted`` (wrong predictions in red).

    Args:
      images: ``(N, H, W)`` or ``(N, H, W, 1|3)`` raw inputs.
      labels: ``N`` true class ids, or ``None``.
      predictions: ``N`` predicted class ids, or ``None``.
      class_names: names for the ids (default the ids).
      raw_max: the value shown as white (default: each image scaled from its
        own minimum to its maximum).
      columns: images per row.

    Returns:
      ``uint8 (height, width, 3)``.

    Raises:
      ValueError: for a bad shape or a labels/predictions length that is not ``N``.
    """
    from lamina.train.plots import _pyplot

    x = np.asarray(images.numpy() if hasattr(images, "numpy") else images, np.float64)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) < 1:
        raise ValueError(f"sample_grid_image: expected images (N, H, W) or (N, H, W, 1|3), got shape {x.shape}")
    n = len(x)
    for what, ids in (("labels", labels), ("predictions", predictions)):
        if ids is not None and len(ids) != n:
            raise ValueError(f"sample_grid_image: {len(ids)} {what} for {n} images")
    if int(columns) < 1:
        raise ValueError(f"sample_grid_image: columns must be a positive integer, got {columns!r}")

    def name(i: int) -> str:
        return str(class_names[i]) if class_names is not None else str(i)

    plt = _pyplot()
    cols = min(int(columns), n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.5 * rows), squeeze=False)
    try:
        for k, ax in enumerate(axes.ravel()):
            ax.axis("off")
            if k >= n:
                continue
            img = x[k]
            lo, hi = (0.0, float(raw_max)) if raw_max is not None else (float(img.min()), float(img.max()))
            img = np.clip((img - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(img)
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                      vmin=0, vmax=1, interpolation="nearest")
            parts = []
            if labels is not None:
                parts.append(name(int(labels[k])))
            if predictions is not None:
                parts.append(name(int(predictions[k])))
            wrong = labels is not None and predictions is not None and int(labels[k]) != int(predictions[k])
            if parts:
                ax.set_title(" -> ".join(parts), fontsize=8, color="red" if wrong else "black")
        fig.tight_layout()
        return figure_to_array(fig)
    finally:
        plt.close(fig)
