"""``ConvLSTM2D``: an LSTM core whose gates are convolutions (Shi et al., 2015), for sequences of images.

One step maps ``x_t`` ``(B, H, W, C)`` and the state ``LSTMState(h, c)`` (each
``(B, H, W, filters)``) to the new state::

    [i, f, g, o] = conv(x_t, W_i) + conv(h, W_h) + b        (SAME padding, stride 1)
    c' = sigmoid(f + forget_bias) * c + sigmoid(i) * tanh(g)
    h' = sigmoid(o) * tanh(c')

Run it over ``(B, T, H, W, C)`` sequences with ``lm.unroll`` or ``lm.RNN``. The
gate order and weight layout are Keras' ``ConvLSTM2D``'s (``kernel`` ->
``input_weights``, ``recurrent_kernel`` -> ``recurrent_weights``, ``bias``).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import tensorflow as tf

from lamina import initializers
from lamina.layers._utils import IntOrSeq, add_bias, cast_like, known_at_build, normalize_tuple, positive_int
from lamina.layers.recurrent import InitArg, LSTMState, RNNCore, lstm_update
from lamina.module import InputSpec

__all__ = ["ConvLSTM2D"]


class ConvLSTM2D(RNNCore):
    """Convolutional LSTM core (channels last) with Keras' gate order ``[i, f, g, o]``.

    Variables (created at the first call): ``input_weights`` ``(kh, kw, C, 4F)``,
    ``recurrent_weights`` ``(kh, kw, F, 4F)`` and ``bias`` ``(4F,)``. The state is
    ``LSTMState(hidden, cell)``, each ``(B, H, W, F)``; the output is ``hidden``.

    Args:
      filters: ``F``, the state's channels (> 0).
      kernel_size: int or ``(kh, kw)``, for both convolutions.
      forget_bias: a constant added to the forget gate's pre-activation.
      unit_forget_bias: initialize the forget slice of ``bias`` to 1 (Keras' default;
        ignored when ``b_init`` is given).
      w_init: input-kernel initializer (default Glorot uniform).
      recurrent_init: recurrent-kernel initializer (default orthogonal).
      b_init: bias initializer (default zeros).
      dtype: the variables' dtype.
      name: module name.

    Raises:
      ValueError / TypeError: for invalid sizes; at the first call, for an input
        of unknown spatial size or channels.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: IntOrSeq = 3,
        forget_bias: float = 0.0,
        unit_forget_bias: bool = True,
        w_init: InitArg = None,
        recurrent_init: InitArg = None,
        b_init: InitArg = None,
        dtype: tf.DType = tf.float32,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        self.filters = positive_int(filters, "filters", owner)
        self.kernel_size = normalize_tuple(kernel_size, 2, "kernel_size", owner)
        self.forget_bias = float(forget_bias)
        self.unit_forget_bias = bool(unit_forget_bias) and b_init is None
        self.w_init = initializers.get(w_init, initializers.default_weights("kernel"))
        self.recurrent_init = initializers.get(recurrent_init, initializers.default_weights("recurrent"))
        self.b_init = initializers.get(b_init, initializers.default_bias())
        self._dtype = tf.as_dtype(dtype)
        self.output_size = self.filters
        self.spatial: Optional[Tuple[int, int]] = None
        self.input_spec = InputSpec(rank=4)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates the kernels and the bias; fixes the image size of the state.

        Args:
          input_shape: one step's shape ``(B, H, W, C)``.

        Raises:
          ValueError: if ``H``, ``W`` or ``C`` is unknown.
        """
        if input_shape.rank != 4:
            raise ValueError(self.error(f"expected one step of shape (batch, height, width, channels), got {input_shape}"))
        h = known_at_build(self, input_shape[1], "the image height", input_shape)
        w = known_at_build(self, input_shape[2], "the image width", input_shape)
        c = known_at_build(self, input_shape[3], "the number of input channels", input_shape)
        kh, kw = self.kernel_size
        f = self.filters
        self.input_weights = tf.Variable(self.w_init((kh, kw, c, 4 * f), self._dtype), name="input_weights")
        # Orthogonal over the flattened (kh * kw * F, 4F) matrix, as Keras' recurrent kernel.
        self.recurrent_weights = tf.Variable(self.recurrent_init((kh, kw, f, 4 * f), self._dtype),
                                             name="recurrent_weights")
        b = self.b_init((4 * f,), self._dtype)
        if self.unit_forget_bias:
            b = tf.concat([b[:f], tf.ones((f,), self._dtype), b[2 * f:]], axis=0)
        self.bias = tf.Variable(b, name="bias")
        self.spatial = (h, w)
        self.input_spec = InputSpec(rank=4, axes={1: (h, "image rows"), 2: (w, "image columns"),
                                                  3: (c, "input channels")})

    def initial_state(self, batch_size: Union[int, tf.Tensor], dtype: tf.DType = tf.float32,
                      spatial: Optional[Sequence[int]] = None) -> LSTMState:
        """Zeros of shape ``(batch_size, H, W, filters)`` for ``hidden`` and ``cell``.

        Args:
          batch_size: the batch size.
          dtype: the state's dtype.
          spatial: ``(H, W)``; default the size fixed at the first call.

        Returns:
          The zero ``LSTMState``.

        Raises:
          ValueError: before the first call without ``spatial``.
        """
        size = tuple(spatial) if spatial is not None else self.spatial
        if size is None:
            raise ValueError(self.error("the image size is fixed at the first call; call it (or lm.unroll) "
                                        "first, or pass spatial=(height, width)"))
        zeros = tf.zeros([batch_size, int(size[0]), int(size[1]), self.filters], dtype)
        return LSTMState(zeros, tf.zeros_like(zeros))

    def __call__(self, x_t: tf.Tensor, state: Sequence[tf.Tensor]) -> Tuple[tf.Tensor, LSTMState]:
        """Runs one step.

        Args:
          x_t: ``(B, H, W, C)``.
          state: ``LSTMState(h, c)`` (or a pair), each ``(B, H, W, filters)``.

        Returns:
          ``(h', LSTMState(h', c'))``.

        Raises:
          ValueError: for a wrongly shaped input or state.
        """
        if tf.is_tensor(state) or not isinstance(state, (tuple, list)) or len(state) != 2:
            raise ValueError(self.error(f"expected the state to be a pair (hidden, cell), got {type(state).__name__}"))
        h, c = (cast_like(tf.convert_to_tensor(s), x_t) for s in state)
        for what, t in (("hidden", h), ("cell", c)):
            if t.shape.rank != 4 or t.shape[-1] not in (None, self.filters):
                raise ValueError(self.error(f"expected a {what} state of shape (batch, H, W, {self.filters}), got {t.shape}"))
        gates = (tf.nn.conv2d(x_t, cast_like(self.input_weights, x_t), 1, "SAME")
                 + tf.nn.conv2d(h, cast_like(self.recurrent_weights, x_t), 1, "SAME"))
        h_new, c_new = lstm_update(add_bias(gates, cast_like(self.bias, x_t)), c, self.forget_bias)
        return h_new, LSTMState(h_new, c_new)
