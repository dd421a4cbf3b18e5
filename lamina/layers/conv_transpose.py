"""Transposed N-d convolution: one generic ``ConvNDTranspose`` behind ``Conv1D/2D/3DTranspose``.

A transposed convolution is the adjoint (the input gradient) of the convolution
with the same kernel, strides, dilation and padding; it maps a length ``L`` to a
longer one. The kernel uses ``tf.nn.conv_transpose``'s layout
``(*kernel_size, num_filters, in_channels)``.

Output length per spatial dimension (``k_eff = dilation * (kernel - 1) + 1``):

* ``"VALID"``: ``(L - 1) * stride + k_eff + output_padding`` (PyTorch's formula
  with ``padding=0``; ``output_padding`` defaults to 0).
* ``"SAME"``: ``(L - 1) * stride + 1 + output_padding``, where ``output_padding``
  defaults to ``stride - 1``, giving ``L * stride``. ``output_padding`` (``0`` to
  ``stride - 1``) picks which of the ``stride`` lengths that a SAME convolution maps
  back to ``L`` is produced; for odd ``k_eff`` this is Keras's formula.
* explicit ``(before, after)`` pairs (or ints, symmetric): the VALID output with
  ``before`` positions cropped at the start and ``after`` at the end, i.e.
  ``(L - 1) * stride + k_eff - before - after + output_padding`` (PyTorch's
  ``padding`` argument).

``output_padding`` must be smaller than the stride or the dilation in each
dimension (PyTorch's rule); with ``"SAME"`` it must be smaller than the stride.
The positions added by ``output_padding`` beyond the full transposed output
receive no input contribution (only the bias).

As for ``ConvND``, dilation uses TensorFlow's native ``dilations`` where it has
them (on CPU: with oneDNN); elsewhere the same output comes from zero insertion
and a dilated convolution with the flipped kernel (:mod:`lamina.layers.kernel_gaps`).
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from lamina.layers._utils import (
    IntOrSeq,
    Padding,
    cast_like,
    channels_last_padding,
    from_data_format,
    normalize_tuple,
    padding_attr,
)
from lamina.layers.conv import _ConvLayer
from lamina.layers.kernel_gaps import dilated_conv_transpose, native_dilated_conv

__all__ = [
    "ConvNDTranspose",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "conv_transpose_output_length",
]

Length = Union[int, tf.Tensor]


def conv_transpose_output_length(
    length: Optional[Length],
    kernel: int,
    stride: int,
    dilation: int,
    padding: Union[str, Tuple[int, int]],
    output_padding: Optional[int] = None,
) -> Optional[Length]:
    """Output length of a transposed convolution along one dimension.

    Args:
      length: input length (an int, a scalar tensor, or ``None`` if unknown).
      kernel: kernel size.
      stride: stride.
      dilation: dilation rate.
      padding: ``"SAME"``, ``"VALID"`` or a ``(before, after)`` crop pair.
      output_padding: extra length; ``None`` means 0, or ``stride - 1`` for ``"SAME"``.

    Returns:
      The output length (same kind as ``length``), or ``None`` if ``length`` is ``None``.
    """
    if length is None:
        return None
    effective = dilation * (kernel - 1) + 1
    if padding == "SAME":
        extra = stride - 1 if output_padding is None else output_padding
        return (length - 1) * stride + 1 + extra
    extra = 0 if output_padding is None else output_padding
    if padding == "VALID":
        return (length - 1) * stride + effective + extra
    before, after = padding
    return (length - 1) * stride + effective - before - after + extra


class ConvNDTranspose(_ConvLayer):
    """A transposed convolution over ``num_spatial_dims`` spatial dimensions.

    Variables (created at the first call): ``weights`` of shape
    ``(*kernel_size, num_filters, in_channels)`` and ``bias`` of shape ``(num_filters,)``.
    See the module docstring for the output length.

    Args:
      num_spatial_dims: 1, 2 or 3.
      num_filters: number of output channels (> 0).
      kernel_size: int or one int per spatial dimension (> 0). Default 3.
      strides: int or per-dimension ints (> 0).
      padding: ``"SAME"``, ``"VALID"``, an int, per-dimension ints, or per-dimension
        ``(before, after)`` pairs (cropped from the VALID output, like PyTorch's ``padding``).
      output_padding: ``None``, an int or per-dimension ints (>= 0), smaller than
        the stride or the dilation (than the stride for ``"SAME"``).
      dilation: int or per-dimension ints (> 0); may be combined with ``strides > 1``.
      use_bias: add a bias.
      activation: ``None``, a name (case-insensitive) or a callable.
      data_format: ``"channels_last"`` (default) or ``"channels_first"``.
      w_init: weight initializer (default: Glorot uniform; its bound
        ``sqrt(6 / (prod(kernel_size) * (in_channels + num_filters)))`` is the same
        whichever of the two channel axes is called fan-in, as in Keras and PyTorch).
      b_init: bias initializer (default: zeros).
      dtype: the variables' dtype.
      name: module name.

    Raises:
      ValueError / TypeError: for invalid arguments, naming the module.
    """

    def __init__(
        self,
        num_spatial_dims: int,
        num_filters: int,
        kernel_size: IntOrSeq = 3,
        strides: IntOrSeq = 1,
        padding: Padding = "SAME",
        output_padding: Optional[IntOrSeq] = None,
        dilation: IntOrSeq = 1,
        use_bias: bool = True,
        activation: Union[None, str, Callable] = None,
        data_format: str = "channels_last",
        w_init: Union[None, str, Callable] = None,
        b_init: Union[None, str, Callable] = None,
        dtype: tf.DType = tf.float32,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        n = self._init_nd(num_spatial_dims, num_filters, kernel_size, strides, dilation, owner)
        if isinstance(padding, str) and padding.upper() == "CAUSAL":
            raise ValueError(f"{owner}: padding 'CAUSAL' is not supported by transposed convolutions; "
                             "expected 'SAME', 'VALID', an int or per-dimension ints/pairs")
        self.padding = padding_attr(padding, n, self.kernel_size, self.dilation, owner, allow_causal=False)
        if output_padding is None:
            self.output_padding = None
        else:
            self.output_padding = normalize_tuple(output_padding, n, "output_padding", owner, minimum=0)
            for op, s, d in zip(self.output_padding, self.strides, self.dilation):
                if self.padding == "SAME" and op >= s:
                    raise ValueError(
                        f"{owner}: with padding 'SAME', output_padding must be smaller than the stride in each "
                        f"dimension, got output_padding={self.output_padding}, strides={self.strides}"
                    )
                if op >= max(s, d):
                    raise ValueError(
                        f"{owner}: output_padding must be smaller than the stride or the dilation in each "
                        f"dimension, got output_padding={self.output_padding}, strides={self.strides}, "
                        f"dilation={self.dilation}"
                    )
        self._init_common(n + 2, data_format, use_bias, activation, w_init, b_init, dtype, owner)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates ``weights`` (and ``bias``) from the first input's shape.

        Args:
          input_shape: the first input's shape.

        Raises:
          ValueError: if the channel count is unknown.
        """
        channels = self._input_channels(input_shape)
        self._create_variables(self.kernel_size + (self.num_filters, channels), self.num_filters, channels)

    def _output_padding(self, i: int) -> Optional[int]:
        return None if self.output_padding is None else self.output_padding[i]

    def _lengths(self, spatial: Sequence[Optional[Length]]) -> List[Optional[Length]]:
        pads = self.padding
        return [
            conv_transpose_output_length(
                spatial[i], self.kernel_size[i], self.strides[i], self.dilation[i],
                pads if isinstance(pads, str) else pads[i], self._output_padding(i),
            )
            for i in range(self.num_spatial_dims)
        ]

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Applies the transposed convolution.

        Args:
          x: a floating tensor of shape ``(N, *spatial, C)`` (or ``(N, C, *spatial)``).
            The batch and spatial sizes may be unknown inside ``tf.function``.

        Returns:
          The output tensor, in the same data format.

        Raises:
          ValueError: if the padding crops the output to nothing (static shapes only).
        """
        n = self.num_spatial_dims
        out_static = self._check_fits(x)
        x = from_data_format(x, n, self.data_format)
        static = x.shape.as_list()
        w = cast_like(self.weights, x)
        dynamic = tf.shape(x)
        sizes = [static[0] if static[0] is not None else dynamic[0]]
        # The op computes the SAME output, or the full VALID output plus at most
        # stride - 1 extra positions; the rest (output_padding >= stride, crops) is
        # done below with a zero pad and a slice.
        extra_pad = []
        for i in range(n):
            length = static[i + 1] if static[i + 1] is not None else dynamic[i + 1]
            op = self._output_padding(i)
            if self.padding == "SAME":
                extra_pad.append(0)
                sizes.append(conv_transpose_output_length(
                    length, self.kernel_size[i], self.strides[i], self.dilation[i], "SAME", op))
            else:
                op = op or 0
                core = min(op, self.strides[i] - 1)
                extra_pad.append(op - core)
                sizes.append(conv_transpose_output_length(
                    length, self.kernel_size[i], self.strides[i], self.dilation[i], "VALID", core))
        sizes.append(self.num_filters)
        output_shape = sizes if all(isinstance(s, int) for s in sizes) else tf.stack(
            [tf.cast(s, tf.int32) for s in sizes]
        )
        op_padding = "SAME" if self.padding == "SAME" else "VALID"
        if any(d > 1 for d in self.dilation) and not native_dilated_conv(n, x.dtype):
            # No dilated input-gradient kernel on this CPU: zero insertion + a flipped-kernel convolution.
            if n == 1:
                y = tf.squeeze(dilated_conv_transpose(
                    tf.expand_dims(x, 1), tf.expand_dims(w, 0), [1, sizes[1]], (1,) + self.strides, op_padding,
                    (1,) + self.dilation), 1)
            else:
                y = dilated_conv_transpose(x, w, sizes[1:-1], self.strides, op_padding, self.dilation)
        else:
            y = tf.nn.conv_transpose(x, w, output_shape, strides=list(self.strides), padding=op_padding,
                                     dilations=list(self.dilation))
        if any(extra_pad):
            y = tf.pad(y, channels_last_padding([(0, p) for p in extra_pad]))
        if not isinstance(self.padding, str) and any(b or a for b, a in self.padding):
            index = [slice(None)]
            for before, after in self.padding:
                index.append(slice(before, -after if after else None))
            y = y[tuple(index) + (slice(None),)]
        if not tf.executing_eagerly():
            y.set_shape([static[0], *out_static, self.num_filters])
        return self._finish(y, n)


class Conv1DTranspose(ConvNDTranspose):
    """1-D transposed convolution: ``ConvNDTranspose(1, ...)``; input ``(N, W, C)`` or ``(N, C, W)``.

    Takes every :class:`ConvNDTranspose` argument after ``num_spatial_dims``, in the same order.
    """

    def __init__(self, num_filters: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(1, num_filters, *args, **kwargs)


class Conv2DTranspose(ConvNDTranspose):
    """2-D transposed convolution: ``ConvNDTranspose(2, ...)``; input ``(N, H, W, C)`` or ``(N, C, H, W)``.

    Takes every :class:`ConvNDTranspose` argument after ``num_spatial_dims``, in the same order.
    """

    def __init__(self, num_filters: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(2, num_filters, *args, **kwargs)


class Conv3DTranspose(ConvNDTranspose):
    """3-D transposed convolution: ``ConvNDTranspose(3, ...)``; input ``(N, D, H, W, C)`` or ``(N, C, D, H, W)``.

    Takes every :class:`ConvNDTranspose` argument after ``num_spatial_dims``, in the same order.
    """

    def __init__(self, num_filters: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(3, num_filters, *args, **kwargs)

