"""``UNet`` (Ronneberger et al., 2015): an encoder-decoder with skip connections, for per-pixel classification.

``depth`` down-sampling stages (two 3x3 convolutions, then a 2x2 max-pool), a
bottleneck, and ``depth`` up-sampling stages (:class:`~lamina.layers.upsample.Upsample`
x2 and a 3x3 convolution, or a stride-2 transposed convolution; the encoder's
feature map of the same size concatenated; two 3x3 convolutions), then a 1x1
convolution to the class logits. Convolutions are ``SAME`` (the output has the
input's size, unlike the paper's unpadded ones), so any input whose height and
width are divisible by ``2^depth`` works.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import tensorflow as tf

from lamina import initializers
from lamina.layers._utils import data_format_channel_axis, normalize_data_format, positive_int, spatial_dims
from lamina.layers.conv import Conv2D
from lamina.layers.conv_transpose import Conv2DTranspose
from lamina.layers.norm import BatchNorm
from lamina.layers.pool import MaxPool2D
from lamina.layers.upsample import Upsample
from lamina.module import InputSpec, Module

__all__ = ["UNet", "DoubleConv"]

_UPSAMPLING = ("bilinear", "nearest", "transpose")


def _conv(filters: int, kernel: int, data_format: str, name: str, use_bias: bool) -> Conv2D:
    return Conv2D(filters, kernel, padding="SAME", use_bias=use_bias, data_format=data_format,
                  w_init=initializers.VarianceScaling(2.0, "fan_out", "normal"), name=name)


class DoubleConv(Module):
    """Two ``3x3 conv -> [BatchNorm] -> ReLU`` layers (the U-Net's unit).

    Sub-modules: ``conv_0``, ``conv_1`` and, with ``batch_norm``, ``bn_0``, ``bn_1``.

    Args:
      filters: the output channels of both convolutions.
      batch_norm: normalize after each convolution (the convolutions then have no bias).
      data_format: ``"channels_last"`` or ``"channels_first"``.
      name: module name.
    """

    def __init__(self, filters: int, batch_norm: bool = True, data_format: str = "channels_last",
                 name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self.filters = positive_int(filters, "filters", self.describe())
        self.batch_norm = bool(batch_norm)
        df = normalize_data_format(data_format, self.describe())
        self.conv_0 = _conv(self.filters, 3, df, "conv_0", use_bias=not self.batch_norm)
        self.conv_1 = _conv(self.filters, 3, df, "conv_1", use_bias=not self.batch_norm)
        if self.batch_norm:
            self.bn_0 = BatchNorm(momentum=0.9, eps=1e-5, data_format=df, name="bn_0")
            self.bn_1 = BatchNorm(momentum=0.9, eps=1e-5, data_format=df, name="bn_1")

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Applies both layers.

        Args:
          x: a feature map.
          training: BatchNorm in training mode.

        Returns:
          The feature map with ``filters`` channels, same size.
        """
        h = self.conv_0(x)
        if self.batch_norm:
            h = self.bn_0(h, training=training)
        h = self.conv_1(tf.nn.relu(h))
        if self.batch_norm:
            h = self.bn_1(h, training=training)
        return tf.nn.relu(h)


class UNet(Module):
    """U-Net for semantic segmentation: images ``(B, H, W, C)`` -> per-pixel logits ``(B, H, W, num_classes)``.

    Sub-modules: ``down`` (``depth`` :class:`DoubleConv` s of widths
    ``widths[:depth]``), ``bottleneck`` (width ``widths[depth]``), ``up`` (the
    up-sampling layers), ``up_convs`` (one ``DoubleConv`` per decoder stage,
    widths ``widths[depth-1::-1]``) and ``classifier`` (1x1 convolution).

    Args:
      num_classes: classes per pixel.
      depth: the number of down-sampling stages (>= 1); height and width must be
        divisible by ``2^depth``.
      widths: ``depth + 1`` channel counts (default ``base_width * 2^i``).
      base_width: the first stage's width when ``widths`` is not given (64 in the paper).
      upsampling: ``"bilinear"`` or ``"nearest"`` (``Upsample`` x2 then a 3x3
        convolution halving the channels) or ``"transpose"`` (a 2x2 stride-2
        ``Conv2DTranspose``, the paper's up-convolution).
      batch_norm: BatchNorm after every 3x3 convolution.
      data_format: ``"channels_last"`` or ``"channels_first"``.
      name: module name.

    Raises:
      ValueError / TypeError: for invalid arguments; at call time, for an input
        whose height or width is not divisible by ``2^depth``.
    """

    def __init__(
        self,
        num_classes: int,
        depth: int = 4,
        widths: Optional[Sequence[int]] = None,
        base_width: int = 64,
        upsampling: str = "bilinear",
        batch_norm: bool = True,
        data_format: str = "channels_last",
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        self.num_classes = positive_int(num_classes, "num_classes", owner)
        self.depth = positive_int(depth, "depth", owner)
        if widths is None:
            base = positive_int(base_width, "base_width", owner)
            widths = [base * 2 ** i for i in range(self.depth + 1)]
        widths = [positive_int(w, "widths", owner) for w in widths]
        if len(widths) != self.depth + 1:
            raise ValueError(f"{owner}: widths must have depth + 1 = {self.depth + 1} entries, got {len(widths)}")
        if upsampling not in _UPSAMPLING:
            raise ValueError(f"{owner}: upsampling must be one of {list(_UPSAMPLING)}, got {upsampling!r}")
        self.widths = widths
        self.upsampling = upsampling
        self.data_format = df = normalize_data_format(data_format, owner)
        self.down = [DoubleConv(w, batch_norm, df, name=f"down_{i}") for i, w in enumerate(widths[:-1])]
        self.pool = MaxPool2D(2, data_format=df, name="pool")
        self.bottleneck = DoubleConv(widths[-1], batch_norm, df, name="bottleneck")
        self.up: List[Module] = []
        self.up_convs: List[DoubleConv] = []
        for i in reversed(range(self.depth)):
            w = widths[i]
            if upsampling == "transpose":
                self.up.append(Conv2DTranspose(w, 2, strides=2, data_format=df, name=f"up_{i}"))
            else:
                # A module list entry per stage: Upsample (no variables) then the channel-halving conv.
                self.up.append(_UpConv(w, upsampling, df, name=f"up_{i}"))
            self.up_convs.append(DoubleConv(w, batch_norm, df, name=f"up_conv_{i}"))
        self.classifier = Conv2D(self.num_classes, 1, data_format=df, name="classifier")
        self.input_spec = InputSpec(rank=4)

    def _check_size(self, x: tf.Tensor) -> None:
        factor = 2 ** self.depth
        for what, size in zip(("height", "width"), spatial_dims(x.shape, self.data_format)):
            if size is not None and size % factor:
                raise ValueError(self.error(f"the image {what} must be divisible by 2^depth = {factor}, got {size} "
                                            f"(input shape {tuple(x.shape)})"))

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Computes per-pixel class logits.

        Args:
          x: images ``(B, H, W, C)`` (``(B, C, H, W)`` for channels_first), ``H`` and
            ``W`` divisible by ``2^depth``.
          training: BatchNorm in training mode.

        Returns:
          Logits ``(B, H, W, num_classes)`` (``(B, num_classes, H, W)`` for channels_first).

        Raises:
          ValueError: for a height or width not divisible by ``2^depth``.
        """
        self._check_size(x)
        axis = data_format_channel_axis(self.data_format)
        skips = []
        h = x
        for block in self.down:
            h = block(h, training=training)
            skips.append(h)
            h = self.pool(h)
        h = self.bottleneck(h, training=training)
        for up, conv, skip in zip(self.up, self.up_convs, reversed(skips)):
            h = conv(tf.concat([skip, up(h)], axis=axis), training=training)
        return self.classifier(h)


class _UpConv(Module):
    """``Upsample`` x2 followed by a 3x3 convolution to ``filters`` channels (private)."""

    def __init__(self, filters: int, mode: str, data_format: str, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self.upsample = Upsample(scale=2, mode=mode, data_format=data_format, name="upsample")
        self.conv = _conv(filters, 3, data_format, "conv", use_bias=True)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Doubles the height and width, then convolves."""
        return self.conv(self.upsample(x))
