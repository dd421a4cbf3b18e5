"""Rematerialization (gradient checkpointing): ``lm.remat(module)``.

``Remat(block)`` computes ``block`` forward as usual but keeps only its inputs
for the backward pass: the activations inside the block are recomputed when
the gradient is taken (``tf.recompute_grad``). Peak memory of a deep network
then grows with the number of blocks instead of the number of layers, for
about one extra forward pass of compute (measured in ``benchmarks/remat.py``).

Wrap the repeated blocks of a deep model, not single layers::

    blocks = [lm.remat(ResidualBlock(256)) for _ in range(24)]

Stateful layers inside a rematerialized block are recomputed too: dropout
draws its mask again (a different one), so use it with deterministic blocks
or accept that the recomputed forward differs; BatchNorm's moving statistics
are updated by the forward pass only once (the recomputation runs inside the
gradient and its assignments are not replayed by TensorFlow).
"""

from __future__ import annotations

from typing import Any, Optional

import tensorflow as tf

from lamina.module import Module, call_with_training

__all__ = ["Remat", "remat"]


class Remat(Module):
    """Wraps a module so that its activations are recomputed in the backward pass.

    Args:
      module: the module (or callable) to rematerialize; it must take a tensor
        (or a nest of tensors) and may take ``training``.
      name: module name (default ``remat_<module name>``).

    Raises:
      TypeError: if ``module`` is not callable.
    """

    def __init__(self, module: Any, name: Optional[str] = None) -> None:
        if not callable(module):
            raise TypeError(f"Remat: expected a module or callable to wrap, got {type(module).__name__}")
        super().__init__(name=name or f"remat_{getattr(module, 'name', 'fn')}")
        self.module = module

    def __call__(self, x: Any, training: Optional[bool] = False) -> Any:
        """Runs the wrapped module; under a gradient tape only its input is kept.

        The first call of an unbuilt module runs it plainly (it creates its
        variables then); every later call is rematerialized.

        Args:
          x: the input (a tensor or a nest of tensors).
          training: passed on to the module if it takes it.

        Returns:
          The module's output.
        """
        if not getattr(self.module, "built", True):
            return call_with_training(self.module, x, training)

        def forward(*flat: tf.Tensor) -> Any:
            return call_with_training(self.module, tf.nest.pack_sequence_as(x, list(flat)), training)

        return tf.recompute_grad(forward)(*tf.nest.flatten(x))


def remat(module: Any) -> Remat:
    """Returns ``Remat(module)``: gradient checkpointing for one block.

    Args:
      module: the block to rematerialize.

    Returns:
      The wrapping module (it owns the same variables).
    """
    return Remat(module)
