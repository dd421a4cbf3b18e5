"""Containers: ``Sequential`` (layers in order) and ``Residual`` (``f(x) + shortcut(x)``)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, List, Optional, Union, overload

import tensorflow as tf

from lamina.layers.activations import get_activation
from lamina.layers._utils import Training
from lamina.module import Module, call_with_training

__all__ = ["Sequential", "Residual"]


class Sequential(Module):
    """Calls its layers in order, each on the previous one's output.

    ``training`` is passed on to every layer whose ``__call__`` accepts it
    (``BatchNorm``, ``Dropout``, nested containers, ...); the others are called
    with the input alone. Layers may be modules or plain callables such as
    ``tf.nn.relu``. An empty ``Sequential`` is the identity.

    Args:
      layers: the layers, in order.
      name: module name.

    Raises:
      TypeError: if ``layers`` is not a sequence of callables.

    Example:
      >>> net = lm.Sequential([lm.Linear(32), tf.nn.relu, lm.Dropout(0.1), lm.Linear(10)])
      >>> logits = net(x, training=True)
    """

    def __init__(self, layers: Optional[Iterable[Callable]] = None, name: Optional[str] = None) -> None:
        if name is not None and not isinstance(name, str):
            got = type(name).__name__
            raise TypeError(
                f"Sequential: takes one list of layers, Sequential([a, b, ...]); got a {got} as its second "
                f"argument (name must be a string)"
            )
        super().__init__(name=name)
        owner = self.describe()
        if layers is None:
            layers = []
        if isinstance(layers, (str, bytes)) or callable(layers) and not isinstance(layers, (list, tuple)):
            raise TypeError(f"{owner}: layers must be a list of callables, got {type(layers).__name__}")
        try:
            layers = list(layers)
        except TypeError:
            raise TypeError(f"{owner}: layers must be a list of callables, got {type(layers).__name__}") from None
        for i, layer in enumerate(layers):
            if not callable(layer):
                raise TypeError(f"{owner}: layer {i} is not callable: {layer!r}")
        self.layers: List[Callable] = layers

    def __len__(self) -> int:
        """Number of layers."""
        return len(self.layers)

    def __iter__(self) -> Iterator[Callable]:
        """Iterates over the layers."""
        return iter(self.layers)

    @overload
    def __getitem__(self, index: int) -> Callable: ...

    @overload
    def __getitem__(self, index: slice) -> "Sequential": ...

    def __getitem__(self, index: Union[int, slice]) -> Union[Callable, "Sequential"]:
        """Returns a layer, or a new ``Sequential`` sharing the sliced layers.

        Args:
          index: an int or a slice.

        Returns:
          The layer, or a ``Sequential`` of the selected layers (same objects,
          so same variables).

        Raises:
          IndexError: for an index out of range.
        """
        if isinstance(index, slice):
            return Sequential(self.layers[index], name=f"{self.name}_slice")
        try:
            return self.layers[index]
        except IndexError:
            raise IndexError(self.error(f"index {index} out of range for {len(self.layers)} layers")) from None

    def __call__(self, x: Any, training: Training = None) -> Any:
        """Applies the layers in order.

        Args:
          x: the first layer's input.
          training: passed to the layers that take a ``training`` argument.

        Returns:
          The last layer's output (``x`` itself if there are no layers).
        """
        for layer in self.layers:
            x = call_with_training(layer, x, training)
        return x


class Residual(Module):
    """A residual connection: ``activation(module(x) + shortcut(x))``.

    ``training`` is passed on to ``module`` and ``shortcut`` if they accept it.

    Args:
      module: the residual branch.
      shortcut: the skip branch (default: the identity), e.g. a 1x1 ``Conv2D``
        when the shapes change.
      activation: ``None``, an activation name or a callable applied to the sum.
      name: module name.

    Raises:
      TypeError: if ``module`` or ``shortcut`` is not callable, or for a bad activation.
    """

    def __init__(
        self,
        module: Callable,
        shortcut: Optional[Callable] = None,
        activation: Union[None, str, Callable] = None,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        if not callable(module):
            raise TypeError(f"{owner}: module must be callable, got {module!r}")
        if shortcut is not None and not callable(shortcut):
            raise TypeError(f"{owner}: shortcut must be None or callable, got {shortcut!r}")
        self.module = module
        self.shortcut = shortcut
        self.activation = get_activation(activation, owner)

    def __call__(self, x: Any, training: Training = None) -> tf.Tensor:
        """Computes ``activation(module(x) + shortcut(x))``.

        Args:
          x: the input.
          training: passed to the branches that take a ``training`` argument.

        Returns:
          The activated sum.

        Raises:
          ValueError: if the two branches' (static) output shapes differ.
        """
        y = call_with_training(self.module, x, training)
        s = x if self.shortcut is None else call_with_training(self.shortcut, x, training)
        y_shape, s_shape = tf.TensorShape(y.shape), tf.TensorShape(s.shape)
        if not y_shape.is_compatible_with(s_shape):
            raise ValueError(
                self.error(
                    f"the residual branch output shape {y_shape} differs from the shortcut output shape {s_shape}"
                    + (" (pass a shortcut that maps the input to the branch's shape)" if self.shortcut is None else "")
                )
            )
        out = y + tf.cast(s, y.dtype) if s.dtype != y.dtype else y + s
        return self.activation(out) if self.activation is not None else out
