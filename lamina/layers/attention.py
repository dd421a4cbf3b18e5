"""Multi-head attention and the pre-norm Transformer encoder block.

Attention logits and the softmax are computed in float32 whatever the input
dtype (bfloat16/float16 inputs are cast back afterwards). Masks are boolean with
``True`` meaning *may attend*; masked logits are replaced by ``-1e9`` (finite),
and after the softmax the weights are multiplied by the mask, so a query whose
keys are *all* masked gets all-zero weights (its attention output is the output
projection's bias) instead of PyTorch's NaNs. Partially masked rows are
unaffected by that product (their masked weights are already exactly 0).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Tuple, Union

import tensorflow as tf

from lamina.layers._utils import positive_int
from lamina.layers.activations import get_activation
from lamina.layers.dropout import Dropout
from lamina.layers.linear import Linear
from lamina.layers.norm import LayerNorm
from lamina.module import InputSpec, Module

__all__ = ["MultiHeadAttention", "TransformerEncoderBlock", "attention_mask", "causal_mask"]

MASK_VALUE = -1e9


def _check_rate(rate: Any, what: str, owner: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise TypeError(f"{owner}: {what} must be a number in [0, 1), got {rate!r}")
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"{owner}: {what} must be in [0, 1), got {rate}")
    return float(rate)


def causal_mask(query_len: Any, key_len: Any, query_offset: Any = None) -> tf.Tensor:
    """The ``(Tq, Tk)`` causal mask: query ``i`` sits at position ``query_offset + i`` and sees keys up to it.

    The default offset ``Tk - Tq`` aligns the queries with the *last* keys
    (bottom-right, as FlashAttention 2 >= 2.1 and PyTorch's
    ``torch.nn.attention.bias.causal_lower_right``): a single query decoded
    after ``Tk - 1`` cached keys sees all of them. With ``Tq == Tk`` it is the
    usual lower triangle. Queries before the first key (``Tq > Tk``, or a
    negative offset) see nothing.

    Args:
      query_len: ``Tq`` (int or scalar int tensor).
      key_len: ``Tk`` (int or scalar int tensor).
      query_offset: the position of the first query among the keys (int or
        scalar int tensor); ``None`` for ``Tk - Tq``.

    Returns:
      A ``(Tq, Tk)`` boolean tensor, ``True`` = may attend.
    """
    if query_offset is None:
        query_offset = key_len - query_len
    positions = tf.range(query_len)[:, tf.newaxis] + tf.cast(query_offset, tf.int32)
    return positions >= tf.range(key_len)[tf.newaxis, :]


def attention_mask(
    mask: Optional[Any],
    causal: bool,
    query_len: Any,
    key_len: Any,
    owner: str = "attention_mask",
    query_offset: Any = None,
) -> Optional[tf.Tensor]:
    """Combines a padding / full mask and a causal mask into one ``(B|1, 1, Tq, Tk)`` boolean.

    Args:
      mask: ``None``, a ``(B, Tk)`` key padding mask, a ``(B, Tq, Tk)`` mask or a
        ``(B, heads, Tq, Tk)`` mask; ``True`` = may attend.
      causal: also forbid query ``i`` to attend to keys after its position
        ``query_offset + i`` (:func:`causal_mask`; bottom-right aligned by default).
      query_len: ``Tq`` (int or scalar tensor).
      key_len: ``Tk`` (int or scalar tensor).
      owner: the module description used in error messages.
      query_offset: with ``causal``, the first query's position among the keys
        (default ``Tk - Tq``).

    Returns:
      A boolean tensor broadcastable to ``(B, heads, Tq, Tk)``, or ``None`` when
      nothing is masked.

    Raises:
      ValueError: for a mask of the wrong rank or size, or a ``query_offset``
        without ``causal``.
    """
    if query_offset is not None and not causal:
        raise ValueError(f"{owner}: query_offset only applies to causal attention (causal=True)")
    out = None
    if mask is not None:
        m = tf.convert_to_tensor(mask)
        if m.dtype != tf.bool:
            m = tf.cast(m, tf.bool)
        rank = m.shape.rank
        if rank == 2:
            if isinstance(key_len, int) and m.shape[-1] not in (None, key_len):
                raise ValueError(f"{owner}: a (batch, keys) mask must have {key_len} keys, got shape {m.shape}")
            m = m[:, tf.newaxis, tf.newaxis, :]
        elif rank == 3:
            if isinstance(key_len, int) and m.shape[-1] not in (None, key_len) or (
                isinstance(query_len, int) and m.shape[-2] not in (None, 1, query_len)
            ):
                raise ValueError(
                    f"{owner}: a (batch, queries, keys) mask must have shape (B, {query_len}, {key_len}), got {m.shape}"
                )
            m = m[:, tf.newaxis]
        elif rank != 4:
            raise ValueError(
                f"{owner}: mask must have shape (B, Tk), (B, Tq, Tk) or (B, heads, Tq, Tk), got shape {m.shape}"
            )
        out = m
    if causal:
        c = causal_mask(query_len, key_len, query_offset)[tf.newaxis, tf.newaxis]
        out = c if out is None else tf.logical_and(out, c)
    return out


class MultiHeadAttention(Module):
    """Multi-head scaled dot-product attention.

    ``softmax(q k^T / sqrt(key_size)) v`` per head, with
    ``q = query W_q``, ``k = key W_k``, ``v = value W_v`` (each split into
    ``num_heads`` heads) and the heads' concatenation projected by ``W_o``.

    Sub-modules (lazy ``Linear`` s): ``query_proj`` ``(Dq, heads*key_size)``,
    ``key_proj`` ``(Dk, heads*key_size)``, ``value_proj`` ``(Dv, heads*value_size)``,
    ``output_proj`` ``(heads*value_size, output_size)``.

    Args:
      num_heads: number of heads (> 0).
      key_size: size of each head's queries and keys (> 0).
      value_size: size of each head's values (default ``key_size``).
      output_size: output features (default: the query's features).
      dropout: dropout rate on the attention weights while training.
      use_bias: biases in the four projections.
      w_init: weight initializer of the projections (default LeCun normal).
      name: module name.

    Raises:
      ValueError / TypeError: for invalid sizes or rate.
    """

    def __init__(
        self,
        num_heads: int,
        key_size: int,
        value_size: Optional[int] = None,
        output_size: Optional[int] = None,
        dropout: float = 0.0,
        use_bias: bool = True,
        w_init: Union[None, str, Callable] = None,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        self.num_heads = positive_int(num_heads, "num_heads", owner)
        self.key_size = positive_int(key_size, "key_size", owner)
        self.value_size = positive_int(value_size, "value_size", owner) if value_size is not None else self.key_size
        self.output_size = positive_int(output_size, "output_size", owner) if output_size is not None else None
        self.rate = _check_rate(dropout, "dropout", owner)
        self.use_bias = bool(use_bias)
        self._w_init = w_init
        h = self.num_heads
        self.query_proj = Linear(h * self.key_size, use_bias=use_bias, w_init=w_init, name="query")
        self.key_proj = Linear(h * self.key_size, use_bias=use_bias, w_init=w_init, name="key")
        self.value_proj = Linear(h * self.value_size, use_bias=use_bias, w_init=w_init, name="value")
        self.dropout = Dropout(self.rate, name="attention_dropout") if self.rate > 0 else None
        self.output_proj: Optional[Linear] = None
        self.input_spec = InputSpec(rank=3)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates ``output_proj`` once the query's feature size is known.

        Args:
          input_shape: the query's shape ``(B, Tq, Dq)``.

        Raises:
          ValueError: if ``Dq`` is unknown and no ``output_size`` was given.
        """
        size = self.output_size or input_shape[-1]
        if size is None:
            raise ValueError(self.error(f"the query's feature size must be known at the first call, got shape {input_shape}"))
        self.output_proj = Linear(int(size), use_bias=self.use_bias, w_init=self._w_init, name="output")
        self.input_spec = InputSpec(rank=3, axes={-1: (input_shape[-1], "query features")})

    @staticmethod
    def _like_query(t: Any, query: tf.Tensor) -> tf.Tensor:
        """Converts a key/value (array or tensor) to a tensor in the query's floating dtype."""
        t = tf.convert_to_tensor(t)
        return tf.cast(t, query.dtype) if t.dtype != query.dtype else t

    def _split_heads(self, x: tf.Tensor, size: int) -> tf.Tensor:
        """``(B, T, heads*size)`` -> ``(B, heads, T, size)``."""
        shape = tf.shape(x)
        x = tf.reshape(x, tf.stack([shape[0], shape[1], self.num_heads, size]))
        return tf.transpose(x, [0, 2, 1, 3])

    def __call__(
        self,
        query: tf.Tensor,
        key: Optional[tf.Tensor] = None,
        value: Optional[tf.Tensor] = None,
        mask: Optional[Any] = None,
        causal: bool = False,
        training: Any = False,
        return_weights: bool = False,
        query_offset: Any = None,
    ) -> Union[tf.Tensor, Tuple[tf.Tensor, tf.Tensor]]:
        """Attends from ``query`` to ``key``/``value``.

        Args:
          query: ``(B, Tq, Dq)``.
          key: ``(B, Tk, Dk)``; defaults to ``query`` (self-attention).
          value: ``(B, Tk, Dv)``; defaults to ``key``.
          mask: ``None``, a ``(B, Tk)`` key padding mask, or a ``(B, Tq, Tk)``
            (or ``(B, heads, Tq, Tk)``) mask; ``True`` = may attend.
          causal: forbid attending to later keys: query ``i`` sits at position
            ``query_offset + i`` and sees keys ``j <= query_offset + i``; by
            default the queries are the *last* ``Tq`` positions (bottom-right
            alignment), so ``mha(h[:, -1:], h, causal=True)`` equals
            ``mha(h, causal=True)[:, -1:]``.
          training: apply attention dropout.
          return_weights: also return the attention weights ``(B, heads, Tq, Tk)`` (float32).
          query_offset: with ``causal``, the first query's position among the
            keys (int or scalar int tensor; default ``Tk - Tq``).

        Returns:
          ``(B, Tq, output_size)``, or ``(output, weights)`` with ``return_weights``.

        Raises:
          ValueError: for inputs of the wrong rank, mismatched key/value lengths, a bad
            mask, or a ``query_offset`` without ``causal``.
        """
        key = query if key is None else self._like_query(key, query)
        value = key if value is None else self._like_query(value, query)
        for what, t in (("key", key), ("value", value)):
            if t.shape.rank is not None and t.shape.rank != 3:
                raise ValueError(self.error(f"expected {what} of shape (batch, time, features), got shape {t.shape}"))
        if key.shape[1] is not None and value.shape[1] is not None and key.shape[1] != value.shape[1]:
            raise ValueError(self.error(f"key and value must have the same length, got {key.shape[1]} and {value.shape[1]}"))
        q = self._split_heads(self.query_proj(query), self.key_size)
        k = self._split_heads(self.key_proj(key), self.key_size)
        v = self._split_heads(self.value_proj(value), self.value_size)

        logits = tf.matmul(tf.cast(q, tf.float32), tf.cast(k, tf.float32), transpose_b=True)
        logits = logits * (1.0 / math.sqrt(self.key_size))
        tq = query.shape[1] if query.shape[1] is not None else tf.shape(query)[1]
        tk = key.shape[1] if key.shape[1] is not None else tf.shape(key)[1]
        m = attention_mask(mask, causal, tq, tk, self.describe(), query_offset=query_offset)
        if m is not None:
            logits = tf.where(m, logits, tf.constant(MASK_VALUE, tf.float32))
        weights = tf.nn.softmax(logits, axis=-1)
        if m is not None:
            weights = weights * tf.cast(m, weights.dtype)  # all-masked rows -> zeros
        if self.dropout is not None:
            weights = self.dropout(weights, training=training)
        out = tf.matmul(tf.cast(weights, v.dtype), v)  # (B, heads, Tq, value_size)
        out = tf.transpose(out, [0, 2, 1, 3])
        shape = tf.shape(out)
        out = tf.reshape(out, tf.stack([shape[0], shape[1], self.num_heads * self.value_size]))
        out = self.output_proj(out)
        return (out, weights) if return_weights else out


class TransformerEncoderBlock(Module):
    """Pre-norm Transformer encoder block::

        x = x + Dropout(MHA(LN1(x)))
        x = x + Dropout(Linear2(Dropout(GELU(Linear1(LN2(x))))))

    The same computation as ``torch.nn.TransformerEncoderLayer(norm_first=True,
    activation="gelu")``; ``dropout`` is used in the same four places (attention
    weights, after attention, inside the MLP, after the MLP).

    Sub-modules: ``norm1``, ``attention`` (``MultiHeadAttention`` with
    ``key_size = model_dim // num_heads``), ``norm2``, ``fc1`` ``(model_dim, mlp_dim)``,
    ``fc2`` ``(mlp_dim, model_dim)``.

    Args:
      num_heads: attention heads; must divide ``model_dim``.
      model_dim: the input and output feature size.
      mlp_dim: the hidden size of the MLP.
      dropout: dropout rate (0 disables every dropout).
      activation: the MLP's activation (default exact GELU).
      eps: LayerNorm epsilon.
      name: module name.

    Raises:
      ValueError / TypeError: for invalid sizes, rate or activation.
    """

    def __init__(
        self,
        num_heads: int,
        model_dim: int,
        mlp_dim: int,
        dropout: float = 0.1,
        activation: Union[str, Callable] = "gelu",
        eps: float = 1e-5,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        self.num_heads = positive_int(num_heads, "num_heads", owner)
        self.model_dim = positive_int(model_dim, "model_dim", owner)
        self.mlp_dim = positive_int(mlp_dim, "mlp_dim", owner)
        if self.model_dim % self.num_heads:
            raise ValueError(f"{owner}: num_heads ({num_heads}) must divide model_dim ({model_dim})")
        self.rate = _check_rate(dropout, "dropout", owner)
        act = get_activation(activation, owner)
        if act is None:
            raise ValueError(f"{owner}: activation must not be None")
        self.activation = act
        self.norm1 = LayerNorm(eps=eps, name="norm1")
        self.attention = MultiHeadAttention(
            self.num_heads, self.model_dim // self.num_heads, output_size=self.model_dim, dropout=self.rate, name="attention"
        )
        self.norm2 = LayerNorm(eps=eps, name="norm2")
        self.fc1 = Linear(self.mlp_dim, name="fc1")
        self.fc2 = Linear(self.model_dim, name="fc2")
        if self.rate > 0:
            self.dropout_attention = Dropout(self.rate, name="dropout_attention")
            self.dropout_mlp = Dropout(self.rate, name="dropout_mlp")
            self.dropout_out = Dropout(self.rate, name="dropout_out")
        self.input_spec = InputSpec(rank=3, axes={-1: (self.model_dim, "features (model_dim)")})

    def _drop(self, name: str, x: tf.Tensor, training: Any) -> tf.Tensor:
        return getattr(self, name)(x, training=training) if self.rate > 0 else x

    def __call__(self, x: tf.Tensor, mask: Optional[Any] = None, causal: bool = False, training: Any = False) -> tf.Tensor:
        """Applies the block.

        Args:
          x: ``(B, T, model_dim)``.
          mask: attention mask as for :class:`MultiHeadAttention` (``True`` = may attend).
          causal: causal self-attention.
          training: apply dropout.

        Returns:
          ``(B, T, model_dim)``.
        """
        h = self.attention(self.norm1(x), mask=mask, causal=causal, training=training)
        x = x + self._drop("dropout_attention", h, training)
        h = self.activation(self.fc1(self.norm2(x)))
        h = self.fc2(self._drop("dropout_mlp", h, training))
        return x + self._drop("dropout_out", h, training)
