"""``DepthwiseConv2D``: one small filter bank per input channel (``tf.nn.depthwise_conv2d``).

Each input channel ``c`` is convolved with its own ``depth_multiplier`` filters;
output channel ``c * depth_multiplier + m`` comes from input channel ``c`` and
filter ``m`` (PyTorch's ``Conv2d(groups=in_channels)`` ordering). Different row
and column strides run natively where TensorFlow has that kernel (oneDNN), and
otherwise as one equal stride plus a strided slice (:mod:`lamina.layers.kernel_gaps`).
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import tensorflow as tf

from lamina.layers._utils import (
    IntOrSeq,
    Padding,
    builtin_padding,
    cast_like,
    check_strides_dilation,
    from_data_format,
    normalize_tuple,
    padding_attr,
    positive_int,
)
from lamina.layers.conv import _ConvLayer
from lamina.layers.kernel_gaps import depthwise_strided, native_depthwise_strides

__all__ = ["DepthwiseConv2D"]


class DepthwiseConv2D(_ConvLayer):
    """Depthwise 2-D convolution.

    Variables (created at the first call): ``weights`` of shape
    ``(kh, kw, in_channels, depth_multiplier)`` and ``bias`` of shape
    ``(in_channels * depth_multiplier,)``.

    Args:
      kernel_size: int or ``(kh, kw)`` (> 0). Default 3.
      depth_multiplier: filters per input channel (> 0).
      strides: int or ``(sh, sw)`` (> 0).
      padding: ``"SAME"``, ``"VALID"``, an int, two ints (symmetric) or two
        ``(before, after)`` pairs (explicit zero padding).
      dilation: int or ``(dh, dw)`` (> 0); ``strides > 1`` with ``dilation > 1`` is rejected.
      use_bias: add a bias.
      activation: ``None``, a name (case-insensitive) or a callable.
      data_format: ``"channels_last"`` (default) or ``"channels_first"``.
      w_init: weight initializer (default: Glorot uniform with Keras' fans of the
        ``(kh, kw, in_channels, depth_multiplier)`` kernel: ``kh * kw * in_channels``
        and ``kh * kw * depth_multiplier``).
      b_init: bias initializer (default: zeros).
      dtype: the variables' dtype.
      name: module name.

    Raises:
      ValueError / TypeError: for invalid arguments, naming the module.
    """

    def __init__(
        self,
        kernel_size: IntOrSeq = 3,
        depth_multiplier: int = 1,
        strides: IntOrSeq = 1,
        padding: Padding = "SAME",
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
        self.kernel_size = normalize_tuple(kernel_size, 2, "kernel_size", owner)
        self.depth_multiplier = positive_int(depth_multiplier, "depth_multiplier", owner)
        self.strides = normalize_tuple(strides, 2, "strides", owner)
        self.dilation = normalize_tuple(dilation, 2, "dilation", owner)
        check_strides_dilation(self.strides, self.dilation, owner)
        self.padding = padding_attr(padding, 2, self.kernel_size, self.dilation, owner)
        self._init_common(4, data_format, use_bias, activation, w_init, b_init, dtype, owner)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates ``weights`` (and ``bias``) from the first input's shape.

        Args:
          input_shape: the first input's shape.

        Raises:
          ValueError: if the channel count is unknown.
        """
        channels = self._input_channels(input_shape)
        self._create_variables(
            self.kernel_size + (channels, self.depth_multiplier), channels * self.depth_multiplier, channels
        )

    def _output_channels(self, channels: Optional[int]) -> Optional[int]:
        return None if channels is None else channels * self.depth_multiplier

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Applies the depthwise convolution.

        Args:
          x: a floating tensor of shape ``(N, H, W, C)`` (or ``(N, C, H, W)``).

        Returns:
          A tensor with ``C * depth_multiplier`` channels, in the same data format.

        Raises:
          ValueError: if the input is too small for the kernel (static shapes only).
        """
        self._check_fits(x)
        x = from_data_format(x, 2, self.data_format)
        padding = self.padding
        if not isinstance(padding, str):
            padding, x = builtin_padding(x, padding, self.kernel_size, self.strides, self.dilation)
        w = cast_like(self.weights, x)
        if self.strides[0] != self.strides[1] and not native_depthwise_strides(x.dtype):
            # No kernel for unequal strides on this CPU: one equal stride and a strided slice.
            y = depthwise_strided(x, w, self.strides, padding, self.dilation)
        else:
            y = tf.nn.depthwise_conv2d(x, w, strides=(1, *self.strides, 1), padding=padding, dilations=self.dilation)
        return self._finish(y, 2)
