"""Exact replacements for convolutions TensorFlow's plain CPU kernels lack, chosen by a probe.

TensorFlow runs CPU convolutions on oneDNN only where it turns oneDNN on: by
default on x86 CPUs with AVX-512 VNNI, AVX512_BF16, AMX or AVX-VNNI, or with
``TF_ENABLE_ONEDNN_OPTS=1``. Elsewhere (AVX2-only CPUs such as AMD Zen 2/3 or
Intel before Ice Lake, ARM, or ``TF_ENABLE_ONEDNN_OPTS=0``) it falls back to
Eigen kernels, which have no dilated input/filter gradient for 1-D/2-D
convolutions (so a dilated ``Conv1D`` cannot train), no dilated 3-D
convolution at all, and no depthwise convolution with different row and column
strides; float16 has further gaps where the CPU lacks AVX512_FP16.

Each case is decided once per process, dimension count and dtype, the first
time a layer is traced, by running the raw op eagerly on a tiny input
(:func:`native_dilated_conv`, :func:`native_depthwise_strides`): the
capability, never the vendor's name. Where the op is missing, the layer
computes the same numbers with ops every CPU has:

* a dilated convolution as ``tf.nn.with_space_to_batch`` around an undilated
  one (:func:`dilated_conv`);
* a dilated transposed convolution as zero insertion for the stride plus a
  dilated convolution with the flipped kernel (:func:`dilated_conv_transpose`);
* a depthwise convolution with strides ``(sh, sw)`` as explicit padding, one
  equal stride ``gcd(sh, sw)`` and a strided slice (:func:`depthwise_strided`).

Where a GPU is visible the ops run there and the native ops are used.
"""

from __future__ import annotations

import functools
import math
from typing import Any, List, Sequence, Union

import tensorflow as tf

__all__ = [
    "native_dilated_conv",
    "native_depthwise_strides",
    "dilated_conv",
    "dilated_conv_transpose",
    "depthwise_strided",
]

_OP_ERRORS = (tf.errors.OpError, ValueError, TypeError)


def _probe(op) -> bool:
    """Whether ``op`` runs on the CPU here (eagerly, outside any trace)."""
    if tf.config.list_physical_devices("GPU"):
        return True
    with tf.init_scope(), tf.device("/CPU:0"):
        try:
            op()
        except _OP_ERRORS:
            return False
    return True


@functools.lru_cache(maxsize=None)
def _native_dilated_conv(n: int, dtype_name: str) -> bool:
    dtype = tf.as_dtype(dtype_name)
    rank = n
    x_shape, w_shape = (1,) + (5,) * rank + (1,), (2,) * rank + (1, 1)
    strides, dilations = [1] * (rank + 2), [1] + [2] * rank + [1]
    raw = tf.raw_ops

    def op() -> None:  # the forward and both gradients, as raw ops (init_scope pauses tapes)
        x, w, dy = tf.ones(x_shape, dtype), tf.ones(w_shape, dtype), tf.ones(x_shape, dtype)
        if rank == 2:
            raw.Conv2D(input=x, filter=w, strides=strides, padding="SAME", dilations=dilations).numpy()
            raw.Conv2DBackpropInput(input_sizes=x_shape, filter=w, out_backprop=dy, strides=strides,
                                    padding="SAME", dilations=dilations).numpy()
            raw.Conv2DBackpropFilter(input=x, filter_sizes=w_shape, out_backprop=dy, strides=strides,
                                     padding="SAME", dilations=dilations).numpy()
        else:
            raw.Conv3D(input=x, filter=w, strides=strides, padding="SAME", dilations=dilations).numpy()
            raw.Conv3DBackpropInputV2(input_sizes=x_shape, filter=w, out_backprop=dy, strides=strides,
                                      padding="SAME", dilations=dilations).numpy()
            raw.Conv3DBackpropFilterV2(input=x, filter_sizes=w_shape, out_backprop=dy, strides=strides,
                                       padding="SAME", dilations=dilations).numpy()

    return _probe(op)


def native_dilated_conv(n: int, dtype: tf.DType) -> bool:
    """Whether TensorFlow has a dilated ``n``-d convolution with both gradients for ``dtype`` here.

    Also what the transposed convolution needs (its forward is the input gradient).

    Args:
      n: spatial dimensions (1, 2 or 3; 1-D runs as 2-D).
      dtype: the compute dtype.

    Returns:
      ``True`` where the native op can be used (always where a GPU is visible).
    """
    return _native_dilated_conv(max(int(n), 2), tf.as_dtype(dtype).name)  # 1-D runs as 2-D: one probe


@functools.lru_cache(maxsize=None)
def _native_depthwise_strides(dtype_name: str) -> bool:
    dtype = tf.as_dtype(dtype_name)
    strides, raw = [1, 1, 2, 1], tf.raw_ops

    def op() -> None:
        x, w, dy = tf.ones((1, 5, 5, 1), dtype), tf.ones((2, 2, 1, 1), dtype), tf.ones((1, 5, 3, 1), dtype)
        raw.DepthwiseConv2dNative(input=x, filter=w, strides=strides, padding="SAME").numpy()
        raw.DepthwiseConv2dNativeBackpropInput(input_sizes=[1, 5, 5, 1], filter=w, out_backprop=dy,
                                               strides=strides, padding="SAME").numpy()
        raw.DepthwiseConv2dNativeBackpropFilter(input=x, filter_sizes=[2, 2, 1, 1], out_backprop=dy,
                                                strides=strides, padding="SAME").numpy()

    return _probe(op)


def native_depthwise_strides(dtype: tf.DType) -> bool:
    """Whether TensorFlow has a depthwise convolution with different row and column strides here.

    Args:
      dtype: the compute dtype.

    Returns:
      ``True`` where the native op can be used.
    """
    return _native_depthwise_strides(tf.as_dtype(dtype).name)


def _size(x: tf.Tensor, axis: int) -> Union[int, tf.Tensor]:
    """The static size of ``x`` along ``axis``, or its dynamic size."""
    static = x.shape[axis]
    return static if static is not None else tf.shape(x)[axis]


def dilated_conv(x: tf.Tensor, w: tf.Tensor, padding: str, dilation: Sequence[int]) -> tf.Tensor:
    """A stride-1 dilated convolution of a channels-last ``x`` without a dilated kernel.

    ``tf.nn.with_space_to_batch`` moves every ``dilation``-th position into the
    batch, runs an undilated convolution and moves them back: the same result
    as ``tf.nn.convolution(x, w, padding, dilations=dilation)``, and its
    gradients need only undilated kernels.

    Args:
      x: the input ``(N, *spatial, C)`` with 2 or 3 spatial dimensions.
      w: the kernel ``(*kernel, C, F)``.
      padding: ``"SAME"`` or ``"VALID"``.
      dilation: dilation per spatial dimension.

    Returns:
      The convolved ``(N, *spatial_out, F)`` tensor.
    """
    n = len(dilation)
    conv = tf.nn.conv3d if n == 3 else tf.nn.conv2d

    def op(inp: tf.Tensor, num_spatial_dims: int, pad: str) -> tf.Tensor:
        return conv(inp, w, (1,) * (n + 2), pad)

    return tf.nn.with_space_to_batch(x, list(dilation), padding, op, filter_shape=list(w.shape[:n]))


def _insert_zeros(x: tf.Tensor, strides: Sequence[int]) -> tf.Tensor:
    """``stride - 1`` zeros between neighbours along each spatial axis of a channels-last ``x``."""
    for i, s in enumerate(strides):
        if s == 1:
            continue
        axis = i + 1
        length = _size(x, axis)
        shape = tf.unstack(tf.shape(x))
        x = tf.expand_dims(x, axis + 1)
        pads = [[0, 0]] * (len(shape) + 1)
        pads[axis + 1] = [0, s - 1]
        x = tf.pad(x, pads)
        shape[axis] = length * s
        x = tf.reshape(x, tf.stack(shape))
        begin = [0] * len(shape)
        size = [-1] * len(shape)
        size[axis] = (length - 1) * s + 1
        x = tf.slice(x, begin, size)
    return x


def dilated_conv_transpose(
    x: tf.Tensor,
    w: tf.Tensor,
    output_lengths: Sequence[Union[int, tf.Tensor]],
    strides: Sequence[int],
    padding: str,
    dilation: Sequence[int],
) -> tf.Tensor:
    """``tf.nn.conv_transpose`` of a channels-last ``x`` for any dilation, without a dilated kernel.

    The full (VALID) transposed output is the input with ``stride - 1`` zeros
    between neighbours, zero padded by ``k_eff - 1`` on both sides and
    convolved with the spatially flipped kernel (input and output channels
    swapped) and the same dilation (:func:`dilated_conv`). The requested
    output is then cut from it as ``tf.nn.conv_transpose`` does: from the
    position where the matching forward convolution's padding begins, with
    zeros beyond the full output.

    Args:
      x: the input ``(N, *spatial, C)``, 2 or 3 spatial dimensions.
      w: the kernel in ``tf.nn.conv_transpose``'s layout ``(*kernel, F, C)``.
      output_lengths: the output's spatial lengths (ints or scalar tensors).
      strides: stride per spatial dimension.
      padding: ``"SAME"`` or ``"VALID"``.
      dilation: dilation per spatial dimension.

    Returns:
      The ``(N, *output_lengths, F)`` tensor.
    """
    n = len(strides)
    kernel = list(w.shape[:n])
    flipped = tf.transpose(tf.reverse(w, axis=list(range(n))), list(range(n)) + [n + 1, n])
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    lengths = [_size(x, i + 1) for i in range(n)]
    up = _insert_zeros(x, strides)
    up = tf.pad(up, [[0, 0]] + [[s - 1, s - 1] for s in spans] + [[0, 0]])
    full = dilated_conv(up, flipped, "VALID", dilation) if any(d > 1 for d in dilation) else (
        (tf.nn.conv3d if n == 3 else tf.nn.conv2d)(up, flipped, (1,) * (n + 2), "VALID"))
    # Cut [before, before + out) of each full length (L - 1) * s + span, zero padded past its end.
    for i in range(n):
        length, s, span, out = lengths[i], strides[i], spans[i], output_lengths[i]
        full_length = (length - 1) * s + span
        # where the SAME forward convolution from `out` positions starts reading
        before = _same_pair(out, kernel[i], s, dilation[i])[0] if padding == "SAME" else 0
        keep = tf.minimum(full_length - before, out) if isinstance(full_length, tf.Tensor) or isinstance(
            out, tf.Tensor) else min(full_length - before, out)
        begin = [0] * (n + 2)
        size = [-1] * (n + 2)
        begin[i + 1] = before
        size[i + 1] = keep
        full = tf.slice(full, begin, size)
        pads = [[0, 0]] * (n + 2)
        pads[i + 1] = [0, out - keep]
        full = tf.pad(full, pads)
    return full


def _same_pair(length: Union[int, tf.Tensor], kernel: int, stride: int, dilation: int) -> List[Any]:
    """``[before, after]`` of TensorFlow's ``"SAME"`` padding for a static or dynamic length."""
    span = (kernel - 1) * dilation + 1
    out = (length + stride - 1) // stride
    if isinstance(length, tf.Tensor):
        total = tf.maximum((out - 1) * stride + span - length, 0)
    else:
        total = max((out - 1) * stride + span - length, 0)
    return [total // 2, total - total // 2]


def depthwise_strided(
    x: tf.Tensor, w: tf.Tensor, strides: Sequence[int], padding: str, dilation: Sequence[int]
) -> tf.Tensor:
    """``tf.nn.depthwise_conv2d`` with strides ``(sh, sw)`` using one equal stride.

    Pads as ``"SAME"`` would for the real strides, runs the depthwise op with
    stride ``g = gcd(sh, sw)`` in both dimensions (``"VALID"``) and keeps every
    ``sh / g``-th row and ``sw / g``-th column: the same windows.

    Args:
      x: the channels-last input ``(N, H, W, C)``.
      w: the depthwise kernel ``(kh, kw, C, M)``.
      strides: ``(sh, sw)``.
      padding: ``"SAME"`` or ``"VALID"``.
      dilation: ``(dh, dw)``.

    Returns:
      The ``(N, H_out, W_out, C * M)`` tensor.
    """
    g = math.gcd(*strides)
    if padding == "SAME":
        pairs = [_same_pair(_size(x, i + 1), w.shape[i], strides[i], dilation[i]) for i in range(2)]
        x = tf.pad(x, [[0, 0]] + pairs + [[0, 0]])
    y = tf.nn.depthwise_conv2d(x, w, (1, g, g, 1), "VALID", dilations=list(dilation))
    return y[:, :: strides[0] // g, :: strides[1] // g, :]

