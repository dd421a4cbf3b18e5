"""Pooling: one generic ``PoolND`` behind ``MaxPool1D/2D/3D`` and ``AvgPool1D/2D/3D``,
and ``GlobalAvgPool`` / ``GlobalMaxPool`` over all spatial axes of any rank.

Padding is ``"VALID"`` (windows fully inside the input; PyTorch's default) or
``"SAME"`` (output length ``ceil(L / stride)``; the input is padded, with the
extra position at the end when the total padding is odd). With ``"SAME"``, the
padded positions are ignored: a max never sees them and an average divides by
the number of real inputs in its window only (PyTorch's ``count_include_pad=False``).
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import tensorflow as tf

from lamina.layers._utils import (
    IntOrSeq,
    check_num_spatial_dims,
    check_output_fits,
    data_format_channel_axis,
    from_data_format,
    normalize_data_format,
    normalize_tuple,
    spatial_dims,
    to_data_format,
    with_batch_and_channels,
)
from lamina.layers.conv import conv_output_length
from lamina.module import InputSpec, Module

__all__ = [
    "PoolND",
    "MaxPool1D",
    "MaxPool2D",
    "MaxPool3D",
    "AvgPool1D",
    "AvgPool2D",
    "AvgPool3D",
    "GlobalPool",
    "GlobalAvgPool",
    "GlobalMaxPool",
]

_REDUCTIONS = ("max", "avg")


def _reduction(reduction: str, owner: str) -> str:
    if not isinstance(reduction, str) or reduction.lower() not in _REDUCTIONS:
        raise ValueError(f"{owner}: reduction must be 'max' or 'avg', got {reduction!r}")
    return reduction.lower()


def _cut_unread_tail(x: tf.Tensor, pool_size: Sequence[int], strides: Sequence[int]) -> tf.Tensor:
    """A channels-last 5-D ``x`` without the trailing positions no ``"SAME"`` window reads.

    With ``stride > pool_size`` the windows can end before the input does;
    TensorFlow's ``"SAME"`` padding is then zero, but its Eigen 3-D pooling
    kernels (CPUs where oneDNN is off) take the negative total as padding and
    shift every window (a ``(1, 1, 3)`` input, window 1, stride 3 pooled its
    second element instead of its first). Without that tail the total is zero
    on every kernel: the same windows, right everywhere.
    """
    begin, size, cut = [0] * 5, [-1] * 5, False
    for i, (k, s) in enumerate(zip(pool_size, strides)):
        if s <= k:
            continue  # the windows reach the end
        length = x.shape[i + 1] if x.shape[i + 1] is not None else tf.shape(x)[i + 1]
        read = ((length + s - 1) // s - 1) * s + k  # positions up to the last window's end
        if isinstance(length, tf.Tensor):
            size[i + 1], cut = tf.minimum(read, length), True
        elif read < length:
            size[i + 1], cut = read, True
    return tf.slice(x, begin, size) if cut else x


class PoolND(Module):
    """Max or average pooling over ``num_spatial_dims`` spatial dimensions (no variables).

    Args:
      num_spatial_dims: 1, 2 or 3.
      reduction: ``"max"`` or ``"avg"``.
      pool_size: int or one int per spatial dimension (> 0). Default 2.
      strides: int or per-dimension ints (> 0); ``None`` means ``pool_size``.
      padding: ``"VALID"`` (default) or ``"SAME"`` (padding excluded from averages).
      data_format: ``"channels_last"`` (default) or ``"channels_first"``.
      name: module name.

    Raises:
      ValueError / TypeError: for invalid arguments, naming the module.
    """

    def __init__(
        self,
        num_spatial_dims: int,
        reduction: str,
        pool_size: IntOrSeq = 2,
        strides: Optional[IntOrSeq] = None,
        padding: str = "VALID",
        data_format: str = "channels_last",
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        n = self.num_spatial_dims = check_num_spatial_dims(num_spatial_dims, owner)
        self.reduction = _reduction(reduction, owner)
        self.pool_size = normalize_tuple(pool_size, n, "pool_size", owner)
        self.strides = self.pool_size if strides is None else normalize_tuple(strides, n, "strides", owner)
        if not isinstance(padding, str) or padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"{owner}: padding must be 'SAME' or 'VALID', got {padding!r}")
        self.padding = padding.upper()
        self.data_format = normalize_data_format(data_format, owner)
        self.input_spec = InputSpec(rank=n + 2)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Pooling has no variables; nothing to build.

        Args:
          input_shape: the first input's shape (unused).
        """
        del input_shape

    def output_shape(self, input_shape: Sequence[Optional[int]]) -> Tuple[Optional[int], ...]:
        """The output shape for an input shape (batch dim included).

        VALID: ``(L - pool_size) // stride + 1``; SAME: ``ceil(L / stride)``.

        Args:
          input_shape: the input shape in this layer's data format.

        Returns:
          The output shape as a tuple.
        """
        input_shape = list(input_shape)
        out = self._lengths(spatial_dims(input_shape, self.data_format))
        channels = input_shape[data_format_channel_axis(self.data_format)]
        return with_batch_and_channels(input_shape[0], out, channels, self.data_format)

    def _lengths(self, spatial: Sequence[Optional[int]]) -> List[Optional[int]]:
        """The output's spatial lengths for the input's (``None`` for unknown)."""
        return [
            conv_output_length(spatial[i], self.pool_size[i], self.strides[i], 1, self.padding)
            for i in range(self.num_spatial_dims)
        ]

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Pools the input.

        Args:
          x: a floating tensor of shape ``(N, *spatial, C)`` (or ``(N, C, *spatial)``).

        Returns:
          The pooled tensor, same dtype and data format.

        Raises:
          ValueError: if a VALID window does not fit in the input (static shapes only).
        """
        n = self.num_spatial_dims
        in_spatial = spatial_dims(x.shape.as_list(), self.data_format)
        check_output_fits(
            self, in_spatial, self._lengths(in_spatial), f"pool_size {self.pool_size} with padding {self.padding!r}"
        )
        x = from_data_format(x, n, self.data_format)
        pool = tf.nn.max_pool if self.reduction == "max" else tf.nn.avg_pool
        # An explicit channels-last format: without it, TF's 5-D pooling gradient fails in eager mode.
        fmt = {1: "NWC", 2: "NHWC", 3: "NDHWC"}[n]
        if n == 3 and self.padding == "SAME":
            x = _cut_unread_tail(x, self.pool_size, self.strides)
        y = pool(x, ksize=list(self.pool_size), strides=list(self.strides), padding=self.padding, data_format=fmt)
        return to_data_format(y, n, self.data_format)


class MaxPool1D(PoolND):
    """1-D max pooling: ``PoolND(1, 'max', ...)``; input ``(N, W, C)`` or ``(N, C, W)``.

    Args: ``pool_size=2``, ``strides=None`` (= pool_size), ``padding='VALID'``,
    ``data_format``, ``name`` (see :class:`PoolND`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(1, 'max', *args, **kwargs)


class MaxPool2D(PoolND):
    """2-D max pooling: ``PoolND(2, 'max', ...)``; input ``(N, H, W, C)`` or ``(N, C, H, W)``.

    Args: ``pool_size=2``, ``strides=None`` (= pool_size), ``padding='VALID'``,
    ``data_format``, ``name`` (see :class:`PoolND`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(2, 'max', *args, **kwargs)


class MaxPool3D(PoolND):
    """3-D max pooling: ``PoolND(3, 'max', ...)``; input ``(N, D, H, W, C)`` or ``(N, C, D, H, W)``.

    Args: ``pool_size=2``, ``strides=None`` (= pool_size), ``padding='VALID'``,
    ``data_format``, ``name`` (see :class:`PoolND`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(3, 'max', *args, **kwargs)


class AvgPool1D(PoolND):
    """1-D average pooling: ``PoolND(1, 'avg', ...)``; input ``(N, W, C)`` or ``(N, C, W)``.

    Args: ``pool_size=2``, ``strides=None`` (= pool_size), ``padding='VALID'``,
    ``data_format``, ``name`` (see :class:`PoolND`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(1, 'avg', *args, **kwargs)


class AvgPool2D(PoolND):
    """2-D average pooling: ``PoolND(2, 'avg', ...)``; input ``(N, H, W, C)`` or ``(N, C, H, W)``.

    Args: ``pool_size=2``, ``strides=None`` (= pool_size), ``padding='VALID'``,
    ``data_format``, ``name`` (see :class:`PoolND`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(2, 'avg', *args, **kwargs)


class AvgPool3D(PoolND):
    """3-D average pooling: ``PoolND(3, 'avg', ...)``; input ``(N, D, H, W, C)`` or ``(N, C, D, H, W)``.

    Args: ``pool_size=2``, ``strides=None`` (= pool_size), ``padding='VALID'``,
    ``data_format``, ``name`` (see :class:`PoolND`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(3, 'avg', *args, **kwargs)



class GlobalPool(Module):
    """Max or mean over every spatial axis, for inputs of any rank >= 3 (no variables).

    Averages of float16/bfloat16 inputs are accumulated in float32 and cast back.

    Args:
      reduction: ``"max"`` or ``"avg"``.
      keepdims: keep the spatial axes with size 1.
      data_format: ``"channels_last"`` (spatial axes ``1 .. rank-2``) or
        ``"channels_first"`` (spatial axes ``2 .. rank-1``).
      name: module name.

    Raises:
      ValueError / TypeError: for invalid arguments, naming the module.
    """

    def __init__(
        self,
        reduction: str,
        keepdims: bool = False,
        data_format: str = "channels_last",
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        self.reduction = _reduction(reduction, owner)
        if not isinstance(keepdims, bool):
            raise TypeError(f"{owner}: keepdims must be a bool, got {keepdims!r}")
        self.keepdims = keepdims
        self.data_format = normalize_data_format(data_format, owner)
        self.input_spec = InputSpec(min_rank=3)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Pooling has no variables; nothing to build.

        Args:
          input_shape: the first input's shape (unused).
        """
        del input_shape

    def _axes(self, rank: int) -> list:
        return list(range(1, rank - 1)) if self.data_format == "channels_last" else list(range(2, rank))

    def output_shape(self, input_shape: Sequence[Optional[int]]) -> Tuple[Optional[int], ...]:
        """The output shape for an input shape (batch dim included).

        Args:
          input_shape: the input shape in this layer's data format.

        Returns:
          ``(N, C)``, or with ``keepdims`` the input shape with spatial sizes 1.
        """
        input_shape = list(input_shape)
        axes = self._axes(len(input_shape))
        if self.keepdims:
            return tuple(1 if i in axes else d for i, d in enumerate(input_shape))
        return tuple(d for i, d in enumerate(input_shape) if i not in axes)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Pools over all spatial axes.

        Args:
          x: a floating tensor of rank >= 3.

        Returns:
          ``(N, C)`` (or keepdims-shaped), same dtype as ``x``.
        """
        axes = self._axes(x.shape.rank)
        if self.reduction == "max":
            return tf.reduce_max(x, axis=axes, keepdims=self.keepdims)
        if x.dtype in (tf.float16, tf.bfloat16):
            return tf.cast(tf.reduce_mean(tf.cast(x, tf.float32), axis=axes, keepdims=self.keepdims), x.dtype)
        return tf.reduce_mean(x, axis=axes, keepdims=self.keepdims)


class GlobalAvgPool(GlobalPool):
    """Mean over every spatial axis: ``GlobalPool`` with ``reduction="avg"``.

    Args:
      keepdims: keep the spatial axes with size 1.
      data_format: ``"channels_last"`` (default) or ``"channels_first"``.
      name: module name.
    """

    def __init__(self, keepdims: bool = False, data_format: str = "channels_last", name: Optional[str] = None) -> None:
        super().__init__("avg", keepdims, data_format, name)


class GlobalMaxPool(GlobalPool):
    """Max over every spatial axis: ``GlobalPool`` with ``reduction="max"``.

    Args:
      keepdims: keep the spatial axes with size 1.
      data_format: ``"channels_last"`` (default) or ``"channels_first"``.
      name: module name.
    """

    def __init__(self, keepdims: bool = False, data_format: str = "channels_last", name: Optional[str] = None) -> None:
        super().__init__("max", keepdims, data_format, name)
