"""Weight initializers: callables ``init(shape, dtype) -> tf.Tensor``.

Random initializers draw from stateless random ops seeded by
:func:`lamina.random.next_seed`, so after ``lm.set_seed(n)`` building the same
model in the same order gives the same weights, run after run.

Fans follow the usual convention: the last axis is ``fan_out``, the one before it
``fan_in``, and any leading (spatial) axes multiply both (the receptive field).

What a layer uses when it is given no initializer is decided in one place,
:func:`default_weights` and :func:`default_bias`: Keras 3's rule (Glorot-uniform
kernels, zero biases, orthogonal recurrent weights, ``U(-0.05, 0.05)``
embeddings), chosen by measurement against PyTorch's and lamina's earlier
defaults (``docs/initializers.md``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import tensorflow as tf

from lamina.random import next_seed

__all__ = [
    "Initializer",
    "Zeros",
    "Ones",
    "Constant",
    "Normal",
    "TruncatedNormal",
    "Uniform",
    "VarianceScaling",
    "GlorotUniform",
    "GlorotNormal",
    "HeNormal",
    "HeUniform",
    "LecunNormal",
    "LecunUniform",
    "Orthogonal",
    "Identity",
    "get",
    "compute_fans",
    "WEIGHT_KINDS",
    "default_weights",
    "default_bias",
]

ShapeLike = Union[Sequence[int], tf.TensorShape]


def compute_fans(shape: ShapeLike) -> Tuple[float, float]:
    """Returns ``(fan_in, fan_out)`` for a weight of ``shape``.

    Args:
      shape: the weight's shape, e.g. ``(in, out)`` or ``(kh, kw, in, out)``.

    Returns:
      ``(fan_in, fan_out)`` as floats.
    """
    shape = [int(d) for d in shape]
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
    return float(shape[-2] * receptive), float(shape[-1] * receptive)


class Initializer:
    """Base class: ``__call__(shape, dtype)`` returns a tensor of that shape."""

    def __call__(self, shape: ShapeLike, dtype: tf.DType = tf.float32) -> tf.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    """All zeros."""

    def __call__(self, shape: ShapeLike, dtype: tf.DType = tf.float32) -> tf.Tensor:
        return tf.zeros(shape, dtype)


class Ones(Initializer):
    """All ones."""

    def __call__(self, shape: ShapeLike, dtype: tf.DType = tf.float32) -> tf.Tensor:
        return tf.ones(shape, dtype)


class Constant(Initializer):
    """A constant value (a scalar, broadcast, or an array of the exact shape).

    Args:
      value: the value.
    """

    def __init__(self, value: Any = 0.0) -> None:
        self.value = value

    def __call__(self, shape: ShapeLike, dtype: tf.DType = tf.float32) -> tf.Tensor:
        return tf.broadcast_to(tf.cast(tf.convert_to_tensor(self.value), dtype), shape)


def _check_positive(name: str, value: float, cls: str) -> None:
    if not value > 0:
        raise ValueError(f"{cls}: {name} must be > 0, got {value}")


class Normal(Initializer):
    """Normal distribution ``N(mean, stddev²)``; the seed post's default is ``Normal(0.0, 0.02)``.

    Args:
      mean: the mean.
      stddev: the standard deviation (> 0).
    """

    def __init__(self, mean: float = 0.0, stddev: float = 0.02) -> None:
        _check_positive("stddev", stddev, "Normal")
        self.mean, self.stddev = mean, stddev

    def __call__(self, shape: ShapeLike, dtype: tf.DType = tf.float32) -> tf.Tensor:
        return tf.random.stateless_normal(shape, next_seed(), self.mean, self.stddev, dtype=dtype)


class TruncatedNormal(Initializer):
    """Normal distribution truncated at two standard deviations from the mean.

    Args:
      mean: the mean.
      stddev: the standard deviation of the untruncated normal (> 0).
    """

    def __init__(self, mean: float = 0.0, stddev: float = 0.02) -> None:
        _check_positive("stddev", stddev, "TruncatedNormal")
        self.mean, self.stddev = mean, stddev

    def __call__(self, shape: ShapeLike, dtype: tf.DType = tf.float32) -> tf.Tensor:
        return tf.random.stateless_truncated_normal(shape, next_seed(), self.mean, self.stddev, dtype=dtype)


class Uniform(Initializer):
    """Uniform distribution on ``[minval, maxval)``.

    Args:
      minval: lower bound.
      maxval: upper bound (> minval).
    """

    def __init__(self, minval: float = -0.05, maxval: float = 0.05) -> None:
        if not maxval > minval:
            raise ValueError(f"Uniform: maxval must be > minval, got minval={minval}, maxval={maxval}")
        self.minval, self.maxval = minval, maxval

    def __call__(self, shape: ShapeLike, dtype: tf.DType = tf.float32) -> tf.Tensor:
        return tf.random.stateless_uniform(shape, next_seed(), self.minval, self.maxval, dtype=dtype)


# The stddev of a standard normal truncated to [-2, 2].
_TRUNC_STD = 0.87962566103423978


class VarianceScaling(Initializer):
    """Draws with variance ``scale / n`` where ``n`` is fan_in, fan_out or their average.

    Args:
      scale: the variance scale (> 0).
      mode: ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"``.
      distribution: ``"truncated_normal"``, ``"normal"`` (untruncated) or ``"uniform"``.

    Raises:
      ValueError: on an unknown mode or distribution or a non-positive scale.
    """

    def __init__(self, scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal") -> None:
        _check_positive("scale", scale, "VarianceScaling")
        mode, distribution = mode.lower(), distribution.lower()
        if distribution == "untruncated_normal":
            distribution = "normal"
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"VarianceScaling: mode must be 'fan_in', 'fan_out' or 'fan_avg', got {mode!r}")
        if distribution not in ("truncated_normal", "normal", "uniform"):
            raise ValueError(
                "VarianceScaling: distribution must be 'truncated_normal', 'normal' or 'uniform', "
                f"got {distribution!r}"
            )
        self.scale, self.mode, self.distribution = scale, mode, distribution

    def __call__(self, shape: ShapeLike, dtype: tf.DType = tf.float32) -> tf.Tensor:
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        variance = self.scale / max(1.0, n)
        if self.distribution == "truncated_normal":
            std = math.sqrt(variance) / _TRUNC_STD
            return tf.random.stateless_truncated_normal(shape, next_seed(), 0.0, std, dtype=dtype)
        if self.distribution == "normal":
            return tf.random.stateless_normal(shape, next_seed(), 0.0, math.sqrt(variance), dtype=dtype)
        limit = math.sqrt(3.0 * variance)
        return tf.random.stateless_uniform(shape, next_seed(), -limit, limit, dtype=dtype)


class GlorotUniform(VarianceScaling):
    """Glorot/Xavier uniform: ``U(±sqrt(6 / (fan_in + fan_out)))``."""

    def __init__(self) -> None:
        super().__init__(1.0, "fan_avg", "uniform")


class GlorotNormal(VarianceScaling):
    """Glorot/Xavier normal (truncated): variance ``2 / (fan_in + fan_out)``."""

    def __init__(self) -> None:
        super().__init__(1.0, "fan_avg", "truncated_normal")


class HeNormal(VarianceScaling):
    """He/Kaiming normal (truncated): variance ``2 / fan_in``, for ReLU networks."""

    def __init__(self) -> None:
        super().__init__(2.0, "fan_in", "truncated_normal")


class HeUniform(VarianceScaling):
    """He/Kaiming uniform: ``U(±sqrt(6 / fan_in))``."""

    def __init__(self) -> None:
        super().__init__(2.0, "fan_in", "uniform")


class LecunNormal(VarianceScaling):
    """LeCun normal (truncated): variance ``1 / fan_in`` (Sonnet 2's default)."""

    def __init__(self) -> None:
        super().__init__(1.0, "fan_in", "truncated_normal")


class LecunUniform(VarianceScaling):
    """LeCun uniform: ``U(±sqrt(3 / fan_in))``."""

    def __init__(self) -> None:
        super().__init__(1.0, "fan_in", "uniform")


class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix, reshaped: rows of ``prod(shape[:-1])`` by ``shape[-1]``.

    Args:
      gain: multiplier of the orthogonal matrix.

    Raises:
      ValueError: for shapes of rank < 2 (at call time).
    """

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = gain

    def __call__(self, shape: ShapeLike, dtype: tf.DType = tf.float32) -> tf.Tensor:
        shape = [int(d) for d in shape]
        if len(shape) < 2:
            raise ValueError(f"Orthogonal: needs a shape of rank >= 2, got {shape}")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        flat = (max(rows, cols), min(rows, cols))
        a = tf.random.stateless_normal(flat, next_seed(), dtype=tf.float32)
        q, r = tf.linalg.qr(a)
        q = q * tf.sign(tf.linalg.diag_part(r))  # make the decomposition unique
        if rows < cols:
            q = tf.transpose(q)
        return tf.cast(self.gain * tf.reshape(q, shape), dtype)


class Identity(Initializer):
    """The identity map: ``gain * I`` for a matrix, a Dirac kernel for a convolution.

    For a ``(in, out)`` matrix: ones on the main diagonal (``torch.nn.init.eye_``;
    a rectangular matrix gets the diagonal of its leading square). For a
    convolution kernel ``(*spatial, in, out)``: a one at the spatial centre
    ``k // 2`` of each ``(i, i)`` channel pair (``torch.nn.init.dirac_``), so a
    stride-1 ``SAME`` convolution with it returns its input (its first
    ``min(in, out)`` channels).

    Args:
      gain: the multiplier (``Identity(gain)`` is ``gain * I``).

    Raises:
      ValueError: for a shape of rank < 2 (at call time).
    """

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = gain

    def __call__(self, shape: ShapeLike, dtype: tf.DType = tf.float32) -> tf.Tensor:
        shape = [int(d) for d in shape]
        if len(shape) < 2:
            raise ValueError(f"Identity: needs a shape of rank >= 2 (a matrix or a kernel), got {shape}")
        eye = tf.eye(shape[-2], shape[-1], dtype=dtype) * tf.cast(self.gain, dtype)
        if len(shape) == 2:
            return eye
        spatial = shape[:-2]
        centre = [[d // 2] for d in spatial]
        index = tf.constant([[c[0] for c in centre]], tf.int32)
        return tf.scatter_nd(index, eye[tf.newaxis], shape)


_BY_NAME = {
    "zeros": Zeros,
    "ones": Ones,
    "normal": Normal,
    "truncated_normal": TruncatedNormal,
    "uniform": Uniform,
    "glorot_uniform": GlorotUniform,
    "xavier_uniform": GlorotUniform,
    "glorot_normal": GlorotNormal,
    "xavier_normal": GlorotNormal,
    "he_normal": HeNormal,
    "kaiming_normal": HeNormal,
    "he_uniform": HeUniform,
    "kaiming_uniform": HeUniform,
    "lecun_normal": LecunNormal,
    "lecun_uniform": LecunUniform,
    "orthogonal": Orthogonal,
    "identity": Identity,
    "eye": Identity,
    "dirac": Identity,
}


def get(init: Union[None, str, Callable], default: Optional[Callable] = None) -> Callable:
    """Resolves an initializer given as ``None`` (the default), a name, or a callable.

    Args:
      init: ``None``, a name such as ``"he_normal"``, or a callable ``(shape, dtype)``.
      default: returned when ``init`` is ``None``.

    Returns:
      A callable initializer.

    Raises:
      ValueError: for an unknown name. TypeError: for anything else.
    """
    if init is None:
        if default is None:
            raise ValueError("initializers.get: no initializer and no default given")
        return default
    if isinstance(init, str):
        key = init.lower()
        if key not in _BY_NAME:
            raise ValueError(f"unknown initializer {init!r}; expected one of {sorted(_BY_NAME)}")
        return _BY_NAME[key]()
    if callable(init):
        return init
    raise TypeError(f"initializer must be None, a name or a callable, got {type(init).__name__}")


# The kinds of weights :func:`default_weights` knows, and what each gets.
WEIGHT_KINDS = ("kernel", "recurrent", "embedding")


def default_weights(kind: str) -> Initializer:
    """The initializer a lamina layer uses for a weight of ``kind`` when none is given.

    The rule is Keras 3's, measured best of Keras', PyTorch's and lamina's earlier
    (He / LeCun normal) defaults over the tasks of ``benchmarks/initializers.py``
    (``docs/initializers.md``):

    * ``"kernel"``: every dense and convolution kernel (``Linear``, attention
      projections, ``Conv*D``, ``Conv*DTranspose``, ``DepthwiseConv2D``, the input
      weights of recurrent cores): :class:`GlorotUniform`,
      ``U(±sqrt(6 / (fan_in + fan_out)))``, with :func:`compute_fans` of the
      kernel's own layout (the receptive field times the last two axes), as
      ``keras.initializers.GlorotUniform`` computes them;
    * ``"recurrent"``: the hidden-to-hidden weights of recurrent cores: :class:`Orthogonal`;
    * ``"embedding"``: ``Embedding`` tables: ``Uniform(-0.05, 0.05)``.

    Args:
      kind: one of :data:`WEIGHT_KINDS`.

    Returns:
      A new initializer.

    Raises:
      ValueError: for an unknown ``kind``.
    """
    if kind == "kernel":
        return GlorotUniform()
    if kind == "recurrent":
        return Orthogonal()
    if kind == "embedding":
        return Uniform(-0.05, 0.05)
    raise ValueError(f"default_weights: kind must be one of {list(WEIGHT_KINDS)}, got {kind!r}")


def default_bias() -> Initializer:
    """The initializer of every lamina layer's bias when none is given: :class:`Zeros`.

    (``LSTM`` then sets its forget-gate slice to 1, ``unit_forget_bias``.)

    Returns:
      A new initializer.
    """
    return Zeros()
