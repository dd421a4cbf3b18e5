"""``Upsample``: resizes images by a scale factor or to a size (nearest or bilinear), as PyTorch does.

Pixel positions follow ``torch.nn.functional.interpolate(..., align_corners=False)``:

* ``"bilinear"``: pixel centres (half-pixel): output pixel ``i`` samples the
  input at ``(i + 0.5) * in / out - 0.5`` (clamped at 0), between its two
  neighbours. TensorFlow's ``ResizeBilinear(half_pixel_centers=True)`` kernel.
* ``"nearest"``: output pixel ``i`` copies input pixel ``floor(i * in / out)``
  (PyTorch's ``"nearest"``, not ``"nearest-exact"``).
  ``ResizeNearestNeighbor(half_pixel_centers=False)``.

For an integer ``scale`` (or any ``size``) this is PyTorch's result exactly. A
fractional ``scale`` gives the output size ``floor(in * scale)`` and then
samples with the ratio ``in / out``, which is PyTorch's
``recompute_scale_factor=True``; PyTorch's default would sample with
``1 / scale`` instead.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Tuple, Union

import tensorflow as tf

from lamina.layers._utils import from_data_format, normalize_data_format, spatial_dims, to_data_format
from lamina.module import InputSpec, Module

__all__ = ["Upsample"]

_MODES = ("nearest", "bilinear")


def _pair(value: Union[float, Sequence[float]], what: str, owner: str, integer: bool) -> Tuple:
    items = list(value) if isinstance(value, (tuple, list)) else [value, value]
    if len(items) != 2:
        raise ValueError(f"{owner}: {what} must be a number or a pair (height, width), got {value!r}")
    for v in items:
        bad = isinstance(v, bool) or not isinstance(v, numbers.Real) or not v > 0
        if bad or (integer and int(v) != v):
            kind = "positive ints" if integer else "positive numbers"
            raise ValueError(f"{owner}: {what} must be {kind}, got {value!r}")
    return tuple(int(v) if integer or float(v).is_integer() else float(v) for v in items)


class Upsample(Module):
    """Resizes ``(B, H, W, C)`` images (``(B, C, H, W)`` for channels_first) by ``scale`` or to ``size``.

    No variables. Give exactly one of ``scale`` and ``size``.

    Args:
      scale: a factor (> 0) or ``(height factor, width factor)``; the output is
        ``floor(H * scale)`` by ``floor(W * scale)``.
      size: the output ``(height, width)`` (or one int for both).
      mode: ``"nearest"`` or ``"bilinear"`` (PyTorch's ``align_corners=False``).
      data_format: ``"channels_last"`` or ``"channels_first"``.
      name: module name.

    Raises:
      ValueError: for both or neither of ``scale`` / ``size``, a bad mode or sizes;
        at call time, for an input whose spatial size is unknown with ``scale``.
    """

    def __init__(
        self,
        scale: Union[None, float, Sequence[float]] = None,
        size: Union[None, int, Sequence[int]] = None,
        mode: str = "nearest",
        data_format: str = "channels_last",
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        if (scale is None) == (size is None):
            raise ValueError(f"{owner}: give exactly one of scale and size, got scale={scale!r}, size={size!r}")
        self.scale = _pair(scale, "scale", owner, integer=False) if scale is not None else None
        self.size = _pair(size, "size", owner, integer=True) if size is not None else None
        if mode not in _MODES:
            raise ValueError(f"{owner}: mode must be one of {list(_MODES)}, got {mode!r}")
        self.mode = mode
        self.data_format = normalize_data_format(data_format, owner)
        self.input_spec = InputSpec(rank=4)

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        """The output ``(height, width)`` for an input of ``(height, width)``.

        Args:
          height: input rows.
          width: input columns.

        Returns:
          ``size``, or ``floor(H * scale), floor(W * scale)``.

        Raises:
          ValueError: if the output would be empty.
        """
        if self.size is not None:
            return self.size
        out = (int(math.floor(height * self.scale[0])), int(math.floor(width * self.scale[1])))
        if min(out) < 1:
            raise ValueError(self.error(f"scale {self.scale} leaves no pixel of a {height}x{width} input"))
        return out

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Resizes ``x``.

        Args:
          x: a floating rank-4 tensor in this layer's data format.

        Returns:
          The resized tensor, in ``x``'s dtype and data format.

        Raises:
          ValueError: with ``scale``, for an input of unknown height or width.
        """
        height, width = spatial_dims(x.shape, self.data_format)
        if self.size is None and (height is None or width is None):
            raise ValueError(self.error(f"scale needs the input's height and width known, got shape {x.shape}"))
        out = self.output_size(height, width)
        y = from_data_format(x, 2, self.data_format)
        if self.mode == "nearest":
            y = tf.raw_ops.ResizeNearestNeighbor(images=y, size=out, align_corners=False, half_pixel_centers=False)
        else:
            # ResizeBilinear returns float32 for every input type
            y = tf.cast(tf.raw_ops.ResizeBilinear(images=y, size=out, align_corners=False, half_pixel_centers=True),
                        x.dtype)
        return to_data_format(y, 2, self.data_format)
