"""Positional embeddings: sinusoidal (fixed) and learned tables added to a ``(B, T, D)``
sequence, and rotary embeddings (RoPE) applied to attention queries and keys.

The two tables return ``x + P[offset : offset + T]`` where ``P`` is a
``(max_len, D)`` table, so they drop straight into a ``Sequential`` after a token
embedding; ``offset`` (default 0, an int or a scalar int tensor) places the
sequence later, as when decoding one token at a time after a cached prefix. A
sequence that ends past ``max_len`` is an error: a ``ValueError`` when ``T``
and ``offset`` are known when the call is traced, a
``tf.errors.InvalidArgumentError`` at run time otherwise.

:class:`RotaryEmbedding` rotates pairs of features by position-dependent angles
(Su et al., 2021, "RoFormer"); it has no table and no length limit.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from lamina import initializers
from lamina.layers._utils import positive_int
from lamina.module import InputSpec, Module

__all__ = ["SinusoidalPositionalEmbedding", "LearnedPositionalEmbedding", "RotaryEmbedding", "sinusoidal_table"]


def sinusoidal_table(max_len: int, dim: int, base: float = 10000.0) -> np.ndarray:
    """The Transformer's fixed positional table (Vaswani et al., 2017).

    ``P[p, 2i] = sin(p / base^(2i/dim))`` and ``P[p, 2i+1] = cos(p / base^(2i/dim))``
    (sines and cosines interleaved; for an odd ``dim`` the last column is a sine).

    Args:
      max_len: number of positions (> 0).
      dim: embedding size (> 0).
      base: the wavelength base.

    Returns:
      A float32 array of shape ``(max_len, dim)``.
    """
    pos = np.arange(max_len, dtype=np.float64)[:, None]
    i = np.arange(0, dim, 2, dtype=np.float64)
    angles = pos / np.power(base, i / dim)[None, :]
    table = np.zeros((max_len, dim), np.float64)
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles[:, : dim // 2])
    return table.astype(np.float32)


class _PositionalBase(Module):
    """Shared checks: a ``(B, T, D)`` input with ``T <= max_len``."""

    def __init__(self, max_len: int, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self.max_len = positive_int(max_len, "max_len", self.describe())
        self.input_spec = InputSpec(rank=3)

    def _window(self, x: tf.Tensor, offset: Any) -> Tuple[Any, Any]:
        """Returns ``(offset, T)``, checking ``offset + T <= max_len`` (statically when both are known)."""
        t = x.shape[1]
        static_offset = _static_int(offset)
        if static_offset is not None and static_offset < 0:
            raise ValueError(self.error(f"offset must be >= 0, got {static_offset}"))
        if t is not None and static_offset is not None:
            if static_offset + t > self.max_len:
                what = f"{t} steps" if static_offset == 0 else f"{t} steps at offset {static_offset}"
                raise ValueError(self.error(f"expected a sequence of at most max_len={self.max_len} steps, got {what}"))
            return static_offset, t
        t = tf.shape(x)[1] if t is None else t
        offset = tf.cast(offset, tf.int32)
        checks = [
            tf.debugging.assert_non_negative(offset, message=self.error("offset must be >= 0")),
            tf.debugging.assert_less_equal(
                offset + t, self.max_len, message=self.error(f"expected a sequence of at most max_len={self.max_len} steps")
            ),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(offset), tf.identity(t)

    def table(self) -> tf.Tensor:
        """The ``(max_len, D)`` table (the module must have been called once)."""
        raise NotImplementedError

    def __call__(self, x: tf.Tensor, offset: Any = 0) -> tf.Tensor:
        """Adds positions ``offset .. offset + T - 1`` to ``x``.

        Args:
          x: ``(B, T, D)``, floating.
          offset: the position of ``x[:, 0]`` (an int or a scalar int tensor, >= 0).

        Returns:
          ``x + table[offset : offset + T]``, same shape and dtype.

        Raises:
          ValueError: if ``offset + T > max_len`` or ``offset < 0`` (known statically).
        """
        offset, t = self._window(x, offset)
        if isinstance(offset, int) and offset == 0:
            rows = self.table()[:t]
        else:
            rows = tf.slice(self.table(), tf.stack([offset, 0]), tf.stack([t, -1]))
        return x + tf.cast(rows, x.dtype)[tf.newaxis]


def _static_int(value: Any) -> Optional[int]:
    """``value`` as a Python int when it is known without running anything, else ``None``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if tf.is_tensor(value):
        static = tf.get_static_value(value)
        if static is not None and np.ndim(static) == 0:
            return int(static)
    return None


class SinusoidalPositionalEmbedding(_PositionalBase):
    """Fixed sine/cosine positions (:func:`sinusoidal_table`), no variables.

    The table's width ``D`` is taken from the first input.

    Args:
      max_len: the longest sequence supported (> 0).
      base: the wavelength base (10000 in the original Transformer).
      name: module name.

    Raises:
      ValueError / TypeError: for a bad ``max_len``.
    """

    def __init__(self, max_len: int, base: float = 10000.0, name: Optional[str] = None) -> None:
        super().__init__(max_len, name=name)
        self.base = float(base)
        self._table: Optional[tf.Tensor] = None

    def build(self, input_shape: tf.TensorShape) -> None:
        """Computes the table for the input's feature size.

        Args:
          input_shape: ``(B, T, D)``.

        Raises:
          ValueError: if ``D`` is unknown.
        """
        dim = input_shape[-1]
        if dim is None:
            raise ValueError(self.error(f"the feature size must be known at the first call, got shape {input_shape}"))
        self._table = tf.constant(sinusoidal_table(self.max_len, dim, self.base))
        self.input_spec = InputSpec(rank=3, axes={-1: (dim, "features")})

    def table(self) -> tf.Tensor:
        """The ``(max_len, D)`` sinusoidal table."""
        if self._table is None:
            raise ValueError(self.error("call it once on an input to fix the feature size"))
        return self._table


class LearnedPositionalEmbedding(_PositionalBase):
    """Learned positions: a ``(max_len, dim)`` variable ``embeddings`` added to the input.

    Args:
      max_len: the longest sequence supported (> 0).
      dim: the feature size (must equal the input's last dimension).
      w_init: initializer (default ``Normal(0, 0.02)``, as BERT and ViT).
      dtype: the variable's dtype.
      name: module name.

    Raises:
      ValueError / TypeError: for a bad ``max_len`` or ``dim``; at the first
        call, if the input's feature size is not ``dim``.
    """

    def __init__(
        self,
        max_len: int,
        dim: int,
        w_init: Union[None, str, Callable] = None,
        dtype: tf.DType = tf.float32,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(max_len, name=name)
        self.dim = positive_int(dim, "dim", self.describe())
        self.w_init = initializers.get(w_init, initializers.Normal(0.0, 0.02))
        self._dtype = tf.as_dtype(dtype)
        self.input_spec = InputSpec(rank=3, axes={-1: (self.dim, "features (dim)")})

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates ``embeddings`` ``(max_len, dim)``.

        Args:
          input_shape: ``(B, T, dim)``.
        """
        self.embeddings = tf.Variable(self.w_init((self.max_len, self.dim), self._dtype), name="embeddings")

    def table(self) -> tf.Tensor:
        """The ``(max_len, dim)`` variable."""
        return self.embeddings


class RotaryEmbedding(Module):
    """Rotary position embedding (RoPE): rotates feature pairs of queries and keys by their positions.

    For a position ``p`` and pair ``i`` (of ``dim / 2``), the pair ``(a, b)`` becomes
    ``(a cos(p θ_i) - b sin(p θ_i), a sin(p θ_i) + b cos(p θ_i))`` with
    ``θ_i = base^(-2i / dim)``: the complex number ``a + ib`` times ``e^{i p θ_i}``.
    Dot products of rotated queries and keys then depend on positions only through
    their difference. Pairs are ``(x[i], x[i + dim/2])`` (the "rotate half" layout
    of GPT-NeoX, LLaMA and Hugging Face) or, with ``interleaved=True``,
    ``(x[2i], x[2i+1])`` (RoFormer, GPT-J). Only the first ``dim`` features are
    rotated (the rest pass through, as GPT-NeoX's partial rotary); ``dim``
    defaults to the whole feature axis. No variables and no length limit: the
    angles are computed for the positions asked.

    Args:
      dim: the number of rotated features (even; default: the input's last dimension).
      base: the wavelength base (10000 in RoFormer and LLaMA).
      interleaved: pair adjacent features instead of the two halves.
      name: module name.

    Raises:
      ValueError / TypeError: for an odd or non-positive ``dim`` or a bad ``base``;
        at the first call, for a ``dim`` larger than the features.
    """

    def __init__(self, dim: Optional[int] = None, base: float = 10000.0, interleaved: bool = False,
                 name: Optional[str] = None) -> None:
        super().__init__(name=name)
        owner = self.describe()
        if dim is not None:
            dim = positive_int(dim, "dim", owner)
            if dim % 2:
                raise ValueError(f"{owner}: dim must be even, got {dim}")
        if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 1:
            raise ValueError(f"{owner}: base must be a number > 1, got {base!r}")
        self.dim = dim
        self.base = float(base)
        self.interleaved = bool(interleaved)
        self.input_spec = InputSpec(min_rank=2)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Fixes the feature size and the rotated part.

        Args:
          input_shape: ``(..., T, features)``.

        Raises:
          ValueError: if the features are unknown, odd (without ``dim``) or fewer than ``dim``.
        """
        features = input_shape[-1]
        if features is None:
            raise ValueError(self.error(f"the feature size must be known at the first call, got shape {input_shape}"))
        if self.dim is None:
            if features % 2:
                raise ValueError(self.error(f"cannot rotate an odd number of features ({features}); give an even dim"))
            self.dim = int(features)
        if self.dim > features:
            raise ValueError(self.error(f"dim={self.dim} is larger than the {features} input features"))
        inv = 1.0 / np.power(self.base, np.arange(0, self.dim, 2, dtype=np.float64) / self.dim)
        self._inv_freq = tf.constant(inv.astype(np.float32))
        self.input_spec = InputSpec(min_rank=2, axes={-1: (int(features), "features")})

    def angles(self, positions: Any) -> Tuple[tf.Tensor, tf.Tensor]:
        """``cos`` and ``sin`` of ``positions × θ``, each ``(len(positions), dim / 2)`` float32.

        Args:
          positions: a ``(T,)`` vector of positions (ints or floats).

        Returns:
          ``(cos, sin)``.
        """
        a = tf.cast(positions, tf.float32)[:, tf.newaxis] * self._inv_freq[tf.newaxis, :]
        return tf.cos(a), tf.sin(a)

    def __call__(self, x: tf.Tensor, offset: Any = 0) -> tf.Tensor:
        """Rotates ``x`` whose axis -2 holds positions ``offset .. offset + T - 1``.

        Args:
          x: ``(..., T, features)`` (e.g. ``(B, heads, T, head_size)``), floating.
          offset: the position of the first step (an int or a scalar int tensor).

        Returns:
          The rotated tensor, same shape and dtype (computed in float32).
        """
        t = x.shape[-2] if x.shape[-2] is not None else tf.shape(x)[-2]
        cos, sin = self.angles(tf.range(t) + tf.cast(offset, tf.int32))
        xf = tf.cast(x, tf.float32)
        rot, rest = xf[..., : self.dim], xf[..., self.dim:]
        half = self.dim // 2
        if self.interleaved:
            shape = tf.shape(rot)
            pairs = tf.reshape(rot, tf.concat([shape[:-1], [half, 2]], 0))
            a, b = pairs[..., 0], pairs[..., 1]
            out = tf.reshape(tf.stack([a * cos - b * sin, a * sin + b * cos], axis=-1), shape)
        else:
            a, b = rot[..., :half], rot[..., half:]
            out = tf.concat([a * cos - b * sin, a * sin + b * cos], axis=-1)
        if self.dim < (x.shape[-1] or 0):
            out = tf.concat([out, rest], axis=-1)
        return tf.cast(out, x.dtype)
