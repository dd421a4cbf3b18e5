"""Conv1D/2D/3DTranspose (``ConvNDTranspose``) against PyTorch, and as the adjoint of ``ConvND``."""

import math
import re

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from conftest import assert_close


def _torch():
    return pytest.importorskip("torch")


def _tup(v, n):
    return (v,) * n if isinstance(v, int) else tuple(v)


def _torch_conv_transpose(x, w, b, kernel, strides, padding, output_padding, dilation):
    """Channels-last NumPy in and out, computed with torch.nn.functional.conv_transpose{n}d.

    VALID and symmetric explicit padding map directly onto torch's ``padding`` and
    ``output_padding``. Asymmetric pairs and SAME start from torch's full output
    (padding 0) and crop / zero-extend it per dimension.
    """
    torch = _torch()
    F = torch.nn.functional
    n = x.ndim - 2
    L = x.shape[1:-1]
    k, s, d = _tup(kernel, n), _tup(strides, n), _tup(dilation, n)
    xt = torch.from_numpy(x).permute(0, n + 1, *range(1, n + 1))
    wt = torch.from_numpy(w).permute(n + 1, n, *range(n))  # (*k, out, in) -> (in, out, *k)
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[n]
    if padding == "VALID" or (not isinstance(padding, str) and all(
            isinstance(p, int) or p[0] == p[1] for p in ([padding] * n if isinstance(padding, int) else padding))):
        pad = (0,) * n if padding == "VALID" else tuple(
            p if isinstance(p, int) else p[0] for p in ([padding] * n if isinstance(padding, int) else padding))
        op = (0,) * n if output_padding is None else _tup(output_padding, n)
        y = fn(xt, wt, torch.from_numpy(b), stride=s, padding=pad, output_padding=op, dilation=d)
        return y.permute(0, *range(2, n + 2), 1).numpy()
    full = fn(xt, wt, None, stride=s, dilation=d).permute(0, *range(2, n + 2), 1).numpy()
    index, sizes = [slice(None)], [x.shape[0]]
    for i in range(n):
        eff = d[i] * (k[i] - 1) + 1
        if padding == "SAME":
            op = s[i] - 1 if output_padding is None else _tup(output_padding, n)[i]
            out = (L[i] - 1) * s[i] + 1 + op
            start = max((L[i] - 1) * s[i] + eff - out, 0) // 2  # TF's SAME offset
        else:
            before, after = padding[i]
            op = 0 if output_padding is None else _tup(output_padding, n)[i]
            out = full.shape[i + 1] + op - before - after
            start = before
        index.append(slice(start, start + out))
        sizes.append(out)
    cropped = full[tuple(index)]
    y = np.zeros(tuple(sizes) + (w.shape[-2],), np.float32)
    y[tuple(slice(0, m) for m in cropped.shape)] = cropped
    return y + b


# n, kernel_size, strides, padding, output_padding, dilation
CASES = [
    (1, 3, 2, "VALID", None, 1),
    (1, 3, 2, "VALID", 1, 1),
    (1, 3, 1, "VALID", 1, 2),  # output_padding < dilation only (PyTorch's rule)
    (1, 4, 3, "SAME", None, 1),
    (1, 3, 3, "SAME", 0, 1),
    (1, 2, 3, "VALID", 2, 1),  # kernel smaller than the stride
    (1, 3, 2, 1, 1, 1),
    (2, 3, 2, "SAME", None, 1),
    (2, (4, 3), (2, 1), "SAME", (1, 0), 1),
    (2, 3, 1, "SAME", None, 2),
    (2, 4, 2, 1, None, 1),  # the DCGAN upsampling block: exactly 2x
    (2, 3, 2, 1, 1, 1),
    (2, (3, 2), 2, ((1, 0), (0, 2)), (1, 0), 1),
    (2, 3, 2, "VALID", None, (2, 1)),
    (2, 3, (2, 1), (0, 2), (1, 0), (1, 2)),
    (3, 3, 2, "SAME", None, 1),
    (3, 2, (1, 2, 2), "VALID", (0, 1, 0), 1),
    (3, 3, 1, "VALID", None, (1, 2, 1)),
    (3, 3, 2, 1, 1, 1),
]
SPATIAL = {1: (5,), 2: (5, 4), 3: (3, 4, 3)}
CONVT = {1: lm.Conv1DTranspose, 2: lm.Conv2DTranspose, 3: lm.Conv3DTranspose}


def _make(case, data_format="channels_last", **kwargs):
    n, kernel, strides, padding, output_padding, dilation = case
    return CONVT[n](
        num_filters=3, kernel_size=kernel, strides=strides, padding=padding, output_padding=output_padding,
        dilation=dilation, data_format=data_format, b_init=lm.initializers.Normal(0.0, 1.0), **kwargs,
    )


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}d-{i}" for i, c in enumerate(CASES)])
def test_matches_torch_conv_transpose(case, data_format):
    n = case[0]
    layer = _make(case, data_format, name="up")
    x = np.random.normal(size=(2, *SPATIAL[n], 4)).astype(np.float32)
    xin = x if data_format == "channels_last" else np.moveaxis(x, -1, 1)
    y = layer(tf.constant(xin)).numpy()
    assert layer.output_shape(xin.shape) == y.shape
    if data_format == "channels_first":
        y = np.moveaxis(y, 1, -1)
    assert layer.weights.shape == _tup(case[1], n) + (3, 4)
    assert [v.name for v in layer.trainable_variables] == ["up/bias:0", "up/weights:0"]
    ref = _torch_conv_transpose(x, layer.weights.numpy(), layer.bias.numpy(), *case[1:])
    assert y.shape == ref.shape
    assert_close(y, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "case", [c for c in CASES if (c[4] is None or all(o < s for o, s in zip(_tup(c[4], c[0]), _tup(c[2], c[0]))))
             and not (max(_tup(c[2], c[0])) > 1 and max(_tup(c[5], c[0])) > 1)],  # ConvND rejects strides+dilation
)
def test_is_the_adjoint_of_conv(case):
    """<convT(x), z> == <x, conv(z)> for the convolution with the same kernel, strides, padding, dilation."""
    n, kernel, strides, padding, output_padding, dilation = case
    layer = _make(case, use_bias=False)
    x = tf.random.normal((2, *SPATIAL[n], 4))
    y = layer(x)
    conv = lm.ConvND(n, 4, kernel, strides, padding, dilation, use_bias=False)
    z = tf.random.normal(y.shape)
    cz = conv(z)
    assert cz.shape == x.shape
    conv.weights.assign(layer.weights)  # the same (*k, 3, 4) array: conv maps 3 -> 4 channels
    lhs = tf.reduce_sum(tf.cast(y, tf.float64) * tf.cast(z, tf.float64))
    rhs = tf.reduce_sum(tf.cast(x, tf.float64) * tf.cast(conv(z), tf.float64))
    np.testing.assert_allclose(lhs.numpy(), rhs.numpy(), rtol=1e-4)


@pytest.mark.parametrize(
    "cls,kwargs,length,expected",
    [
        (lm.Conv1DTranspose, dict(kernel_size=3, strides=2, padding="VALID"), 5, 11),  # (L-1)s + k
        (lm.Conv1DTranspose, dict(kernel_size=3, strides=2, padding="VALID", output_padding=1), 5, 12),
        (lm.Conv1DTranspose, dict(kernel_size=3, strides=1, dilation=3, padding="VALID", output_padding=2), 5, 13),
        (lm.Conv1DTranspose, dict(kernel_size=3, strides=2, padding="SAME"), 5, 10),  # L*s
        (lm.Conv1DTranspose, dict(kernel_size=3, strides=2, padding="SAME", output_padding=0), 5, 9),
        (lm.Conv1DTranspose, dict(kernel_size=4, strides=2, padding=1), 5, 10),  # (L-1)s + k - 2p
        (lm.Conv1DTranspose, dict(kernel_size=3, strides=3, padding=[(2, 0)], output_padding=1), 5, 14),
    ],
)
def test_output_length_formula(cls, kwargs, length, expected):
    layer = cls(num_filters=2, **kwargs)
    assert layer.output_shape((3, length, 4)) == (3, expected, 2)
    assert layer(tf.zeros((3, length, 4))).shape == (3, expected, 2)
    assert lm.conv_transpose_output_length(None, 3, 2, 1, "SAME") is None


@pytest.mark.parametrize("output_padding", [None, 0, 1])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_output_shape_agrees_with_keras_for_odd_kernels(padding, output_padding):
    keras = pytest.importorskip("keras")
    ours = lm.Conv2DTranspose(2, kernel_size=3, strides=2, padding=padding, output_padding=output_padding)
    theirs = keras.layers.Conv2DTranspose(2, 3, strides=2, padding=padding, output_padding=output_padding)
    assert ours.output_shape((1, 5, 6, 3)) == tuple(theirs.compute_output_shape((1, 5, 6, 3)))


def test_gradients_match_torch_autograd():
    torch = _torch()
    F = torch.nn.functional
    layer = lm.Conv2DTranspose(3, kernel_size=(3, 2), strides=2, padding=1, output_padding=1, dilation=1,
                               activation="tanh", b_init=lm.initializers.Normal(0.0, 1.0))
    x = tf.random.normal((2, 4, 3, 5))
    g = tf.random.normal(layer.output_shape(x.shape))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) * g)
    dx, dw, db = tape.gradient(loss, [x, layer.weights, layer.bias])
    xt = torch.from_numpy(x.numpy()).permute(0, 3, 1, 2).requires_grad_(True)
    wt = torch.from_numpy(layer.weights.numpy()).permute(3, 2, 0, 1).contiguous().requires_grad_(True)
    bt = torch.from_numpy(layer.bias.numpy()).requires_grad_(True)
    yt = torch.tanh(F.conv_transpose2d(xt, wt, bt, stride=2, padding=1, output_padding=1))
    (yt * torch.from_numpy(g.numpy()).permute(0, 3, 1, 2)).sum().backward()
    assert_close(dx, xt.grad.permute(0, 2, 3, 1).numpy(), atol=1e-4, rtol=1e-4)
    assert_close(dw, wt.grad.permute(2, 3, 1, 0).numpy(), atol=1e-4, rtol=1e-4)
    assert_close(db, bt.grad.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_tf_function_with_unknown_batch_and_spatial_sizes(data_format):
    layer = lm.Conv2DTranspose(3, kernel_size=3, strides=2, padding=((1, 0), (0, 1)), output_padding=1,
                               data_format=data_format, name="upfn")
    spec = (None, None, 4, 2) if data_format == "channels_last" else (None, 2, None, 4)
    fn = tf.function(layer, input_signature=[tf.TensorSpec(spec, tf.float32)])
    static = fn.get_concrete_function().structured_outputs.shape
    # width: (4 - 1) * 2 + 3 - 0 - 1 + 1 = 9
    assert static.as_list() == ([None, None, 9, 3] if data_format == "channels_last" else [None, 3, None, 9])
    traces = fn.experimental_get_tracing_count()
    for batch, height in [(1, 3), (3, 5), (2, 4)]:
        shape = (batch, height, 4, 2) if data_format == "channels_last" else (batch, 2, height, 4)
        x = tf.random.normal(shape)
        y = fn(x)
        assert y.shape == layer.output_shape(shape)
        assert_close(y, layer(x), atol=1e-5)
    assert fn.experimental_get_tracing_count() == traces
    assert len(layer.variables) == 2


@pytest.mark.parametrize("n", [1, 2, 3])
def test_low_precision_input(n):
    layer = lm.ConvNDTranspose(n, 4, kernel_size=3, strides=2, b_init=lm.initializers.Normal(0.0, 1.0))
    x = tf.random.normal((2, *SPATIAL[n], 3))
    y32 = layer(x)
    y = layer(tf.cast(x, tf.bfloat16))
    assert y.dtype == tf.bfloat16 and layer.weights.dtype == tf.float32
    assert_close(tf.cast(y, tf.float32), y32, atol=0.05 * float(tf.reduce_max(tf.abs(y32))), rtol=0.05)


def test_default_init_is_glorot_over_both_channel_axes():
    # Glorot's bound sqrt(6 / (9 * (in + out))) is the same whichever channel axis is fan-in
    # (Keras and PyTorch both call the output channels fan-in of a transposed kernel).
    layer = lm.Conv2DTranspose(16, kernel_size=3)
    layer(tf.zeros((1, 3, 3, 32)))
    assert layer.weights.shape == (3, 3, 16, 32)
    w, bound = layer.weights.numpy(), math.sqrt(6 / (9 * 32 + 9 * 16))
    assert 0.99 * bound < np.abs(w).max() <= bound
    np.testing.assert_allclose(w.std(), bound / math.sqrt(3), rtol=0.05)
    np.testing.assert_array_equal(layer.bias.numpy(), np.zeros(16))


def _err(name):
    return re.escape(name) + ".*"


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        (dict(num_filters=0), ValueError, "num_filters must be > 0"),
        (dict(num_filters=2, kernel_size=-1), ValueError, "kernel_size must be >= 1"),
        (dict(num_filters=2, strides=0), ValueError, "strides must be >= 1"),
        (dict(num_filters=2, dilation=(1, 0)), ValueError, "dilation must be >= 1"),
        (dict(num_filters=2, padding="CAUSAL"), ValueError, "padding 'CAUSAL' is not supported"),
        (dict(num_filters=2, padding="full"), ValueError, "padding must be"),
        (dict(num_filters=2, padding=(-1, 0)), ValueError, "padding must be >= 0"),
        (dict(num_filters=2, output_padding=-1), ValueError, "output_padding must be >= 0"),
        (dict(num_filters=2, strides=2, output_padding=2, padding="VALID"), ValueError,
         "output_padding must be smaller than the stride or the dilation"),
        (dict(num_filters=2, strides=2, dilation=3, output_padding=(2, 3), padding="VALID"), ValueError,
         "output_padding must be smaller than the stride or the dilation"),
        (dict(num_filters=2, strides=2, dilation=3, output_padding=2, padding="SAME"), ValueError,
         "with padding 'SAME', output_padding must be smaller than the stride"),
        (dict(num_filters=2, data_format="nope"), ValueError, "data_format must be"),
        (dict(num_filters=2, activation=3), TypeError, "activation must be None, a name or a callable"),
        (dict(num_filters=2, w_init="nope"), ValueError, "unknown initializer"),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, msg):
    with pytest.raises(exc, match=_err("Conv2DTranspose 'bad'") + msg):
        lm.Conv2DTranspose(name="bad", **kwargs)


def test_bad_inputs():
    layer = lm.Conv1DTranspose(2, kernel_size=3, padding=3, name="tin")
    with pytest.raises(ValueError, match=_err("Conv1DTranspose 'tin'") + r"input spatial shape \(1,\) is too small"):
        layer(tf.zeros((1, 1, 4)))  # (1-1)*1 + 3 - 6 = -3
    with pytest.raises(ValueError, match=_err("Conv1DTranspose 'tin'") + "expected an input of rank 3, got rank 4"):
        layer(tf.zeros((1, 5, 5, 4)))
    with pytest.raises(TypeError, match=_err("Conv1DTranspose 'tin'") + "expected a floating-point input"):
        layer(tf.zeros((1, 5, 4), tf.int32))
    assert layer(tf.zeros((1, 5, 4))).shape == (1, 1, 2)
    with pytest.raises(ValueError, match=_err("Conv1DTranspose 'tin'") + r"expected 4 input channels \(fixed at first call\), got 3"):
        layer(tf.zeros((1, 5, 3)))
    with pytest.raises(ValueError, match=_err("ConvNDTranspose 'nd'") + "num_spatial_dims must be 1, 2 or 3"):
        lm.ConvNDTranspose(0, 2, name="nd")
