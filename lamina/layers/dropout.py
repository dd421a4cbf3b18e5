"""``Dropout``: zeroes random elements while training, scaling the rest by ``1/(1-rate)``.

Masks come from stateless random ops whose seeds are drawn from a per-module
``tf.random.Generator``. The generator is created with the constructor, seeded
from :func:`lamina.random.next_seed` (or from ``seed=``), so after
``lm.set_seed(n)`` the same model produces the same sequence of masks; its state
is a variable advanced by each training call, so every step of a
``tf.function`` gets a fresh mask.
"""

from __future__ import annotations

import numbers
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from lamina.layers._utils import Training, resolve_training
from lamina.module import InputSpec, Module
from lamina.random import next_seed

__all__ = ["Dropout"]


class Dropout(Module):
    """Inverted dropout: identity at inference; while training, each element is
    zeroed with probability ``rate`` and the others are multiplied by ``1 / (1 - rate)``,
    so the expected value is unchanged.

    Args:
      rate: drop probability, in ``[0, 1)``.
      noise_shape: optional per-call mask shape, broadcast against the input
        (e.g. ``(None, 1, 1, None)`` drops whole channels of an NHWC input);
        ``None`` entries take the input's size.
      seed: optional integer seed for this layer's mask stream. By default the
        stream is seeded from the global seed (:func:`lamina.set_seed`).
      name: module name.

    Raises:
      ValueError / TypeError: for a rate outside ``[0, 1)``, a bad ``noise_shape`` or seed.
    """

    def __init__(
        self,
        rate: float,
        noise_shape: Optional[Sequence[Optional[int]]] = None,
        seed: Optional[int] = None,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise TypeError(f"{owner}: rate must be a number in [0, 1), got {rate!r}")
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"{owner}: rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        if noise_shape is not None:
            try:
                dims = list(noise_shape)
            except TypeError:
                raise TypeError(
                    f"{owner}: noise_shape must be a sequence of ints or None, got {noise_shape!r}"
                ) from None
            for d in dims:
                ok = d is None or (isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0)
                if not ok:
                    raise ValueError(f"{owner}: noise_shape entries must be positive ints or None, got {noise_shape!r}")
            noise_shape = tuple(None if d is None else int(d) for d in dims)
        self.noise_shape = noise_shape
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
                raise ValueError(f"{owner}: seed must be a non-negative int or None, got {seed!r}")
            state = np.array([int(seed), 0], dtype=np.int64)
        else:
            state = tf.get_static_value(next_seed())  # (also inside a graph: a throw-away build)
        self.seed = seed
        self.input_spec = InputSpec()  # any rank, floating point
        with tf.init_scope():
            self._rng = tf.random.Generator.from_seed(state)

    def _noise_shape(self, x: tf.Tensor) -> Optional[tf.Tensor]:
        if self.noise_shape is None:
            return None
        rank = x.shape.rank
        if rank is not None and rank != len(self.noise_shape):
            raise ValueError(
                self.error(f"noise_shape {self.noise_shape} has {len(self.noise_shape)} entries, input has rank {rank}")
            )
        dyn = tf.shape(x)
        return tf.stack([dyn[i] if d is None else tf.constant(d, tf.int32) for i, d in enumerate(self.noise_shape)])

    def _drop(self, x: tf.Tensor) -> tf.Tensor:
        seed = self._rng.make_seeds(1)[:, 0]
        return tf.nn.experimental.stateless_dropout(x, self.rate, seed=seed, noise_shape=self._noise_shape(x))

    def __call__(self, x: tf.Tensor, training: Training = None) -> tf.Tensor:
        """Applies dropout when ``training``.

        Args:
          x: a floating tensor.
          training: ``True`` to drop; ``False``/``None`` for the identity. May be
            a scalar bool tensor.

        Returns:
          A tensor of the same shape and dtype as ``x``.

        Raises:
          TypeError: for a non-floating input or a bad ``training`` value.
        """
        training = resolve_training(training, self.describe())
        if training is False or self.rate == 0.0:
            return tf.identity(x)
        if training is True:
            return self._drop(x)
        return tf.cond(training, lambda: self._drop(x), lambda: tf.identity(x))
