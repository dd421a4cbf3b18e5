"""An exponential moving average of a model's weights (``Trainer(ema=0.999)``).

After every optimizer update the shadow copy moves towards the live weights::

    shadow <- d * shadow + (1 - d) * weight,   d = min(decay, (1 + n) / (10 + n))

where ``n`` is the number of updates so far (TensorFlow's
``ExponentialMovingAverage`` warm-up with ``num_updates``: early on the average
follows the weights closely instead of staying near their random start). Every
floating-point variable of the model is averaged — trainable weights and
BatchNorm's moving statistics alike, as timm's ``ModelEmaV2`` does. The shadow
variables are a ``tf.Module``, so the Trainer's checkpoint holds them and a
resumed run continues the same average bit for bit.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any, Iterator, List

import tensorflow as tf

__all__ = ["WeightEMA"]


class _Sources:
    """A plain holder (tf.Module does not track what is inside it)."""

    def __init__(self, variables: List[tf.Variable]) -> None:
        self.variables = variables


class WeightEMA(tf.Module):
    """Shadow weights averaged over training.

    Args:
      model: the (built) module whose variables are averaged.
      decay: the decay ``d`` in ``(0, 1)``, e.g. 0.999.

    Raises:
      ValueError: for a decay outside ``(0, 1)`` or a model without variables.
    """

    def __init__(self, model: tf.Module, decay: float) -> None:
        super().__init__(name="ema")
        if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0.0 < float(decay) < 1.0 or not math.isfinite(decay):
            raise ValueError(f"Trainer: ema must be a decay in (0, 1) such as 0.999, got {decay!r}")
        self.decay = float(decay)
        variables = [v for v in model.variables if v.dtype.is_floating]
        if not variables:
            raise ValueError("Trainer: ema needs a built model with floating-point variables")
        # Not tracked: the model's variables are checkpointed with the model, not again here.
        self._untracked = _Sources(variables)
        with tf.init_scope():
            self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")
            strategy = tf.distribute.get_strategy()
            shadows = []
            for v in variables:
                with strategy.extended.colocate_vars_with(v):
                    shadows.append(tf.Variable(tf.convert_to_tensor(v), trainable=False, name="shadow"))
            self.shadows = shadows

    def update(self) -> None:
        """Moves every shadow towards its variable (call after an optimizer update)."""
        n = tf.cast(self.updates, tf.float32)
        d = tf.minimum(tf.constant(self.decay, tf.float32), (1.0 + n) / (10.0 + n))
        for s, v in zip(self.shadows, self._untracked.variables):
            value = tf.convert_to_tensor(v)
            s.assign(tf.cast(d, s.dtype) * tf.convert_to_tensor(s) + tf.cast(1.0 - d, s.dtype) * value)
        self.updates.assign_add(1)

    def copy_to(self, model: Any = None) -> None:
        """Writes the averaged weights into the model's variables.

        Args:
          model: another instance of the same architecture (default: the averaged model).
        """
        targets = self._untracked.variables if model is None else [v for v in model.variables if v.dtype.is_floating]
        if len(targets) != len(self.shadows):
            raise ValueError(f"WeightEMA: the model has {len(targets)} floating variables, the average {len(self.shadows)}")
        for t, s in zip(targets, self.shadows):
            t.assign(tf.convert_to_tensor(s))

    @contextlib.contextmanager
    def averaged(self) -> Iterator[None]:
        """Within the block the model holds the averaged weights; the live ones come back after.

        Yields:
          Nothing.
        """
        saved = [tf.identity(v) for v in self._untracked.variables]
        self.copy_to()
        try:
            yield
        finally:
            for v, value in zip(self._untracked.variables, saved):
                v.assign(value)
