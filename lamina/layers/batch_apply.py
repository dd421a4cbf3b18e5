"""``BatchApply``: applies a module to inputs with several leading (batch-like) dimensions.

``merge_leading_dims(x, num_dims)`` reshapes ``(T, B, ...)`` to ``(T*B, ...)``
and ``split_leading_dim(y, like, num_dims)`` reshapes ``(T*B, ...)`` back to
``(T, B, ...)``; ``BatchApply(module, num_dims)`` does both around the
module (Sonnet's ``snt.BatchApply``), e.g. a ``Conv2D`` over every frame of a
``(B, T, H, W, C)`` video.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf

from lamina.layers._utils import positive_int
from lamina.module import Module, accepts_training

__all__ = ["BatchApply", "merge_leading_dims", "split_leading_dim"]


def _is_tensor(x: Any) -> bool:
    return isinstance(x, (tf.Tensor, tf.Variable, np.ndarray))


def merge_leading_dims(x: Any, num_dims: int = 2) -> Any:
    """Merges the first ``num_dims`` dimensions of ``x`` into one.

    Args:
      x: a tensor (or array); anything else, or a tensor of rank < ``num_dims``,
        is returned unchanged.
      num_dims: how many leading dimensions (>= 1).

    Returns:
      ``(d0 * ... * d{n-1}, *rest)``.

    Raises:
      ValueError: for a tensor of unknown rank or a bad ``num_dims``.
    """
    num_dims = positive_int(num_dims, "num_dims", "merge_leading_dims")
    if not _is_tensor(x):
        return x
    x = tf.convert_to_tensor(x)
    if x.shape.rank is None:
        raise ValueError("merge_leading_dims: cannot merge the leading dimensions of a tensor of unknown rank")
    if x.shape.rank < num_dims:
        return x
    lead = x.shape[:num_dims]
    merged = int(np.prod(lead)) if lead.is_fully_defined() else -1
    if x.shape[num_dims:].is_fully_defined():
        return tf.reshape(x, [merged] + x.shape[num_dims:].as_list())
    return tf.reshape(x, tf.concat([[merged], tf.shape(x)[num_dims:]], 0))


def split_leading_dim(x: Any, like: Any, num_dims: int = 2) -> Any:
    """Splits the first dimension of ``x`` into the first ``num_dims`` dimensions of ``like``.

    Args:
      x: a tensor whose first dimension is ``like``'s leading ones merged;
        anything else is returned unchanged.
      like: the tensor whose leading dimensions to restore.
      num_dims: how many (>= 1).

    Returns:
      ``(*like.shape[:num_dims], *x.shape[1:])``.
    """
    num_dims = positive_int(num_dims, "num_dims", "split_leading_dim")
    if not _is_tensor(x):
        return x
    x, like = tf.convert_to_tensor(x), tf.convert_to_tensor(like)
    static = like.shape[:num_dims].concatenate(x.shape[1:])
    if static.is_fully_defined():
        return tf.reshape(x, static)
    out = tf.reshape(x, tf.concat([tf.shape(like)[:num_dims], tf.shape(x)[1:]], 0))
    out.set_shape(static)
    return out


class BatchApply(Module):
    """Merges the leading ``num_dims`` dimensions of every tensor argument, applies ``module``, splits its outputs.

    Arguments of rank < ``num_dims`` (and non-tensors, e.g. ``training=True``)
    pass unchanged (``training`` is dropped for a module that does not take it); every tensor output gets its first dimension split back to
    the first tensor argument's leading dimensions.

    Args:
      module: a callable (a lamina module, a function).
      num_dims: the number of leading dimensions merged (>= 1; 2 for ``(T, B, ...)``).
      name: module name.

    Raises:
      TypeError / ValueError: for a non-callable or a bad ``num_dims``; at call
        time, without a tensor argument.
    """

    def __init__(self, module: Callable[..., Any], num_dims: int = 2, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        if not callable(module):
            raise TypeError(self.error(f"module must be callable, got {type(module).__name__}"))
        self.module = module
        self.num_dims = positive_int(num_dims, "num_dims", self.describe())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calls ``module`` on the merged arguments.

        Args:
          *args: positional arguments of the module.
          **kwargs: keyword arguments of the module.

        Returns:
          The module's outputs with their leading dimension split.

        Raises:
          ValueError: if no argument is a tensor.
        """
        leaves = [t for t in tf.nest.flatten((args, kwargs)) if _is_tensor(t)]
        if not leaves:
            raise ValueError(self.error("needs at least one tensor argument"))
        like = leaves[0]
        if "training" in kwargs and not accepts_training(self.module):
            kwargs = {k: v for k, v in kwargs.items() if k != "training"}  # e.g. a Conv2D: nothing to switch
        merge = lambda t: merge_leading_dims(t, self.num_dims)  # noqa: E731
        out = self.module(*tf.nest.map_structure(merge, args), **tf.nest.map_structure(merge, kwargs))
        return tf.nest.map_structure(lambda t: split_leading_dim(t, like, self.num_dims), out)
