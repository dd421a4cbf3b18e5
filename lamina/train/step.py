"""The train step's context: what a step needs from the ``Trainer``, and nothing more.

A train step is a function ``step(batch, ctx) -> {name: scalar}`` run once per
batch (once per replica under a ``tf.distribute`` strategy) inside the
Trainer's compiled ``tf.function``. It computes its losses under its own
``GradientTape`` s and hands each gradient list to :meth:`StepContext.apply`::

    def gan_step(batch, ctx):
        z = tf.random.normal([ctx.batch_size(batch), 64])
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = generator(ctx.cast(z), training=True)
            real_logits = discriminator(ctx.cast(batch), training=True)
            fake_logits = discriminator(fake, training=True)
            d_loss = ...; g_loss = ...
            d_scaled, g_scaled = ctx.scale_loss(d_loss), ctx.scale_loss(g_loss)
        ctx.apply(d_tape.gradient(d_scaled, discriminator.trainable_variables),
                  discriminator.trainable_variables, optimizer=d_opt)
        ctx.apply(g_tape.gradient(g_scaled, generator.trainable_variables),
                  generator.trainable_variables, optimizer=g_opt)
        return {"d_loss": d_loss, "g_loss": g_loss}

Each concern has one owner here: :meth:`StepContext.scale_loss` scales a
replica's mean loss to its share of the global batch (and by the float16 loss
scale); :meth:`StepContext.apply` unscales, has the optimizer all-reduce the
gradients across replicas (:meth:`lamina.optim.Optimizer.aggregate_gradients`,
the one implementation of aggregation), skips the update when a gradient is
not finite, accumulates over ``grad_accum_steps`` micro-batches, and lets the
optimizer clip and apply (the optimizer owns clipping). Every scalar the step
returns is averaged over the global batch and logged.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import tensorflow as tf

from lamina.optim import clipping

__all__ = ["StepContext", "StepFn"]

StepFn = Callable[[Any, "StepContext"], Dict[str, tf.Tensor]]


def _leading_size(batch: Any) -> tf.Tensor:
    """The leading (batch) dimension of the first tensor in ``batch``, as float32."""
    flat = [t for t in tf.nest.flatten(batch) if hasattr(t, "shape")]
    if not flat:
        raise ValueError(f"Trainer: a batch must contain at least one tensor, got {type(batch).__name__}")
    first = flat[0]
    if first.shape.rank == 0:
        raise ValueError(
            f"Trainer: expected batches with a leading batch dimension, got a scalar {first.dtype.name} tensor; "
            "did you forget .batch() on the dataset?"
        )
    return tf.cast(tf.shape(first)[0], tf.float32)


class StepContext:
    """The Trainer's services for one replica's step.

    Attributes:
      trainer: the :class:`~lamina.train.Trainer` running the step.
      training: always ``True`` in a train step, ``False`` in an eval step.
      local_batch: this replica's number of examples (float32 scalar).
      global_batch: the number of examples over all replicas (float32 scalar).
    """

    def __init__(self, trainer: Any, batch: Any, apply_now: tf.Tensor, training: bool = True) -> None:
        self.trainer = trainer
        self.training = training
        self._apply_now = apply_now
        self._replica = tf.distribute.get_replica_context()
        self._replicas = trainer.num_replicas
        self.local_batch = _leading_size(batch)
        if self._replicas > 1:
            self.global_batch = self._replica.all_reduce(tf.distribute.ReduceOp.SUM, self.local_batch)
        else:
            self.global_batch = self.local_batch
        self._calls = 0
        self.finite: List[tf.Tensor] = []  # one flag per apply() call, identical on every replica

    # ------------------------------------------------------------ precision
    @property
    def compute_dtype(self) -> tf.DType:
        """The dtype models compute in (``float32``, ``bfloat16`` or ``float16``)."""
        return self.trainer.precision.compute_dtype

    def cast(self, x: Any) -> Any:
        """Casts every floating tensor in ``x`` to the compute dtype (integers are left alone).

        Args:
          x: a tensor or a nest of tensors.

        Returns:
          The same structure, cast.
        """
        return self.trainer.cast(x)

    @staticmethod
    def to_float32(x: Any) -> Any:
        """Casts every floating tensor in ``x`` to float32 (outputs, before a loss).

        Args:
          x: a tensor or a nest of tensors.

        Returns:
          The same structure, cast.
        """
        return tf.nest.map_structure(lambda t: tf.cast(t, tf.float32) if t.dtype.is_floating else t, x)

    @staticmethod
    def batch_size(batch: Any) -> tf.Tensor:
        """This replica's number of examples in ``batch`` (int32 scalar)."""
        return tf.cast(_leading_size(batch), tf.int32)

    def random_seed(self, salt: int = 0) -> tf.Tensor:
        """A ``[2]`` int64 seed for stateless random ops (``tf.random.stateless_normal``).

        A pure function of the Trainer's seed, the step, the replica and
        ``salt``, so a resumed run draws the same numbers as an uninterrupted one
        (stateful ``tf.random`` ops restart their sequence after a restart).

        Args:
          salt: distinguishes several draws in one step.

        Returns:
          The seed tensor.
        """
        replica = 0
        if self._replicas > 1:
            replica = self._replica.replica_id_in_sync_group
        base = tf.constant(self.trainer.seed * 1_000_003 + 7919 * int(salt), tf.int64)
        return tf.stack([base + tf.cast(replica, tf.int64), tf.convert_to_tensor(self.trainer.step)])

    # ------------------------------------------------------------- scaling
    def scale_loss(self, loss: tf.Tensor) -> tf.Tensor:
        """Scales a replica's mean loss for differentiation.

        Multiplies by this replica's share of the global batch (so that the
        gradients, summed over replicas, are those of the global-batch mean)
        and by the float16 loss scale when there is one. A replica that got no
        example of a short last batch contributes zero.

        Args:
          loss: a scalar: the mean loss over this replica's examples.

        Returns:
          The loss to differentiate.
        """
        loss = tf.cast(loss, tf.float32)
        if self._replicas > 1:
            loss = tf.where(self.local_batch > 0, loss, tf.zeros_like(loss)) * (self.local_batch / self.global_batch)
        scale = self.trainer.loss_scale
        if scale is not None:
            loss = loss * scale.scale
        return loss

    # --------------------------------------------------------------- apply
    def apply(
        self,
        grads: Sequence[Optional[tf.Tensor]],
        variables: Sequence[tf.Variable],
        optimizer: Any = None,
    ) -> tf.Tensor:
        """Applies gradients of a loss scaled with :meth:`scale_loss`.

        Unscales (float16), all-reduces across replicas, and — when every
        gradient is finite — accumulates (``grad_accum_steps > 1``) or lets
        ``optimizer`` clip and apply them. A step with a non-finite gradient
        changes nothing (the float16 loss scale then shrinks).

        Args:
          grads: one gradient (or ``None``: no update for that variable) per variable.
          variables: the variables, in the same order at every step.
          optimizer: a :class:`lamina.optim.Optimizer`; default the Trainer's.

        Returns:
          A bool scalar: whether the gradients were finite (the same on every replica).

        Raises:
          ValueError: for mismatched lengths or no optimizer.
        """
        trainer = self.trainer
        optimizer = trainer.optimizer if optimizer is None else optimizer
        if optimizer is None:
            raise ValueError("Trainer: ctx.apply() needs an optimizer (the Trainer has none)")
        grads, variables = list(grads), list(variables)
        if len(grads) != len(variables):
            raise ValueError(f"Trainer: ctx.apply() got {len(grads)} gradients for {len(variables)} variables")
        index = self._calls
        self._calls += 1
        # Slots first, outside any branch: under a strategy they are created with a merge_call.
        optimizer.build(variables)
        scale = trainer.loss_scale
        if scale is not None:
            grads = [None if g is None else tf.cast(tf.convert_to_tensor(g), tf.float32) / scale.scale for g in grads]
        if self._replicas > 1:
            grads = optimizer.aggregate_gradients(grads, "sum")
        # A global norm, not a sum: its squares overflow where Adam's second moment
        # (g**2) would, so a huge but finite gradient is refused before it puts inf in a slot.
        finite = tf.math.is_finite(clipping.global_norm(grads))
        self.finite.append(finite)
        accum = trainer.accumulators(index, variables) if trainer.grad_accum_steps > 1 else None

        if accum is None:
            tf.cond(finite, lambda: optimizer.apply(grads, variables, aggregate=None), lambda: None)
            return finite

        def accumulate() -> None:
            for a, g in zip(accum, grads):
                if g is not None:
                    a.assign_add(tf.cast(g, a.dtype))

        def flush() -> None:
            # The mean over the micro-batches (a skipped, non-finite one counts as zero).
            k = float(trainer.grad_accum_steps)
            optimizer.apply([None if g is None else a / k for a, g in zip(accum, grads)], variables, aggregate=None)
            for a in accum:
                a.assign(tf.zeros_like(a))

        tf.cond(finite, accumulate, lambda: None)
        tf.cond(self._apply_now, flush, lambda: None)
        return finite
