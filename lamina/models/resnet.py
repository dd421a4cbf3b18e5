"""``ResNet`` (He et al. 2015) with basic or bottleneck blocks, CIFAR or ImageNet stem.

The layout follows torchvision's ResNet v1.5 (stride on the 3x3 convolution of
bottleneck blocks; a 1x1 stride-2 projection + BatchNorm on the shortcut when
the shape changes), so ``resnet18(1000, stem="imagenet")`` has torchvision's
11,689,512 trainable parameters and ``resnet50()`` 25,557,032. Convolutions use
explicit symmetric padding (``kernel // 2``), which matches PyTorch exactly, also
for stride 2. ``variant="v1"`` is the original paper's (and Keras
applications') bottleneck, with the stride on the first 1x1 convolution;
``conv_bias=True`` gives every convolution a bias, as Keras' ``ResNet50`` has.
``model.features(x)`` returns the stem's and every stage's feature map (a
backbone for detection / segmentation heads); pretrained weights load with
:func:`lamina.interop.load_pretrained`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Type

import tensorflow as tf

from lamina import initializers
from lamina.layers._utils import normalize_data_format, positive_int
from lamina.layers.conv import Conv2D
from lamina.layers.linear import Linear
from lamina.layers.norm import BatchNorm
from lamina.layers.pool import GlobalAvgPool, MaxPool2D
from lamina.module import Module, builds_first

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "VARIANTS", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]

VARIANTS = ("v1", "v1.5")


def _conv_init() -> initializers.Initializer:
    # Kaiming normal, fan_out mode (torchvision's ResNet initialization).
    return initializers.VarianceScaling(2.0, "fan_out", "normal")


def _conv(filters: int, kernel: int, stride: int, data_format: str, name: str, use_bias: bool = False) -> Conv2D:
    """A convolution (bias-free by default) with PyTorch's symmetric ``kernel // 2`` padding and Kaiming init."""
    return Conv2D(
        filters,
        kernel,
        strides=stride,
        padding=kernel // 2,
        use_bias=use_bias,
        data_format=data_format,
        w_init=_conv_init(),
        name=name,
    )


def _bn(momentum: float, eps: float, data_format: str, name: str, zero_scale: bool = False) -> BatchNorm:
    """A BatchNorm over the channel axis of ``data_format`` (``scale`` initialized to zeros if ``zero_scale``)."""
    return BatchNorm(momentum=momentum, eps=eps, data_format=data_format, name=name,
                     scale_init=initializers.Zeros() if zero_scale else None)


class _BlockBase(Module):
    """Shared constructor pieces of the residual blocks (private)."""

    expansion = 1

    def _init_block(
        self, in_channels: int, width: int, stride: int, bn_momentum: float, bn_eps: float, data_format: str,
        conv_bias: bool, zero_init_residual: bool,
    ) -> None:
        """Checks the arguments every block takes and records the data format, conv and BatchNorm settings."""
        owner = self.describe()
        positive_int(in_channels, "in_channels", owner)
        positive_int(width, "width", owner)
        positive_int(stride, "stride", owner)
        self.data_format = normalize_data_format(data_format, owner)
        self.bn_momentum, self.bn_eps = bn_momentum, bn_eps
        self.conv_bias, self.zero_init_residual = bool(conv_bias), bool(zero_init_residual)

    def _conv(self, filters: int, kernel: int, stride: int, name: str) -> Conv2D:
        return _conv(filters, kernel, stride, self.data_format, name, use_bias=self.conv_bias)

    def _bn(self, name: str, last: bool = False) -> BatchNorm:
        """A BatchNorm; the block's ``last`` one starts at scale 0 with ``zero_init_residual``."""
        return _bn(self.bn_momentum, self.bn_eps, self.data_format, name, zero_scale=last and self.zero_init_residual)

    def _init_shortcut(self, in_channels: int, out_channels: int, stride: int) -> None:
        if stride != 1 or in_channels != out_channels:
            self.proj = self._conv(out_channels, 1, stride, "proj_conv")
            self.proj_bn = self._bn("proj_bn")
        else:
            self.proj = None
            self.proj_bn = None

    def _shortcut(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        if self.proj is None:
            return x
        return self.proj_bn(self.proj(x), training=training)


class BasicBlock(_BlockBase):
    """Two 3x3 conv + BN layers with a residual connection: ``relu(F(x) + shortcut(x))``.

    Args:
      in_channels: channels of the block's input.
      width: channels of both convolutions (the output has ``width`` channels).
      stride: stride of the first convolution (and of the projection).
      bn_momentum: BatchNorm momentum of the moving statistics.
      bn_eps: BatchNorm epsilon.
      data_format: ``"channels_last"`` or ``"channels_first"``.
      conv_bias: give the convolutions a bias.
      zero_init_residual: start the last BatchNorm's scale at 0 (the block starts as the identity).
      name: module name.
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        bn_momentum: float = 0.9,
        bn_eps: float = 1e-5,
        data_format: str = "channels_last",
        conv_bias: bool = False,
        zero_init_residual: bool = False,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        self._init_block(in_channels, width, stride, bn_momentum, bn_eps, data_format, conv_bias, zero_init_residual)
        self.out_channels = width
        self.conv_0 = self._conv(width, 3, stride, "conv_0")
        self.bn_0 = self._bn("bn_0")
        self.conv_1 = self._conv(width, 3, 1, "conv_1")
        self.bn_1 = self._bn("bn_1", last=True)
        self._init_shortcut(in_channels, width, stride)

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Applies the block.

        Args:
          x: feature map with ``in_channels`` channels.
          training: batch-norm mode.

        Returns:
          The output feature map (``width`` channels, spatial size divided by ``stride``).
        """
        y = tf.nn.relu(self.bn_0(self.conv_0(x), training=training))
        y = self.bn_1(self.conv_1(y), training=training)
        return tf.nn.relu(y + self._shortcut(x, training))


class Bottleneck(_BlockBase):
    """1x1 (reduce), 3x3, 1x1 (expand x4) conv + BN with a residual connection.

    Args:
      in_channels: channels of the block's input.
      width: channels of the inner convolutions; the output has ``4 * width``.
      stride: stride of the 3x3 convolution (``variant="v1.5"``) or of the first
        1x1 convolution (``"v1"``), and of the projection.
      bn_momentum: BatchNorm momentum of the moving statistics.
      bn_eps: BatchNorm epsilon.
      data_format: ``"channels_last"`` or ``"channels_first"``.
      conv_bias: give the convolutions a bias.
      zero_init_residual: start the last BatchNorm's scale at 0.
      variant: ``"v1.5"`` (torchvision, timm) or ``"v1"`` (the paper, Keras).
      name: module name.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        bn_momentum: float = 0.9,
        bn_eps: float = 1e-5,
        data_format: str = "channels_last",
        conv_bias: bool = False,
        zero_init_residual: bool = False,
        variant: str = "v1.5",
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        self._init_block(in_channels, width, stride, bn_momentum, bn_eps, data_format, conv_bias, zero_init_residual)
        if variant not in VARIANTS:
            raise ValueError(f"{self.describe()}: variant must be one of {list(VARIANTS)}, got {variant!r}")
        self.variant = variant
        first, middle = (stride, 1) if variant == "v1" else (1, stride)
        self.out_channels = width * self.expansion
        self.conv_0 = self._conv(width, 1, first, "conv_0")
        self.bn_0 = self._bn("bn_0")
        self.conv_1 = self._conv(width, 3, middle, "conv_1")
        self.bn_1 = self._bn("bn_1")
        self.conv_2 = self._conv(self.out_channels, 1, 1, "conv_2")
        self.bn_2 = self._bn("bn_2", last=True)
        self._init_shortcut(in_channels, self.out_channels, stride)

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Applies the block.

        Args:
          x: feature map with ``in_channels`` channels.
          training: batch-norm mode.

        Returns:
          The output feature map (``4 * width`` channels, spatial size divided by ``stride``).
        """
        y = tf.nn.relu(self.bn_0(self.conv_0(x), training=training))
        y = tf.nn.relu(self.bn_1(self.conv_1(y), training=training))
        y = self.bn_2(self.conv_2(y), training=training)
        return tf.nn.relu(y + self._shortcut(x, training))


class _Stage(Module):
    """A sequence of residual blocks (private; named ``stage_<i>`` in a ResNet)."""

    def __init__(self, block_cls: Type[_BlockBase], in_channels: int, width: int, num_blocks: int,
                 stride: int, block_kwargs: Any, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self.blocks: List[_BlockBase] = []
        channels = in_channels
        for b in range(num_blocks):
            block = block_cls(channels, width, stride if b == 0 else 1, name=f"block_{b}", **block_kwargs)
            self.blocks.append(block)
            channels = block.out_channels
        self.out_channels = channels

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        for block in self.blocks:
            x = block(x, training=training)
        return x


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(Module):
    """A residual network classifier.

    Structure: stem, four stages (``width * 2**i`` channels; stride 2 at the start
    of stages 2-4), global average pooling, ``Linear(num_classes)``.

    Args:
      block: ``"basic"`` (two 3x3 convs) or ``"bottleneck"`` (1x1, 3x3, 1x1 x4).
      layers: number of blocks in each stage (any number of stages >= 1).
      num_classes: number of logits (> 0).
      width: channels of the first stage (and of the stem).
      stem: ``"cifar"`` (3x3 conv stride 1 + BN + ReLU, no pooling) or
        ``"imagenet"`` (7x7 conv stride 2 + BN + ReLU + 3x3 max-pool stride 2).
      data_format: ``"channels_last"`` or ``"channels_first"``.
      bn_momentum: BatchNorm momentum (0.9 is PyTorch's ``momentum=0.1``).
      bn_eps: BatchNorm epsilon (1e-5, PyTorch's default; Keras' ResNet50 uses 1.001e-5).
      variant: ``"v1.5"`` (stride on the bottleneck's 3x3 convolution: torchvision,
        timm) or ``"v1"`` (stride on its first 1x1 convolution: the paper, Keras
        applications). Basic blocks are the same in both.
      conv_bias: give every convolution a bias (Keras applications' ResNet50).
      zero_init_residual: start the last BatchNorm of every block at scale 0, so
        each residual block starts as the identity (torchvision's option).
      name: module name.

    Raises:
      ValueError / TypeError: for invalid arguments, naming the module.

    Call: ``model(x, training=False)`` with images ``(N, H, W, C)``
    (``(N, C, H, W)`` for channels_first); returns logits ``(N, num_classes)``.
    ``model.features(x)`` returns the intermediate feature maps (see
    :meth:`features` and :attr:`feature_info`).
    """

    def __init__(
        self,
        block: str = "basic",
        layers: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        width: int = 64,
        stem: str = "cifar",
        data_format: str = "channels_last",
        bn_momentum: float = 0.9,
        bn_eps: float = 1e-5,
        variant: str = "v1.5",
        conv_bias: bool = False,
        zero_init_residual: bool = False,
        name: str = "resnet",
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        if block not in _BLOCKS:
            raise ValueError(f"{owner}: block must be one of {sorted(_BLOCKS)}, got {block!r}")
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"{owner}: stem must be 'cifar' or 'imagenet', got {stem!r}")
        if variant not in VARIANTS:
            raise ValueError(f"{owner}: variant must be one of {list(VARIANTS)}, got {variant!r}")
        self.block_type, self.variant, self.conv_bias = block, variant, bool(conv_bias)
        self.bn_eps = bn_eps
        layers = tuple(layers)
        if not layers:
            raise ValueError(f"{owner}: layers must list at least one stage, got {layers!r}")
        for n in layers:
            positive_int(n, "layers entries", owner)
        positive_int(num_classes, "num_classes", owner)
        positive_int(width, "width", owner)
        self.data_format = normalize_data_format(data_format, owner)
        self.stem_type = stem
        self.num_classes = num_classes
        kernel, stride = (3, 1) if stem == "cifar" else (7, 2)
        self.stem_conv = _conv(width, kernel, stride, self.data_format, "stem_conv", use_bias=self.conv_bias)
        self.stem_bn = _bn(bn_momentum, bn_eps, self.data_format, "stem_bn")
        # PyTorch pads the 3x3/2 max-pool by 1 on each side; after the ReLU the
        # input is >= 0, so zero padding + VALID pooling is exactly equivalent.
        self.stem_pool = (
            MaxPool2D(3, strides=2, padding="VALID", data_format=self.data_format, name="stem_pool")
            if stem == "imagenet"
            else None
        )
        block_cls = _BLOCKS[block]
        kwargs: Dict[str, Any] = dict(bn_momentum=bn_momentum, bn_eps=bn_eps, data_format=self.data_format,
                                      conv_bias=self.conv_bias, zero_init_residual=zero_init_residual)
        if block == "bottleneck":
            kwargs["variant"] = variant
        self.stages: List[_Stage] = []
        channels = width
        reduction = stride
        self.feature_info: List[Dict[str, Any]] = [{"name": "stem", "channels": width, "reduction": reduction}]
        if stem == "imagenet":
            reduction *= 2
        for i, n in enumerate(layers):
            stage = _Stage(block_cls, channels, width * 2**i, n, 1 if i == 0 else 2, kwargs, name=f"stage_{i}")
            self.stages.append(stage)
            channels = stage.out_channels
            reduction *= 1 if i == 0 else 2
            self.feature_info.append({"name": f"stage_{i}", "channels": channels, "reduction": reduction})
        self.pool = GlobalAvgPool(data_format=self.data_format, name="pool")
        self.classifier = Linear(num_classes, name="classifier")

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Computes logits.

        Args:
          x: images of rank 4.
          training: batch-norm mode.

        Returns:
          Logits ``(N, num_classes)``.

        Raises:
          ValueError: if ``x`` is not of rank 4.
        """
        return self.classifier(self.pool(self._forward(x, training, None)))

    def _forward(self, x: tf.Tensor, training: bool, maps: Optional[List[tf.Tensor]]) -> tf.Tensor:
        """Stem and stages; appends the stem's and each stage's output to ``maps`` when given."""
        if x.shape.rank != 4:
            raise ValueError(self.error(f"expected images of rank 4, got rank {x.shape.rank} (shape {x.shape})"))
        x = tf.nn.relu(self.stem_bn(self.stem_conv(x), training=training))
        if maps is not None:
            maps.append(x)
        if self.stem_pool is not None:
            pads = [[0, 0], [1, 1], [1, 1], [0, 0]] if self.data_format == "channels_last" else [[0, 0], [0, 0], [1, 1], [1, 1]]
            x = self.stem_pool(tf.pad(x, pads))
        for stage in self.stages:
            x = stage(x, training=training)
            if maps is not None:
                maps.append(x)
        return x

    @builds_first
    def features(self, x: tf.Tensor, training: bool = False) -> List[tf.Tensor]:
        """The intermediate feature maps, as timm's ``features_only`` models return them.

        The classifier is not run (its variables are created only by a call).

        Args:
          x: images of rank 4 in the model's data format.
          training: batch-norm mode.

        Returns:
          ``[stem, stage_0, ..., stage_{n-1}]``: the stem's output after its ReLU
          (before the max-pool) and each stage's output, in the model's data
          format; channels and stride of each are in :attr:`feature_info`
          (``resnet50`` with the imagenet stem: 64/2, 256/4, 512/8, 1024/16, 2048/32).

        Raises:
          ValueError: if ``x`` is not of rank 4.
        """
        maps: List[tf.Tensor] = []
        self._forward(x, training, maps)
        return maps


def _make(block: str, layers: Sequence[int], num_classes: int, stem: str, kw: Any) -> ResNet:
    kw.setdefault("name", f"resnet{sum(layers) * (2 if block == 'basic' else 3) + 2}")
    return ResNet(block=block, layers=layers, num_classes=num_classes, stem=stem, **kw)


def resnet18(num_classes: int = 10, stem: str = "cifar", **kw: Any) -> ResNet:
    """ResNet-18: basic blocks, ``(2, 2, 2, 2)``.

    Args:
      num_classes: number of logits.
      stem: ``"cifar"`` or ``"imagenet"``.
      **kw: other :class:`ResNet` arguments (``width``, ``data_format``, ``name``, ...).

    Returns:
      A ``ResNet`` named ``"resnet18"`` unless ``name`` is given.
    """
    return _make("basic", (2, 2, 2, 2), num_classes, stem, kw)


def resnet34(num_classes: int = 10, stem: str = "cifar", **kw: Any) -> ResNet:
    """ResNet-34: basic blocks, ``(3, 4, 6, 3)``.

    Args:
      num_classes: number of logits.
      stem: ``"cifar"`` or ``"imagenet"``.
      **kw: other :class:`ResNet` arguments.

    Returns:
      A ``ResNet`` named ``"resnet34"`` unless ``name`` is given.
    """
    return _make("basic", (3, 4, 6, 3), num_classes, stem, kw)


def resnet50(num_classes: int = 1000, stem: str = "imagenet", **kw: Any) -> ResNet:
    """ResNet-50: bottleneck blocks, ``(3, 4, 6, 3)``.

    Args:
      num_classes: number of logits.
      stem: ``"imagenet"`` or ``"cifar"``.
      **kw: other :class:`ResNet` arguments (``variant="v1"`` for Keras' ResNet50, ...).

    Returns:
      A ``ResNet`` named ``"resnet50"`` unless ``name`` is given.
    """
    return _make("bottleneck", (3, 4, 6, 3), num_classes, stem, kw)


def resnet101(num_classes: int = 1000, stem: str = "imagenet", **kw: Any) -> ResNet:
    """ResNet-101: bottleneck blocks, ``(3, 4, 23, 3)``.

    Args:
      num_classes: number of logits.
      stem: ``"imagenet"`` or ``"cifar"``.
      **kw: other :class:`ResNet` arguments.

    Returns:
      A ``ResNet`` named ``"resnet101"`` unless ``name`` is given.
    """
    return _make("bottleneck", (3, 4, 23, 3), num_classes, stem, kw)


def resnet152(num_classes: int = 1000, stem: str = "imagenet", **kw: Any) -> ResNet:
    """ResNet-152: bottleneck blocks, ``(3, 8, 36, 3)``.

    Args:
      num_classes: number of logits.
      stem: ``"imagenet"`` or ``"cifar"``.
      **kw: other :class:`ResNet` arguments.

    Returns:
      A ``ResNet`` named ``"resnet152"`` unless ``name`` is given.
    """
    return _make("bottleneck", (3, 8, 36, 3), num_classes, stem, kw)
