"""Dynamic loss scaling for float16 training: one small piece, used by the step context."""

from __future__ import annotations

import tensorflow as tf

__all__ = ["LossScale"]


class LossScale(tf.Module):
    """Dynamic loss scaling for float16 training.

    The loss is multiplied by ``scale`` before differentiation and the gradients
    divided by it. A step whose gradients are not finite is skipped and the scale
    halved; after ``growth_interval`` finite steps in a row the scale doubles.

    Args:
      initial_scale: the starting scale.
      growth_interval: finite steps before the scale grows.
    """

    def __init__(self, initial_scale: float = 2.0**15, growth_interval: int = 2000) -> None:
        super().__init__(name="loss_scale")
        self.scale = tf.Variable(initial_scale, dtype=tf.float32, trainable=False, name="scale")
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")
        self.growth_interval = growth_interval

    def update(self, grads_finite: tf.Tensor) -> None:
        """Adjusts the scale after a step.

        Args:
          grads_finite: scalar bool, whether every gradient was finite.
        """

        def grow() -> None:
            should_grow = self.good_steps + 1 >= self.growth_interval
            self.scale.assign(tf.where(should_grow, self.scale * 2.0, self.scale))
            self.good_steps.assign(tf.where(should_grow, tf.constant(0, tf.int64), self.good_steps + 1))

        def shrink() -> None:
            self.scale.assign(tf.maximum(self.scale / 2.0, 1.0))
            self.good_steps.assign(0)

        tf.cond(grads_finite, grow, shrink)
