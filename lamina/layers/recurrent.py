"""Recurrent cores (``SimpleRNN``, ``LSTM``, ``GRU``, ``DeepRNN``) and ``unroll``.

A *core* is a lamina :class:`~lamina.module.Module` that computes one time step:
``output, new_state = core(x_t, state)`` with ``x_t`` of shape
``(batch, features)``; ``core.initial_state(batch_size, dtype)`` gives the zero
state. Like every lamina module a core creates its variables at its first call,
from ``x_t``'s shape.

:func:`unroll` runs a core over a whole sequence inside one ``tf.while_loop``, so
one trace of a ``tf.function`` serves every sequence length. ``sequence_length``
masks padded steps: their outputs are zero and the state stops updating, so the
final state is the state after each sequence's last valid step. With
``reverse=True`` each sequence is reversed *within its own length* (like
``tf.reverse_sequence``), so padding stays at the end.

Gate layouts match PyTorch, so weights copy across with a transpose
(``torch weight_ih_l0.T -> input_weights``); see ``docs/sequence.md``:

* ``LSTM``: gates ``[i, f, g, o]``; PyTorch's two biases ``b_ih + b_hh`` sum into ``bias``.
* ``GRU``: gates ``[r, z, n]``; the reset gate multiplies the recurrent
  projection *including its bias*, ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``,
  so ``b_hn`` is kept apart in ``recurrent_bias``.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from lamina import initializers
from lamina.layers._utils import add_bias, cast_like, known_at_build, positive_int
from lamina.layers.activations import get_activation
from lamina.module import InputSpec, Module, builds_first

__all__ = [
    "RNNCore",
    "SimpleRNN",
    "LSTM",
    "LSTMState",
    "GRU",
    "DeepRNN",
    "unroll",
    "Bidirectional",
    "RNN",
]

InitArg = Union[None, str, Callable]


class LSTMState(collections.namedtuple("LSTMState", ["hidden", "cell"])):
    """The state of an :class:`LSTM`: ``hidden`` (``h``) and ``cell`` (``c``), each ``(batch, hidden_size)``."""

    __slots__ = ()


# ---------------------------------------------------------------------- cores
class RNNCore(Module):
    """Base class of recurrent cores: one step ``core(x_t, state) -> (output, new_state)``.

    Subclasses implement :meth:`initial_state` and ``__call__`` and set
    ``output_size`` (the size of the last axis of ``output``).
    """

    output_size: Optional[int] = None

    def initial_state(self, batch_size: Union[int, tf.Tensor], dtype: tf.DType = tf.float32) -> Any:
        """Returns the zero state for a batch.

        Args:
          batch_size: the batch size (an int or a scalar int tensor).
          dtype: the state's dtype.

        Returns:
          A tensor or a nest of tensors, each ``(batch_size, ...)``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement initial_state")

    @builds_first
    def build_for(self, x_t: tf.Tensor) -> None:
        """Builds the core for steps shaped like ``x_t`` without running one (``lm.unroll`` does this first).

        Args:
          x_t: one time step, e.g. ``(batch, features)``.
        """
        del x_t

    def _check_step_input(self, x: tf.Tensor) -> None:
        if x.shape.rank is not None and x.shape.rank != 2:
            raise ValueError(
                self.error(f"expected one time step of shape (batch, features), got shape {x.shape}; "
                           "use lm.unroll or lm.RNN for whole sequences")
            )


class _GatedCore(RNNCore):
    """Shared construction of the cores with ``G`` gates: input/recurrent weights and a bias."""

    _gates = 1

    def __init__(
        self,
        hidden_size: int,
        w_init: InitArg = None,
        recurrent_init: InitArg = None,
        b_init: InitArg = None,
        dtype: tf.DType = tf.float32,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        self.hidden_size = positive_int(hidden_size, "hidden_size", self.describe())
        self.output_size = self.hidden_size
        self.w_init = initializers.get(w_init, initializers.default_weights("kernel"))
        self.recurrent_init = initializers.get(recurrent_init, initializers.default_weights("recurrent"))
        self.b_init = initializers.get(b_init, initializers.default_bias())
        self._dtype = tf.as_dtype(dtype)
        self.input_spec = InputSpec(rank=2)

    def initial_state(self, batch_size: Union[int, tf.Tensor], dtype: tf.DType = tf.float32) -> Any:
        """Returns zeros of shape ``(batch_size, hidden_size)``.

        Args:
          batch_size: the batch size (an int or a scalar int tensor).
          dtype: the state's dtype.

        Returns:
          The zero hidden state.
        """
        return tf.zeros([batch_size, self.hidden_size], dtype)

    def _default_bias(self, size: int) -> tf.Tensor:
        return self.b_init((size,), self._dtype)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates ``input_weights`` ``(in, G*H)``, ``recurrent_weights`` ``(H, G*H)`` and ``bias`` ``(G*H,)``.

        Args:
          input_shape: the shape of ``x_t``, ``(batch, features)``.

        Raises:
          ValueError: if the number of features is unknown.
        """
        features = known_at_build(
            self, input_shape[-1] if input_shape.rank else None, "the number of input features", input_shape
        )
        g, h = self._gates, self.hidden_size
        self.input_weights = tf.Variable(self.w_init((features, g * h), self._dtype), name="input_weights")
        rows = self.output_size or h  # the recurrent input: h, or its projection (LSTM(projection_size))
        self.recurrent_weights = tf.Variable(self.recurrent_init((rows, g * h), self._dtype), name="recurrent_weights")
        self.bias = tf.Variable(self._default_bias(g * h), name="bias")
        self.input_spec = InputSpec(rank=2, axes={-1: (features, "input features")})

    def _check_state(self, state: Any, x: tf.Tensor, size: Optional[int] = None) -> tf.Tensor:
        size = self.hidden_size if size is None else size
        h = tf.convert_to_tensor(state)
        if h.shape.rank is not None and (h.shape.rank != 2 or h.shape[-1] not in (None, size)):
            raise ValueError(self.error(f"expected a state of shape (batch, {size}), got shape {h.shape}"))
        return cast_like(h, x)

    def _project(self, x_t: tf.Tensor, h: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        """The input and recurrent projections ``(x W_i, h W_h)``, in ``x_t``'s dtype."""
        return (
            tf.matmul(x_t, cast_like(self.input_weights, x_t)),
            tf.matmul(h, cast_like(self.recurrent_weights, x_t)),
        )


class SimpleRNN(_GatedCore):
    """Elman recurrent core: ``h' = activation(x W_i + h W_h + b)``; the output is ``h'``.

    Variables: ``input_weights`` ``(in, H)``, ``recurrent_weights`` ``(H, H)``,
    ``bias`` ``(H,)`` (PyTorch's ``b_ih + b_hh``). The state is the tensor ``h``.

    Args:
      hidden_size: ``H``, the state and output size (> 0).
      activation: a name (``"tanh"``, ``"relu"``) or a callable.
      w_init: input-weight initializer (default Glorot uniform).
      recurrent_init: recurrent-weight initializer (default orthogonal).
      b_init: bias initializer (default zeros).
      dtype: the variables' dtype.
      name: module name.

    Raises:
      ValueError / TypeError: for a bad ``hidden_size`` or activation.
    """

    _gates = 1

    def __init__(
        self,
        hidden_size: int,
        activation: Union[str, Callable] = "tanh",
        w_init: InitArg = None,
        recurrent_init: InitArg = None,
        b_init: InitArg = None,
        dtype: tf.DType = tf.float32,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(hidden_size, w_init, recurrent_init, b_init, dtype, name)
        act = get_activation(activation, self.describe())
        if act is None:
            raise ValueError(self.error("activation must not be None"))
        self.activation = act

    def __call__(self, x_t: tf.Tensor, state: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        """Runs one step.

        Args:
          x_t: ``(batch, features)``.
          state: ``h``, ``(batch, H)``.

        Returns:
          ``(h', h')``.

        Raises:
          ValueError: for a wrongly shaped input or state.
        """
        self._check_step_input(x_t)
        h = self._check_state(state, x_t)
        xw, hw = self._project(x_t, h)
        h_new = self.activation(add_bias(xw + hw, cast_like(self.bias, x_t)))
        return h_new, h_new


class LSTM(_GatedCore):
    """Long short-term memory core with PyTorch's gate order ``[i, f, g, o]``.

    ::

        [i, f, g, o] = x W_i + h W_h + b
        c' = sigmoid(f + forget_bias) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(c')

    Variables: ``input_weights`` ``(in, 4H)``, ``recurrent_weights`` ``(H, 4H)``,
    ``bias`` ``(4H,)``. The state is ``LSTMState(hidden=h, cell=c)``; the output is ``h'``.

    ``forget_bias`` is a constant added to the forget gate's pre-activation at
    every step (TensorFlow 1's ``LSTMCell`` style); it defaults to ``0`` so that
    weights copied from ``torch.nn.LSTM`` (bias = ``b_ih + b_hh``) or Sonnet 2's
    ``snt.LSTM`` (``w_i``, ``w_h``, ``b``) reproduce them exactly.
    ``unit_forget_bias`` (default on) instead *initializes* the forget-gate slice
    of ``bias`` to 1 (Keras' ``unit_forget_bias``; Sonnet 2's ``forget_bias=1.0``
    does the same), which helps early training and does not change the formula.

    With ``projection_size=P`` (Sak et al., 2014; ``torch.nn.LSTM(proj_size=P)``)
    the output and hidden state are projected: ``h' = (sigmoid(o) * tanh(c')) W_p``
    with ``projection`` ``(H, P)``; ``recurrent_weights`` is then ``(P, 4H)``, the
    state ``LSTMState(hidden (B, P), cell (B, H))`` and the output ``(B, P)``
    (PyTorch's ``weight_hr_l0`` is ``projection.T``).

    Args:
      hidden_size: ``H`` (> 0).
      forget_bias: constant added to the forget gate pre-activation.
      unit_forget_bias: initialize the forget-gate bias to 1 (ignored when ``b_init`` is given).
      projection_size: ``P`` (> 0), or ``None`` for no projection.
      w_init: input-weight initializer (default Glorot uniform).
      recurrent_init: recurrent-weight initializer (default orthogonal).
      b_init: bias initializer (default zeros, plus ``unit_forget_bias``).
      dtype: the variables' dtype.
      name: module name.

    Raises:
      ValueError / TypeError: for a bad ``hidden_size``.
    """

    _gates = 4

    def __init__(
        self,
        hidden_size: int,
        forget_bias: float = 0.0,
        unit_forget_bias: bool = True,
        w_init: InitArg = None,
        recurrent_init: InitArg = None,
        b_init: InitArg = None,
        dtype: tf.DType = tf.float32,
        name: Optional[str] = None,
        projection_size: Optional[int] = None,
    ) -> None:
        super().__init__(hidden_size, w_init, recurrent_init, b_init, dtype, name)
        self.forget_bias = float(forget_bias)
        self.unit_forget_bias = bool(unit_forget_bias) and b_init is None
        self.projection_size = (positive_int(projection_size, "projection_size", self.describe())
                                if projection_size is not None else None)
        if self.projection_size is not None:
            self.output_size = self.projection_size

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates the weights (and ``projection`` ``(H, P)`` with a projection).

        Args:
          input_shape: the shape of ``x_t``, ``(batch, features)``.
        """
        super().build(input_shape)
        if self.projection_size is not None:
            shape = (self.hidden_size, self.projection_size)
            self.projection = tf.Variable(self.w_init(shape, self._dtype), name="projection")

    def _default_bias(self, size: int) -> tf.Tensor:
        b = self.b_init((size,), self._dtype)
        if self.unit_forget_bias:
            h = self.hidden_size
            b = tf.concat([b[:h], tf.ones((h,), self._dtype), b[2 * h:]], axis=0)
        return b

    def initial_state(self, batch_size: Union[int, tf.Tensor], dtype: tf.DType = tf.float32) -> LSTMState:
        """Returns ``LSTMState`` of zeros, each ``(batch_size, hidden_size)``.

        Args:
          batch_size: the batch size (an int or a scalar int tensor).
          dtype: the state's dtype.

        Returns:
          The zero state.
        """
        cell = super().initial_state(batch_size, dtype)
        hidden = cell if self.projection_size is None else tf.zeros([batch_size, self.projection_size], dtype)
        return LSTMState(hidden, tf.zeros_like(cell))

    def __call__(self, x_t: tf.Tensor, state: Sequence[tf.Tensor]) -> Tuple[tf.Tensor, LSTMState]:
        """Runs one step.

        Args:
          x_t: ``(batch, features)``.
          state: ``LSTMState(h, c)`` (or any pair ``(h, c)``), each ``(batch, H)``.

        Returns:
          ``(h', LSTMState(h', c'))``.

        Raises:
          ValueError: for a wrongly shaped input or state.
        """
        self._check_step_input(x_t)
        if tf.is_tensor(state) or not isinstance(state, (tuple, list)) or len(state) != 2:
            raise ValueError(self.error(f"expected the state to be a pair (hidden, cell), got {type(state).__name__}"))
        h = self._check_state(state[0], x_t, self.output_size)
        c = self._check_state(state[1], x_t)
        xw, hw = self._project(x_t, h)
        gates = add_bias(xw + hw, cast_like(self.bias, x_t))
        h_new, c_new = lstm_update(gates, c, self.forget_bias)
        if self.projection_size is not None:
            h_new = tf.matmul(h_new, cast_like(self.projection, x_t))
        return h_new, LSTMState(h_new, c_new)


def lstm_update(gates: tf.Tensor, cell: tf.Tensor, forget_bias: float = 0.0) -> Tuple[tf.Tensor, tf.Tensor]:
    """The LSTM cell update from the gates' pre-activations ``[i, f, g, o]`` (last axis).

    Args:
      gates: ``(..., 4H)`` pre-activations.
      cell: ``(..., H)`` the previous cell state.
      forget_bias: a constant added to ``f``.

    Returns:
      ``(sigmoid(o) * tanh(c'), c')`` with ``c' = sigmoid(f + forget_bias) * cell + sigmoid(i) * tanh(g)``.
    """
    i, f, g, o = tf.split(gates, 4, axis=-1)
    if forget_bias:
        f = f + tf.cast(forget_bias, f.dtype)
    c_new = tf.sigmoid(f) * cell + tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(c_new), c_new


class GRU(_GatedCore):
    """Gated recurrent unit with PyTorch's gate order ``[r, z, n]`` and formula::

        r  = sigmoid(x W_ir + h W_hr + b_r)
        z  = sigmoid(x W_iz + h W_hz + b_z)
        n  = tanh(x W_in + b_in + r * (h W_hn + b_hn))
        h' = (1 - z) * n + z * h

    The reset gate is applied *after* the recurrent matmul and its bias (as
    PyTorch, cuDNN and Keras' ``reset_after=True`` do), so ``b_hn`` cannot be
    folded into the input bias: it is the separate variable ``recurrent_bias``.

    Variables: ``input_weights`` ``(in, 3H)``, ``recurrent_weights`` ``(H, 3H)``,
    ``bias`` ``(3H,)`` = ``[b_ir + b_hr, b_iz + b_hz, b_in]``, ``recurrent_bias``
    ``(H,)`` = ``b_hn``. The state is the tensor ``h``; the output is ``h'``.

    Args:
      hidden_size: ``H`` (> 0).
      w_init: input-weight initializer (default Glorot uniform).
      recurrent_init: recurrent-weight initializer (default orthogonal).
      b_init: initializer of both biases (default zeros).
      dtype: the variables' dtype.
      name: module name.

    Raises:
      ValueError / TypeError: for a bad ``hidden_size``.
    """

    _gates = 3

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates the weights, ``bias`` ``(3H,)`` and ``recurrent_bias`` ``(H,)``.

        Args:
          input_shape: the shape of ``x_t``, ``(batch, features)``.
        """
        super().build(input_shape)
        self.recurrent_bias = tf.Variable(self.b_init((self.hidden_size,), self._dtype), name="recurrent_bias")

    def __call__(self, x_t: tf.Tensor, state: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        """Runs one step.

        Args:
          x_t: ``(batch, features)``.
          state: ``h``, ``(batch, H)``.

        Returns:
          ``(h', h')``.

        Raises:
          ValueError: for a wrongly shaped input or state.
        """
        self._check_step_input(x_t)
        h = self._check_state(state, x_t)
        xw, gh = self._project(x_t, h)
        gx = add_bias(xw, cast_like(self.bias, x_t))
        xr, xz, xn = tf.split(gx, 3, axis=-1)
        hr, hz, hn = tf.split(gh, 3, axis=-1)
        r = tf.sigmoid(xr + hr)
        z = tf.sigmoid(xz + hz)
        n = tf.tanh(xn + r * add_bias(hn, cast_like(self.recurrent_bias, x_t)))
        h_new = (1 - z) * n + z * h
        return h_new, h_new


def _is_core(layer: Any) -> bool:
    return callable(getattr(layer, "initial_state", None))


def _output_size(layer: Any) -> Optional[int]:
    size = getattr(layer, "output_size", None)
    if size is None:
        size = getattr(layer, "num_units", None)
    return size if isinstance(size, int) else None


class DeepRNN(RNNCore):
    """A stack of cores that is itself a core; its state is the tuple of their states.

    Without skip connections, each layer feeds the next and the output is the
    last layer's. With ``skip_connections=True`` every layer after the first
    receives ``concat([x_t, previous layer's output])`` and the output is the
    concatenation of every layer's output. The list may also hold stateless
    callables (e.g. a ``Linear``), whose state entry is ``()``.

    Args:
      cores: the layers, first to last (at least one).
      skip_connections: see above.
      name: module name.

    Raises:
      ValueError / TypeError: for an empty list or a non-callable entry.
    """

    def __init__(self, cores: Sequence[Callable], skip_connections: bool = False, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        cores = list(cores)
        if not cores:
            raise ValueError(self.error("expected at least one core, got an empty list"))
        for i, c in enumerate(cores):
            if not callable(c):
                raise TypeError(self.error(f"cores[{i}] must be callable, got {type(c).__name__}"))
        self.cores = cores
        self.skip_connections = bool(skip_connections)
        sizes = [_output_size(c) for c in cores]
        if self.skip_connections:
            self.output_size = sum(sizes) if all(s is not None for s in sizes) else None
        else:
            self.output_size = sizes[-1]
        self.input_spec = InputSpec(rank=2)

    def initial_state(self, batch_size: Union[int, tf.Tensor], dtype: tf.DType = tf.float32) -> Tuple[Any, ...]:
        """Returns the tuple of every core's zero state (``()`` for stateless layers).

        Args:
          batch_size: the batch size.
          dtype: the state's dtype.

        Returns:
          A tuple with one entry per layer.
        """
        return tuple(c.initial_state(batch_size, dtype) if _is_core(c) else () for c in self.cores)

    def __call__(self, x_t: tf.Tensor, state: Sequence[Any]) -> Tuple[tf.Tensor, Tuple[Any, ...]]:
        """Runs one step through every layer.

        Args:
          x_t: ``(batch, features)``.
          state: one state per layer, as from :meth:`initial_state`.

        Returns:
          ``(output, new_states)``.

        Raises:
          ValueError: if ``state`` does not have one entry per layer.
        """
        self._check_step_input(x_t)
        if not isinstance(state, (tuple, list)) or len(state) != len(self.cores):
            got = len(state) if isinstance(state, (tuple, list)) else type(state).__name__
            raise ValueError(self.error(f"expected a state with {len(self.cores)} entries (one per layer), got {got}"))
        outputs, new_states = [], []
        h = x_t
        for i, (core, s) in enumerate(zip(self.cores, state)):
            inp = tf.concat([x_t, h], axis=-1) if self.skip_connections and i > 0 else h
            if _is_core(core):
                h, s = core(inp, s)
            else:
                h = core(inp)
            outputs.append(h)
            new_states.append(s)
        out = tf.concat(outputs, axis=-1) if self.skip_connections else h
        return out, tuple(new_states)


# --------------------------------------------------------------------- unroll
def _fix_state(core: Any, template: Any, state: Any, dtype: tf.DType) -> Any:
    """Packs a user initial state into the core's state structure, in ``dtype``."""
    flat_t = tf.nest.flatten(template)
    flat_s = tf.nest.flatten(state)
    if len(flat_t) != len(flat_s):
        raise ValueError(
            f"unroll: initial_state has {len(flat_s)} tensors, expected {len(flat_t)} "
            f"(the structure of {type(core).__name__}.initial_state)"
        )
    flat_s = [tf.cast(tf.convert_to_tensor(s), dtype) for s in flat_s]
    return tf.nest.pack_sequence_as(template, flat_s)


def _ensure_built(core: Any, step_shape: Sequence[int], dtype: tf.DType) -> None:
    """Builds an unbuilt lamina core eagerly for one-example steps of ``step_shape`` (no step is run)."""
    if getattr(core, "built", True):
        return
    with tf.init_scope():
        x = tf.zeros((1, *step_shape), dtype)
        if hasattr(core, "build_for"):
            core.build_for(x)
        else:
            core(x, core.initial_state(1, dtype))


def _batch_mask(valid: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """Reshapes a ``(B,)`` boolean to broadcast against ``like`` ``(B, ...)``."""
    rank = like.shape.rank
    return tf.reshape(valid, [-1] + [1] * (rank - 1)) if rank and rank > 1 else valid


def _check_lengths(sequence_length: Any, num_steps: tf.Tensor, batch: Any) -> tf.Tensor:
    lengths = tf.convert_to_tensor(sequence_length)
    if not lengths.dtype.is_integer:
        raise TypeError(f"unroll: sequence_length must be integers, got dtype {lengths.dtype.name}")
    if lengths.shape.rank is not None and lengths.shape.rank != 1:
        raise ValueError(f"unroll: sequence_length must have shape (batch,), got shape {lengths.shape}")
    if isinstance(batch, int) and lengths.shape[0] is not None and lengths.shape[0] != batch:
        raise ValueError(f"unroll: sequence_length has {lengths.shape[0]} entries, expected one per example ({batch})")
    lengths = tf.cast(lengths, tf.int32)
    tf.debugging.assert_non_negative(lengths, message="unroll: sequence_length must be >= 0")
    tf.debugging.assert_less_equal(
        lengths, tf.cast(num_steps, tf.int32), message="unroll: sequence_length must be <= the number of time steps"
    )
    return lengths


def _reverse(x_tm: tf.Tensor, lengths: Optional[tf.Tensor]) -> tf.Tensor:
    """Reverses time-major ``x_tm`` along time, within each sequence's length if given."""
    if lengths is None:
        return tf.reverse(x_tm, axis=[0])
    return tf.reverse_sequence(x_tm, lengths, seq_axis=0, batch_axis=1)


def _swap_batch_time(x: tf.Tensor) -> tf.Tensor:
    perm = [1, 0] + list(range(2, x.shape.rank))
    return tf.transpose(x, perm)


def unroll(
    core: Callable,
    inputs: tf.Tensor,
    initial_state: Any = None,
    sequence_length: Optional[Any] = None,
    reverse: bool = False,
    time_major: bool = False,
) -> Tuple[tf.Tensor, Any]:
    """Runs ``core`` over every time step of ``inputs`` in one ``tf.while_loop``.

    The loop runs for ``tf.shape(inputs)[time]`` iterations, so a ``tf.function``
    with an ``input_signature`` of unknown length is traced once for all lengths.

    Args:
      core: a recurrent core (``core(x_t, state) -> (output, new_state)`` with
        ``initial_state``). An unbuilt lamina core is built first, eagerly.
      inputs: ``(B, T, F)`` (or ``(T, B, F)`` when ``time_major``), floating (NumPy
        float64 arrays are converted to float32, as lamina modules do); steps
        of higher rank (``(B, T, H, W, C)`` for a ``ConvLSTM2D``) too.
      initial_state: the state before the first step (default
        ``core.initial_state(B, inputs.dtype)``); any nest with the same tensors
        is accepted and cast to ``inputs.dtype``.
      sequence_length: optional ``(B,)`` integer lengths, ``0 <= length <= T``.
        Outputs at steps ``t >= length`` are zero and the state is not updated
        there, so the final state is the state after the last valid step.
      reverse: process each sequence from its last valid step to its first
        (within its own length, like ``tf.reverse_sequence``). Outputs are
        returned in the original time order, padding still at the end.
      time_major: inputs and outputs are ``(T, B, ...)`` instead of ``(B, T, ...)``.

    Returns:
      ``(outputs, final_state)``: outputs ``(B, T, H)`` (``(T, B, H)`` if
      ``time_major``) and the state after the last (valid) step.

    Raises:
      ValueError / TypeError: for inputs of the wrong rank or dtype, a bad
        ``sequence_length`` or an initial state of the wrong structure.
    """
    if not _is_core(core):
        raise TypeError(f"unroll: core must have an initial_state method (a recurrent core), got {type(core).__name__}")
    if isinstance(inputs, np.ndarray) and inputs.dtype == np.float64:
        inputs = inputs.astype(np.float32)  # as lamina modules treat NumPy float64 inputs
    inputs = tf.convert_to_tensor(inputs)
    if not inputs.dtype.is_floating:
        raise TypeError(f"unroll: inputs must be floating-point, got dtype {inputs.dtype.name}")
    if inputs.shape.rank is None or inputs.shape.rank < 3:
        layout = "(T, B, F)" if time_major else "(B, T, F)"
        raise ValueError(f"unroll: inputs must have rank >= 3 {layout} (or (B, T, H, W, C) ...), got shape {inputs.shape}")
    x_tm = inputs if time_major else _swap_batch_time(inputs)
    num_steps = tf.shape(x_tm)[0]
    batch = x_tm.shape[1] if x_tm.shape[1] is not None else tf.shape(x_tm)[1]
    step_shape = x_tm.shape[2:]
    if not step_shape.is_fully_defined():
        raise ValueError(f"unroll: the shape of one step (after batch and time) must be known, got shape {inputs.shape}")
    dtype = inputs.dtype
    _ensure_built(core, step_shape.as_list(), dtype)

    template = core.initial_state(batch, dtype)
    state = template if initial_state is None else _fix_state(core, template, initial_state, dtype)
    lengths = None if sequence_length is None else _check_lengths(sequence_length, num_steps, batch)
    if reverse:
        x_tm = _reverse(x_tm, lengths)

    out_size = _output_size(core)
    element_shape = tf.TensorShape([x_tm.shape[1], out_size]) if out_size is not None and x_tm.shape.rank == 3 else None
    inputs_ta = tf.TensorArray(dtype, size=num_steps, element_shape=x_tm.shape[1:]).unstack(x_tm)
    outputs_ta = tf.TensorArray(dtype, size=num_steps, element_shape=element_shape)

    def body(t: tf.Tensor, state: Any, ta: tf.TensorArray) -> Tuple[tf.Tensor, Any, tf.TensorArray]:
        out, new_state = core(inputs_ta.read(t), state)
        new_state = tf.nest.pack_sequence_as(state, tf.nest.flatten(new_state))
        if lengths is not None:
            valid = t < lengths
            out = tf.where(_batch_mask(valid, out), out, tf.zeros_like(out))
            new_state = tf.nest.map_structure(
                lambda n, o: tf.where(_batch_mask(valid, n), n, o), new_state, state
            )
        return t + 1, new_state, ta.write(t, out)

    _, final_state, outputs_ta = tf.while_loop(
        lambda t, *_: t < num_steps, body, (tf.constant(0), state, outputs_ta)
    )
    outputs = outputs_ta.stack()
    if reverse:
        outputs = _reverse(outputs, lengths)
    if not time_major:
        outputs = _swap_batch_time(outputs)
    return outputs, final_state


def _last_output(outputs: tf.Tensor, lengths: Optional[tf.Tensor], reverse: bool) -> tf.Tensor:
    """The output of the last processed step from batch-major ``(B, T, H)`` outputs."""
    if reverse:
        return outputs[:, 0]
    if lengths is None:
        return outputs[:, -1]
    # Padded steps output zeros, so a length-0 sequence yields zeros at index 0.
    idx = tf.maximum(tf.cast(lengths, tf.int32) - 1, 0)
    return tf.gather(outputs, idx, axis=1, batch_dims=1)


# ------------------------------------------------------------ bidirectional
_MERGES = ("concat", "sum", "mean", "mul")


class Bidirectional(Module):
    """Runs a forward and a backward core over a sequence and merges their outputs.

    The backward core reads each sequence reversed within its own length, and
    its outputs are put back in the original time order, so at every step ``t``
    the merged output combines the forward core's view of ``x[:t+1]`` and the
    backward core's view of ``x[t:length]`` (as ``torch.nn.LSTM(bidirectional=True)``).

    Args:
      forward_core: the core read left to right.
      backward_core: the core read right to left (must be a different object
        to have separate weights).
      merge: ``"concat"`` (default), ``"sum"``, ``"mean"``, ``"mul"`` or ``None``
        (return the pair ``(forward, backward)``).
      name: module name.

    Raises:
      ValueError / TypeError: for an unknown merge or a non-core.
    """

    def __init__(self, forward_core: Callable, backward_core: Callable, merge: Optional[str] = "concat",
                 name: Optional[str] = None) -> None:
        super().__init__(name=name)
        for what, c in (("forward_core", forward_core), ("backward_core", backward_core)):
            if not _is_core(c):
                raise TypeError(self.error(f"{what} must be a recurrent core (with initial_state), got {type(c).__name__}"))
        if merge is not None and merge not in _MERGES:
            raise ValueError(self.error(f"merge must be one of {list(_MERGES)} or None, got {merge!r}"))
        self.forward_core = forward_core
        self.backward_core = backward_core
        self.merge = merge
        self.input_spec = InputSpec(min_rank=3)

    def merge_outputs(self, fw: tf.Tensor, bw: tf.Tensor) -> Any:
        """Merges forward and backward outputs according to ``merge``.

        Args:
          fw: forward outputs.
          bw: backward outputs (same leading shape).

        Returns:
          The merged tensor, or the pair when ``merge`` is ``None``.
        """
        if self.merge is None:
            return fw, bw
        if self.merge == "concat":
            return tf.concat([fw, bw], axis=-1)
        if self.merge == "sum":
            return fw + bw
        if self.merge == "mean":
            return (fw + bw) / 2
        return fw * bw

    def unroll_both(self, inputs: tf.Tensor, sequence_length: Optional[Any] = None, initial_state: Any = None,
                    time_major: bool = False) -> Tuple[tf.Tensor, tf.Tensor, Tuple[Any, Any]]:
        """Unrolls both directions without merging.

        Args:
          inputs: ``(B, T, F)`` (``(T, B, F)`` if ``time_major``).
          sequence_length: optional ``(B,)`` lengths.
          initial_state: ``None`` or a pair ``(forward_state, backward_state)``.
          time_major: time-major inputs and outputs.

        Returns:
          ``(forward_outputs, backward_outputs, (forward_final, backward_final))``.

        Raises:
          ValueError: for an ``initial_state`` that is not a pair.
        """
        if initial_state is None:
            fw_init = bw_init = None
        else:
            if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 2:
                raise ValueError(self.error("initial_state must be a pair (forward_state, backward_state)"))
            fw_init, bw_init = initial_state
        fw, fw_state = unroll(self.forward_core, inputs, fw_init, sequence_length, reverse=False, time_major=time_major)
        bw, bw_state = unroll(self.backward_core, inputs, bw_init, sequence_length, reverse=True, time_major=time_major)
        return fw, bw, (fw_state, bw_state)

    def __call__(self, inputs: tf.Tensor, sequence_length: Optional[Any] = None, initial_state: Any = None,
                 time_major: bool = False) -> Tuple[Any, Tuple[Any, Any]]:
        """Runs both directions and merges the outputs.

        Args:
          inputs: ``(B, T, F)`` (``(T, B, F)`` if ``time_major``).
          sequence_length: optional ``(B,)`` lengths (padded steps output zeros).
          initial_state: ``None`` or ``(forward_state, backward_state)``.
          time_major: time-major inputs and outputs.

        Returns:
          ``(merged_outputs, (forward_final_state, backward_final_state))``.
        """
        fw, bw, states = self.unroll_both(inputs, sequence_length, initial_state, time_major)
        return self.merge_outputs(fw, bw), states


# ------------------------------------------------------------------------ RNN
class RNN(Module):
    """Applies a core (or a :class:`Bidirectional`) to whole sequences; usable in ``Sequential``.

    Args:
      core: a recurrent core or a ``Bidirectional``.
      return_sequences: return every step's output ``(B, T, H)``; otherwise the
        output of the last processed step ``(B, H)``: step ``length - 1`` going
        forward, step 0 going backward (for ``Bidirectional``: the forward last
        and the backward first, merged).
      return_state: also return the final state, as ``(outputs, state)``.
      reverse: read the sequences backwards (not with ``Bidirectional``).
      time_major: inputs (and sequence outputs) are ``(T, B, ...)``.
      name: module name.

    Raises:
      TypeError / ValueError: for a non-core or ``reverse`` with ``Bidirectional``.
    """

    def __init__(
        self,
        core: Callable,
        return_sequences: bool = True,
        return_state: bool = False,
        reverse: bool = False,
        time_major: bool = False,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        if not (_is_core(core) or isinstance(core, Bidirectional)):
            raise TypeError(self.error(f"core must be a recurrent core or a Bidirectional, got {type(core).__name__}"))
        if reverse and isinstance(core, Bidirectional):
            raise ValueError(self.error("reverse=True makes no sense with a Bidirectional core"))
        self.core = core
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.reverse = bool(reverse)
        self.time_major = bool(time_major)
        self.input_spec = InputSpec(min_rank=3)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Fixes the number of input features.

        Args:
          input_shape: ``(B, T, F)``.

        Raises:
          ValueError: if ``F`` is unknown.
        """
        known_at_build(self, input_shape[-1], "the number of input features", input_shape)
        self.input_spec = InputSpec(rank=input_shape.rank, axes={-1: (input_shape[-1], "input features")})

    def __call__(self, inputs: tf.Tensor, sequence_length: Optional[Any] = None, initial_state: Any = None) -> Any:
        """Runs the core over the sequences.

        Args:
          inputs: ``(B, T, F)`` (``(T, B, F)`` if ``time_major``).
          sequence_length: optional ``(B,)`` lengths; padded steps output zeros.
          initial_state: optional initial state.

        Returns:
          The outputs (see ``return_sequences``), or ``(outputs, final_state)``
          with ``return_state``.
        """
        lengths = None if sequence_length is None else tf.cast(sequence_length, tf.int32)
        if isinstance(self.core, Bidirectional):
            fw, bw, state = self.core.unroll_both(inputs, lengths, initial_state, self.time_major)
            if self.return_sequences:
                out = self.core.merge_outputs(fw, bw)
            else:
                if self.time_major:
                    fw, bw = _swap_batch_time(fw), _swap_batch_time(bw)
                out = self.core.merge_outputs(_last_output(fw, lengths, False), _last_output(bw, lengths, True))
        else:
            out, state = unroll(self.core, inputs, initial_state, lengths, self.reverse, self.time_major)
            if not self.return_sequences:
                out = _last_output(_swap_batch_time(out) if self.time_major else out, lengths, self.reverse)
        return (out, state) if self.return_state else out
