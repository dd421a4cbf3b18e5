"""``GPT``: a decoder-only Transformer language model with cached, compiled generation.

Token embedding (+ learned or sinusoidal positions, or rotary positions inside
attention), ``num_layers`` pre-norm causal :class:`~lamina.layers.attention.TransformerEncoderBlock`
s, a final norm and a linear head over the vocabulary (by default the token
embedding itself, transposed: tied embeddings, as GPT-2).

:meth:`GPT.generate` decodes with one key/value cache per block in fixed-size
``(B, kv_heads, max_len, head_size)`` buffers, inside one ``tf.function``
whose loop over the new tokens is a ``tf.while_loop``: one trace serves every
prompt length, number of new tokens and sampling setting. Sampling is
stateless (Gumbel-max with ``tf.random.stateless_uniform`` noise seeded by
``(seed, step)``), so the same seed gives the same tokens.
"""

from __future__ import annotations

import functools

from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from lamina import initializers
from lamina.layers._utils import positive_int
from lamina.layers.attention import KVCache, TransformerEncoderBlock
from lamina.layers.dropout import Dropout
from lamina.layers.embedding import Embedding
from lamina.layers.linear import Linear
from lamina.layers.norm import LayerNorm, RMSNorm
from lamina.layers.positional import LearnedPositionalEmbedding, RotaryEmbedding, SinusoidalPositionalEmbedding
from lamina.module import InputSpec, Module

__all__ = ["GPT", "filter_logits"]

_POSITIONAL = ("learned", "sinusoidal", "rope")


def filter_logits(logits: tf.Tensor, top_k: Any = 0, top_p: Any = 1.0) -> tf.Tensor:
    """Masks the logits outside the top-``k`` and the top-``p`` nucleus with ``-inf``.

    ``top_k > 0`` keeps the ``k`` largest logits of each row (ties with the
    ``k``-th are kept); ``top_p < 1`` keeps the smallest set of largest-probability
    tokens whose probabilities sum to at least ``p`` (Holtzman et al., 2020; the
    most likely token is always kept). Both may be tensors, so one trace serves
    every setting.

    Args:
      logits: ``(B, V)`` float32.
      top_k: an int (or int32 scalar tensor) in ``[0, V]``; 0 keeps every token.
      top_p: a float (or float32 scalar tensor) in ``(0, 1]``; 1 keeps every token.

    Returns:
      ``(B, V)`` float32 with the filtered-out logits at ``-inf``.
    """
    logits = tf.cast(logits, tf.float32)
    neg_inf = tf.constant(-np.inf, tf.float32)
    top_k = tf.cast(top_k, tf.int32)
    top_p = tf.cast(top_p, tf.float32)

    def filtered() -> tf.Tensor:
        # One sort serves both filters; k and p stay tensors (also under XLA, which needs a static
        # k for tf.math.top_k).
        ordered = tf.sort(logits, axis=-1, direction="DESCENDING")
        kth = tf.gather(ordered, tf.maximum(top_k, 1) - 1, axis=-1)[:, tf.newaxis]
        kth = tf.where(top_k > 0, kth, neg_inf)
        x = tf.where(logits < kth, neg_inf, logits)
        ordered = tf.where(ordered < kth, neg_inf, ordered)
        before = tf.math.cumsum(tf.nn.softmax(ordered, axis=-1), axis=-1, exclusive=True)
        # A token is kept while the probability of the tokens before it is below p.
        threshold = tf.reduce_min(tf.where(before < top_p, ordered, np.inf), axis=-1, keepdims=True)
        threshold = tf.where(top_p < 1.0, threshold, neg_inf)
        return tf.where(x < threshold, neg_inf, x)

    return tf.cond(tf.logical_or(top_k > 0, top_p < 1.0), filtered, lambda: logits)


class GPT(Module):
    """A decoder-only (causal) Transformer language model.

    Pipeline: ``Embedding(vocab_size, model_dim)`` (``embed``), positions
    (``positions``: ``"learned"`` or ``"sinusoidal"`` tables added to the
    embeddings, or ``"rope"``: rotary embeddings applied to the queries and keys
    of every block), ``Dropout``, ``num_layers`` pre-norm causal blocks
    (``blocks``), a final norm (``norm``) and the logits: ``h @ embed^T`` with
    ``tie_embeddings`` (GPT-2), else a ``Linear`` ``head``.

    Call it on token ids ``(B, T)`` for logits ``(B, T, vocab_size)``; for
    decoding, pass the caches of :meth:`init_cache` and the tokens' position
    (``model(tokens, cache=caches, position=p) -> (logits, caches)``), or use
    :meth:`generate`.

    Args:
      vocab_size: number of token ids (> 0).
      max_len: the longest sequence (prompt + generated tokens); the size of the
        position table and of the decoding caches.
      model_dim: width.
      num_heads: attention heads (must divide ``model_dim``).
      num_layers: number of blocks.
      mlp_dim: hidden size of each block's MLP (default ``4 * model_dim``).
      dropout: dropout rate (embeddings, attention weights, residual branches).
      num_kv_heads: key/value heads (grouped-query attention; default ``num_heads``).
      positional: ``"learned"``, ``"sinusoidal"`` or ``"rope"``.
      tie_embeddings: compute the logits with the token embedding (no ``head``).
      norm: ``"layer"`` (``LayerNorm``, GPT-2) or ``"rms"`` (``RMSNorm``, LLaMA).
      norm_eps: the norms' epsilon.
      name: module name.

    Raises:
      ValueError / TypeError: for invalid arguments, naming the module.
    """

    def __init__(
        self,
        vocab_size: int,
        max_len: int = 256,
        model_dim: int = 256,
        num_heads: int = 4,
        num_layers: int = 4,
        mlp_dim: Optional[int] = None,
        dropout: float = 0.0,
        num_kv_heads: Optional[int] = None,
        positional: str = "learned",
        tie_embeddings: bool = True,
        norm: str = "layer",
        norm_eps: float = 1e-5,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        self.vocab_size = positive_int(vocab_size, "vocab_size", owner)
        self.max_len = positive_int(max_len, "max_len", owner)
        self.model_dim = positive_int(model_dim, "model_dim", owner)
        self.num_heads = positive_int(num_heads, "num_heads", owner)
        self.num_layers = positive_int(num_layers, "num_layers", owner)
        self.mlp_dim = positive_int(mlp_dim, "mlp_dim", owner) if mlp_dim is not None else 4 * self.model_dim
        if self.model_dim % self.num_heads:
            raise ValueError(f"{owner}: num_heads ({num_heads}) must divide model_dim ({model_dim})")
        if positional not in _POSITIONAL:
            raise ValueError(f"{owner}: positional must be one of {list(_POSITIONAL)}, got {positional!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"{owner}: dropout must be a number in [0, 1), got {dropout!r}")
        self.positional = positional
        self.rate = float(dropout)
        self.tie_embeddings = bool(tie_embeddings)
        head_size = self.model_dim // self.num_heads
        self.embed = Embedding(self.vocab_size, self.model_dim, w_init=initializers.Normal(0.0, 0.02), name="embed")
        if positional == "learned":
            self.positions = LearnedPositionalEmbedding(self.max_len, self.model_dim, name="positions")
        elif positional == "sinusoidal":
            self.positions = SinusoidalPositionalEmbedding(self.max_len, name="positions")
        else:
            self.positions = None
        self.embed_dropout = Dropout(self.rate, name="embed_dropout") if self.rate > 0 else None
        self.blocks = [
            TransformerEncoderBlock(
                self.num_heads, self.model_dim, self.mlp_dim, dropout=self.rate, eps=norm_eps,
                num_kv_heads=num_kv_heads, norm=norm,
                rotary=RotaryEmbedding(head_size, name="rotary") if positional == "rope" else None, name=f"block_{i}",
            )
            for i in range(self.num_layers)
        ]
        self.num_kv_heads = self.blocks[0].attention.num_kv_heads
        self.norm = (RMSNorm(eps=norm_eps, name="final_norm") if norm == "rms"
                     else LayerNorm(eps=norm_eps, name="final_norm"))
        self.head = None if self.tie_embeddings else Linear(self.vocab_size, use_bias=False, name="head")
        self._generate_fns: dict = {}
        self.input_spec = InputSpec(rank=2, floating=False)

    # ------------------------------------------------------------- forward
    def init_cache(self, batch_size: Union[int, tf.Tensor], dtype: tf.DType = tf.float32) -> Tuple[KVCache, ...]:
        """Empty decoding caches, one :class:`KVCache` per block, ``max_len`` positions each.

        Args:
          batch_size: the batch size.
          dtype: the compute dtype.

        Returns:
          A tuple of ``num_layers`` caches.
        """
        return tuple(block.init_cache(batch_size, self.max_len, dtype) for block in self.blocks)

    def __call__(self, tokens: tf.Tensor, training: Any = False, cache: Optional[Sequence[KVCache]] = None,
                 position: Any = None) -> Any:
        """Next-token logits for every position.

        Args:
          tokens: integer ids ``(B, T)``.
          training: enables dropout.
          cache: the caches of the positions before ``position`` (:meth:`init_cache`);
            ``tokens`` are then the new tokens.
          position: the position of ``tokens[:, 0]`` (an int or int32 scalar
            tensor; required with a cache, 0 without).

        Returns:
          Float32 logits ``(B, T, vocab_size)``; with a cache, ``(logits, caches)``.

        Raises:
          TypeError: for float inputs.
          ValueError: for a sequence past ``max_len`` (known statically), a
            ``position`` without a cache, or a cache of the wrong length.
        """
        if tokens.dtype.is_floating:
            raise TypeError(self.error(f"expected integer token ids, got dtype {tokens.dtype.name}"))
        if cache is not None:
            if position is None:
                raise ValueError(self.error("a cache needs position= (the position of tokens[:, 0])"))
            if len(cache) != self.num_layers:
                raise ValueError(self.error(f"expected {self.num_layers} caches (one per block), got {len(cache)}"))
        elif position is not None:
            raise ValueError(self.error("position= applies to cached decoding (pass cache=model.init_cache(B))"))
        offset = 0 if position is None else position
        h = self.embed(tokens)
        if self.positions is not None:
            h = self.positions(h, offset=offset)
        elif tokens.shape[1] is not None and isinstance(offset, int) and offset + tokens.shape[1] > self.max_len:
            raise ValueError(self.error(f"expected a sequence of at most max_len={self.max_len} steps, got {tokens.shape[1]}"))
        if self.embed_dropout is not None:
            h = self.embed_dropout(h, training=training)
        new_caches = []
        for i, block in enumerate(self.blocks):
            if cache is None:
                h = block(h, causal=True, training=training)
            else:
                h, c = block(h, causal=True, training=training, cache=cache[i], query_offset=position)
                new_caches.append(c)
        h = self.norm(h)
        if self.head is not None:
            logits = self.head(h)
        else:
            logits = tf.matmul(tf.reshape(h, [-1, self.model_dim]), tf.cast(self.embed.embeddings, h.dtype),
                               transpose_b=True)
            shape = tf.shape(h)
            logits = tf.reshape(logits, tf.stack([shape[0], shape[1], self.vocab_size]))
        logits = tf.cast(logits, tf.float32)
        return (logits, tuple(new_caches)) if cache is not None else logits

    # ------------------------------------------------------------- decoding
    def _sample(self, logits: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor, top_p: tf.Tensor,
                seed: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        """One token per row of ``logits`` ``(B, V)``: greedy at temperature 0, else sampled."""

        def sampled() -> tf.Tensor:
            # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits), exactly; unlike
            # StatelessMultinomial it also compiles under XLA. -inf (filtered) logits are never drawn.
            scaled = filter_logits(logits / temperature, top_k, top_p)
            u = tf.random.stateless_uniform(tf.shape(scaled), seed=tf.stack([seed, tf.cast(step, tf.int64)]),
                                            minval=np.finfo(np.float32).tiny, maxval=1.0, alg="philox")
            return tf.argmax(scaled - tf.math.log(-tf.math.log(u)), axis=-1, output_type=tf.int32)

        return tf.cond(temperature > 0, sampled, lambda: tf.argmax(logits, axis=-1, output_type=tf.int32))

    def _one_token(self, token: tf.Tensor, caches: Sequence[KVCache], position: tf.Tensor) -> Any:
        """One cached decoding step: ``(logits (B, 1, V), caches)`` for ``token`` ``(B, 1)`` at ``position``."""
        return self(token, cache=caches, position=position)

    def _token_step(self) -> tf.types.experimental.GenericFunction:
        """:meth:`_one_token` compiled with XLA (fixed shapes: compiled once per batch size)."""
        if "token_step" not in self._generate_fns:
            self._generate_fns["token_step"] = tf.function(self._one_token, jit_compile=True, autograph=False)
        return self._generate_fns["token_step"]

    def _decode_cached(self, prompt: tf.Tensor, new: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor,
                       top_p: tf.Tensor, seed: tf.Tensor, xla_step: bool = True) -> tf.Tensor:
        """The prompt's logits in one call (prefill), then one cached step per new token.

        ``xla_step``: each one-token step runs as one XLA-compiled function (its
        shapes do not depend on the prompt length); the prefill and the sampling
        stay in TensorFlow's kernels.
        """
        batch, length = tf.shape(prompt)[0], tf.shape(prompt)[1]
        logits, caches = self(prompt, cache=self.init_cache(batch), position=tf.constant(0))
        token = self._sample(logits[:, -1], temperature, top_k, top_p, seed, tf.constant(0))
        out = tf.TensorArray(tf.int32, size=new, element_shape=tf.TensorShape([None]))

        step = self._token_step() if xla_step else self._one_token

        def body(i: tf.Tensor, token: tf.Tensor, caches: Any, out: tf.TensorArray) -> Tuple[Any, ...]:
            out = out.write(i - 1, token)
            logits, caches = step(token[:, tf.newaxis], caches, length + i - 1)
            return i + 1, self._sample(logits[:, -1], temperature, top_k, top_p, seed, i), caches, out

        _, token, _, out = tf.while_loop(lambda i, *_: i < new, body, (tf.constant(1), token, caches, out))
        out = out.write(new - 1, token)
        steps = out.stack()  # (new, B)
        if self.vocab_size <= 2**24:
            # Transposed as float32 (exact for ids below 2**24): oneDNN's integer transpose prints a
            # spurious "DT_INT32 only on platforms with AVX-512" error on every CPU.
            new_tokens = tf.cast(tf.transpose(tf.cast(steps, tf.float32)), tf.int32)
        else:
            new_tokens = tf.transpose(steps)
        return tf.concat([prompt, new_tokens], axis=1)

    def _decode_recompute(self, prompt: tf.Tensor, new: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor,
                          top_p: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Reference decoding: the whole sequence re-read at every step (no cache)."""

        def body(i: tf.Tensor, tokens: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
            logits = self(tokens)[:, -1]
            token = self._sample(logits, temperature, top_k, top_p, seed, i)
            return i + 1, tf.concat([tokens, token[:, tf.newaxis]], axis=1)

        _, tokens = tf.while_loop(lambda i, _: i < new, body, (tf.constant(0), prompt),
                                  shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, None])))
        return tokens

    def generate_function(self, use_cache: bool = True, jit_compile: bool = False,
                          xla_step: Optional[bool] = None) -> tf.types.experimental.GenericFunction:
        """The compiled ``tf.function`` behind :meth:`generate` (built once per setting, then reused).

        Its arguments are all tensors (``prompt`` int32 ``(B, P)``, ``max_new_tokens``
        int32, ``temperature`` float32, ``top_k`` int32, ``top_p`` float32, ``seed``
        int64), with an ``input_signature``: one trace serves every call.

        Args:
          use_cache: decode with key/value caches (else re-read the whole sequence each step).
          jit_compile: compile the decoding loop with XLA.
          xla_step: compile each one-token step of cached decoding with XLA
            (see :meth:`generate`); ``None``: on exactly when ``use_cache`` and
            not ``jit_compile``.

        Returns:
          The ``tf.function``.

        Raises:
          ValueError: for ``xla_step=True`` without ``use_cache`` or with ``jit_compile``.
        """
        if xla_step is None:
            xla_step = bool(use_cache) and not jit_compile
        elif xla_step and (not use_cache or jit_compile):
            raise ValueError(f"{self.describe()}: generate: xla_step=True needs use_cache=True and jit_compile=False "
                             f"(got use_cache={use_cache}, jit_compile={jit_compile})")
        key = (bool(use_cache), bool(jit_compile), bool(xla_step))
        if key not in self._generate_fns:
            if use_cache:
                decode = functools.partial(self._decode_cached, xla_step=key[2])
            else:
                decode = self._decode_recompute
            signature = [tf.TensorSpec([None, None], tf.int32, name="prompt"),
                         tf.TensorSpec([], tf.int32, name="max_new_tokens"),
                         tf.TensorSpec([], tf.float32, name="temperature"),
                         tf.TensorSpec([], tf.int32, name="top_k"),
                         tf.TensorSpec([], tf.float32, name="top_p"),
                         tf.TensorSpec([], tf.int64, name="seed")]
            self._generate_fns[key] = tf.function(decode, input_signature=signature, jit_compile=jit_compile,
                                                  autograph=False)
        return self._generate_fns[key]

    def generate(
        self,
        prompt_ids: Any,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: int = 0,
        use_cache: bool = True,
        jit_compile: bool = False,
        xla_step: Optional[bool] = None,
    ) -> np.ndarray:
        """Continues each prompt by ``max_new_tokens`` tokens.

        Args:
          prompt_ids: ``(B, P)`` or ``(P,)`` integer ids (``P >= 1``).
          max_new_tokens: how many tokens to add (>= 1); ``P + max_new_tokens <= max_len``.
          temperature: softmax temperature (> 0), or 0 for greedy decoding (argmax).
          top_k: sample among the ``k`` most likely tokens only (``None``: all).
          top_p: sample within the smallest set of tokens of total probability
            ``>= top_p`` (``None``: all).
          seed: the sampling seed (stateless: the same seed, prompt and
            settings give the same tokens).
          use_cache: decode with key/value caches (default); ``False`` re-reads
            the whole sequence at each step (a reference, much slower).
          jit_compile: compile the decoding loop with XLA (on CPU about 3x faster
            per token; each new prompt shape compiles once more). XLA draws other
            random numbers than the TensorFlow kernels for the same seed (its
            Philox streams differ), so sampled tokens are reproducible per seed
            within one setting; greedy decoding agrees.
          xla_step: with the cache and without ``jit_compile``, run each
            one-token step (the model on one position and its caches) as one
            XLA-compiled function while the prompt's prefill, the loop and the
            sampling stay in TensorFlow's kernels: most of ``jit_compile``'s
            speed, compiled once per batch size rather than per prompt length,
            and the same random streams as without it (the logits agree to
            float rounding). Default: on for cached decoding; ``False`` runs
            every op in TensorFlow's kernels.

        Returns:
          ``(B, P + max_new_tokens)`` int32 (``(P + max_new_tokens,)`` for a 1-D prompt):
          the prompt followed by the new tokens.

        Raises:
          ValueError / TypeError: for bad arguments or a sequence longer than ``max_len``.
        """
        owner = self.describe()
        ids = np.asarray(prompt_ids)
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"{owner}: generate: prompt_ids must be integer token ids, got dtype {ids.dtype}")
        single = ids.ndim == 1
        if single:
            ids = ids[None]
        if ids.ndim != 2 or ids.shape[1] < 1 or ids.shape[0] < 1:
            raise ValueError(f"{owner}: generate: prompt_ids must have shape (batch, length >= 1), got {ids.shape}")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"{owner}: generate: token ids must be in [0, {self.vocab_size}), got {ids.min()}..{ids.max()}")
        new = positive_int(max_new_tokens, "max_new_tokens", f"{owner}: generate")
        if ids.shape[1] + new > self.max_len:
            raise ValueError(f"{owner}: generate: prompt ({ids.shape[1]}) + max_new_tokens ({new}) exceeds "
                             f"max_len={self.max_len}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
            raise ValueError(f"{owner}: generate: temperature must be a number >= 0, got {temperature!r}")
        k = 0 if top_k is None else int(top_k)
        if top_k is not None and (isinstance(top_k, bool) or not 1 <= k <= self.vocab_size):
            raise ValueError(f"{owner}: generate: top_k must be in [1, {self.vocab_size}] or None, got {top_k!r}")
        p = 1.0 if top_p is None else top_p
        if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
            raise ValueError(f"{owner}: generate: top_p must be in (0, 1] or None, got {top_p!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"{owner}: generate: seed must be an int, got {seed!r}")
        if not self.built:
            self(tf.zeros([1, 1], tf.int32))
        fn = self.generate_function(use_cache, jit_compile, xla_step)
        out = fn(tf.constant(ids, tf.int32), tf.constant(new, tf.int32), tf.constant(float(temperature), tf.float32),
                 tf.constant(k, tf.int32), tf.constant(float(p), tf.float32), tf.constant(int(seed), tf.int64))
        out = out.numpy()
        return out[0] if single else out
