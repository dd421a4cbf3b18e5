"""``MobileNetV2`` (Sandler et al., 2018): inverted residual blocks of depthwise-separable convolutions.

The layout is torchvision's ``mobilenet_v2``: a 3x3 stride-2 stem, seventeen
inverted residual blocks (1x1 expansion, 3x3 depthwise, 1x1 linear projection;
a residual connection where the shape allows), a 1x1 convolution to 1280
channels, global average pooling, dropout and a linear classifier. With
``width_multiplier=1`` it has torchvision's 3,504,872 parameters for 1000
classes. Convolutions use PyTorch's symmetric padding and ``BatchNorm``
PyTorch's epsilon (1e-5) and momentum, so torchvision weights copy across
(``tests/test_mobilenet.py``). Every operation is a TFLite builtin
(``lamina export --format tflite``).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import tensorflow as tf

from lamina import initializers
from lamina.layers._utils import normalize_data_format, positive_int
from lamina.layers.conv import Conv2D
from lamina.layers.depthwise import DepthwiseConv2D
from lamina.layers.dropout import Dropout
from lamina.layers.linear import Linear
from lamina.layers.norm import BatchNorm
from lamina.layers.pool import GlobalAvgPool
from lamina.module import Module, builds_first

__all__ = ["MobileNetV2", "InvertedResidual", "MOBILENET_V2_BLOCKS"]

# (expansion t, output channels c, repeats n, first stride s), the paper's Table 2.
MOBILENET_V2_BLOCKS: Tuple[Tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


def _divisible(value: float, divisor: int = 8) -> int:
    """Rounds a channel count to a multiple of ``divisor``, never more than 10 % down (the reference rule)."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


def _conv_init() -> initializers.Initializer:
    return initializers.VarianceScaling(2.0, "fan_out", "normal")  # torchvision: kaiming_normal_(fan_out)


def _bn(data_format: str, name: str) -> BatchNorm:
    return BatchNorm(momentum=0.9, eps=1e-5, data_format=data_format, name=name)


class InvertedResidual(Module):
    """One MobileNetV2 block: ``[1x1 conv + BN + ReLU6] -> 3x3 depthwise + BN + ReLU6 -> 1x1 conv + BN (+ x)``.

    Sub-modules: ``expand`` / ``expand_bn`` (absent when ``expansion == 1``),
    ``depthwise`` / ``depthwise_bn``, ``project`` / ``project_bn``. The residual
    connection is used when ``stride == 1`` and ``in_channels == out_channels``.

    Args:
      in_channels: the input's channels.
      out_channels: the output's channels.
      stride: the depthwise convolution's stride (1 or 2).
      expansion: the hidden width is ``in_channels * expansion``.
      data_format: ``"channels_last"`` or ``"channels_first"``.
      name: module name.

    Raises:
      ValueError / TypeError: for invalid sizes or stride.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expansion: int = 6,
                 data_format: str = "channels_last", name: Optional[str] = None) -> None:
        super().__init__(name=name)
        owner = self.describe()
        self.in_channels = positive_int(in_channels, "in_channels", owner)
        self.out_channels = positive_int(out_channels, "out_channels", owner)
        self.expansion = positive_int(expansion, "expansion", owner)
        if stride not in (1, 2):
            raise ValueError(f"{owner}: stride must be 1 or 2, got {stride!r}")
        self.stride = stride
        self.data_format = normalize_data_format(data_format, owner)
        hidden = int(round(self.in_channels * self.expansion))
        df = self.data_format
        if self.expansion != 1:
            self.expand = Conv2D(hidden, 1, use_bias=False, data_format=df, w_init=_conv_init(), name="expand")
            self.expand_bn = _bn(df, "expand_bn")
        else:
            self.expand = self.expand_bn = None
        self.depthwise = DepthwiseConv2D(3, strides=stride, padding=1, use_bias=False, data_format=df,
                                         w_init=_conv_init(), name="depthwise")
        self.depthwise_bn = _bn(df, "depthwise_bn")
        self.project = Conv2D(self.out_channels, 1, use_bias=False, data_format=df, w_init=_conv_init(),
                              name="project")
        self.project_bn = _bn(df, "project_bn")
        self.residual = stride == 1 and self.in_channels == self.out_channels

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Applies the block.

        Args:
          x: ``(B, H, W, in_channels)`` (``(B, in_channels, H, W)`` for channels_first).
          training: BatchNorm in training mode.

        Returns:
          ``(B, H / stride, W / stride, out_channels)``.
        """
        h = x
        if self.expand is not None:
            h = tf.nn.relu6(self.expand_bn(self.expand(h), training=training))
        h = tf.nn.relu6(self.depthwise_bn(self.depthwise(h), training=training))
        h = self.project_bn(self.project(h), training=training)
        return x + h if self.residual else h


class MobileNetV2(Module):
    """MobileNetV2 image classifier (torchvision's layout), for phones: every layer a TFLite builtin.

    Sub-modules: ``stem`` / ``stem_bn`` (3x3, stride 2), ``blocks`` (the
    :class:`InvertedResidual` s of :data:`MOBILENET_V2_BLOCKS`), ``last_conv`` /
    ``last_bn`` (1x1 to ``max(1280, 1280 * width_multiplier)``), global average
    pooling, ``dropout`` and ``classifier``. ``model.features(x)`` returns the
    feature map before pooling.

    Args:
      num_classes: number of output classes.
      width_multiplier: scales every width (rounded to multiples of 8), e.g. 0.35, 0.5, 1.0.
      dropout: dropout rate before the classifier (0.2 in torchvision).
      blocks: the ``(t, c, n, s)`` settings (default the paper's); small inputs
        may use fewer stride-2 stages.
      last_channels: the width of ``last_conv`` (default ``1280 * max(1, width_multiplier)``,
        rounded); a small model for small images may use far fewer.
      data_format: ``"channels_last"`` or ``"channels_first"``.
      name: module name.

    Raises:
      ValueError / TypeError: for invalid arguments, naming the module.
    """

    def __init__(
        self,
        num_classes: int,
        width_multiplier: float = 1.0,
        dropout: float = 0.2,
        blocks: Sequence[Sequence[int]] = MOBILENET_V2_BLOCKS,
        last_channels: Optional[int] = None,
        data_format: str = "channels_last",
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        self.num_classes = positive_int(num_classes, "num_classes", owner)
        if isinstance(width_multiplier, bool) or not isinstance(width_multiplier, (int, float)) or width_multiplier <= 0:
            raise ValueError(f"{owner}: width_multiplier must be a number > 0, got {width_multiplier!r}")
        self.width_multiplier = float(width_multiplier)
        self.data_format = normalize_data_format(data_format, owner)
        settings = [tuple(int(v) for v in b) for b in blocks]
        if not settings or any(len(b) != 4 or min(b) < 1 for b in settings):
            raise ValueError(f"{owner}: blocks must be a non-empty list of (t, c, n, s) positive ints, got {blocks!r}")
        self.block_settings = settings
        df = self.data_format
        width = _divisible(32 * self.width_multiplier)
        self.stem = Conv2D(width, 3, strides=2, padding=1, use_bias=False, data_format=df, w_init=_conv_init(),
                           name="stem")
        self.stem_bn = _bn(df, "stem_bn")
        self.blocks: List[InvertedResidual] = []
        for t, c, n, s in settings:
            out = _divisible(c * self.width_multiplier)
            for i in range(n):
                self.blocks.append(InvertedResidual(width, out, s if i == 0 else 1, t, data_format=df,
                                                    name=f"block_{len(self.blocks)}"))
                width = out
        self.last_channels = (positive_int(last_channels, "last_channels", owner) if last_channels is not None
                              else _divisible(1280 * max(1.0, self.width_multiplier)))
        self.last_conv = Conv2D(self.last_channels, 1, use_bias=False, data_format=df, w_init=_conv_init(),
                                name="last_conv")
        self.last_bn = _bn(df, "last_bn")
        self.pool = GlobalAvgPool(data_format=df, name="pool")
        self.dropout = Dropout(dropout, name="dropout") if dropout > 0 else None
        self.classifier = Linear(self.num_classes, w_init=initializers.Normal(0.0, 0.01), name="classifier")

    @builds_first
    def features(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """The last feature map (after ``last_conv`` / ``last_bn`` / ReLU6), before pooling.

        Args:
          x: images ``(B, H, W, C)`` (``(B, C, H, W)`` for channels_first).
          training: BatchNorm in training mode.

        Returns:
          ``(B, H / 32, W / 32, last_channels)`` (with the default strides).
        """
        h = tf.nn.relu6(self.stem_bn(self.stem(x), training=training))
        for block in self.blocks:
            h = block(h, training=training)
        return tf.nn.relu6(self.last_bn(self.last_conv(h), training=training))

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Computes class logits.

        Args:
          x: images ``(B, H, W, C)`` (``(B, C, H, W)`` for channels_first).
          training: BatchNorm in training mode, dropout on.

        Returns:
          Logits ``(B, num_classes)``.
        """
        h = self.pool(self.features(x, training=training))
        if self.dropout is not None:
            h = self.dropout(h, training=training)
        return self.classifier(h)
