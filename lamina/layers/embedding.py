"""``Embedding``: a lookup table from integer ids to dense vectors."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import numpy as np
import tensorflow as tf

from lamina import initializers
from lamina.layers._utils import positive_int
from lamina.module import InputSpec, Module

__all__ = ["Embedding"]


class Embedding(Module):
    """Maps integer ids in ``[0, vocab_size)`` to rows of a ``(vocab_size, dim)`` table.

    Variable (created at the first call): ``embeddings`` of shape ``(vocab_size, dim)``.

    Out-of-range ids raise a ``ValueError`` naming the module when the ids are
    known eagerly; inside a ``tf.function`` a ``tf.debugging`` assertion raises
    ``tf.errors.InvalidArgumentError`` instead (XLA drops the assertion).

    Args:
      vocab_size: number of rows (> 0).
      dim: embedding size (> 0).
      w_init: initializer of the table (default: ``Uniform(-0.05, 0.05)``, Keras',
        ``initializers.default_weights("embedding")``).
      dtype: the table's dtype (and the output's).
      name: module name.

    Raises:
      ValueError / TypeError: for a bad ``vocab_size``, ``dim`` or initializer.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        w_init: Union[None, str, Callable] = None,
        dtype: tf.DType = tf.float32,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        self.vocab_size = positive_int(vocab_size, "vocab_size", owner)
        self.dim = positive_int(dim, "dim", owner)
        self.w_init = initializers.get(w_init, initializers.default_weights("embedding"))
        self._dtype = tf.as_dtype(dtype)
        self.input_spec = InputSpec(floating=False)

    def build(self, input_shape: Any) -> None:
        self.embeddings = tf.Variable(self.w_init((self.vocab_size, self.dim), self._dtype), name="embeddings")

    def __call__(self, ids: Any) -> tf.Tensor:
        """Looks up ``ids``.

        Args:
          ids: an integer tensor (or array / nested list of ints) of any shape.

        Returns:
          A tensor of shape ``ids.shape + (dim,)``.

        Raises:
          TypeError: for non-integer ids.
          ValueError: for ids outside ``[0, vocab_size)`` known eagerly.
        """
        if not tf.is_tensor(ids):
            try:
                ids = tf.convert_to_tensor(ids)
            except (TypeError, ValueError) as e:
                raise TypeError(self.error(f"expected integer ids, got {type(ids).__name__} ({e})")) from None
        dtype = tf.as_dtype(ids.dtype)
        if not dtype.is_integer:
            raise TypeError(self.error(f"expected integer ids, got dtype {dtype.name}"))
        if dtype not in (tf.int32, tf.int64):
            ids = tf.cast(ids, tf.int64)
        if tf.executing_eagerly() and not isinstance(ids, tf.Variable):
            values = ids.numpy()
            if values.size:
                low, high = int(np.min(values)), int(np.max(values))
                if low < 0 or high >= self.vocab_size:
                    bad = low if low < 0 else high
                    raise ValueError(self.error(f"expected ids in [0, {self.vocab_size}), got id {bad}"))
        else:
            message = self.error(f"ids must be in [0, {self.vocab_size})")
            checks = [
                tf.debugging.assert_non_negative(ids, message=message),
                tf.debugging.assert_less(ids, tf.cast(self.vocab_size, ids.dtype), message=message),
            ]
            with tf.control_dependencies(checks):
                ids = tf.identity(ids)
        return tf.nn.embedding_lookup(self.embeddings, ids)
