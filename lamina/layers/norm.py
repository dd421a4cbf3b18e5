"""Normalization layers: ``BatchNorm``, ``LayerNorm``, ``GroupNorm``, ``InstanceNorm`` and ``RMSNorm``.

All of them compute their statistics in float32 when the input is float16 or
bfloat16 (and in the input's dtype otherwise) and return a tensor of the
input's dtype; their variables are float32 by default (mixed precision).

``BatchNorm`` follows the Keras/TensorFlow conventions: the moving averages are
updated as ``moving = momentum * moving + (1 - momentum) * batch`` and the
*biased* batch variance (divided by ``n``, the same one used to normalize) goes
into ``moving_variance``. PyTorch's ``BatchNorm`` differs on both counts: its
``momentum`` is our ``1 - momentum``, and its running variance is updated with
the unbiased (``n - 1``) variance.
"""

from __future__ import annotations

import numbers
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from lamina import initializers
from lamina.layers._utils import (  # Training / resolve_training: also importable from here
    Training,
    cast_to,
    data_format_channel_axis,
    known_at_build,
    normalize_data_format,
    positive_int,
    resolve_training,
)
from lamina.module import InputSpec, Module

__all__ = ["BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm", "RMSNorm"]


def _compute_dtype(dtype: tf.DType) -> tf.DType:
    """float32 for 16-bit floats (statistics need the range and precision), else ``dtype``."""
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def _check_eps(eps: float, owner: str) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"{owner}: eps must be a positive number, got {eps!r}")
    if not eps > 0:
        raise ValueError(f"{owner}: eps must be > 0, got {eps}")
    return float(eps)


def _check_axes(axis: Union[int, Sequence[int]], owner: str) -> Tuple[int, ...]:
    """Checks ``axis`` (an int or a non-empty list of ints, never the batch axis 0); returns a tuple."""
    axes = [axis] if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool) else axis
    try:
        axes = list(axes)
    except TypeError:
        raise TypeError(f"{owner}: axis must be an int or a list of ints, got {axis!r}") from None
    if not axes or not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes):
        raise TypeError(f"{owner}: axis must be an int or a non-empty list of ints, got {axis!r}")
    if 0 in [int(a) for a in axes]:
        raise ValueError(f"{owner}: axis must not contain 0 (the batch axis), got {axis!r}")
    return tuple(int(a) for a in axes)


class _Normalization(Module):
    """What ``BatchNorm``, ``LayerNorm`` and ``GroupNorm`` share (private): ``eps`` and the affine ``scale`` / ``offset``."""

    def _init_affine(self, eps: float, center: bool, scale: bool, owner: str) -> None:
        """Checks ``eps`` and records which of ``scale`` / ``offset`` are learned (created at build)."""
        self.eps = _check_eps(eps, owner)
        self.use_center, self.use_scale = bool(center), bool(scale)
        self.scale: Optional[tf.Variable] = None
        self.offset: Optional[tf.Variable] = None

    def _init_initializers(
        self, scale_init: Union[None, str, Callable], offset_init: Union[None, str, Callable], dtype: tf.DType
    ) -> None:
        """Resolves the ``scale`` / ``offset`` initializers and the variables' dtype; any rank >= 2 is accepted."""
        self.scale_init = initializers.get(scale_init, initializers.Ones())
        self.offset_init = initializers.get(offset_init, initializers.Zeros())
        self._dtype = tf.as_dtype(dtype)
        self.input_spec = InputSpec(min_rank=2)

    def _create_affine(self, shape: Tuple[int, ...]) -> None:
        """Creates ``scale`` and ``offset`` (those enabled) of ``shape``."""
        if self.use_scale:
            self.scale = tf.Variable(self.scale_init(shape, self._dtype), name="scale")
        if self.use_center:
            self.offset = tf.Variable(self.offset_init(shape, self._dtype), name="offset")


class BatchNorm(_Normalization):
    """Batch normalization over every axis but the channel axis.

    Variables (created at the first call), each of shape ``(channels,)``:
    ``scale`` (ones; only if ``scale``), ``offset`` (zeros; only if ``center``),
    and the non-trainable ``moving_mean`` (zeros) and ``moving_variance`` (ones).

    With ``training=True`` the layer normalizes with the batch mean and (biased)
    variance and updates the moving averages in the same call (also inside a
    ``tf.function``); with ``training=False`` or ``None`` it uses the moving
    averages. A frozen layer (``lm.freeze``, ``trainable = False``, also through
    a frozen parent) always runs in inference mode: it normalizes with the
    moving averages and leaves them unchanged, whatever ``training`` says (as
    Keras does, so that fine-tuning a frozen backbone does not drift its
    statistics; in PyTorch one calls ``.eval()`` on the frozen part instead).

    Inside a ``tf.distribute`` replica context with more than one replica the
    batch statistics are computed over the global batch (synchronized batch
    norm) unless ``cross_replica=False``: the per-replica sums and counts are
    all-reduced to get the global mean, then the per-replica sums of squared
    deviations from it are all-reduced to get the global variance (two small
    all-reduces of ``channels`` values; exact, with no ``E[x²] - E[x]²``
    cancellation). The output then equals single-device batch norm of the
    global batch. The moving averages are ``ON_READ`` variables aggregated by
    mean, so they can be updated inside ``strategy.run``.

    Args:
      momentum: moving average decay in ``[0, 1]``:
        ``moving = momentum * moving + (1 - momentum) * batch``.
      eps: added to the variance before the square root (> 0).
      center: learn an ``offset`` added after normalizing.
      scale: learn a ``scale`` multiplied after normalizing.
      axis: the channel axis. Defaults to ``-1``, or to ``1`` when
        ``data_format="channels_first"``.
      data_format: ``"channels_last"`` or ``"channels_first"``; an alternative
        way to choose ``axis`` (must agree with ``axis`` if both are given).
      cross_replica: ``None`` or ``True``: synchronize statistics across
        replicas when there are several; ``False``: per-replica statistics.
      scale_init: initializer of ``scale`` (default ones).
      offset_init: initializer of ``offset`` (default zeros).
      dtype: the variables' dtype.
      name: module name.

    Raises:
      ValueError / TypeError: for invalid arguments, naming the module.
    """

    def __init__(
        self,
        momentum: float = 0.99,
        eps: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        axis: Optional[int] = None,
        data_format: Optional[str] = None,
        cross_replica: Optional[bool] = None,
        scale_init: Union[None, str, Callable] = None,
        offset_init: Union[None, str, Callable] = None,
        dtype: tf.DType = tf.float32,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
            raise TypeError(f"{owner}: momentum must be a number in [0, 1], got {momentum!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{owner}: momentum must be in [0, 1], got {momentum}")
        self.momentum = float(momentum)
        self._init_affine(eps, center, scale, owner)
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, (int, np.integer))):
            raise TypeError(f"{owner}: axis must be an int, got {axis!r}")
        if data_format is not None:
            self.data_format = normalize_data_format(data_format, owner)
            implied = data_format_channel_axis(self.data_format)
            if axis is not None and int(axis) != implied:
                raise ValueError(
                    f"{owner}: axis={axis} contradicts data_format={data_format!r} (channel axis {implied})"
                )
            axis = implied
        else:
            axis = -1 if axis is None else int(axis)
            self.data_format = "channels_first" if axis == 1 else "channels_last"
        if axis == 0:
            raise ValueError(f"{owner}: axis must not be 0 (the batch axis)")
        self.axis = axis
        if cross_replica not in (None, True, False):
            raise TypeError(f"{owner}: cross_replica must be None, True or False, got {cross_replica!r}")
        self.cross_replica = cross_replica
        self._init_initializers(scale_init, offset_init, dtype)

    def _channel_axis(self, rank: int) -> int:
        axis = self.axis + rank if self.axis < 0 else self.axis
        if not 0 < axis < rank:
            raise ValueError(self.error(f"axis {self.axis} is out of range for an input of rank {rank}"))
        return axis

    def build(self, input_shape: tf.TensorShape) -> None:
        if input_shape.rank is None:
            raise ValueError(self.error("the input rank must be known at the first call"))
        axis = self._channel_axis(input_shape.rank)
        channels = known_at_build(self, input_shape[axis], "the number of channels", input_shape)
        shape = (channels,)
        self._create_affine(shape)
        moving = dict(
            trainable=False,
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.MEAN,
        )
        self.moving_mean = tf.Variable(tf.zeros(shape, self._dtype), name="moving_mean", **moving)
        self.moving_variance = tf.Variable(tf.ones(shape, self._dtype), name="moving_variance", **moving)
        self.num_channels = channels
        self.input_spec = InputSpec(min_rank=2, axes={self.axis: (channels, "channels")})

    # ----------------------------------------------------------- statistics
    def _batch_moments(self, x: tf.Tensor, reduce_axes: List[int]) -> Tuple[tf.Tensor, tf.Tensor]:
        """Batch mean and biased variance over ``reduce_axes``, global across replicas if asked."""
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        if replicas == 1 or self.cross_replica is False:
            return tf.nn.moments(x, reduce_axes)
        shape = tf.shape(x)
        count = tf.cast(tf.reduce_prod(tf.gather(shape, reduce_axes)), x.dtype)
        local_sum = tf.reduce_sum(x, reduce_axes)
        totals = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.concat([local_sum, count[None]], 0))
        global_count = totals[-1]
        mean = totals[:-1] / global_count
        centered = x - tf.reshape(mean, self._broadcast_shape(x.shape.rank))
        local_sq = tf.reduce_sum(tf.square(centered), reduce_axes)
        variance = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local_sq) / global_count
        return mean, variance

    def _broadcast_shape(self, rank: int) -> List[int]:
        shape = [1] * rank
        shape[self._channel_axis(rank)] = -1
        return shape

    def _normalize(self, x: tf.Tensor, mean: tf.Tensor, variance: tf.Tensor) -> tf.Tensor:
        rank = x.shape.rank
        scale = cast_to(self.scale, x.dtype) if self.use_scale else None
        offset = cast_to(self.offset, x.dtype) if self.use_center else None
        if self._channel_axis(rank) != rank - 1:
            shape = self._broadcast_shape(rank)
            mean, variance = tf.reshape(mean, shape), tf.reshape(variance, shape)
            scale = tf.reshape(scale, shape) if scale is not None else None
            offset = tf.reshape(offset, shape) if offset is not None else None
        return tf.nn.batch_normalization(x, mean, variance, offset, scale, self.eps)

    def _fused_args(self, x: tf.Tensor) -> Optional[Tuple[str, tf.Tensor, tf.Tensor]]:
        """``(data_format, scale, offset)`` for ``FusedBatchNormV3`` on ``x``; ``None`` where it does not apply.

        Applies to rank-4 float32 / bfloat16 / float16 inputs with channels last
        or first. Half-precision inputs go to the kernel as they are: it keeps
        its statistics in float32 (the same numbers as casting to float32
        first, without two full-size casts each way: one ResNet-18 BatchNorm
        layer forward + backward 7.1 -> 4.4 ms in bfloat16).
        """
        if x.shape.rank != 4 or x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
            return None
        axis = self._channel_axis(4)
        if axis not in (1, 3):
            return None
        c = x.shape[axis]
        scale = cast_to(self.scale, tf.float32) if self.use_scale else tf.ones([c], tf.float32)
        offset = cast_to(self.offset, tf.float32) if self.use_center else tf.zeros([c], tf.float32)
        return ("NHWC" if axis == 3 else "NCHW"), scale, offset

    def _fused_train(self, x: tf.Tensor) -> Optional[Tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
        """``(y, mean, biased variance)`` from one ``FusedBatchNormV3``; ``None`` where it does not apply.

        Applies where ``_fused_args`` does, without cross-replica statistics: one
        oneDNN kernel forward and one backward (grappler also fuses a following
        ReLU) instead of ~25 element-wise ops; in bfloat16 ~2.8x faster (forward +
        backward, 64x32x32x64), with float32 statistics.
        """
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1 and self.cross_replica is not False:
            return None
        args = self._fused_args(x)
        if args is None:
            return None
        data_format, scale, offset = args
        y, mean, unbiased, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=scale, offset=offset, mean=tf.zeros([0], tf.float32), variance=tf.zeros([0], tf.float32),
            epsilon=self.eps, exponential_avg_factor=1.0, data_format=data_format, is_training=True,
        )
        # The kernel normalizes with the biased variance but returns the unbiased one.
        n = tf.cast(tf.size(x, out_type=tf.int64) // scale.shape[0], tf.float32)
        return y, mean, unbiased * (n - 1.0) / n

    def _train(self, x: tf.Tensor) -> tf.Tensor:
        fused = self._fused_train(x)
        if fused is not None:
            y, mean, variance = fused
        else:
            x = cast_to(x, _compute_dtype(x.dtype))
            rank = x.shape.rank
            axis = self._channel_axis(rank)
            mean, variance = self._batch_moments(x, [i for i in range(rank) if i != axis])
            y = self._normalize(x, mean, variance)
        decay = 1.0 - self.momentum
        vdtype = self.moving_mean.dtype
        self.moving_mean.assign_sub((self.moving_mean - tf.cast(tf.stop_gradient(mean), vdtype)) * decay)
        self.moving_variance.assign_sub(
            (self.moving_variance - tf.cast(tf.stop_gradient(variance), vdtype)) * decay
        )
        return y

    def _infer(self, x: tf.Tensor) -> tf.Tensor:
        args = self._fused_args(x)
        if args is not None:
            # One kernel with the moving statistics (differentiable, like the composite path).
            data_format, scale, offset = args
            return tf.raw_ops.FusedBatchNormV3(
                x=x, scale=scale, offset=offset, mean=cast_to(self.moving_mean, tf.float32),
                variance=cast_to(self.moving_variance, tf.float32), epsilon=self.eps, data_format=data_format,
                is_training=False,
            )[0]
        x = cast_to(x, _compute_dtype(x.dtype))
        return self._normalize(x, cast_to(self.moving_mean, x.dtype), cast_to(self.moving_variance, x.dtype))

    def __call__(self, x: tf.Tensor, training: Training = None) -> tf.Tensor:
        """Normalizes ``x``.

        Args:
          x: a floating tensor of rank >= 2 with ``channels`` on the channel axis.
          training: ``True`` to use (and fold into the moving averages) the batch
            statistics; ``False``/``None`` to use the moving averages. May be a
            scalar bool tensor. Ignored (inference) while the layer is frozen.

        Returns:
          The normalized tensor, same shape and dtype as ``x``.

        Raises:
          ValueError: for an input of unknown rank.
          TypeError: for a bad ``training`` value.
        """
        if x.shape.rank is None:
            raise ValueError(self.error("the input rank must be known"))
        training = resolve_training(training, self.describe())
        if not self.trainable:
            training = False  # frozen: inference mode, moving statistics untouched
        # Half-precision x reaches the fused kernel as it is; the other paths cast it.
        if training is True:
            y = self._train(x)
        elif training is False:
            y = self._infer(x)
        else:
            y = tf.cond(training, lambda: cast_to(self._train(x), x.dtype), lambda: cast_to(self._infer(x), x.dtype))
        return cast_to(y, x.dtype)


class _AxisNormalization(_Normalization):
    """What ``LayerNorm`` and ``RMSNorm`` share (private): per-example statistics over ``axis``,
    affine variables shaped like the normalized dimensions."""

    axis: Tuple[int, ...] = (-1,)

    def _axes(self, rank: int) -> List[int]:
        out = []
        for a in self.axis:
            p = a + rank if a < 0 else a
            if not 0 < p < rank:
                raise ValueError(
                    self.error(f"axis {a} is out of range for an input of rank {rank} (axis 0 is the batch)")
                )
            out.append(p)
        if len(set(out)) != len(out):
            raise ValueError(self.error(f"axis {self.axis} names the same dimension twice for an input of rank {rank}"))
        return sorted(out)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates ``scale`` / ``offset`` shaped like the normalized dimensions."""
        if input_shape.rank is None:
            raise ValueError(self.error("the input rank must be known at the first call"))
        axes = self._axes(input_shape.rank)
        sizes = [input_shape[a] for a in axes]
        if any(s is None for s in sizes):
            raise ValueError(
                self.error(f"the normalized dimensions must be known at the first call, got shape {input_shape}")
            )
        shape = tuple(sizes)
        self._create_affine(shape)
        # Fix the normalized sizes, keyed by the axes as the user wrote them.
        fixed = {a: (input_shape[a], "elements on normalized axis") for a in self.axis}
        self.input_spec = InputSpec(min_rank=max(axes) + 1, axes=fixed)


class LayerNorm(_AxisNormalization):
    """Layer normalization: each example normalized over ``axis`` (the last axis by default).

    Variables (created at the first call): ``scale`` (ones) and ``offset``
    (zeros), of shape ``[input_shape[a] for a in sorted(axis)]`` (e.g.
    ``(channels,)`` for ``axis=-1``), like PyTorch's ``normalized_shape``.

    Args:
      axis: an int or a list of ints: the axes normalized over (not the batch axis 0).
      eps: added to the variance before the square root (> 0).
      center: learn an ``offset``.
      scale: learn a ``scale``.
      scale_init: initializer of ``scale`` (default ones).
      offset_init: initializer of ``offset`` (default zeros).
      dtype: the variables' dtype.
      name: module name.

    Raises:
      ValueError / TypeError: for invalid arguments, naming the module.
    """

    def __init__(
        self,
        axis: Union[int, Sequence[int]] = -1,
        eps: float = 1e-5,
        center: bool = True,
        scale: bool = True,
        scale_init: Union[None, str, Callable] = None,
        offset_init: Union[None, str, Callable] = None,
        dtype: tf.DType = tf.float32,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        self.axis: Tuple[int, ...] = _check_axes(axis, owner)
        self._init_affine(eps, center, scale, owner)
        self._init_initializers(scale_init, offset_init, dtype)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Normalizes each example of ``x`` over ``axis``.

        Args:
          x: a floating tensor.

        Returns:
          The normalized tensor, same shape and dtype as ``x``.
        """
        rank = x.shape.rank
        if rank is None:
            raise ValueError(self.error("the input rank must be known"))
        axes = self._axes(rank)
        xc = cast_to(x, _compute_dtype(x.dtype))
        mean, variance = tf.nn.moments(xc, axes, keepdims=True)
        bshape = [x.shape[i] if i in axes else 1 for i in range(rank)]
        scale = tf.reshape(cast_to(self.scale, xc.dtype), bshape) if self.use_scale else None
        offset = tf.reshape(cast_to(self.offset, xc.dtype), bshape) if self.use_center else None
        y = tf.nn.batch_normalization(xc, mean, variance, offset, scale, self.eps)
        return cast_to(y, x.dtype)


class GroupNorm(_Normalization):
    """Group normalization: channels split into ``num_groups`` groups, each
    example normalized over (spatial dims x channels of the group).

    Variables (created at the first call): ``scale`` (ones) and ``offset``
    (zeros), of shape ``(channels,)``.

    Args:
      num_groups: number of groups (> 0); must divide the number of channels.
      eps: added to the variance before the square root (> 0).
      center: learn an ``offset``.
      scale: learn a ``scale``.
      data_format: ``"channels_last"`` (``(N, ..., C)``) or ``"channels_first"`` (``(N, C, ...)``).
      scale_init: initializer of ``scale`` (default ones).
      offset_init: initializer of ``offset`` (default zeros).
      dtype: the variables' dtype.
      name: module name.

    Raises:
      ValueError / TypeError: for invalid arguments, naming the module; at the
        first call, ValueError if ``num_groups`` does not divide the channels.
    """

    def __init__(
        self,
        num_groups: int,
        eps: float = 1e-5,
        center: bool = True,
        scale: bool = True,
        data_format: str = "channels_last",
        scale_init: Union[None, str, Callable] = None,
        offset_init: Union[None, str, Callable] = None,
        dtype: tf.DType = tf.float32,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        self.num_groups = positive_int(num_groups, "num_groups", owner)
        self._init_affine(eps, center, scale, owner)
        self.data_format = normalize_data_format(data_format, owner)
        self._init_initializers(scale_init, offset_init, dtype)

    @property
    def channel_axis(self) -> int:
        """The channel axis of the input (-1 or 1)."""
        return data_format_channel_axis(self.data_format)

    def build(self, input_shape: tf.TensorShape) -> None:
        channels = known_at_build(self, input_shape[self.channel_axis], "the number of channels", input_shape)
        if channels % self.num_groups:
            raise ValueError(
                self.error(
                    f"num_groups ({self.num_groups}) must divide the number of channels, got {channels} channels"
                )
            )
        shape = (channels,)
        self._create_affine(shape)
        self.num_channels = channels
        self.input_spec = InputSpec(min_rank=2, axes={self.channel_axis: (channels, "channels")})

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Normalizes ``x`` per example and per channel group.

        Args:
          x: a floating tensor of rank >= 2 in this layer's data format.

        Returns:
          The normalized tensor, same shape and dtype as ``x``.
        """
        rank = x.shape.rank
        if rank is None:
            raise ValueError(self.error("the input rank must be known"))
        g, c = self.num_groups, self.num_channels
        xc = cast_to(x, _compute_dtype(x.dtype))
        dyn = tf.shape(xc)
        if self.data_format == "channels_last":
            grouped = tf.reshape(xc, tf.concat([dyn[:-1], [g, c // g]], 0))
            axes = list(range(1, rank - 1)) + [rank]
            pshape = [c]
        else:
            grouped = tf.reshape(xc, tf.concat([dyn[:1], [g, c // g], dyn[2:]], 0))
            axes = list(range(2, rank + 1))
            pshape = [c] + [1] * (rank - 2)
        mean, variance = tf.nn.moments(grouped, axes, keepdims=True)
        normed = tf.reshape((grouped - mean) * tf.math.rsqrt(variance + self.eps), dyn)
        if self.use_scale:
            normed = normed * tf.reshape(cast_to(self.scale, xc.dtype), pshape)
        if self.use_center:
            normed = normed + tf.reshape(cast_to(self.offset, xc.dtype), pshape)
        y = cast_to(normed, x.dtype)
        if not tf.executing_eagerly():
            y.set_shape(x.shape)
        return y


class InstanceNorm(_Normalization):
    """Instance normalization: each example and channel normalized over its spatial positions.

    ``torch.nn.InstanceNorm{1,2,3}d(affine=True)`` (no running statistics; the
    biased variance), for any number of spatial dimensions. Variables (created at
    the first call): ``scale`` (ones) and ``offset`` (zeros), of shape ``(channels,)``.

    Args:
      eps: added to the variance before the square root (> 0).
      center: learn an ``offset``.
      scale: learn a ``scale``.
      data_format: ``"channels_last"`` (``(N, ..., C)``) or ``"channels_first"`` (``(N, C, ...)``).
      scale_init: initializer of ``scale`` (default ones).
      offset_init: initializer of ``offset`` (default zeros).
      dtype: the variables' dtype.
      name: module name.

    Raises:
      ValueError / TypeError: for invalid arguments, naming the module; at the
        first call, for an input without spatial dimensions.
    """

    def __init__(
        self,
        eps: float = 1e-5,
        center: bool = True,
        scale: bool = True,
        data_format: str = "channels_last",
        scale_init: Union[None, str, Callable] = None,
        offset_init: Union[None, str, Callable] = None,
        dtype: tf.DType = tf.float32,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        self._init_affine(eps, center, scale, owner)
        self.data_format = normalize_data_format(data_format, owner)
        self._init_initializers(scale_init, offset_init, dtype)
        self.input_spec = InputSpec(min_rank=3)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates ``scale`` / ``offset`` ``(channels,)``.

        Args:
          input_shape: ``(N, *spatial, C)`` or ``(N, C, *spatial)``, at least one spatial dimension.
        """
        axis = data_format_channel_axis(self.data_format)
        channels = known_at_build(self, input_shape[axis], "the number of channels", input_shape)
        self._create_affine((channels,))
        self.input_spec = InputSpec(min_rank=3, axes={axis: (channels, "channels")})

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Normalizes each example's channels over their spatial positions.

        Args:
          x: a floating tensor of rank >= 3 in this layer's data format.

        Returns:
          The normalized tensor, same shape and dtype as ``x``.
        """
        rank = x.shape.rank
        if rank is None:
            raise ValueError(self.error("the input rank must be known"))
        xc = cast_to(x, _compute_dtype(x.dtype))
        if self.data_format == "channels_last":
            axes, pshape = list(range(1, rank - 1)), [-1]
        else:
            axes, pshape = list(range(2, rank)), [-1] + [1] * (rank - 2)
        mean, variance = tf.nn.moments(xc, axes, keepdims=True)
        y = (xc - mean) * tf.math.rsqrt(variance + self.eps)
        if self.use_scale:
            y = y * tf.reshape(cast_to(self.scale, xc.dtype), pshape)
        if self.use_center:
            y = y + tf.reshape(cast_to(self.offset, xc.dtype), pshape)
        return cast_to(y, x.dtype)


class RMSNorm(_AxisNormalization):
    """Root-mean-square normalization (Zhang & Sennrich, 2019): ``x / sqrt(mean(x²) + eps) * scale``.

    No centering (no mean subtracted, no offset by default): ``torch.nn.RMSNorm``
    over the last axes, as LLaMA-style Transformers use it. Variables (created at
    the first call): ``scale`` (ones), and ``offset`` (zeros) only with
    ``center=True``, of shape ``[input_shape[a] for a in sorted(axis)]``.

    Args:
      axis: an int or a list of ints: the axes averaged over (not the batch axis 0).
      eps: added to the mean square before the square root (> 0).
      scale: learn a ``scale``.
      center: also learn an ``offset`` added after scaling.
      scale_init: initializer of ``scale`` (default ones).
      offset_init: initializer of ``offset`` (default zeros).
      dtype: the variables' dtype.
      name: module name.

    Raises:
      ValueError / TypeError: for invalid arguments, naming the module.
    """

    def __init__(
        self,
        axis: Union[int, Sequence[int]] = -1,
        eps: float = 1e-6,
        scale: bool = True,
        center: bool = False,
        scale_init: Union[None, str, Callable] = None,
        offset_init: Union[None, str, Callable] = None,
        dtype: tf.DType = tf.float32,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        self.axis = _check_axes(axis, self.describe())
        self._init_affine(eps, center, scale, self.describe())
        self._init_initializers(scale_init, offset_init, dtype)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Normalizes each example of ``x`` by its root mean square over ``axis``.

        Args:
          x: a floating tensor.

        Returns:
          The normalized tensor, same shape and dtype as ``x``.
        """
        rank = x.shape.rank
        if rank is None:
            raise ValueError(self.error("the input rank must be known"))
        axes = self._axes(rank)
        xc = cast_to(x, _compute_dtype(x.dtype))
        y = xc * tf.math.rsqrt(tf.reduce_mean(tf.square(xc), axes, keepdims=True) + self.eps)
        bshape = [x.shape[i] if i in axes else 1 for i in range(rank)]
        if self.use_scale:
            y = y * tf.reshape(cast_to(self.scale, xc.dtype), bshape)
        if self.use_center:
            y = y + tf.reshape(cast_to(self.offset, xc.dtype), bshape)
        return cast_to(y, x.dtype)
