"""Vector quantization for VQ-VAEs (van den Oord et al., 2017): ``VectorQuantizer`` and ``VectorQuantizerEMA``.

Each vector along the input's last axis is replaced by its nearest codebook
row (squared Euclidean distance). The output passes gradients straight
through to the input (``x + stop_gradient(q - x)``), so an encoder trains
through the discrete bottleneck. Both return a :class:`QuantizerOutput`:

* ``quantized`` — the quantized input (same shape), straight-through;
* ``loss`` — ``VectorQuantizer``: ``mean((q - sg(x))²) + β mean((sg(q) - x)²)``
  (codebook and commitment terms); ``VectorQuantizerEMA``: the commitment term
  ``β mean((sg(q) - x)²)`` only, the codebook following its moving averages;
* ``perplexity`` — ``exp(-Σ p log p)`` of the batch's code usage ``p`` (1 when
  one code serves everything, ``num_embeddings`` when all are used equally);
* ``encodings`` — one-hot codes ``(..., num_embeddings)`` (the input's leading shape;
  Sonnet flattens them to ``(N, num_embeddings)``);
* ``encoding_indices`` — the codes, int64, of the input's leading shape.

The formulas are Sonnet 2's ``snt.nets.VectorQuantizer`` / ``VectorQuantizerEMA``
(the EMA with its zero-debiased moving averages); the codebook is stored as
``(num_embeddings, embedding_dim)`` rows (Sonnet's ``embeddings`` transposed).
Distances, losses and statistics are computed in float32; every floating
output is in the input's dtype.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple, Optional, Union

import tensorflow as tf

from lamina import initializers
from lamina.layers._utils import Training, known_at_build, positive_int, resolve_training
from lamina.module import InputSpec, Module

__all__ = ["VectorQuantizer", "VectorQuantizerEMA", "QuantizerOutput"]


class QuantizerOutput(NamedTuple):
    """What a vector quantizer returns (see the module docstring)."""

    quantized: tf.Tensor
    loss: tf.Tensor
    perplexity: tf.Tensor
    encodings: tf.Tensor
    encoding_indices: tf.Tensor


def _check_float(value: Any, what: str, owner: str, low: float, high: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < low or (high is not None and value > high):
        span = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{owner}: {what} must be a number {span}, got {value!r}")
    return float(value)


class _Quantizer(Module):
    """Shared: the codebook, the nearest-code search and the outputs (private)."""

    _codebook_trainable = True

    def __init__(self, num_embeddings: int, embedding_dim: int, commitment_cost: float,
                 w_init: Union[None, str, Callable], dtype: tf.DType, name: Optional[str]) -> None:
        super().__init__(name=name)
        owner = self.describe()
        self.num_embeddings = positive_int(num_embeddings, "num_embeddings", owner)
        self.embedding_dim = positive_int(embedding_dim, "embedding_dim", owner)
        self.commitment_cost = _check_float(commitment_cost, "commitment_cost", owner, 0.0)
        # Sonnet's default: VarianceScaling(1.0, fan_in, uniform) over its (D, K) embeddings.
        self.w_init = initializers.get(w_init, None) if w_init is not None else None
        self._dtype = tf.as_dtype(dtype)
        self.input_spec = InputSpec(min_rank=2, axes={-1: (self.embedding_dim, "features (embedding_dim)")})

    def _initial_codebook(self) -> tf.Tensor:
        if self.w_init is not None:
            return self.w_init((self.num_embeddings, self.embedding_dim), self._dtype)
        table = initializers.VarianceScaling(1.0, "fan_in", "uniform")((self.embedding_dim, self.num_embeddings),
                                                                        self._dtype)
        return tf.transpose(table)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates ``codebook`` ``(num_embeddings, embedding_dim)``.

        Args:
          input_shape: ``(..., embedding_dim)``.
        """
        known_at_build(self, input_shape[-1], "the feature size", input_shape)
        self.codebook = tf.Variable(self._initial_codebook(), trainable=self._codebook_trainable, name="codebook",
                                    **self._codebook_sync())

    def _codebook_sync(self) -> dict:
        return {}

    def _nearest(self, x: tf.Tensor) -> tuple:
        """``(flat float32 inputs (N, D), indices (N,) int64, one-hot (N, K) float32)``."""
        flat = tf.reshape(tf.cast(x, tf.float32), [-1, self.embedding_dim])
        code = tf.cast(self.codebook, tf.float32)
        distances = (tf.reduce_sum(flat ** 2, 1, keepdims=True) - 2.0 * tf.matmul(flat, code, transpose_b=True)
                     + tf.reduce_sum(code ** 2, 1)[tf.newaxis, :])
        indices = tf.argmax(-distances, axis=1)
        return flat, indices, tf.one_hot(indices, self.num_embeddings, dtype=tf.float32)

    def lookup(self, encoding_indices: Any) -> tf.Tensor:
        """The codebook rows of ``encoding_indices`` (any shape): ``(..., embedding_dim)`` float32.

        Args:
          encoding_indices: integer codes in ``[0, num_embeddings)``.

        Returns:
          The code vectors (e.g. to decode codes sampled from a prior).
        """
        return tf.nn.embedding_lookup(tf.cast(self.codebook, tf.float32), encoding_indices)

    def _outputs(self, x: tf.Tensor, quantized: tf.Tensor, loss: tf.Tensor, encodings: tf.Tensor,
                 indices: tf.Tensor) -> QuantizerOutput:
        xf = tf.cast(x, tf.float32)
        straight = xf + tf.stop_gradient(quantized - xf)
        probs = tf.reduce_mean(encodings, axis=0)
        perplexity = tf.exp(-tf.reduce_sum(probs * tf.math.log(probs + 1e-10)))
        dtype = x.dtype
        lead = tf.shape(x)[:-1]
        encodings = tf.reshape(encodings, tf.concat([lead, [self.num_embeddings]], 0))
        return QuantizerOutput(tf.cast(straight, dtype), tf.cast(loss, dtype), tf.cast(perplexity, dtype),
                               tf.cast(encodings, dtype), tf.reshape(indices, lead))


class VectorQuantizer(_Quantizer):
    """Vector quantization with a learned codebook and the VQ-VAE loss (Sonnet's ``VectorQuantizer``).

    Variable (created at the first call): ``codebook`` ``(num_embeddings,
    embedding_dim)``, trainable: the loss's first term moves the chosen codes
    towards the encoder's outputs.

    Args:
      num_embeddings: the number of codes ``K`` (> 0).
      embedding_dim: the vectors' size ``D`` (the input's last axis).
      commitment_cost: ``β``, the weight of the commitment term (0.25 in the paper).
      w_init: initializer of the codebook (default: uniform with variance
        ``1 / D``, Sonnet's ``VarianceScaling(distribution="uniform")`` of its ``(D, K)`` table).
      dtype: the codebook's dtype.
      name: module name.

    Raises:
      ValueError / TypeError: for invalid sizes or cost; at call time, for an
        input whose last axis is not ``embedding_dim``.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, commitment_cost: float = 0.25,
                 w_init: Union[None, str, Callable] = None, dtype: tf.DType = tf.float32,
                 name: Optional[str] = None) -> None:
        super().__init__(num_embeddings, embedding_dim, commitment_cost, w_init, dtype, name)

    def __call__(self, x: tf.Tensor) -> QuantizerOutput:
        """Quantizes the vectors of ``x``.

        Args:
          x: ``(..., embedding_dim)``, floating.

        Returns:
          A :class:`QuantizerOutput`.
        """
        flat, indices, encodings = self._nearest(x)
        quantized = tf.reshape(self.lookup(indices), tf.shape(x))
        xf = tf.cast(x, tf.float32)
        e_latent = tf.reduce_mean((tf.stop_gradient(quantized) - xf) ** 2)
        q_latent = tf.reduce_mean((quantized - tf.stop_gradient(xf)) ** 2)
        return self._outputs(x, quantized, q_latent + self.commitment_cost * e_latent, encodings, indices)


class VectorQuantizerEMA(_Quantizer):
    """Vector quantization whose codebook follows moving averages of its assigned vectors (Sonnet's ``VectorQuantizerEMA``).

    While training, with ``n_k`` the number of vectors assigned to code ``k``
    and ``m_k`` their sum, zero-debiased moving averages ``N_k`` of ``n_k`` and
    ``M_k`` of ``m_k`` (decay ``decay``) give ``codebook_k = M_k / Ñ_k``, with
    ``Ñ_k = (N_k + ε) / (Σ N + K ε) Σ N`` (Laplace smoothing, so an unused code
    does not divide by zero). The codebook is not trained by gradients; the loss
    is the commitment term only. Under a ``tf.distribute`` strategy the counts
    and sums are all-reduced over the replicas, so every replica makes the
    update one device would make with the global batch.

    Variables (created at the first call, none trainable): ``codebook`` ``(K, D)``,
    ``ema_cluster_size`` ``(K,)`` and ``ema_dw`` ``(K, D)`` (the averages'
    hidden, biased states) and ``ema_steps`` (int64, the updates so far).

    Args:
      num_embeddings: the number of codes ``K`` (> 0).
      embedding_dim: the vectors' size ``D``.
      commitment_cost: ``β`` (0.25 in the paper).
      decay: the moving averages' decay in ``[0, 1]`` (0.99 in the paper).
      epsilon: the Laplace smoothing constant (> 0).
      w_init: initializer of the codebook (default as :class:`VectorQuantizer`).
      dtype: the variables' dtype.
      name: module name.

    Raises:
      ValueError / TypeError: for invalid sizes, cost, decay or epsilon.
    """

    _codebook_trainable = False

    def __init__(self, num_embeddings: int, embedding_dim: int, commitment_cost: float = 0.25, decay: float = 0.99,
                 epsilon: float = 1e-5, w_init: Union[None, str, Callable] = None, dtype: tf.DType = tf.float32,
                 name: Optional[str] = None) -> None:
        super().__init__(num_embeddings, embedding_dim, commitment_cost, w_init, dtype, name)
        owner = self.describe()
        self.decay = _check_float(decay, "decay", owner, 0.0, 1.0)
        self.epsilon = _check_float(epsilon, "epsilon", owner, 0.0)
        if not self.epsilon > 0:
            raise ValueError(f"{owner}: epsilon must be > 0, got {epsilon!r}")

    def _codebook_sync(self) -> dict:
        # Every replica makes the same (all-reduced) update; reading takes the mean of equal copies.
        return dict(synchronization=tf.VariableSynchronization.ON_READ, aggregation=tf.VariableAggregation.MEAN)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates ``codebook`` and the moving averages' state.

        Args:
          input_shape: ``(..., embedding_dim)``.
        """
        super().build(input_shape)
        k, d = self.num_embeddings, self.embedding_dim
        sync = self._codebook_sync()
        self.ema_cluster_size = tf.Variable(tf.zeros([k], self._dtype), trainable=False, name="ema_cluster_size", **sync)
        self.ema_dw = tf.Variable(tf.zeros([k, d], self._dtype), trainable=False, name="ema_dw", **sync)
        # An integer cannot be averaged across replicas; each holds the same count.
        self.ema_steps = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="ema_steps",
                                     synchronization=tf.VariableSynchronization.ON_READ,
                                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def _update(self, flat: tf.Tensor, encodings: tf.Tensor) -> tf.Tensor:
        """Folds the batch into the moving averages and sets the codebook from them (returns an empty tensor, for ``tf.cond``)."""
        counts = tf.reduce_sum(encodings, axis=0)
        dw = tf.matmul(encodings, flat, transpose_a=True)  # (K, D): the sum of each code's vectors
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            counts, dw = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [counts, dw])
        vdtype = self.ema_cluster_size.dtype
        self.ema_steps.assign_add(1)
        self.ema_cluster_size.assign_sub((self.ema_cluster_size - tf.cast(counts, vdtype)) * (1.0 - self.decay))
        self.ema_dw.assign_sub((self.ema_dw - tf.cast(dw, vdtype)) * (1.0 - self.decay))
        debias = 1.0 - tf.pow(tf.constant(self.decay, tf.float32), tf.cast(self.ema_steps, tf.float32))
        size = tf.cast(self.ema_cluster_size, tf.float32) / debias
        total = tf.reduce_sum(size)
        size = (size + self.epsilon) / (total + self.num_embeddings * self.epsilon) * total
        code = (tf.cast(self.ema_dw, tf.float32) / debias) / size[:, tf.newaxis]
        self.codebook.assign(tf.cast(code, self.codebook.dtype))
        return tf.zeros([0], tf.float32)

    def __call__(self, x: tf.Tensor, training: Training = None) -> QuantizerOutput:
        """Quantizes the vectors of ``x``; while training, updates the codebook first.

        As in Sonnet, the codes and the quantized vectors come from the codebook
        before this batch's update.

        Args:
          x: ``(..., embedding_dim)``, floating.
          training: fold this batch into the moving averages (a bool or a
            scalar bool tensor). Not while the module is frozen.

        Returns:
          A :class:`QuantizerOutput`.
        """
        training = resolve_training(training, self.describe())
        if not self.trainable:
            training = False
        flat, indices, encodings = self._nearest(x)
        quantized = tf.reshape(self.lookup(indices), tf.shape(x))  # the codebook before this batch's update
        if training is True:
            self._update(flat, encodings)
        elif training is not False:
            tf.cond(training, lambda: self._update(flat, encodings), lambda: tf.zeros([0], tf.float32))
        e_latent = tf.reduce_mean((tf.stop_gradient(quantized) - tf.cast(x, tf.float32)) ** 2)
        return self._outputs(x, quantized, self.commitment_cost * e_latent, encodings, indices)
