"""Image helpers shared by the loaders: colour mode, resizing, checking options."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from lamina.data.checks import check_allocation
from lamina.data.errors import DataError

__all__ = [
    "COLOR_MODES",
    "MAX_IMAGE_SIDE",
    "check_image_size",
    "check_color_mode",
    "native_color_mode",
    "convert_channels",
    "resize_images",
    "apply_image_options",
]

COLOR_MODES: Tuple[str, ...] = ("rgb", "grayscale")
# Larger sides are certainly a typo (TensorFlow's resize kernels index with int32 as well).
MAX_IMAGE_SIDE = 16384

ImageSize = Union[None, int, Sequence[int]]


def check_image_size(image_size: ImageSize) -> Optional[Tuple[int, int]]:
    """Validates ``image_size``: ``None``, one int (square) or ``(height, width)``.

    Args:
      image_size: the user's value.

    Returns:
      ``(height, width)`` or ``None``.

    Raises:
      DataError: if it is not positive integers.
    """
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        size: Tuple[int, ...] = (int(image_size), int(image_size))
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in image_size
    ):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise DataError(f"image_size must be an integer or (height, width), got {image_size!r}")
    if min(size) < 1:
        raise DataError(f"image_size must be positive, got {image_size!r}")
    if max(size) > MAX_IMAGE_SIDE:
        raise DataError(f"image_size must be at most {MAX_IMAGE_SIDE} pixels a side, got {image_size!r}")
    return (size[0], size[1])


def check_color_mode(color_mode: Optional[str]) -> Optional[str]:
    """Validates ``color_mode``: ``None``, ``"rgb"`` or ``"grayscale"`` (``"gray"``/``"l"`` accepted).

    Args:
      color_mode: the user's value.

    Returns:
      ``"rgb"``, ``"grayscale"`` or ``None``.

    Raises:
      DataError: for any other value.
    """
    if color_mode is None:
        return None
    mode = str(color_mode).lower()
    mode = {"gray": "grayscale", "grey": "grayscale", "greyscale": "grayscale", "l": "grayscale", "color": "rgb"}.get(mode, mode)
    if mode not in COLOR_MODES:
        raise DataError(f"color_mode must be 'rgb' or 'grayscale', got {color_mode!r}")
    return mode


def native_color_mode(channels: int) -> str:
    """The colour mode of an image with ``channels`` channels (alpha ignored)."""
    return "grayscale" if channels in (1, 2) else "rgb"


def convert_channels(x: np.ndarray, mode: str) -> np.ndarray:
    """Converts images ``[..., C]`` (C in 1..4; alpha dropped) to ``mode``.

    Grayscale from RGB uses the ITU-R 601 luma weights, rounded back to the
    input dtype for integer images.

    Args:
      x: images with channels last.
      mode: ``"rgb"`` or ``"grayscale"``.

    Returns:
      ``[..., 3]`` or ``[..., 1]`` images, same dtype.

    Raises:
      DataError: for a channel count other than 1 to 4.
    """
    channels = x.shape[-1]
    if channels not in (1, 2, 3, 4):
        raise DataError(f"images must have 1 to 4 channels, got {channels}")
    if channels in (2, 4):
        x = x[..., : channels - 1]
        channels -= 1
    if mode == "grayscale" and channels == 3:
        f = x.astype(np.float32)
        # three products and two sums in float32, in this order: the same as the
        # streaming decoder (lamina.data.decode), so both give the same pixels
        luma = f[..., 0:1] * np.float32(0.299) + f[..., 1:2] * np.float32(0.587) + f[..., 2:3] * np.float32(0.114)
        return _back_to_dtype(luma, x.dtype)
    if mode == "rgb" and channels == 1:
        return np.repeat(x, 3, axis=-1)
    return x


def _back_to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Rounds and clips float values into an integer ``dtype`` (floats pass through)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def resize_images(x: np.ndarray, size: Tuple[int, int], chunk: int = 4096) -> np.ndarray:
    """Resizes ``[N, H, W, C]`` images (bilinear, antialiased), keeping the dtype.

    Args:
      x: images.
      size: ``(height, width)``.
      chunk: images resized per TensorFlow call.

    Returns:
      ``[N, height, width, C]`` images of ``x``'s dtype (integers rounded).
    """
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    pixels = size[0] * size[1] * x.shape[-1]
    # The result, plus one chunk resized in float32 (TensorFlow's output and its cast back).
    check_allocation(x.shape[0] * pixels * x.dtype.itemsize + min(chunk, x.shape[0]) * pixels * 8,
                     f"resizing {x.shape[0]} images to {size[0]}x{size[1]}")
    parts = []
    for start in range(0, x.shape[0], chunk):
        part = tf.image.resize(tf.cast(x[start : start + chunk], tf.float32), size, method="bilinear", antialias=True)
        parts.append(_back_to_dtype(part.numpy(), x.dtype))
    if not parts:
        return np.zeros((0, size[0], size[1], x.shape[-1]), x.dtype)
    return np.concatenate(parts, axis=0)


def apply_image_options(
    x: np.ndarray, image_size: Optional[Tuple[int, int]], color_mode: Optional[str], what: str
) -> np.ndarray:
    """Applies ``image_size``/``color_mode`` to in-memory examples.

    Args:
      x: ``[N, H, W, C]`` images or ``[N, F]`` features.
      image_size: target ``(height, width)`` or ``None``.
      color_mode: ``"rgb"``, ``"grayscale"`` or ``None``.
      what: names the source in error messages.

    Returns:
      The converted images (``x`` itself when nothing is asked).

    Raises:
      DataError: if an option is given for feature (non-image) data.
    """
    if image_size is None and color_mode is None:
        return x
    if x.ndim != 4:
        raise DataError(f"{what}: image_size and color_mode apply to images, but this data has examples of shape {x.shape[1:]}")
    if color_mode is not None:
        x = convert_channels(x, color_mode)
    if image_size is not None:
        x = resize_images(x, image_size)
    return x
