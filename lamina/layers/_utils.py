"""Argument checking, normalization and shared pieces of the layers (private)."""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from lamina import initializers
from lamina.module import Module

IntOrSeq = Union[int, Sequence[int]]
Padding = Union[str, int, Sequence[int], Sequence[Tuple[int, int]]]
PaddingAttr = Union[str, Tuple[Tuple[int, int], ...]]
Training = Union[None, bool, tf.Tensor]


def normalize_tuple(value: IntOrSeq, n: int, what: str, owner: str, minimum: int = 1) -> Tuple[int, ...]:
    """Turns an int or a length-``n`` sequence into an ``n``-tuple of ints >= ``minimum``.

    Raises:
      ValueError / TypeError naming ``owner`` and ``what``.
    """
    if isinstance(value, bool):
        raise TypeError(f"{owner}: {what} must be an int or {n} ints, got {value!r}")
    if isinstance(value, int):
        out = (value,) * n
    else:
        try:
            out = tuple(value)
        except TypeError:
            raise TypeError(f"{owner}: {what} must be an int or {n} ints, got {value!r}") from None
        if len(out) != n:
            raise ValueError(f"{owner}: {what} must be an int or {n} ints, got {value!r}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in out):
            raise TypeError(f"{owner}: {what} must be an int or {n} ints, got {value!r}")
    for v in out:
        if v < minimum:
            raise ValueError(f"{owner}: {what} must be >= {minimum}, got {value!r}")
    return out


def positive_int(value: Any, what: str, owner: str) -> int:
    """Checks ``value`` is an int > 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {what} must be a positive int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{owner}: {what} must be > 0, got {value}")
    return value


def normalize_data_format(data_format: str, owner: str) -> str:
    """Returns ``"channels_last"`` or ``"channels_first"`` (accepts NHWC/NCHW spellings)."""
    if not isinstance(data_format, str):
        raise TypeError(f"{owner}: data_format must be a string, got {data_format!r}")
    key = data_format.lower()
    if key in ("channels_last", "nwc", "nhwc", "ndhwc"):
        return "channels_last"
    if key in ("channels_first", "ncw", "nchw", "ncdhw"):
        return "channels_first"
    raise ValueError(f"{owner}: data_format must be 'channels_last' or 'channels_first', got {data_format!r}")


def normalize_padding(
    padding: Padding,
    n: int,
    kernel_size: Sequence[int],
    dilation: Sequence[int],
    owner: str,
    allow_causal: bool = True,
) -> Union[str, List[Tuple[int, int]]]:
    """Normalizes a padding spec to ``"SAME"``, ``"VALID"`` or ``n`` (before, after) pairs.

    Accepts ``"SAME"``, ``"VALID"``, ``"CAUSAL"`` (1-D only; left padding of
    ``dilation * (kernel - 1)``), an int, ``n`` ints (symmetric), or ``n``
    ``(before, after)`` pairs.
    """
    if isinstance(padding, str):
        key = padding.upper()
        if key in ("SAME", "VALID"):
            return key
        if key == "CAUSAL":
            if not allow_causal or n != 1:
                raise ValueError(f"{owner}: padding 'CAUSAL' is only supported for 1-D convolutions")
            return [(dilation[0] * (kernel_size[0] - 1), 0)]
        raise ValueError(f"{owner}: padding must be 'SAME', 'VALID', 'CAUSAL', an int or per-dimension ints/pairs, got {padding!r}")
    if isinstance(padding, bool):
        raise TypeError(f"{owner}: invalid padding {padding!r}")
    if isinstance(padding, int):
        pairs = [(padding, padding)] * n
    else:
        try:
            items = list(padding)
        except TypeError:
            raise TypeError(f"{owner}: invalid padding {padding!r}") from None
        if len(items) != n:
            raise ValueError(f"{owner}: padding must have {n} entries (one per spatial dimension), got {padding!r}")
        pairs = []
        for item in items:
            if isinstance(item, int) and not isinstance(item, bool):
                pairs.append((item, item))
            else:
                try:
                    before, after = item
                except (TypeError, ValueError):
                    raise ValueError(f"{owner}: padding entries must be ints or (before, after) pairs, got {padding!r}") from None
                if not all(isinstance(v, int) and not isinstance(v, bool) for v in (before, after)):
                    raise TypeError(f"{owner}: padding entries must be ints, got {padding!r}")
                pairs.append((before, after))
    for before, after in pairs:
        if before < 0 or after < 0:
            raise ValueError(f"{owner}: padding must be >= 0, got {padding!r}")
    return pairs


def cast_to(v: Union[tf.Variable, tf.Tensor], dtype: tf.DType) -> tf.Tensor:
    """Returns ``v`` (read) in ``dtype``, cast only when its dtype differs."""
    return v if v.dtype == dtype else tf.cast(v, dtype)


def cast_like(v: tf.Variable, x: tf.Tensor) -> tf.Tensor:
    """Returns ``v`` (read) in ``x``'s dtype, for mixed-precision computation."""
    return cast_to(v, x.dtype)


def to_channels_last(x: tf.Tensor, n: int) -> tf.Tensor:
    """``(N, C, *spatial)`` -> ``(N, *spatial, C)``."""
    return tf.transpose(x, [0] + list(range(2, n + 2)) + [1])


def to_channels_first(x: tf.Tensor, n: int) -> tf.Tensor:
    """``(N, *spatial, C)`` -> ``(N, C, *spatial)``."""
    return tf.transpose(x, [0, n + 1] + list(range(1, n + 1)))


def same_padding_pairs(size: Optional[int], kernel: int, stride: int, dilation: int) -> Optional[Tuple[int, int]]:
    """The ``(before, after)`` zero padding TensorFlow's ``"SAME"`` adds along one dimension.

    Args:
      size: the input size along it (``None``: unknown).
      kernel: kernel size.
      stride: stride.
      dilation: dilation.

    Returns:
      The pair, or ``None`` when it depends on an unknown size (stride > 1).
    """
    if stride == 1:  # the size cancels out
        total = (kernel - 1) * dilation
    elif size is None:
        return None
    else:
        out = -(-size // stride)
        total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _trim_unread(pair: Tuple[int, int], size: Optional[int], kernel: int, stride: int, dilation: int
                 ) -> Tuple[int, int]:
    """``pair`` without the trailing padding no window reads (e.g. stride 2, pad 1, even size: (1, 0)).

    Unchanged when ``size`` is unknown.
    """
    before, after = pair
    if size is None or after == 0:
        return pair
    span = (kernel - 1) * dilation + 1
    out = (size + before + after - span) // stride + 1
    read = (out - 1) * stride + span  # padded positions the windows cover
    return before, max(0, min(after, read - before - size))


def builtin_padding(
    x: tf.Tensor,
    pairs: Sequence[Sequence[int]],
    kernel_size: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
) -> Tuple[str, tf.Tensor]:
    """Turns explicit zero padding of a channels-last ``x`` into ``"SAME"`` / ``"VALID"``.

    TensorFlow's CPU gradient kernels for EXPLICIT padding are generic Eigen
    ones, not oneDNN's (float32 backward ~1.8x slower, bfloat16 ~45x), and they
    reject dilation; so explicit padding never reaches the op. Pairs equal to
    what ``"SAME"`` pads for this input (known without its size at stride 1,
    from its static size otherwise) become ``"SAME"``, all-zero pairs
    ``"VALID"``, anything else ``tf.pad`` + ``"VALID"``. Trailing padding that no
    window reads is dropped first (stride 2, pad 1 on an even size pads (1, 0):
    a smaller tensor to pad, convolve back through and slice). Same results.

    Args:
      x: the channels-last input.
      pairs: one ``(before, after)`` pair per spatial dimension.
      kernel_size: kernel size per spatial dimension.
      strides: stride per spatial dimension.
      dilation: dilation per spatial dimension.

    Returns:
      ``(padding, x)`` to pass to the convolution op.
    """
    spatial = x.shape[1:-1]
    pairs = [_trim_unread(tuple(int(v) for v in p), s, k, st, d)
             for p, s, k, st, d in zip(pairs, spatial, kernel_size, strides, dilation)]
    if all(p == (0, 0) for p in pairs):
        return "VALID", x
    if pairs == [same_padding_pairs(s, k, st, d) for s, k, st, d in zip(spatial, kernel_size, strides, dilation)]:
        return "SAME", x
    return "VALID", tf.pad(x, channels_last_padding(pairs))


def single_window_strides(
    x: tf.Tensor,
    padding: str,
    kernel_size: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
) -> Tuple[str, tf.Tensor, Tuple[int, ...]]:
    """Stride 1 where a spatial dimension has one output window (a workaround for a oneDNN bug).

    TensorFlow 2.21's oneDNN forward convolution (2-D and 3-D, float32 and
    bfloat16, on AVX-512 CPUs) returns garbage when the strides differ between
    dimensions and one dimension with stride > 1 has a single output position,
    e.g. a ``(5, 3)`` map, kernel ``(1, 3)``, strides ``(1, 3)``
    (``tests/test_conv.py::test_single_output_window_with_uneven_strides``).
    With one window the stride has no effect, so that dimension is cut to the
    window (padding it first where ``"SAME"`` would) and convolved with stride 1:
    the same result, and the other shapes never change. Needs static sizes;
    unchanged otherwise.

    Args:
      x: the channels-last input, after :func:`builtin_padding`.
      padding: ``"SAME"`` or ``"VALID"``.
      kernel_size: kernel size per spatial dimension.
      strides: stride per spatial dimension.
      dilation: dilation per spatial dimension.

    Returns:
      ``(padding, x, strides)`` to pass to the convolution op.
    """
    strides = tuple(int(s) for s in strides)
    if len(set(strides)) == 1:
        return padding, x, strides
    spatial = x.shape[1:-1]
    spans = [(k - 1) * d + 1 for k, d in zip(kernel_size, dilation)]

    def single(size: Optional[int], span: int, stride: int) -> bool:
        if size is None or stride == 1:
            return False
        out = -(-size // stride) if padding == "SAME" else (size - span) // stride + 1
        return out == 1

    hit = [single(s, sp, st) for s, sp, st in zip(spatial, spans, strides)]
    if not any(hit):
        return padding, x, strides
    if padding == "SAME":
        pairs = [same_padding_pairs(s, k, st, d) for s, k, st, d in zip(spatial, kernel_size, strides, dilation)]
        if any(p is None for p in pairs):
            return padding, x, strides
        x = tf.pad(x, channels_last_padding(pairs))
    begin = [0] * len(x.shape)
    size = [-1] * len(x.shape)
    for i, (h, span) in enumerate(zip(hit, spans)):
        if h:
            size[i + 1] = span
    x = tf.slice(x, begin, size)
    return "VALID", x, tuple(1 if h else st for h, st in zip(hit, strides))


def channels_last_padding(pairs: Sequence[Sequence[int]]) -> List[List[int]]:
    """Spatial ``(before, after)`` pairs as a full channels-last padding (zero rows for batch and channels)."""
    return [[0, 0]] + [list(p) for p in pairs] + [[0, 0]]


def to_data_format(y: tf.Tensor, n: int, data_format: str) -> tf.Tensor:
    """Returns channels-last ``y`` in ``data_format`` (transposed for ``"channels_first"``)."""
    return y if data_format == "channels_last" else to_channels_first(y, n)


def from_data_format(x: tf.Tensor, n: int, data_format: str) -> tf.Tensor:
    """Returns ``x``, given in ``data_format``, channels-last (transposed for ``"channels_first"``)."""
    return x if data_format == "channels_last" else to_channels_last(x, n)


def data_format_channel_axis(data_format: str) -> int:
    """The channel axis for a normalized ``data_format``: -1 (channels_last) or 1 (channels_first)."""
    return -1 if data_format == "channels_last" else 1


def spatial_dims(shape: Sequence[Any], data_format: str) -> List[Any]:
    """The spatial entries of a full shape (batch and channel axes dropped) in ``data_format``."""
    return list(shape[1:-1]) if data_format == "channels_last" else list(shape[2:])


def with_batch_and_channels(batch: Any, spatial: Sequence[Any], channels: Any, data_format: str) -> Tuple[Any, ...]:
    """Assembles a full shape ``(batch, *spatial, channels)`` (channels second for ``"channels_first"``)."""
    if data_format == "channels_last":
        return (batch, *spatial, channels)
    return (batch, channels, *spatial)


def check_num_spatial_dims(num_spatial_dims: Any, owner: str) -> int:
    """Checks ``num_spatial_dims`` is 1, 2 or 3 (not a bool).

    Raises:
      ValueError: naming ``owner``.
    """
    if isinstance(num_spatial_dims, bool) or num_spatial_dims not in (1, 2, 3):
        raise ValueError(f"{owner}: num_spatial_dims must be 1, 2 or 3, got {num_spatial_dims!r}")
    return num_spatial_dims


def check_strides_dilation(strides: Sequence[int], dilation: Sequence[int], owner: str) -> None:
    """Rejects ``strides > 1`` together with ``dilation > 1`` (as ``tf.nn.convolution`` does).

    Raises:
      ValueError: naming ``owner``.
    """
    if any(s > 1 for s in strides) and any(d > 1 for d in dilation):
        raise ValueError(
            f"{owner}: strides > 1 together with dilation > 1 is not supported, "
            f"got strides={strides}, dilation={dilation}"
        )


def padding_attr(
    padding: Padding,
    n: int,
    kernel_size: Sequence[int],
    dilation: Sequence[int],
    owner: str,
    allow_causal: bool = True,
) -> PaddingAttr:
    """:func:`normalize_padding`, as a module attribute: ``"SAME"``, ``"VALID"`` or a tuple of pairs.

    A tuple of pairs, not a list, which ``tf.Module`` would wrap in a ``ListWrapper``.
    """
    pads = normalize_padding(padding, n, kernel_size, dilation, owner, allow_causal=allow_causal)
    return pads if isinstance(pads, str) else tuple(tuple(p) for p in pads)


def known_at_build(module: Module, size: Optional[int], what: str, input_shape: Any) -> int:
    """Returns ``size``, a dimension the module's variables depend on, if it is known.

    Args:
      module: the module, named in the message.
      size: the dimension (``None`` if unknown).
      what: its description, e.g. ``"the number of input channels"``.
      input_shape: the first input's shape, for the message.

    Returns:
      ``size``.

    Raises:
      ValueError: if ``size`` is ``None`` or zero (a variable cannot have a zero-sized axis).
    """
    if size is None:
        raise ValueError(module.error(f"{what} must be known at the first call, got shape {input_shape}"))
    if size == 0:
        raise ValueError(module.error(f"{what} must be > 0, got 0 (input shape {input_shape})"))
    return size


def get_initializer(init: Union[None, str, Callable], default: Callable, owner: str) -> Callable:
    """``initializers.get`` with errors that name the module.

    Args:
      init: ``None``, an initializer name or a callable.
      default: used when ``init`` is ``None``.
      owner: the module description for error messages.

    Returns:
      A callable initializer.

    Raises:
      ValueError / TypeError: for an unknown name or a non-callable, naming ``owner``.
    """
    try:
        return initializers.get(init, default)
    except (ValueError, TypeError) as e:
        raise type(e)(f"{owner}: {e}") from None


def check_output_fits(
    module: Module, in_spatial: Sequence[Optional[int]], out_spatial: Sequence[Optional[int]], what: str
) -> None:
    """Raises if a statically known output length would be < 1 (the input is too small).

    Args:
      module: the module, named in the message.
      in_spatial: the input's spatial shape (``None`` for unknown sizes).
      out_spatial: the output's spatial shape computed from it.
      what: the window description, e.g. ``"kernel_size (3, 3), dilation (1, 1), padding 'VALID'"``.

    Raises:
      ValueError: naming the module, with the input and the would-be output shape.
    """
    if any(o is not None and o < 1 for o in out_spatial):
        raise ValueError(
            module.error(
                f"input spatial shape {tuple(in_spatial)} is too small for {what}: expected an output of at least 1 "
                f"in every spatial dimension, got {tuple(out_spatial)}"
            )
        )


def resolve_training(training: Training, owner: str) -> Union[bool, tf.Tensor]:
    """Turns a ``training`` argument into a Python bool, or a scalar bool tensor.

    Args:
      training: ``None`` (inference), a bool, or a scalar boolean tensor.
      owner: the module description used in error messages.

    Returns:
      ``True``/``False`` when the value is known while tracing, else the tensor.

    Raises:
      TypeError: for anything else.
    """
    if training is None:
        return False
    if isinstance(training, (bool, np.bool_)):
        return bool(training)
    if isinstance(training, (int, np.integer)) and training in (0, 1):
        return bool(training)
    if tf.is_tensor(training):
        if training.dtype != tf.bool or training.shape.rank not in (None, 0):
            raise TypeError(f"{owner}: training must be a bool or a scalar bool tensor, got {training!r}")
        static = tf.get_static_value(training)
        if static is not None:
            return bool(static)
        return training
    raise TypeError(f"{owner}: training must be None, a bool or a scalar bool tensor, got {training!r}")


def bias_gradient(dy: tf.Tensor) -> tf.Tensor:
    """The gradient of a bias added along the last axis: ``dy`` summed over every other axis.

    For ``(N, *spatial, C)`` it sums the spatial axes first, then the batch:
    two Eigen reductions that keep their inner loops contiguous, 1.5-2.4x faster
    than one ``Sum`` over ``[0, 1, 2]`` for conv-sized float32 and bfloat16
    tensors on the CPUs measured (``benchmarks/README.md``). Half precision
    accumulates in float32 in each (TensorFlow's ``Sum``).

    Args:
      dy: the upstream gradient, of a known rank >= 2.

    Returns:
      A vector of ``dy``'s last dimension.
    """
    rank = dy.shape.rank
    if rank >= 3:
        dy = tf.reduce_sum(dy, axis=list(range(1, rank - 1)))
    return tf.reduce_sum(dy, axis=0)


@tf.custom_gradient
def _add_bias_spatial(y: tf.Tensor, bias: tf.Tensor) -> Tuple[tf.Tensor, Callable]:
    def grad(dy: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        return dy, bias_gradient(dy)

    return y + bias, grad


def add_bias(y: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """``y + bias`` along the last axis, with a gradient that stays accurate in half precision.

    A broadcast add instead of ``tf.nn.bias_add``: the bias gradient is then a
    ``Sum``, which accumulates bfloat16/float16 in float32, where TensorFlow's
    CPU ``BiasAddGrad`` accumulates in the half type (bfloat16, 4096 rows: 74 %
    relative error; ``Sum``: 0.3 %). Grappler still fuses matmul/conv + bias (+
    ReLU) forward, but no longer fuses the filter gradient with the bias
    gradient into oneDNN's ``Conv2DBackpropFilterWithBias``, which is slower
    here than the two kernels apart (seed CNN float32 step -9 %). For a
    convolution's output (rank >= 4) the bias gradient is :func:`bias_gradient`
    (spatial axes, then batch: faster than one sum over all of them).

    Args:
      y: a tensor whose last axis has ``bias``'s size.
      bias: a vector of ``y``'s dtype (a variable or a tensor).

    Returns:
      ``y + bias``.
    """
    if y.shape.rank is not None and y.shape.rank >= 4:
        # A tensor, not the variable: tf.custom_gradient rejects distributed variables as arguments.
        return _add_bias_spatial(y, tf.convert_to_tensor(bias))
    return y + bias
