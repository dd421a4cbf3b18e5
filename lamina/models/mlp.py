"""``MLP``: a multilayer perceptron (flattens image inputs)."""

from __future__ import annotations

from typing import Callable, List, Sequence, Union

import tensorflow as tf

from lamina.layers._utils import positive_int
from lamina.layers.activations import get_activation
from lamina.layers.dropout import Dropout
from lamina.layers.linear import Linear
from lamina.layers.norm import BatchNorm
from lamina.layers.reshape import Flatten
from lamina.module import Module

__all__ = ["MLP"]


class MLP(Module):
    """Hidden ``Linear`` layers (+ optional BatchNorm, Dropout), then an output ``Linear``.

    Each hidden layer is ``Linear(h, activation)``, or with ``batch_norm`` ``Linear(h, no bias)``, ``BatchNorm``,
    activation; then ``Dropout(dropout)`` if ``dropout > 0``. The output layer has
    no activation.

    Args:
      hidden_sizes: units of each hidden layer (may be empty: a linear model).
      num_outputs: units of the output layer (> 0).
      activation: hidden activation (name or callable).
      dropout: dropout rate after each hidden layer (0 disables).
      batch_norm: add BatchNorm to each hidden layer.
      flatten: flatten inputs of rank > 2 to ``(N, features)`` first.
      name: module name.

    Raises:
      ValueError / TypeError: for invalid arguments, naming the module.

    Call: ``model(x, training=False)``; returns ``(N, num_outputs)``.
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int],
        num_outputs: int,
        activation: Union[str, Callable] = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        flatten: bool = True,
        name: str = "mlp",
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        hidden_sizes = tuple(hidden_sizes)
        for h in hidden_sizes:
            positive_int(h, "hidden_sizes entries", owner)
        positive_int(num_outputs, "num_outputs", owner)
        if not (0.0 <= float(dropout) < 1.0):
            raise ValueError(f"{owner}: dropout must be in [0, 1), got {dropout!r}")
        self.act = get_activation(activation, owner)
        self.batch_norm = bool(batch_norm)
        self.flatten = Flatten(name="flatten") if flatten else None
        self.linears: List[Linear] = []
        self.norms: List[BatchNorm] = []
        self.dropouts: List[Dropout] = []
        for i, h in enumerate(hidden_sizes):
            self.linears.append(
                Linear(
                    h,
                    use_bias=not self.batch_norm,
                    activation=None if self.batch_norm else self.act,
                    name=f"linear_{i}",
                )
            )
            if self.batch_norm:
                self.norms.append(BatchNorm(name=f"bn_{i}"))
            if dropout:
                self.dropouts.append(Dropout(float(dropout), name=f"dropout_{i}"))
        self.output = Linear(num_outputs, name="output")

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Applies the MLP.

        Args:
          x: ``(N, features)``, or ``(N, ...)`` when ``flatten`` is on.
          training: enables dropout and batch-norm batch statistics.

        Returns:
          ``(N, num_outputs)`` (or ``(..., num_outputs)`` without flattening).
        """
        if self.flatten is not None and x.shape.rank is not None and x.shape.rank > 2:
            x = self.flatten(x)
        for i, linear in enumerate(self.linears):
            x = linear(x)
            if self.batch_norm:
                x = self.norms[i](x, training=training)
                if self.act is not None:
                    x = self.act(x)
            if self.dropouts:
                x = self.dropouts[i](x, training=training)
        return self.output(x)
