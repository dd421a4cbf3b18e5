"""N-d convolution: one generic implementation (``ConvND``) behind ``Conv1D/2D/3D``.

The kernel uses TensorFlow's layout ``(*kernel_size, in_channels // groups, num_filters)``.
Explicit padding (an int, per-dimension ints, or (before, after) pairs) never
reaches the convolution op: padding equal to what ``SAME`` adds for the input's
static size runs as ``SAME`` (e.g. a 3x3 stride-1 conv with padding 1), zero
padding as ``VALID``, anything else as ``tf.pad`` + ``VALID`` (same results).
TensorFlow's CPU gradient kernels for explicit padding are generic Eigen ones
rather than oneDNN's (~1.8x slower in float32, ~45x in bfloat16) and reject
dilation.
``channels_first`` inputs are transposed to channels-last around the op (the
layout TensorFlow's CPU kernels implement). ``groups > 1`` is computed as one
convolution per group, which works on every device.

Dilation uses the convolution ops' native ``dilations`` where TensorFlow has
them: on CPU only with oneDNN, whose absence (AVX2-only CPUs, ARM,
``TF_ENABLE_ONEDNN_OPTS=0``) leaves no 3-D dilation and no dilated gradients;
there the layer computes the same numbers with space-to-batch
(:mod:`lamina.layers.kernel_gaps`, decided once by a probe). ``strides > 1``
together with ``dilation > 1`` is rejected (as ``tf.nn.convolution`` does).
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from lamina import initializers
from lamina.layers._utils import (
    IntOrSeq,
    Padding,
    add_bias,
    builtin_padding,
    cast_like,
    check_num_spatial_dims,
    check_output_fits,
    check_strides_dilation,
    data_format_channel_axis,
    from_data_format,
    get_initializer,
    known_at_build,
    normalize_data_format,
    normalize_tuple,
    padding_attr,
    positive_int,
    single_window_strides,
    spatial_dims,
    to_data_format,
    with_batch_and_channels,
)
from lamina.layers.activations import get_activation
from lamina.layers.kernel_gaps import dilated_conv, native_dilated_conv
from lamina.module import InputSpec, Module

__all__ = ["ConvND", "Conv1D", "Conv2D", "Conv3D", "conv_output_length"]


def conv_output_length(
    length: Optional[int], kernel: int, stride: int, dilation: int, padding: Union[str, Tuple[int, int]]
) -> Optional[int]:
    """Output length of a convolution along one dimension.

    Args:
      length: input length (``None`` if unknown).
      kernel: kernel size.
      stride: stride.
      dilation: dilation rate.
      padding: ``"SAME"``, ``"VALID"`` or a ``(before, after)`` pair.

    Returns:
      The output length, or ``None`` if ``length`` is unknown.
    """
    if length is None:
        return None
    effective = dilation * (kernel - 1) + 1
    if padding == "SAME":
        return -(-length // stride)
    if padding == "VALID":
        return (length - effective) // stride + 1
    before, after = padding
    return (length + before + after - effective) // stride + 1


class _ConvLayer(Module):
    """What ``ConvND``, ``ConvNDTranspose`` and ``DepthwiseConv2D`` share (private).

    A subclass sets ``kernel_size``, ``strides``, ``dilation`` (one entry per
    spatial dimension; :meth:`_init_nd` sets them for the N-d layers) and
    ``padding``, and calls :meth:`_init_common` in its constructor; it may
    override :meth:`_lengths` and :meth:`_output_channels`.
    """

    def _init_nd(
        self,
        num_spatial_dims: int,
        num_filters: int,
        kernel_size: IntOrSeq,
        strides: IntOrSeq,
        dilation: IntOrSeq,
        owner: str,
    ) -> int:
        """Checks and sets ``num_spatial_dims``, ``num_filters``, ``kernel_size``, ``strides`` and ``dilation``.

        Returns:
          ``num_spatial_dims``.
        """
        n = self.num_spatial_dims = check_num_spatial_dims(num_spatial_dims, owner)
        self.num_filters = positive_int(num_filters, "num_filters", owner)
        self.kernel_size = normalize_tuple(kernel_size, n, "kernel_size", owner)
        self.strides = normalize_tuple(strides, n, "strides", owner)
        self.dilation = normalize_tuple(dilation, n, "dilation", owner)
        return n

    def _init_common(
        self,
        rank: int,
        data_format: str,
        use_bias: bool,
        activation: Union[None, str, Callable],
        w_init: Union[None, str, Callable],
        b_init: Union[None, str, Callable],
        dtype: tf.DType,
        owner: str,
    ) -> None:
        """Sets the data format, bias, activation, initializers (lamina's defaults when ``None``), dtype and input rank."""
        self.data_format = normalize_data_format(data_format, owner)
        self.use_bias = bool(use_bias)
        self.activation = get_activation(activation, owner)
        self.w_init = get_initializer(w_init, initializers.default_weights("kernel"), owner)
        self.b_init = get_initializer(b_init, initializers.default_bias(), owner)
        self._dtype = tf.as_dtype(dtype)
        self.input_spec = InputSpec(rank=rank)

    @property
    def channel_axis(self) -> int:
        """The channel axis of the input and output (-1 or 1)."""
        return data_format_channel_axis(self.data_format)

    def _input_channels(self, input_shape: tf.TensorShape) -> int:
        """The first input's channel count; raises if it is unknown."""
        return known_at_build(self, input_shape[self.channel_axis], "the number of input channels", input_shape)

    def _create_variables(self, kernel_shape: Tuple[int, ...], bias_size: int, channels: int) -> None:
        """Creates ``weights`` (and ``bias``) and fixes the input channels."""
        self.weights = tf.Variable(self.w_init(kernel_shape, self._dtype), name="weights")
        if self.use_bias:
            self.bias = tf.Variable(self.b_init((bias_size,), self._dtype), name="bias")
        self.input_spec = InputSpec(rank=self.input_spec.rank, axes={self.channel_axis: (channels, "input channels")})

    def _lengths(self, spatial: Sequence[Optional[Any]]) -> List[Optional[Any]]:
        """The output's spatial lengths for the input's (``None`` for unknown)."""
        pads = self.padding
        return [
            conv_output_length(
                spatial[i], self.kernel_size[i], self.strides[i], self.dilation[i],
                pads if isinstance(pads, str) else pads[i],
            )
            for i in range(len(self.kernel_size))
        ]

    def _output_channels(self, channels: Optional[int]) -> Optional[int]:
        """The output's channel count for the input's."""
        return self.num_filters

    def output_shape(self, input_shape: Sequence[Optional[int]]) -> Tuple[Optional[int], ...]:
        """The output shape for an input shape (batch dim included).

        Args:
          input_shape: the input shape in this layer's data format.

        Returns:
          The output shape as a tuple.
        """
        input_shape = list(input_shape)
        out = self._lengths(spatial_dims(input_shape, self.data_format))
        channels = self._output_channels(input_shape[self.channel_axis])
        return with_batch_and_channels(input_shape[0], out, channels, self.data_format)

    def _check_fits(self, x: tf.Tensor) -> List[Optional[int]]:
        """Raises if ``x`` (static shape) is too small for the window; returns the output's spatial lengths."""
        in_spatial = spatial_dims(x.shape.as_list(), self.data_format)
        out_spatial = self._lengths(in_spatial)
        check_output_fits(
            self, in_spatial, out_spatial,
            f"kernel_size {self.kernel_size}, dilation {self.dilation}, padding {self.padding!r}",
        )
        return out_spatial

    def _finish(self, y: tf.Tensor, n: int) -> tf.Tensor:
        """Adds the bias, applies the activation (channels-last ``y``), returns ``y`` in the data format."""
        if self.use_bias:
            y = add_bias(y, cast_like(self.bias, y))
        if self.activation is not None:
            y = self.activation(y)
        return to_data_format(y, n, self.data_format)


class ConvND(_ConvLayer):
    """A convolution over ``num_spatial_dims`` spatial dimensions.

    Variables (created at the first call): ``weights`` of shape
    ``(*kernel_size, in_channels // groups, num_filters)`` and ``bias`` of shape
    ``(num_filters,)``.

    Args:
      num_spatial_dims: 1, 2 or 3.
      num_filters: number of output channels (> 0).
      kernel_size: int or one int per spatial dimension (> 0). Default 3.
      strides: int or per-dimension ints (> 0).
      padding: ``"SAME"``, ``"VALID"``, ``"CAUSAL"`` (1-D), an int, per-dimension
        ints (symmetric zero padding) or per-dimension ``(before, after)`` pairs.
      dilation: int or per-dimension ints (> 0); ``strides > 1`` together with
        ``dilation > 1`` is rejected.
      groups: number of channel groups; must divide the input channels and ``num_filters``.
      use_bias: add a bias.
      activation: ``None``, a name (case-insensitive, e.g. ``"ReLU"``) or a callable.
      data_format: ``"channels_last"`` (default) or ``"channels_first"``.
      w_init: weight initializer (default: Glorot uniform over the kernel's fans,
        ``prod(kernel_size) * in_channels // groups`` and ``prod(kernel_size) * num_filters``).
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
        dilation: IntOrSeq = 1,
        groups: int = 1,
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
        self.groups = positive_int(groups, "groups", owner)
        if self.num_filters % self.groups:
            raise ValueError(f"{owner}: groups ({self.groups}) must divide num_filters ({self.num_filters})")
        check_strides_dilation(self.strides, self.dilation, owner)
        self.padding = padding_attr(padding, n, self.kernel_size, self.dilation, owner)
        self._init_common(n + 2, data_format, use_bias, activation, w_init, b_init, dtype, owner)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates ``weights`` (and ``bias``) from the first input's shape.

        Args:
          input_shape: the first input's shape.

        Raises:
          ValueError: if the channel count is unknown or not divisible by ``groups``.
        """
        channels = self._input_channels(input_shape)
        if channels % self.groups:
            raise ValueError(self.error(f"groups ({self.groups}) must divide the input channels ({channels})"))
        self._create_variables(self.kernel_size + (channels // self.groups, self.num_filters), self.num_filters, channels)

    def _conv(self, x: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
        """Channels-last convolution of one group."""
        n = self.num_spatial_dims
        padding = self.padding
        if not isinstance(padding, str):
            # Explicit padding never reaches the op: TensorFlow's CPU gradient kernels for
            # it are generic Eigen ones (and reject dilation), also for stride > 1 and
            # all-zero padding (e.g. ResNet's stride-2 convs and 1x1 projections).
            padding, x = builtin_padding(x, padding, self.kernel_size, self.strides, self.dilation)
        padding, x, strides = single_window_strides(x, padding, self.kernel_size, self.strides, self.dilation)
        if any(d > 1 for d in self.dilation) and not native_dilated_conv(n, x.dtype):
            # No dilated kernel (or gradient) on this CPU: the same numbers via space-to-batch.
            if n == 1:
                return tf.squeeze(dilated_conv(tf.expand_dims(x, 1), tf.expand_dims(w, 0), padding,
                                               (1,) + self.dilation), 1)
            return dilated_conv(x, w, padding, self.dilation)
        if n == 3:
            return tf.nn.conv3d(x, w, strides=(1, *strides, 1), padding=padding, dilations=(1, *self.dilation, 1))
        if n == 1:
            # A 1-D convolution is a 2-D one over a height of 1.
            x = tf.expand_dims(x, 1)
            w = tf.expand_dims(w, 0)
            strides, dilation = (1,) + strides, (1,) + self.dilation
        else:
            dilation = self.dilation
        y = tf.nn.conv2d(x, w, strides=(1, *strides, 1), padding=padding, dilations=(1, *dilation, 1))
        return tf.squeeze(y, 1) if n == 1 else y

    def __call__(self, x: tf.Tensor, *, finish: bool = True) -> tf.Tensor:
        """Applies the convolution.

        Args:
          x: a floating tensor of shape ``(N, *spatial, C)`` (or ``(N, C, *spatial)``).
          finish: add the bias and apply the activation. ``False`` returns the
            convolution alone, for a caller that applies them itself later (as
            ``ConvBlock`` does after its max-pool).

        Returns:
          The convolved tensor, in the same data format.

        Raises:
          ValueError: if the input is too small for the kernel (static shapes only).
        """
        n = self.num_spatial_dims
        self._check_fits(x)
        x = from_data_format(x, n, self.data_format)
        w = cast_like(self.weights, x)
        if self.groups == 1:
            y = self._conv(x, w)
        else:
            xs = tf.split(x, self.groups, axis=-1)
            ws = tf.split(w, self.groups, axis=-1)
            y = tf.concat([self._conv(xi, wi) for xi, wi in zip(xs, ws)], axis=-1)
        if not finish:
            return to_data_format(y, n, self.data_format)
        return self._finish(y, n)


class Conv1D(ConvND):
    """1-D convolution: ``ConvND(1, ...)``; input ``(N, W, C)`` (channels_last) or ``(N, C, W)``.

    Takes every :class:`ConvND` argument after ``num_spatial_dims``, in the same order.
    """

    def __init__(self, num_filters: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(1, num_filters, *args, **kwargs)


class Conv2D(ConvND):
    """2-D convolution: ``ConvND(2, ...)``; input ``(N, H, W, C)`` (channels_last) or ``(N, C, H, W)``.

    Takes every :class:`ConvND` argument after ``num_spatial_dims``, in the same order.
    """

    def __init__(self, num_filters: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(2, num_filters, *args, **kwargs)


class Conv3D(ConvND):
    """3-D convolution: ``ConvND(3, ...)``; input ``(N, D, H, W, C)`` (channels_last) or ``(N, C, D, H, W)``.

    Takes every :class:`ConvND` argument after ``num_spatial_dims``, in the same order.
    """

    def __init__(self, num_filters: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(3, num_filters, *args, **kwargs)

