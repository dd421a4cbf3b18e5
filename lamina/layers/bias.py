"""``Bias``: a learned bias added to the input, broadcast over the dimensions it does not keep."""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from lamina import initializers
from lamina.layers._utils import cast_like
from lamina.module import InputSpec, Module

__all__ = ["Bias"]


class Bias(Module):
    """Adds a learned bias ``b`` to the input (Sonnet's ``snt.Bias``).

    ``bias_dims`` names the input axes the bias keeps (batch axis 0 excluded);
    the other axes between the first kept one and the last have size 1 in ``b``
    (broadcast), and the leading ones are dropped. For an ``(N, H, W, C)`` input:
    ``None`` (default) gives ``b`` of shape ``(H, W, C)``, ``[-1]`` gives ``(C,)``,
    ``[1]`` gives ``(H, 1, 1)`` and ``[]`` a scalar.

    Variable (created at the first call): ``bias``.

    Args:
      bias_dims: the kept axes (``None``: every axis but the batch).
      b_init: initializer (default zeros).
      dtype: the variable's dtype.
      name: module name.

    Raises:
      ValueError / TypeError: for axes that are not ints or name the batch axis;
        at the first call, for an axis out of range.
    """

    def __init__(self, bias_dims: Optional[Sequence[int]] = None, b_init: Union[None, str, Callable] = None,
                 dtype: tf.DType = tf.float32, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        owner = self.describe()
        if bias_dims is not None:
            dims = list(bias_dims)
            if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
                raise TypeError(f"{owner}: bias_dims must be a list of ints or None, got {bias_dims!r}")
            if 0 in dims:
                raise ValueError(f"{owner}: bias_dims must not contain 0 (the batch axis), got {bias_dims!r}")
            bias_dims = [int(d) for d in dims]
        self.bias_dims = bias_dims
        self.b_init = initializers.get(b_init, initializers.default_bias())
        self._dtype = tf.as_dtype(dtype)
        self.input_spec = InputSpec(min_rank=2)

    def _kept(self, rank: int) -> List[int]:
        if self.bias_dims is None:
            return list(range(1, rank))
        kept = []
        for d in self.bias_dims:
            p = d + rank if d < 0 else d
            if not 0 < p < rank:
                raise ValueError(self.error(f"bias_dims entry {d} is out of range for an input of rank {rank}"))
            kept.append(p)
        return sorted(set(kept))

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates ``bias`` for the input's shape.

        Args:
          input_shape: ``(N, ...)``, rank >= 2, with the kept axes known.

        Raises:
          ValueError: for an unknown kept dimension or an axis out of range.
        """
        rank = input_shape.rank
        kept = self._kept(rank)
        if any(input_shape[a] is None for a in kept):
            raise ValueError(self.error(f"the kept dimensions {kept} must be known at the first call, got {input_shape}"))
        shape = [int(input_shape[a]) if a in kept else 1 for a in range(kept[0], rank)] if kept else []
        self.bias = tf.Variable(self.b_init(shape, self._dtype), name="bias")
        self.input_spec = InputSpec(rank=rank, axes={a: (int(input_shape[a]), f"elements on axis {a}") for a in kept})

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Returns ``x + bias`` (broadcast).

        Args:
          x: a floating tensor.

        Returns:
          The same shape and dtype as ``x``.
        """
        return x + cast_like(self.bias, x)
