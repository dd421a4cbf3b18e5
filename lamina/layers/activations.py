"""Activation functions and their module forms.

``activation=`` arguments across lamina accept ``None``, a callable, or a
case-insensitive name (``"ReLU"``, ``"relu"``, ``"gelu"``, ...), resolved by :func:`get`.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import tensorflow as tf

from lamina.module import Module

__all__ = [
    "relu",
    "relu6",
    "gelu",
    "silu",
    "swish",
    "leaky_relu",
    "elu",
    "tanh",
    "sigmoid",
    "softmax",
    "log_softmax",
    "identity",
    "get_activation",
    "Activation",
    "ReLU",
    "GELU",
    "SiLU",
    "LeakyReLU",
    "ELU",
    "Tanh",
    "Sigmoid",
    "Softmax",
]


def relu(x: tf.Tensor) -> tf.Tensor:
    """``max(x, 0)``."""
    return tf.nn.relu(x)


def relu6(x: tf.Tensor) -> tf.Tensor:
    """``min(max(x, 0), 6)``."""
    return tf.nn.relu6(x)


def gelu(x: tf.Tensor, approximate: bool = False) -> tf.Tensor:
    """Gaussian error linear unit (exact erf form unless ``approximate``)."""
    return tf.nn.gelu(x, approximate=approximate)


def silu(x: tf.Tensor) -> tf.Tensor:
    """``x * sigmoid(x)`` (a.k.a. swish)."""
    return tf.nn.silu(x)


swish = silu


def leaky_relu(x: tf.Tensor, alpha: float = 0.01) -> tf.Tensor:
    """``x`` if positive else ``alpha * x``. PyTorch's default slope 0.01."""
    return tf.nn.leaky_relu(x, alpha=alpha)


def elu(x: tf.Tensor) -> tf.Tensor:
    """Exponential linear unit."""
    return tf.nn.elu(x)


def tanh(x: tf.Tensor) -> tf.Tensor:
    """Hyperbolic tangent."""
    return tf.math.tanh(x)


def sigmoid(x: tf.Tensor) -> tf.Tensor:
    """Logistic sigmoid."""
    return tf.math.sigmoid(x)


def softmax(x: tf.Tensor, axis: int = -1) -> tf.Tensor:
    """Softmax along ``axis``."""
    return tf.nn.softmax(x, axis=axis)


def log_softmax(x: tf.Tensor, axis: int = -1) -> tf.Tensor:
    """Log-softmax along ``axis``."""
    return tf.nn.log_softmax(x, axis=axis)


def identity(x: tf.Tensor) -> tf.Tensor:
    """Returns ``x`` unchanged."""
    return x


_BY_NAME = {
    "relu": relu,
    "relu6": relu6,
    "gelu": gelu,
    "silu": silu,
    "swish": silu,
    "leaky_relu": leaky_relu,
    "leakyrelu": leaky_relu,
    "elu": elu,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "softmax": softmax,
    "log_softmax": log_softmax,
    "linear": identity,
    "identity": identity,
}


def activation_key(activation: Union[None, str, Callable]) -> Optional[str]:
    """The normalized name of an activation given by name (``" ReLU-6"`` -> ``"relu_6"``).

    Args:
      activation: ``None``, a name or a callable.

    Returns:
      The lower-case name with ``-`` as ``_``; ``None`` for ``None`` or a callable.
    """
    return activation.strip().lower().replace("-", "_") if isinstance(activation, str) else None


def get_activation(activation: Union[None, str, Callable], owner: str = "activation") -> Optional[Callable]:
    """Resolves ``activation`` given as ``None``, a case-insensitive name or a callable.

    Args:
      activation: ``None``, a name like ``"ReLU"``, or a callable.
      owner: the module description used in error messages.

    Returns:
      ``None`` or a callable.

    Raises:
      ValueError: for an unknown name. TypeError: for a non-callable.
    """
    if activation is None:
        return None
    if isinstance(activation, str):
        key = activation_key(activation)
        if key not in _BY_NAME:
            raise ValueError(f"{owner}: unknown activation {activation!r}; expected one of {sorted(_BY_NAME)}")
        return _BY_NAME[key]
    if callable(activation):
        return activation
    raise TypeError(f"{owner}: activation must be None, a name or a callable, got {type(activation).__name__}")


class Activation(Module):
    """Applies an activation function as a module (for use in ``Sequential``).

    Args:
      activation: a name (case-insensitive) or callable.
      name: module name.
    """

    def __init__(self, activation: Union[str, Callable], name: Optional[str] = None) -> None:
        super().__init__(name=name)
        fn = get_activation(activation, owner=f"{type(self).__name__}")
        if fn is None:
            raise ValueError(f"{type(self).__name__}: activation must not be None")
        self._fn = fn

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self._fn(x)


class ReLU(Activation):
    """``relu`` as a module."""

    def __init__(self, name: Optional[str] = None) -> None:
        super().__init__(relu, name=name)


class GELU(Activation):
    """``gelu`` as a module.

    Args:
      approximate: use the tanh approximation.
      name: module name.
    """

    def __init__(self, approximate: bool = False, name: Optional[str] = None) -> None:
        super().__init__(lambda x: gelu(x, approximate), name=name)


class SiLU(Activation):
    """``silu`` as a module."""

    def __init__(self, name: Optional[str] = None) -> None:
        super().__init__(silu, name=name)


class LeakyReLU(Activation):
    """``leaky_relu`` as a module.

    Args:
      alpha: slope for negative inputs.
      name: module name.
    """

    def __init__(self, alpha: float = 0.01, name: Optional[str] = None) -> None:
        super().__init__(lambda x: leaky_relu(x, alpha), name=name)


class ELU(Activation):
    """``elu`` as a module."""

    def __init__(self, name: Optional[str] = None) -> None:
        super().__init__(elu, name=name)


class Tanh(Activation):
    """``tanh`` as a module."""

    def __init__(self, name: Optional[str] = None) -> None:
        super().__init__(tanh, name=name)


class Sigmoid(Activation):
    """``sigmoid`` as a module."""

    def __init__(self, name: Optional[str] = None) -> None:
        super().__init__(sigmoid, name=name)


class Softmax(Activation):
    """``softmax`` as a module.

    Args:
      axis: the axis to normalize.
      name: module name.
    """

    def __init__(self, axis: int = -1, name: Optional[str] = None) -> None:
        super().__init__(lambda x: softmax(x, axis), name=name)
