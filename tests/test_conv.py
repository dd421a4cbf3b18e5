"""Conv1D/2D/3D (``ConvND``) and DepthwiseConv2D against PyTorch and tf.nn references."""

import math
import re

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from conftest import assert_close


def _torch():
    return pytest.importorskip("torch")


# ----------------------------------------------------------------- references
def _pairs(padding, spatial, kernel, strides, dilation):
    """(before, after) zero padding per dimension, computed from TF's documented rules."""
    n = len(spatial)
    if isinstance(padding, str):
        if padding == "VALID":
            return [(0, 0)] * n
        if padding == "CAUSAL":
            return [(dilation[0] * (kernel[0] - 1), 0)]
        out = []  # SAME
        for L, k, s, d in zip(spatial, kernel, strides, dilation):
            eff = d * (k - 1) + 1
            total = max((math.ceil(L / s) - 1) * s + eff - L, 0)
            out.append((total // 2, total - total // 2))
        return out
    if isinstance(padding, int):
        return [(padding, padding)] * n
    return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def _tup(v, n):
    return (v,) * n if isinstance(v, int) else tuple(v)


def _torch_conv(x, w, b, strides, pairs, dilation, groups):
    """Channels-last NumPy in and out; computed with torch.nn.functional.conv{n}d."""
    torch = _torch()
    F = torch.nn.functional
    n = x.ndim - 2
    xt = torch.from_numpy(x).permute(0, n + 1, *range(1, n + 1))
    flat = [v for pair in reversed(pairs) for v in pair]
    xt = F.pad(xt, flat)
    wt = torch.from_numpy(w).permute(n + 1, n, *range(n))
    bt = None if b is None else torch.from_numpy(b)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    y = conv(xt, wt, bt, stride=strides, padding=0, dilation=dilation, groups=groups)
    return y.permute(0, *range(2, n + 2), 1).numpy()


def _tf_block_diagonal_conv(x, w, b, strides, pairs, dilation, groups):
    """Second reference: tf.nn.convolution with the grouped kernel expanded to a dense block-diagonal one."""
    n = x.ndim - 2
    cin, cout = x.shape[-1], w.shape[-1]
    full = np.zeros(w.shape[:n] + (cin, cout), np.float32)
    gi, go = cin // groups, cout // groups
    for g in range(groups):
        full[..., g * gi:(g + 1) * gi, g * go:(g + 1) * go] = w[..., :, g * go:(g + 1) * go]
    xp = np.pad(x, [(0, 0)] + list(pairs) + [(0, 0)])
    y = tf.nn.convolution(xp, full, strides=list(strides), padding="VALID", dilations=list(dilation)).numpy()
    return y if b is None else y + b


# ------------------------------------------------------------ forward numbers
# n, kernel_size, strides, padding, dilation, groups, use_bias, activation
CASES = [
    (1, 3, 1, "SAME", 1, 1, True, None),
    (1, 4, 2, "SAME", 1, 1, True, "relu"),
    (1, 3, 2, "VALID", 1, 2, False, None),
    (1, 5, 1, "CAUSAL", 2, 1, True, "tanh"),
    (1, 3, 1, "CAUSAL", 1, 4, True, None),
    (1, 3, 3, 2, 1, 1, True, None),
    (1, 4, 1, [(2, 1)], 3, 2, False, "relu"),
    (2, 3, 1, "SAME", 1, 1, True, None),
    (2, (3, 2), (2, 1), "SAME", 1, 2, True, "relu"),
    (2, 4, 2, "SAME", 1, 1, False, None),
    (2, 3, 1, "VALID", (2, 1), 1, True, "tanh"),
    (2, 3, 1, "SAME", 2, 4, True, None),
    (2, 3, 2, 1, 1, 4, True, None),
    (2, 3, 1, (1, 2), 1, 1, False, None),
    (2, (2, 3), 1, ((1, 0), (2, 1)), (1, 2), 2, True, "relu"),
    (3, 3, 1, "SAME", 1, 1, True, None),
    (3, 2, 2, "VALID", 1, 2, True, "relu"),
    (3, 3, 1, 1, 2, 1, False, None),
    (3, (1, 2, 3), (1, 2, 1), ((1, 0), (0, 1), (1, 1)), 1, 4, True, None),
    (3, 3, 2, "SAME", 1, 1, True, "tanh"),
]
SPATIAL = {1: (11,), 2: (9, 8), 3: (6, 5, 7)}
CONV = {1: lm.Conv1D, 2: lm.Conv2D, 3: lm.Conv3D}


def _make(n, kernel, strides, padding, dilation, groups, use_bias, activation, data_format, name="conv"):
    return CONV[n](
        num_filters=8, kernel_size=kernel, strides=strides, padding=padding, dilation=dilation, groups=groups,
        use_bias=use_bias, activation=activation, data_format=data_format,
        b_init=lm.initializers.Normal(0.0, 1.0), name=name,
    )


def _activate(y, activation):
    return {None: y, "relu": np.maximum(y, 0), "tanh": np.tanh(y)}[activation]


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}d-{i}" for i, c in enumerate(CASES)])
def test_conv_matches_torch_and_tf(case, data_format):
    n, kernel, strides, padding, dilation, groups, use_bias, activation = case
    conv = _make(*case, data_format)
    x = np.random.normal(size=(2, *SPATIAL[n], 4)).astype(np.float32)
    xin = x if data_format == "channels_last" else np.moveaxis(x, -1, 1)
    y = conv(tf.constant(xin)).numpy()
    if data_format == "channels_first":
        y = np.moveaxis(y, 1, -1)
    k, s, d = _tup(kernel, n), _tup(strides, n), _tup(dilation, n)
    w = conv.weights.numpy()
    assert w.shape == k + (4 // groups, 8)
    b = conv.bias.numpy() if use_bias else None
    assert hasattr(conv, "bias") == use_bias
    pairs = _pairs(padding, SPATIAL[n], k, s, d)
    ref = _activate(_torch_conv(x, w, b, s, pairs, d, groups), activation)
    ref2 = _activate(_tf_block_diagonal_conv(x, w, b, s, pairs, d, groups), activation)
    assert y.shape == ref.shape
    assert_close(y, ref, atol=1e-4, rtol=1e-4)
    assert_close(y, ref2, atol=1e-4, rtol=1e-4)
    # the documented output-shape helper agrees with what the layer produced
    assert conv.output_shape(xin.shape) == tuple(conv(tf.constant(xin)).shape)


@pytest.mark.parametrize(
    "cls,kwargs,length,expected",
    [
        (lm.Conv1D, dict(kernel_size=3, strides=2, padding="VALID"), 11, 5),
        (lm.Conv1D, dict(kernel_size=3, strides=2, padding="SAME"), 11, 6),
        (lm.Conv1D, dict(kernel_size=5, dilation=2, padding="CAUSAL"), 11, 11),
        (lm.Conv1D, dict(kernel_size=4, dilation=3, padding=[(2, 1)]), 11, 5),
        (lm.Conv1D, dict(kernel_size=3, strides=3, padding=2), 11, 5),
        (lm.Conv1D, dict(kernel_size=3, dilation=4, padding="VALID"), 11, 3),
    ],
)
def test_output_length_formula(cls, kwargs, length, expected):
    conv = cls(num_filters=2, **kwargs)
    assert conv.output_shape((3, length, 5)) == (3, expected, 2)
    assert conv(tf.zeros((3, length, 5))).shape == (3, expected, 2)
    assert lm.conv_output_length(None, 3, 1, 1, "SAME") is None


# ------------------------------------------------------------------- gradients
@pytest.mark.parametrize(
    "case",
    [
        (1, 3, 1, "CAUSAL", 2, 2, True, "tanh"),
        (2, (3, 2), (2, 1), "SAME", 1, 2, True, None),
        (2, 3, 1, ((1, 0), (2, 1)), (2, 1), 1, True, "relu"),
        (3, 2, 2, 1, 1, 4, True, None),
    ],
)
def test_gradients_match_torch_autograd(case):
    torch = _torch()
    F = torch.nn.functional
    n, kernel, strides, padding, dilation, groups, use_bias, activation = case
    conv = _make(*case, "channels_last")
    x = tf.constant(np.random.normal(size=(2, *SPATIAL[n], 4)).astype(np.float32))
    conv(x)
    g = np.random.normal(size=conv.output_shape(x.shape)).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(conv(x) * g)
    dx, dw, db = tape.gradient(loss, [x, conv.weights, conv.bias])

    k, s, d = _tup(kernel, n), _tup(strides, n), _tup(dilation, n)
    pairs = _pairs(padding, SPATIAL[n], k, s, d)
    xt = torch.from_numpy(x.numpy()).permute(0, n + 1, *range(1, n + 1)).requires_grad_(True)
    wt = torch.from_numpy(conv.weights.numpy()).permute(n + 1, n, *range(n)).contiguous().requires_grad_(True)
    bt = torch.from_numpy(conv.bias.numpy()).requires_grad_(True)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    yt = fn(F.pad(xt, [v for p in reversed(pairs) for v in p]), wt, bt, stride=s, dilation=d, groups=groups)
    yt = {None: yt, "relu": torch.relu(yt), "tanh": torch.tanh(yt)}[activation]
    gt = torch.from_numpy(g).permute(0, n + 1, *range(1, n + 1))
    (yt * gt).sum().backward()
    assert_close(dx, xt.grad.permute(0, *range(2, n + 2), 1).numpy(), atol=1e-4, rtol=1e-4)
    assert_close(dw, wt.grad.permute(*range(2, n + 2), 1, 0).numpy(), atol=1e-4, rtol=1e-4)
    assert_close(db, bt.grad.numpy(), atol=1e-4, rtol=1e-4)


def test_gradient_numerically_on_tiny_case():
    conv = lm.Conv1D(num_filters=2, kernel_size=2, strides=2, padding="SAME", groups=2, name="tiny")
    x = tf.constant(np.random.normal(size=(1, 5, 2)), tf.float64)
    theoretical, numerical = tf.test.compute_gradient(conv, [x])
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


# ------------------------------------------------------------ seed usage, API
def test_seed_usage_variables_verbatim():
    conv = lm.Conv2D(num_filters=4, name="test_conv")
    y = conv(tf.random.normal((1, 128, 128, 3)))
    assert y.shape == (1, 128, 128, 4)
    assert conv.weights.name == "test_conv/weights:0"
    assert conv.weights.shape == (3, 3, 3, 4)
    assert conv.bias.name == "test_conv/bias:0"
    assert conv.bias.shape == (4,)
    assert conv.trainable_variables == (conv.bias, conv.weights)
    assert [v.name for v in conv.trainable_variables] == ["test_conv/bias:0", "test_conv/weights:0"]
    assert conv.weights.dtype == tf.float32
    assert not np.any(conv.bias.numpy())


def test_channel_mismatch_message_verbatim():
    conv = lm.Conv2D(num_filters=4, name="test_conv")
    conv(tf.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match=re.escape("Conv2D 'test_conv': expected 3 input channels (fixed at first call), got 5")):
        conv(tf.zeros((1, 8, 8, 5)))
    first = lm.Conv2D(num_filters=4, data_format="channels_first", name="cf")
    first(tf.zeros((1, 3, 8, 8)))
    with pytest.raises(ValueError, match=re.escape("Conv2D 'cf': expected 3 input channels (fixed at first call), got 8")):
        first(tf.zeros((1, 8, 8, 3)))


def test_builds_once_and_default_init_scale():
    conv = lm.Conv2D(num_filters=64, kernel_size=3, name="c")
    conv(tf.zeros((2, 6, 6, 32)))
    conv(tf.zeros((5, 7, 9, 32)))
    assert len(conv.variables) == 2
    # Glorot uniform: U(±sqrt(6 / (fan_in + fan_out))), fan_in = 3 * 3 * 32, fan_out = 3 * 3 * 64.
    w, bound = conv.weights.numpy(), math.sqrt(6 / (288 + 576))
    assert 0.99 * bound < np.abs(w).max() <= bound
    np.testing.assert_allclose(w.std(), bound / math.sqrt(3), rtol=0.05)


# --------------------------------------------------------------- tf.function
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_build_inside_tf_function_with_none_batch(data_format):
    conv = lm.Conv2D(num_filters=6, strides=2, groups=2, data_format=data_format, name="fn_conv")
    spec = (None, 8, 7, 4) if data_format == "channels_last" else (None, 4, 8, 7)
    fn = tf.function(conv, input_signature=[tf.TensorSpec(spec, tf.float32)])
    outs = {}
    for batch in (1, 3, 2):
        x = tf.random.normal((batch,) + spec[1:])
        outs[batch] = (x, fn(x))
        if batch == 1:
            traces = fn.experimental_get_tracing_count()  # includes tf.function's variable-creation trace
    assert fn.experimental_get_tracing_count() == traces  # later batch sizes reuse the trace
    assert len(conv.variables) == 2
    assert conv.weights.name == "fn_conv/weights:0"
    for x, y in outs.values():
        assert_close(y, conv(x), atol=1e-5)
        xl = x.numpy() if data_format == "channels_last" else np.moveaxis(x.numpy(), 1, -1)
        yl = y.numpy() if data_format == "channels_last" else np.moveaxis(y.numpy(), 1, -1)
        ref = _torch_conv(xl, conv.weights.numpy(), conv.bias.numpy(), (2, 2),
                          _pairs("SAME", (8, 7), (3, 3), (2, 2), (1, 1)), (1, 1), 2)
        assert_close(yl, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("n", [1, 3])
def test_reduce_retracing_serves_several_batch_sizes(n):
    conv = CONV[n](num_filters=3, kernel_size=2, padding="VALID", name="rr")
    fn = tf.function(conv, reduce_retracing=True)
    xs = [tf.random.normal((b, *SPATIAL[n], 2)) for b in (1, 2, 4, 3)]
    conv(xs[0])  # build eagerly, so the counts below are traces of the computation only
    ys = [fn(x) for x in xs]
    assert fn.experimental_get_tracing_count() == 2  # the second call relaxes the batch to None
    assert len(conv.variables) == 2
    for x, y in zip(xs, ys):
        ref = _torch_conv(x.numpy(), conv.weights.numpy(), conv.bias.numpy(), (1,) * n, [(0, 0)] * n, (1,) * n, 1)
        assert_close(y, ref, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------- mixed precision
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_low_precision_input(n, dtype):
    conv = CONV[n](num_filters=4, groups=2, activation="relu", b_init=lm.initializers.Normal(0.0, 1.0))
    x = tf.random.normal((2, *SPATIAL[n], 4))
    y32 = conv(x)
    y = conv(tf.cast(x, dtype))
    assert y.dtype == dtype
    assert conv.weights.dtype == tf.float32 and conv.bias.dtype == tf.float32
    tol = 0.05 if dtype == tf.bfloat16 else 5e-3
    assert_close(tf.cast(y, tf.float32), y32, atol=tol * float(tf.reduce_max(tf.abs(y32))), rtol=tol)


# --------------------------------------------------------------------- errors
def _err(name):
    return re.escape(name) + ".*"


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        (dict(num_filters=0), ValueError, "num_filters must be > 0"),
        (dict(num_filters=-3), ValueError, "num_filters must be > 0"),
        (dict(num_filters=2.0), TypeError, "num_filters must be a positive int"),
        (dict(num_filters=2, kernel_size=0), ValueError, "kernel_size must be >= 1"),
        (dict(num_filters=2, kernel_size=(3, -1)), ValueError, "kernel_size must be >= 1"),
        (dict(num_filters=2, kernel_size=(3, 3, 3)), ValueError, "kernel_size must be an int or 2 ints"),
        (dict(num_filters=2, kernel_size=2.5), TypeError, "kernel_size must be an int or 2 ints"),
        (dict(num_filters=2, strides=0), ValueError, "strides must be >= 1"),
        (dict(num_filters=2, strides=(1, -2)), ValueError, "strides must be >= 1"),
        (dict(num_filters=2, dilation=0), ValueError, "dilation must be >= 1"),
        (dict(num_filters=2, groups=0), ValueError, "groups must be > 0"),
        (dict(num_filters=8, groups=3), ValueError, r"groups \(3\) must divide num_filters \(8\)"),
        (dict(num_filters=2, strides=2, dilation=2), ValueError, "strides > 1 together with dilation > 1"),
        (dict(num_filters=2, padding="FULL"), ValueError, "padding must be 'SAME', 'VALID', 'CAUSAL'"),
        (dict(num_filters=2, padding="CAUSAL"), ValueError, "padding 'CAUSAL' is only supported for 1-D"),
        (dict(num_filters=2, padding=-1), ValueError, "padding must be >= 0"),
        (dict(num_filters=2, padding=(1, 2, 3)), ValueError, "padding must have 2 entries"),
        (dict(num_filters=2, padding=((1, 2), (0,))), ValueError, "padding entries must be ints or"),
        (dict(num_filters=2, data_format="channels_middle"), ValueError, "data_format must be"),
        (dict(num_filters=2, activation="nope"), ValueError, "unknown activation"),
        (dict(num_filters=2, w_init="nope"), ValueError, "unknown initializer"),
        (dict(num_filters=2, b_init=3), TypeError, "initializer must be None, a name or a callable"),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, msg):
    with pytest.raises(exc, match=_err("Conv2D 'bad'") + msg):
        lm.Conv2D(name="bad", **kwargs)


def test_bad_arguments_other_ranks():
    with pytest.raises(ValueError, match=_err("Conv3D 'c3'") + "padding 'CAUSAL' is only supported for 1-D"):
        lm.Conv3D(2, padding="causal", name="c3")
    with pytest.raises(ValueError, match=_err("Conv1D 'c1'") + "kernel_size must be an int or 1 ints"):
        lm.Conv1D(2, kernel_size=(3, 3), name="c1")
    with pytest.raises(ValueError, match=_err("ConvND 'cn'") + "num_spatial_dims must be 1, 2 or 3"):
        lm.ConvND(4, 2, name="cn")


def test_bad_inputs():
    conv = lm.Conv2D(num_filters=4, groups=2, name="in_check")
    with pytest.raises(ValueError, match=_err("Conv2D 'in_check'") + r"groups \(2\) must divide the input channels \(3\)"):
        conv(tf.zeros((1, 5, 5, 3)))
    with pytest.raises(ValueError, match=_err("Conv2D 'in_check'") + "expected an input of rank 4, got rank 3"):
        conv(tf.zeros((5, 5, 4)))
    with pytest.raises(TypeError, match=_err("Conv2D 'in_check'") + "expected a floating-point input, got dtype int32"):
        conv(tf.zeros((1, 5, 5, 4), tf.int32))
    conv(tf.zeros((1, 5, 5, 4)))
    with pytest.raises(ValueError, match=_err("Conv2D 'in_check'") + "expected an input of rank 4, got rank 5"):
        conv(tf.zeros((1, 1, 5, 5, 4)))
    small = lm.Conv1D(num_filters=2, kernel_size=3, dilation=3, padding="VALID", name="small")
    with pytest.raises(ValueError, match=_err("Conv1D 'small'") + r"input spatial shape \(6,\) is too small.*got \(0,\)"):
        small(tf.zeros((1, 6, 1)))
    assert small(tf.zeros((1, 7, 1))).shape == (1, 1, 2)


# ================================================================== depthwise
def _torch_depthwise(x, w, b, strides, pairs, dilation):
    kh, kw, c, m = w.shape
    wg = w.reshape(kh, kw, 1, c * m)  # output channel c * m + j <- input channel c
    return _torch_conv(x, wg, b, strides, pairs, dilation, groups=c)


# kernel_size, depth_multiplier, strides, padding, dilation
DW_CASES = [
    (3, 1, 1, "SAME", 1),
    (3, 2, 2, "SAME", 1),
    ((3, 2), 3, 1, "VALID", (2, 1)),
    (3, 1, 1, ((1, 0), (2, 1)), 2),
    (2, 2, (1, 2), 1, 1),
    (4, 1, 2, "SAME", 1),
]


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("case", DW_CASES)
def test_depthwise_matches_torch_and_grouped_conv(case, data_format):
    kernel, mult, strides, padding, dilation = case
    layer = lm.DepthwiseConv2D(kernel, mult, strides, padding, dilation, activation="relu", data_format=data_format,
                               b_init=lm.initializers.Normal(0.0, 1.0), name="dw")
    x = np.random.normal(size=(2, 9, 8, 3)).astype(np.float32)
    xin = x if data_format == "channels_last" else np.moveaxis(x, -1, 1)
    y = layer(tf.constant(xin)).numpy()
    if data_format == "channels_first":
        y = np.moveaxis(y, 1, -1)
    k, s, d = _tup(kernel, 2), _tup(strides, 2), _tup(dilation, 2)
    assert layer.weights.shape == k + (3, mult)
    assert layer.bias.shape == (3 * mult,)
    assert [v.name for v in layer.trainable_variables] == ["dw/bias:0", "dw/weights:0"]
    w, b = layer.weights.numpy(), layer.bias.numpy()
    ref = np.maximum(_torch_depthwise(x, w, b, s, _pairs(padding, (9, 8), k, s, d), d), 0)
    assert_close(y, ref, atol=1e-4, rtol=1e-4)
    # second reference: a grouped Conv2D (groups = in_channels) with the same weights
    conv = lm.Conv2D(3 * mult, kernel, strides, padding, dilation, groups=3, activation="relu")
    conv(tf.constant(x))
    conv.weights.assign(w.reshape(k + (1, 3 * mult)))
    conv.bias.assign(b)
    assert_close(y, conv(tf.constant(x)), atol=1e-4, rtol=1e-4)
    assert layer.output_shape(xin.shape) == tuple(layer(tf.constant(xin)).shape)


def test_depthwise_gradients_and_init():
    torch = _torch()
    layer = lm.DepthwiseConv2D(kernel_size=3, depth_multiplier=2, padding=((0, 1), (2, 0)), dilation=(1, 2),
                               b_init=lm.initializers.Normal(0.0, 1.0), name="dwg")
    x = tf.random.normal((2, 7, 6, 3))
    g = tf.random.normal(layer.output_shape(x.shape))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) * g)
    dx, dw = tape.gradient(loss, [x, layer.weights])
    xt = torch.from_numpy(x.numpy()).permute(0, 3, 1, 2).requires_grad_(True)
    w = torch.from_numpy(layer.weights.numpy()).requires_grad_(True)
    wt = w.reshape(3, 3, 6).permute(2, 0, 1).unsqueeze(1)
    yt = torch.nn.functional.conv2d(torch.nn.functional.pad(xt, [2, 0, 0, 1]), wt, dilation=(1, 2), groups=3)
    (yt * torch.from_numpy(g.numpy()).permute(0, 3, 1, 2)).sum().backward()
    assert_close(dx, xt.grad.permute(0, 2, 3, 1).numpy(), atol=1e-4, rtol=1e-4)
    assert_close(dw, w.grad.numpy(), atol=1e-4, rtol=1e-4)
    # default init: Glorot uniform with Keras' fans of the (3, 3, 32, 4) kernel: 9 * 32 and 9 * 4
    big = lm.DepthwiseConv2D(kernel_size=3, depth_multiplier=4)
    big(tf.zeros((1, 4, 4, 32)))
    w, bound = big.weights.numpy(), math.sqrt(6 / (9 * 32 + 9 * 4))
    assert 0.98 * bound < np.abs(w).max() <= bound
    np.testing.assert_allclose(w.std(), bound / math.sqrt(3), rtol=0.1)


def test_depthwise_low_precision_and_tf_function():
    layer = lm.DepthwiseConv2D(depth_multiplier=2, strides=2, data_format="channels_first",
                               b_init=lm.initializers.Normal(0.0, 1.0))
    fn = tf.function(layer, input_signature=[tf.TensorSpec((None, 3, 8, 8), tf.float32)])
    x = tf.random.normal((2, 3, 8, 8))
    y32 = fn(x)
    traces = fn.experimental_get_tracing_count()
    assert_close(fn(x[:1]), layer(x[:1]), atol=1e-5)
    assert fn.experimental_get_tracing_count() == traces
    assert len(layer.variables) == 2
    y = layer(tf.cast(x, tf.bfloat16))
    assert y.dtype == tf.bfloat16 and y.shape == (2, 6, 4, 4)
    assert_close(tf.cast(y, tf.float32), y32, atol=0.05 * float(tf.reduce_max(tf.abs(y32))), rtol=0.05)


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        (dict(depth_multiplier=0), ValueError, "depth_multiplier must be > 0"),
        (dict(kernel_size=0), ValueError, "kernel_size must be >= 1"),
        (dict(strides=-1), ValueError, "strides must be >= 1"),
        (dict(dilation=0), ValueError, "dilation must be >= 1"),
        (dict(strides=2, dilation=2), ValueError, "strides > 1 together with dilation > 1"),
        (dict(padding="CAUSAL"), ValueError, "padding 'CAUSAL' is only supported for 1-D"),
        (dict(padding="full"), ValueError, "padding must be"),
        (dict(data_format="NCWH"), ValueError, "data_format must be"),
    ],
)
def test_depthwise_bad_arguments(kwargs, exc, msg):
    with pytest.raises(exc, match=_err("DepthwiseConv2D 'dwbad'") + msg):
        lm.DepthwiseConv2D(name="dwbad", **kwargs)


def test_depthwise_bad_inputs():
    layer = lm.DepthwiseConv2D(kernel_size=5, padding="VALID", name="dwin")
    with pytest.raises(ValueError, match=_err("DepthwiseConv2D 'dwin'") + "expected an input of rank 4, got rank 3"):
        layer(tf.zeros((6, 6, 3)))
    with pytest.raises(TypeError, match=_err("DepthwiseConv2D 'dwin'") + "expected a floating-point input"):
        layer(tf.zeros((1, 6, 6, 3), tf.int64))
    with pytest.raises(ValueError, match=_err("DepthwiseConv2D 'dwin'") + "too small"):
        layer(tf.zeros((1, 4, 6, 3)))
    layer(tf.zeros((1, 6, 6, 3)))
    with pytest.raises(ValueError, match=_err("DepthwiseConv2D 'dwin'") + r"expected 3 input channels \(fixed at first call\), got 2"):
        layer(tf.zeros((1, 6, 6, 2)))


@pytest.mark.parametrize(
    "size, kernel, stride, pairs, want, padded",
    [
        (8, 3, 2, (0, 1), "SAME", 8),   # what SAME pads for an even input at stride 2
        (8, 3, 2, (1, 1), "pad", 9),    # PyTorch-style symmetric padding: not SAME; the last row is never read
        (9, 3, 2, (1, 1), "SAME", 9),   # ... but it is SAME for an odd input
        (8, 1, 2, (0, 0), "VALID", 8),  # a ResNet 1x1 projection
        (8, 5, 1, (2, 2), "SAME", 8),
        (8, 3, 1, (2, 0), "pad", 10),
        (8, 3, 2, (0, 2), "SAME", 8),   # trailing padding no window reads is dropped: (0, 1)
        (7, 3, 2, (0, 1), "VALID", 7),  # ... all of it
        (8, 3, 3, (2, 3), "pad", 12),   # stride 3: windows end at 12 of 13 -> (2, 2)
    ],
)
def test_explicit_padding_runs_as_builtin_padding_with_identical_results(size, kernel, stride, pairs, want, padded):
    from lamina.layers._utils import builtin_padding

    x = tf.constant(np.random.RandomState(0).randn(2, size, size, 3).astype(np.float32))
    w = tf.constant(np.random.RandomState(1).randn(kernel, kernel, 3, 4).astype(np.float32))
    padding, xp = builtin_padding(x, [pairs, pairs], (kernel, kernel), (stride, stride), (1, 1))
    assert padding == ("VALID" if want == "pad" else want)
    assert (xp is x) == (want != "pad")
    assert xp.shape[1:3] == (padded, padded)
    got = tf.nn.conv2d(xp, w, stride, padding)
    ref = tf.nn.conv2d(x, w, stride, [[0, 0], list(pairs), list(pairs), [0, 0]])  # the op's own explicit padding
    assert_close(got, ref, atol=1e-5, rtol=1e-5)
    layer = lm.Conv2D(4, kernel, strides=stride, padding=[pairs, pairs], use_bias=False)
    layer(x)
    layer.weights.assign(w)
    assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
@pytest.mark.parametrize("make, shape", [
    (lambda: lm.Linear(16), (4096, 8)),
    (lambda: lm.Conv2D(16, 3), (32, 12, 12, 3)),
    (lambda: lm.Conv1D(16, 3), (64, 64, 3)),
])
def test_half_precision_bias_gradient_accumulates_in_float32(make, shape, dtype):
    """The bias gradient sums thousands of half-precision values; it must not lose them.

    (TensorFlow's CPU ``BiasAddGrad`` accumulates bfloat16 in bfloat16: 74% off at
    4096 rows. lamina's layers add their bias with a broadcast add, whose ``Sum``
    gradient accumulates in float32.)
    """
    layer = make()
    x = tf.cast(tf.random.stateless_normal(shape, seed=[5, 6]), dtype)
    layer(x)
    up = None
    with tf.GradientTape() as tape:
        y = layer(x)
        up = tf.cast(0.3 + 0.1 * tf.random.stateless_normal(y.shape, seed=[7, 8]), dtype)
        loss = tf.reduce_sum(tf.cast(y * up, tf.float32))
    (g,) = tape.gradient(loss, [layer.bias])
    want = up.numpy().astype(np.float64).reshape(-1, 16).sum(0)
    np.testing.assert_allclose(g.numpy(), want, rtol=1e-2)


@pytest.mark.parametrize("stride, want_pad", [(1, False), (2, True)])
def test_explicit_same_padding_with_unknown_spatial_size(stride, want_pad):
    """Stride 1: symmetric padding is SAME whatever the size (no Pad op); stride 2 needs the size, so it pads."""
    layer = lm.Conv2D(4, 3, strides=stride, padding=1)
    fn = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    ops = {op.type for op in fn.get_concrete_function().graph.get_operations()}
    assert ("Pad" in ops) == want_pad
    x = tf.constant(np.random.RandomState(0).randn(2, 7, 8, 3).astype(np.float32))
    ref = tf.nn.conv2d(x, layer.weights, stride, [[0, 0], [1, 1], [1, 1], [0, 0]]) + layer.bias
    assert_close(fn(x), ref, atol=1e-5, rtol=1e-5)


def _float64_conv(x, w, strides, padding):
    """The reference: TensorFlow's float64 convolution (Eigen's kernel, not oneDNN's)."""
    x, w = tf.cast(x, tf.float64), tf.cast(w, tf.float64)
    if isinstance(padding, int):
        n = len(x.shape) - 2
        x = tf.pad(x, [[0, 0]] + [[padding, padding]] * n + [[0, 0]])
        padding = "VALID"
    return tf.nn.convolution(x, w, strides=strides, padding=padding)


# (layer, input shape): one spatial dimension with a single output window and a stride
# > 1, another with stride 1. TF 2.21's oneDNN forward conv returns garbage for these
# on AVX-512 CPUs (seen on an Intel Xeon with AMX: 7.6e27 in a 1-channel case);
# lamina convolves that dimension with stride 1 (single_window_strides).
SINGLE_WINDOW = [
    pytest.param(lambda: lm.Conv2D(4, (1, 3), strides=(1, 3), padding="VALID", name="c"), (2, 5, 5, 1), id="2d-valid"),
    pytest.param(lambda: lm.Conv2D(4, (1, 3), strides=(1, 3), padding=2, name="c"), (2, 1, 1, 1), id="2d-explicit"),
    pytest.param(lambda: lm.Conv2D(1, (2, 2), strides=(1, 2), padding="VALID", name="c"), (2, 5, 3, 1), id="2d-k2"),
    pytest.param(lambda: lm.Conv2D(4, (1, 3), strides=(1, 2), padding="SAME", name="c"), (2, 5, 2, 1), id="2d-same"),
    pytest.param(lambda: lm.Conv2D(3, (3, 2), strides=(1, 3), padding="VALID", name="c"), (2, 5, 4, 2), id="2d-c2"),
    pytest.param(lambda: lm.Conv3D(4, (1, 1, 3), strides=(1, 1, 2), padding="VALID", name="c"), (2, 2, 5, 3, 1),
                 id="3d-valid"),
    pytest.param(lambda: lm.Conv3D(2, (1, 1, 2), strides=(1, 1, 3), padding="SAME", name="c"), (2, 2, 5, 2, 2),
                 id="3d-same"),
]


@pytest.mark.parametrize("dtype, tol", [(tf.float32, 1e-5), (tf.bfloat16, 3e-2)], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("make, shape", SINGLE_WINDOW)
def test_single_output_window_with_uneven_strides(make, shape, dtype, tol):
    """Forward (eager and compiled) and gradients equal a float64 reference where oneDNN's kernel is wrong."""
    layer = make()
    x = tf.random.stateless_normal(shape, (1, 2))
    layer(tf.cast(x, dtype))
    layer.bias.assign(tf.random.stateless_normal(layer.bias.shape, (3, 4)))
    w = layer.weights
    pad = layer.padding if isinstance(layer.padding, str) else layer.padding[0][0]
    want = _float64_conv(tf.cast(tf.cast(x, dtype), tf.float64), tf.cast(tf.cast(w, dtype), tf.float64),
                         layer.strides, pad) + tf.cast(layer.bias, tf.float64)
    scale = 1.0 + float(tf.reduce_max(tf.abs(want)))
    for fn in (layer, tf.function(layer)):
        got = tf.cast(fn(tf.cast(x, dtype)), tf.float64)
        assert got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=tol * scale, rtol=0)
    cot = tf.random.stateless_normal(want.shape, (5, 6), dtype=tf.float64)
    xd = tf.cast(x, dtype)
    with tf.GradientTape() as tape:
        tape.watch(xd)
        y = layer(xd)
    gx, gw = tape.gradient(y, [xd, layer.weights], output_gradients=tf.cast(cot, dtype))

    @tf.function  # (TF's eager float64 Conv3D gradient fails reading its data_format attribute)
    def reference_grads(x64, w64):
        with tf.GradientTape() as tape:
            tape.watch([x64, w64])
            y64 = _float64_conv(x64, w64, layer.strides, pad)
        return tape.gradient(y64, [x64, w64], output_gradients=cot)

    rx, rw = reference_grads(tf.cast(xd, tf.float64), tf.cast(tf.cast(w, dtype), tf.float64))
    for got, ref in ((gx, rx), (gw, rw)):
        ref = ref.numpy()
        np.testing.assert_allclose(tf.cast(got, tf.float64).numpy(), ref, atol=tol * (1 + np.abs(ref).max()), rtol=0)


@pytest.mark.parametrize("shape", [(6, 5), (4, 7, 5), (3, 6, 7, 5), (2, 3, 4, 5, 5)])
@pytest.mark.parametrize("dtype, rtol", [(tf.float32, 1e-5), (tf.bfloat16, 1e-2)])
def test_bias_gradient_is_the_sum_over_every_axis_but_the_last(shape, dtype, rtol):
    from lamina.layers._utils import bias_gradient

    dy = tf.cast(0.5 + tf.random.stateless_normal(shape, (1, 1)), dtype)
    want = tf.cast(dy, tf.float64).numpy().reshape(-1, shape[-1]).sum(0)
    np.testing.assert_allclose(tf.cast(bias_gradient(dy), tf.float64).numpy(), want, rtol=rtol)


@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
def test_conv_bias_gradient_and_second_order_gradient(mode):
    """add_bias's custom gradient (rank >= 4) gives tf.nn.bias_add's gradients, also differentiated again."""
    layer = lm.Conv2D(3, 3, activation="tanh", name="c")
    x = tf.random.stateless_normal((2, 5, 5, 2), (2, 2))
    layer(x)
    layer.bias.assign([0.1, -0.2, 0.3])

    def grads(conv):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                inner.watch(x)
                loss = tf.reduce_sum(conv(x) ** 2)
            gx, gb = inner.gradient(loss, [x, layer.bias])
            penalty = tf.reduce_sum(gx ** 2)  # a gradient penalty (WGAN-GP style)
        return gb, outer.gradient(penalty, layer.bias)

    def reference(x):
        return tf.tanh(tf.nn.bias_add(tf.nn.conv2d(x, layer.weights, 1, "SAME"), layer.bias))

    run = {"eager": lambda f: f(), "function": lambda f: tf.function(f)(),
           "xla": lambda f: tf.function(f, jit_compile=True)()}[mode]
    got = run(lambda: grads(layer))
    want = run(lambda: grads(reference))
    for g, w in zip(got, want):
        assert_close(g, w, atol=1e-4, rtol=1e-4)
