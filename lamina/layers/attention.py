"""Scaled dot-product attention, multi-head attention (grouped-query heads, rotary
positions, a key/value cache for decoding) and the pre-norm Transformer block.

Attention logits and the softmax are computed in float32 whatever the input
dtype (bfloat16/float16 inputs are cast back afterwards). Masks are boolean with
``True`` meaning *may attend*; masked logits are replaced by ``-1e9`` (finite),
and after the softmax the weights are multiplied by the mask, so a query whose
keys are *all* masked gets all-zero weights (its attention output is the output
projection's bias) instead of PyTorch's NaNs. Partially masked rows are
unaffected by that product (their masked weights are already exactly 0).

Decoding: :class:`KVCache` holds the keys and values of the positions decoded
so far in fixed-size ``(B, kv_heads, max_len, size)`` buffers, so one
``tf.function`` trace (with the position a tensor) serves every step; a call
with ``cache=`` and ``query_offset=p`` writes the new keys at ``p ..`` and
returns the updated cache.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Tuple, Union

import tensorflow as tf

from lamina.layers._utils import positive_int
from lamina.layers.activations import get_activation
from lamina.layers.dropout import Dropout
from lamina.layers.linear import Linear
from lamina.layers.norm import LayerNorm, RMSNorm
from lamina.layers.positional import RotaryEmbedding
from lamina.module import InputSpec, Module

__all__ = ["MultiHeadAttention", "TransformerEncoderBlock", "KVCache", "attention_mask", "causal_mask",
           "scaled_dot_product_attention"]

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


class KVCache(NamedTuple):
    """The keys and values of the positions decoded so far, in fixed-size buffers.

    Attributes:
      keys: ``(B, kv_heads, max_len, key_size)``; positions not yet written hold zeros.
      values: ``(B, kv_heads, max_len, value_size)``.
    """

    keys: tf.Tensor
    values: tf.Tensor


def _write(buffer: tf.Tensor, new: tf.Tensor, position: Any) -> tf.Tensor:
    """``buffer[:, :, position : position + T] = new`` (functional; traced once for any position).

    A select over the buffer's time axis rather than a dynamic-slice update: the
    same graph runs in TensorFlow's executor and compiles under XLA (whose
    ``TensorStridedSliceUpdate`` needs constant bounds inside a loop).
    """
    length = buffer.shape[2]
    steps = new.shape[2] if new.shape[2] is not None else tf.shape(new)[2]
    offset = tf.range(length) - tf.cast(position, tf.int32)
    inside = tf.logical_and(offset >= 0, offset < steps)[:, tf.newaxis]  # (L, 1): broadcasts over (B, H, L, D)
    new = tf.cast(new, buffer.dtype)
    if new.shape[2] != 1:  # one step broadcasts as it is; more are gathered to their positions
        new = tf.gather(new, tf.clip_by_value(offset, 0, steps - 1), axis=2)
    return tf.where(inside, new, buffer)


def _dims(t: tf.Tensor, axis: int) -> Any:
    """A dimension of ``t``: the static int when known, else a scalar tensor."""
    return t.shape[axis] if t.shape[axis] is not None else tf.shape(t)[axis]


def _attend(
    q: tf.Tensor,
    k: tf.Tensor,
    v: tf.Tensor,
    mask: Optional[tf.Tensor],
    scale: float,
    dropout: Optional[Callable[[tf.Tensor], tf.Tensor]],
) -> Tuple[tf.Tensor, tf.Tensor]:
    """The attention core shared by :func:`scaled_dot_product_attention` and :class:`MultiHeadAttention`.

    ``q`` ``(B, Hq, Tq, D)``, ``k`` ``(B, Hkv, Tk, D)``, ``v`` ``(B, Hkv, Tk, Dv)``
    with ``Hq = G * Hkv``: query head ``h`` reads key/value head ``h // G`` (as
    PyTorch's ``enable_gqa`` / ``repeat_interleave``). The ``G`` query heads of a
    group are folded into the query axis, so keys and values are never copied.

    Returns:
      ``(output (B, Hq, Tq, Dv) in q's dtype, weights (B, Hq, Tq, Tk) float32)``.
    """
    hq, hkv = q.shape[1], k.shape[1]
    group = hq // hkv
    b, tq, tk = _dims(q, 0), _dims(q, 2), _dims(k, 2)
    qf, kf = tf.cast(q, tf.float32), tf.cast(k, tf.float32)
    if group > 1:
        qf = tf.reshape(qf, tf.stack([b, hkv, group * tq, q.shape[-1]]))
    logits = tf.matmul(qf, kf, transpose_b=True) * scale
    if group > 1:
        logits = tf.reshape(logits, tf.stack([b, hq, tq, tk]))
    if mask is not None:
        logits = tf.where(mask, logits, tf.constant(MASK_VALUE, tf.float32))
    weights = tf.nn.softmax(logits, axis=-1)
    if mask is not None:
        weights = weights * tf.cast(mask, weights.dtype)  # all-masked rows -> zeros
    if dropout is not None:
        weights = dropout(weights)
    w = tf.cast(weights, v.dtype)
    if group > 1:
        w = tf.reshape(w, tf.stack([b, hkv, group * tq, tk]))
    out = tf.matmul(w, v)
    if group > 1:
        out = tf.reshape(out, tf.stack([b, hq, tq, v.shape[-1]]))
    return out, weights


def scaled_dot_product_attention(
    query: Any,
    key: Any,
    value: Any,
    mask: Optional[Any] = None,
    causal: bool = False,
    query_offset: Any = None,
    dropout: float = 0.0,
    seed: Any = None,
    scale: Optional[float] = None,
    return_weights: bool = False,
) -> Union[tf.Tensor, Tuple[tf.Tensor, tf.Tensor]]:
    """``softmax(q k^T * scale) v`` over heads, with masks, dropout and grouped-query heads.

    Equals ``torch.nn.functional.scaled_dot_product_attention`` with a boolean
    ``attn_mask`` (``True`` = may attend) and ``enable_gqa=True``, except that a
    query that may attend to nothing gets zero weights instead of NaN, and that
    ``causal=True`` is bottom-right aligned (see :func:`causal_mask`; PyTorch's
    ``is_causal`` is top-left, the same only when ``Tq == Tk``). Logits and
    softmax are float32 whatever the inputs' dtype.

    Args:
      query: ``(B, Hq, Tq, D)``.
      key: ``(B, Hkv, Tk, D)``; ``Hkv`` must divide ``Hq`` (grouped-query
        attention: query head ``h`` uses key/value head ``h // (Hq / Hkv)``).
      value: ``(B, Hkv, Tk, Dv)``.
      mask: ``None``, ``(B, Tk)``, ``(B, Tq, Tk)`` or ``(B, Hq, Tq, Tk)`` booleans.
      causal: query ``i`` sees keys ``j <= query_offset + i``.
      query_offset: the first query's position among the keys (default ``Tk - Tq``).
      dropout: the rate at which attention weights are dropped (inverted
        dropout); needs ``seed``. Pass 0 at inference.
      seed: a ``[2]`` integer seed of the stateless dropout mask (``tf.random.stateless_*``),
        so the same seed drops the same weights.
      scale: the logits' factor (default ``1 / sqrt(D)``).
      return_weights: also return the ``(B, Hq, Tq, Tk)`` float32 weights (after dropout).

    Returns:
      ``(B, Hq, Tq, Dv)`` in the query's dtype, or ``(output, weights)``.

    Raises:
      ValueError: for inputs of the wrong rank, heads that do not group, a bad mask,
        or ``dropout`` without ``seed``.
    """
    owner = "scaled_dot_product_attention"
    q = tf.convert_to_tensor(query)
    k = tf.cast(tf.convert_to_tensor(key), q.dtype)
    v = tf.cast(tf.convert_to_tensor(value), q.dtype)
    for what, t in (("query", q), ("key", k), ("value", v)):
        if t.shape.rank != 4:
            raise ValueError(f"{owner}: expected {what} of shape (batch, heads, time, features), got shape {t.shape}")
    hq, hkv = q.shape[1], k.shape[1]
    if hq is None or hkv is None or hq % hkv or v.shape[1] != hkv:
        raise ValueError(f"{owner}: the key/value heads ({hkv}, {v.shape[1]}) must be equal and divide the "
                         f"query heads ({hq})")
    rate = _check_rate(dropout, "dropout", owner)
    if rate > 0 and seed is None:
        raise ValueError(f"{owner}: dropout={rate} needs seed= (a [2] integer seed of the stateless mask)")
    drop = (lambda w: tf.nn.experimental.stateless_dropout(w, rate, seed=seed)) if rate > 0 else None
    tq, tk = _dims(q, 2), _dims(k, 2)
    m = attention_mask(mask, causal, tq, tk, owner, query_offset=query_offset)
    factor = float(scale) if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    out, weights = _attend(q, k, v, m, factor, drop)
    return (out, weights) if return_weights else out


class MultiHeadAttention(Module):
    """Multi-head scaled dot-product attention.

    ``softmax(q k^T / sqrt(key_size)) v`` per head, with
    ``q = query W_q``, ``k = key W_k``, ``v = value W_v`` (each split into
    heads) and the heads' concatenation projected by ``W_o``. With
    ``num_kv_heads < num_heads`` (grouped-query attention; 1 is multi-query
    attention) the keys and values have fewer heads, each shared by
    ``num_heads / num_kv_heads`` query heads. With ``rotary`` the queries and
    keys are rotated by their positions (RoPE) before the dot product.

    Sub-modules (lazy ``Linear`` s): ``query_proj`` ``(Dq, heads*key_size)``,
    ``key_proj`` ``(Dk, kv_heads*key_size)``, ``value_proj`` ``(Dv, kv_heads*value_size)``,
    ``output_proj`` ``(heads*value_size, output_size)``.

    Args:
      num_heads: number of query heads (> 0).
      key_size: size of each head's queries and keys (> 0).
      value_size: size of each head's values (default ``key_size``).
      output_size: output features (default: the query's features).
      dropout: dropout rate on the attention weights while training.
      use_bias: biases in the four projections.
      w_init: weight initializer of the projections (default Glorot uniform, as ``Linear``).
      num_kv_heads: key/value heads (default ``num_heads``); must divide ``num_heads``.
      rotary: a :class:`~lamina.layers.positional.RotaryEmbedding` applied to
        queries and keys (its ``dim`` at most ``key_size``), or ``None``.
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
        num_kv_heads: Optional[int] = None,
        rotary: Optional[RotaryEmbedding] = None,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        self.num_heads = positive_int(num_heads, "num_heads", owner)
        self.key_size = positive_int(key_size, "key_size", owner)
        self.value_size = positive_int(value_size, "value_size", owner) if value_size is not None else self.key_size
        self.output_size = positive_int(output_size, "output_size", owner) if output_size is not None else None
        self.num_kv_heads = (positive_int(num_kv_heads, "num_kv_heads", owner) if num_kv_heads is not None
                             else self.num_heads)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"{owner}: num_kv_heads ({num_kv_heads}) must divide num_heads ({num_heads})")
        if rotary is not None and not isinstance(rotary, RotaryEmbedding):
            raise TypeError(f"{owner}: rotary must be a RotaryEmbedding or None, got {type(rotary).__name__}")
        if rotary is not None and rotary.dim is not None and rotary.dim > self.key_size:
            raise ValueError(f"{owner}: the rotary dim ({rotary.dim}) exceeds key_size ({self.key_size})")
        self.rotary = rotary
        self.rate = _check_rate(dropout, "dropout", owner)
        self.use_bias = bool(use_bias)
        self._w_init = w_init
        h, hkv = self.num_heads, self.num_kv_heads
        self.query_proj = Linear(h * self.key_size, use_bias=use_bias, w_init=w_init, name="query")
        self.key_proj = Linear(hkv * self.key_size, use_bias=use_bias, w_init=w_init, name="key")
        self.value_proj = Linear(hkv * self.value_size, use_bias=use_bias, w_init=w_init, name="value")
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

    def init_cache(self, batch_size: Union[int, tf.Tensor], max_len: int, dtype: tf.DType = tf.float32) -> KVCache:
        """An empty cache for decoding up to ``max_len`` positions.

        Args:
          batch_size: the batch size (int or scalar int tensor).
          max_len: the buffers' length (the longest sequence decoded).
          dtype: the buffers' dtype (the compute dtype of the queries).

        Returns:
          A :class:`KVCache` of zeros.
        """
        max_len = positive_int(max_len, "max_len", self.describe())
        shape = [batch_size, self.num_kv_heads, max_len]
        return KVCache(tf.zeros(shape + [self.key_size], dtype), tf.zeros(shape + [self.value_size], dtype))

    @staticmethod
    def _like_query(t: Any, query: tf.Tensor) -> tf.Tensor:
        """Converts a key/value (array or tensor) to a tensor in the query's floating dtype."""
        t = tf.convert_to_tensor(t)
        return tf.cast(t, query.dtype) if t.dtype != query.dtype else t

    @staticmethod
    def _split_heads(x: tf.Tensor, heads: int, size: int) -> tf.Tensor:
        """``(B, T, heads*size)`` -> ``(B, heads, T, size)``."""
        shape = tf.shape(x)
        x = tf.reshape(x, tf.stack([shape[0], shape[1], heads, size]))
        return tf.transpose(x, [0, 2, 1, 3])

    def _check_cache(self, cache: Any, query: tf.Tensor, key: Any, value: Any, query_offset: Any) -> KVCache:
        if key is not None or value is not None:
            raise ValueError(self.error("a cache applies to self-attention: pass the new tokens as query only"))
        if query_offset is None:
            raise ValueError(self.error("a cache needs query_offset= (the position of the first new token)"))
        if not isinstance(cache, (tuple, list)) or len(cache) != 2:
            raise TypeError(self.error(f"cache must be a KVCache (keys, values), got {type(cache).__name__}"))
        keys, values = (tf.convert_to_tensor(c) for c in cache)
        for what, t, size in (("keys", keys, self.key_size), ("values", values, self.value_size)):
            if t.shape.rank != 4 or t.shape[1] not in (None, self.num_kv_heads) or t.shape[-1] not in (None, size):
                raise ValueError(self.error(f"expected cache {what} of shape (batch, {self.num_kv_heads}, max_len, {size}), "
                                            f"got {t.shape} (init_cache makes one)"))
        if keys.shape[2] is None:
            raise ValueError(self.error("the cache length (axis 2) must be static (init_cache makes one)"))
        return KVCache(keys, values)

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
        cache: Optional[KVCache] = None,
    ) -> Any:
        """Attends from ``query`` to ``key``/``value`` (or to the cache and the new tokens).

        Args:
          query: ``(B, Tq, Dq)``.
          key: ``(B, Tk, Dk)``; defaults to ``query`` (self-attention).
          value: ``(B, Tk, Dv)``; defaults to ``key``.
          mask: ``None``, a ``(B, Tk)`` key padding mask, or a ``(B, Tq, Tk)``
            (or ``(B, heads, Tq, Tk)``) mask; ``True`` = may attend. With a
            cache, ``Tk`` is the cache's ``max_len``.
          causal: forbid attending to later keys: query ``i`` sits at position
            ``query_offset + i`` and sees keys ``j <= query_offset + i``; by
            default the queries are the *last* ``Tq`` positions (bottom-right
            alignment), so ``mha(h[:, -1:], h, causal=True)`` equals
            ``mha(h, causal=True)[:, -1:]``.
          training: apply attention dropout.
          return_weights: also return the attention weights ``(B, heads, Tq, Tk)`` (float32).
          query_offset: the first query's position among the keys (int or
            scalar int tensor; default ``Tk - Tq``). With a cache: where the
            new keys and values are written (required). Also the queries'
            rotary positions.
          cache: a :class:`KVCache` (from :meth:`init_cache`) holding positions
            ``0 .. query_offset - 1``: the new keys and values are written at
            ``query_offset ..``, and the queries attend to every written
            position (and, with ``causal``, none after their own).

        Returns:
          ``(B, Tq, output_size)``; ``(output, weights)`` with ``return_weights``;
          with a cache, the updated :class:`KVCache` is appended:
          ``(output, cache)`` or ``(output, weights, cache)``.

        Raises:
          ValueError: for inputs of the wrong rank, mismatched key/value lengths, a bad
            mask or cache, or a ``query_offset`` without ``causal`` or a cache.
        """
        if cache is not None:
            cache = self._check_cache(cache, query, key, value, query_offset)
        elif query_offset is not None and not causal:
            raise ValueError(self.error("query_offset only applies to causal attention (causal=True) or with a cache"))
        key = query if key is None else self._like_query(key, query)
        value = key if value is None else self._like_query(value, query)
        for what, t in (("key", key), ("value", value)):
            if t.shape.rank is not None and t.shape.rank != 3:
                raise ValueError(self.error(f"expected {what} of shape (batch, time, features), got shape {t.shape}"))
        if key.shape[1] is not None and value.shape[1] is not None and key.shape[1] != value.shape[1]:
            raise ValueError(self.error(f"key and value must have the same length, got {key.shape[1]} and {value.shape[1]}"))
        q = self._split_heads(self.query_proj(query), self.num_heads, self.key_size)
        k = self._split_heads(self.key_proj(key), self.num_kv_heads, self.key_size)
        v = self._split_heads(self.value_proj(value), self.num_kv_heads, self.value_size)
        tq = _dims(query, 1)
        if cache is not None:
            if self.rotary is not None:
                q, k = self.rotary(q, offset=query_offset), self.rotary(k, offset=query_offset)
            max_len = cache.keys.shape[2]
            tf.debugging.assert_less_equal(
                tf.cast(query_offset, tf.int32) + tf.cast(tq, tf.int32), max_len,
                message=self.error(f"the cache holds {max_len} positions; decoding past its end"))
            cache = KVCache(_write(cache.keys, k, query_offset), _write(cache.values, v, query_offset))
            k, v, tk = tf.cast(cache.keys, q.dtype), tf.cast(cache.values, q.dtype), max_len
            if causal:  # the causal mask also hides the unwritten positions (> query_offset + i)
                m = attention_mask(mask, True, tq, tk, self.describe(), query_offset=query_offset)
            else:  # every written position (< query_offset + Tq) is visible
                written = tf.range(max_len) < tf.cast(query_offset, tf.int32) + tf.cast(tq, tf.int32)
                m = attention_mask(mask, False, tq, tk, self.describe())
                m = written if m is None else tf.logical_and(m, written)
        else:
            tk = _dims(key, 1)
            if self.rotary is not None:
                offset = query_offset if query_offset is not None else tk - tq
                q, k = self.rotary(q, offset=offset), self.rotary(k)
            m = attention_mask(mask, causal, tq, tk, self.describe(), query_offset=query_offset)
        drop = (lambda w: self.dropout(w, training=training)) if self.dropout is not None else None
        out, weights = _attend(q, k, v, m, 1.0 / math.sqrt(self.key_size), drop)
        out = tf.transpose(out, [0, 2, 1, 3])
        shape = tf.shape(out)
        out = tf.reshape(out, tf.stack([shape[0], shape[1], self.num_heads * self.value_size]))
        out = self.output_proj(out)
        result = (out, weights) if return_weights else (out,)
        if cache is not None:
            result = result + (cache,)
        return result if len(result) > 1 else out


_NORMS = {"layer": LayerNorm, "rms": RMSNorm}


class TransformerEncoderBlock(Module):
    """Pre-norm Transformer block (an encoder block; a decoder-only model's block with ``causal=True``)::

        x = x + Dropout(MHA(LN1(x)))
        x = x + Dropout(Linear2(Dropout(GELU(Linear1(LN2(x))))))

    The same computation as ``torch.nn.TransformerEncoderLayer(norm_first=True,
    activation="gelu")``; ``dropout`` is used in the same four places (attention
    weights, after attention, inside the MLP, after the MLP). For decoding, the
    call takes a :class:`KVCache` and the new tokens' position (see
    :meth:`init_cache`).

    Sub-modules: ``norm1``, ``attention`` (``MultiHeadAttention`` with
    ``key_size = model_dim // num_heads``), ``norm2``, ``fc1`` ``(model_dim, mlp_dim)``,
    ``fc2`` ``(mlp_dim, model_dim)``.

    Args:
      num_heads: attention heads; must divide ``model_dim``.
      model_dim: the input and output feature size.
      mlp_dim: the hidden size of the MLP.
      dropout: dropout rate (0 disables every dropout).
      activation: the MLP's activation (default exact GELU).
      eps: the norms' epsilon.
      num_kv_heads: key/value heads of the attention (grouped-query; default ``num_heads``).
      rotary: a ``RotaryEmbedding`` for the attention's queries and keys, or ``None``.
      norm: ``"layer"`` (``LayerNorm``) or ``"rms"`` (``RMSNorm``).
      name: module name.

    Raises:
      ValueError / TypeError: for invalid sizes, rate, activation or norm.
    """

    def __init__(
        self,
        num_heads: int,
        model_dim: int,
        mlp_dim: int,
        dropout: float = 0.1,
        activation: Union[str, Callable] = "gelu",
        eps: float = 1e-5,
        num_kv_heads: Optional[int] = None,
        rotary: Optional[RotaryEmbedding] = None,
        norm: str = "layer",
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
        if norm not in _NORMS:
            raise ValueError(f"{owner}: norm must be one of {sorted(_NORMS)}, got {norm!r}")
        self.norm1 = _NORMS[norm](eps=eps, name="norm1")
        self.attention = MultiHeadAttention(
            self.num_heads, self.model_dim // self.num_heads, output_size=self.model_dim, dropout=self.rate,
            num_kv_heads=num_kv_heads, rotary=rotary, name="attention"
        )
        self.norm2 = _NORMS[norm](eps=eps, name="norm2")
        self.fc1 = Linear(self.mlp_dim, name="fc1")
        self.fc2 = Linear(self.model_dim, name="fc2")
        if self.rate > 0:
            self.dropout_attention = Dropout(self.rate, name="dropout_attention")
            self.dropout_mlp = Dropout(self.rate, name="dropout_mlp")
            self.dropout_out = Dropout(self.rate, name="dropout_out")
        self.input_spec = InputSpec(rank=3, axes={-1: (self.model_dim, "features (model_dim)")})

    def _drop(self, name: str, x: tf.Tensor, training: Any) -> tf.Tensor:
        return getattr(self, name)(x, training=training) if self.rate > 0 else x

    def init_cache(self, batch_size: Union[int, tf.Tensor], max_len: int, dtype: tf.DType = tf.float32) -> KVCache:
        """An empty :class:`KVCache` of the block's attention (see :meth:`MultiHeadAttention.init_cache`).

        Args:
          batch_size: the batch size.
          max_len: the longest sequence decoded.
          dtype: the compute dtype.

        Returns:
          The cache.
        """
        return self.attention.init_cache(batch_size, max_len, dtype)

    def __call__(self, x: tf.Tensor, mask: Optional[Any] = None, causal: bool = False, training: Any = False,
                 cache: Optional[KVCache] = None, query_offset: Any = None) -> Any:
        """Applies the block.

        Args:
          x: ``(B, T, model_dim)``.
          mask: attention mask as for :class:`MultiHeadAttention` (``True`` = may attend).
          causal: causal self-attention.
          training: apply dropout.
          cache: a :class:`KVCache` of the positions before ``query_offset``
            (decoding): ``x`` holds the new tokens.
          query_offset: the position of ``x[:, 0]`` (required with a cache).

        Returns:
          ``(B, T, model_dim)``; with a cache, ``(output, updated cache)``.
        """
        a = self.attention(self.norm1(x), mask=mask, causal=causal, training=training, query_offset=query_offset,
                           cache=cache)
        h, cache = a if cache is not None else (a, None)
        x = x + self._drop("dropout_attention", h, training)
        h = self.activation(self.fc1(self.norm2(x)))
        h = self.fc2(self._drop("dropout_mlp", h, training))
        out = x + self._drop("dropout_out", h, training)
        return (out, cache) if cache is not None else out
