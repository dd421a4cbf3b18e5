"""Property-based tests (hypothesis) of convolution, pooling and transposed convolution.

For random configurations and input shapes:

* the output shape equals the documented formula (computed here independently),
  the layer's ``output_shape`` and the shape of the reference op's result, and
  the values equal the reference: ``tf.nn.convolution`` (per group, explicit
  padding by ``tf.pad``); ``tf.nn.pool`` where it applies (strides <= window)
  and a NumPy loop over the documented windows always; and for transposed
  convolutions the adjoint (input gradient) of ``tf.nn.convolution`` with an
  explicitly dilated kernel;
* an input too small for the window raises ``ValueError`` naming the module;
* any configuration at all (valid or not: wrong types, negative sizes, bad
  strings, wrong input rank/dtype/channels) either works, with the promised
  output shape, or raises ``ValueError``/``TypeError`` whose message starts with
  the module's description (``"Conv2D 'probe': ..."``), never another exception.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import lamina as lm
from lamina.layers.conv import conv_output_length
from lamina.layers.conv_transpose import conv_transpose_output_length
from tf_cpu_gaps import xfail_if_gap

SETTINGS = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAX_LEN = {1: 9, 2: 7, 3: 5}
CONV = {1: lm.Conv1D, 2: lm.Conv2D, 3: lm.Conv3D}
CONV_T = {1: lm.Conv1DTranspose, 2: lm.Conv2DTranspose, 3: lm.Conv3DTranspose}
POOL = {("max", 1): lm.MaxPool1D, ("max", 2): lm.MaxPool2D, ("max", 3): lm.MaxPool3D,
        ("avg", 1): lm.AvgPool1D, ("avg", 2): lm.AvgPool2D, ("avg", 3): lm.AvgPool3D}


def _prefix(cls, name="probe"):
    return f"{cls.__name__} '{name}': "


def _to_last(x, n):
    return tf.transpose(x, [0] + list(range(2, n + 2)) + [1])


def _to_first(x, n):
    return tf.transpose(x, [0, n + 1] + list(range(1, n + 1)))


def _random(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _pairs(padding, n, kernel, dilation):
    """Documented padding spec -> SAME/VALID or per-dimension (before, after) pairs."""
    if isinstance(padding, str):
        key = padding.upper()
        if key == "CAUSAL":
            return [(dilation[0] * (kernel[0] - 1), 0)]
        return key
    if isinstance(padding, int):
        return [(padding, padding)] * n
    return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def _padding_strategy(n, causal=True):
    pair = st.tuples(st.integers(0, 2), st.integers(0, 2))
    options = [
        st.sampled_from(["SAME", "VALID", "same", "valid"]),
        st.integers(0, 2),
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
        st.lists(pair, min_size=n, max_size=n),
    ]
    if causal and n == 1:
        options.append(st.just("causal"))
    return st.one_of(*options)


# ------------------------------------------------------------- formulas
@given(
    length=st.integers(1, 60), kernel=st.integers(1, 7), stride=st.integers(1, 5), dilation=st.integers(1, 4),
    padding=st.one_of(st.sampled_from(["SAME", "VALID"]), st.tuples(st.integers(0, 5), st.integers(0, 5))),
)
@settings(max_examples=200, **SETTINGS)
def test_conv_output_length_formula(length, kernel, stride, dilation, padding):
    eff = dilation * (kernel - 1) + 1
    if padding == "SAME":
        want = math.ceil(length / stride)
    elif padding == "VALID":
        want = math.floor((length - eff) / stride) + 1
    else:
        want = math.floor((length + sum(padding) - eff) / stride) + 1
    assert conv_output_length(length, kernel, stride, dilation, padding) == want
    assert conv_output_length(None, kernel, stride, dilation, padding) is None


@given(
    length=st.integers(1, 60), kernel=st.integers(1, 7), stride=st.integers(1, 5), dilation=st.integers(1, 4),
    padding=st.one_of(st.sampled_from(["SAME", "VALID"]), st.tuples(st.integers(0, 5), st.integers(0, 5))),
    op=st.one_of(st.none(), st.integers(0, 4)),
)
@settings(max_examples=200, **SETTINGS)
def test_conv_transpose_output_length_formula(length, kernel, stride, dilation, padding, op):
    eff = dilation * (kernel - 1) + 1
    if padding == "SAME":
        want = length * stride if op is None else (length - 1) * stride + 1 + op
    else:
        crop = 0 if padding == "VALID" else sum(padding)
        want = (length - 1) * stride + eff - crop + (op or 0)
    assert conv_transpose_output_length(length, kernel, stride, dilation, padding, op) == want


# ----------------------------------------------------------- convolution
def _checked_output(layer, cls, x_last, fmt, want, channels, empty_event="input too small", empty_match=".*too small"):
    """Calls ``layer`` on ``x_last`` (given in ``fmt``) and checks the output shape and ``output_shape`` against ``want``.

    When ``want`` has an empty dimension, checks the clear error instead and returns ``None``;
    else returns ``(x, y, expect)``: the input as given, the output and its expected shape.
    """
    n = len(want)
    x = x_last if fmt == "channels_last" else _to_first(x_last, n)
    if min(want) < 1:
        event(empty_event)
        with pytest.raises(ValueError, match="^" + _prefix(cls) + empty_match):
            layer(x)
        return None
    event("compared with the reference")
    y = layer(x)
    batch = x_last.shape[0]
    expect = (batch, *want, channels) if fmt == "channels_last" else (batch, channels, *want)
    assert tuple(y.shape) == expect
    assert tuple(layer.output_shape(tuple(x.shape))) == expect
    return x, y, expect


@st.composite
def conv_cases(draw):
    n = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(n))
    if draw(st.booleans()):
        strides, dilation = (1,) * n, tuple(draw(st.integers(1, 3)) for _ in range(n))
    else:
        strides, dilation = tuple(draw(st.integers(1, 3)) for _ in range(n)), (1,) * n
    groups = draw(st.sampled_from([1, 1, 2]))
    return dict(
        n=n, kernel=kernel, strides=strides, dilation=dilation, groups=groups,
        padding=draw(_padding_strategy(n)),
        in_ch=groups * draw(st.integers(1, 2)), filters=groups * draw(st.integers(1, 3)),
        data_format=draw(st.sampled_from(["channels_last", "channels_first"])),
        spatial=tuple(draw(st.integers(1, MAX_LEN[n])) for _ in range(n)),
        batch=draw(st.integers(1, 2)), seed=draw(st.integers(0, 2**16)),
    )


def _reference_conv(x_last, w, b, case):
    """tf.nn.convolution per group in float64 (Eigen's kernels, independent of oneDNN's), explicit padding by tf.pad."""
    n = case["n"]
    dtype = x_last.dtype
    x_last, w, b = (tf.cast(t, tf.float64) for t in (x_last, w, b))
    pads = _pairs(case["padding"], n, case["kernel"], case["dilation"])
    if not isinstance(pads, str):
        x_last = tf.pad(x_last, [[0, 0]] + [list(p) for p in pads] + [[0, 0]])
        pads = "VALID"
    xs = tf.split(x_last, case["groups"], axis=-1)
    ws = tf.split(w, case["groups"], axis=-1)
    ys = [tf.nn.convolution(xi, wi, strides=case["strides"], padding=pads, dilations=case["dilation"])
          for xi, wi in zip(xs, ws)]
    return tf.cast(tf.concat(ys, axis=-1) + b, dtype)


@given(case=conv_cases())
@settings(max_examples=60, **SETTINGS)
def test_conv_shape_and_values_match_formula_and_tf_nn_convolution(case):
    n, fmt = case["n"], case["data_format"]
    cls = CONV[n]
    layer = cls(case["filters"], case["kernel"], strides=case["strides"], padding=case["padding"],
                dilation=case["dilation"], groups=case["groups"], data_format=fmt, name="probe")
    pads = _pairs(case["padding"], n, case["kernel"], case["dilation"])
    want = []
    for i, length in enumerate(case["spatial"]):
        eff = case["dilation"][i] * (case["kernel"][i] - 1) + 1
        if pads == "SAME":
            want.append(-(-length // case["strides"][i]))
        elif pads == "VALID":
            want.append((length - eff) // case["strides"][i] + 1)
        else:
            want.append((length + sum(pads[i]) - eff) // case["strides"][i] + 1)
    x_last = tf.constant(_random((case["batch"], *case["spatial"], case["in_ch"]), case["seed"]))
    checked = _checked_output(layer, cls, x_last, fmt, want, case["filters"])
    if checked is None:
        return
    x, _, expect = checked
    layer.bias.assign(_random(layer.bias.shape, case["seed"] + 1))
    y = layer(x)
    ref = _reference_conv(x_last, layer.weights, layer.bias, case)
    ref = ref if fmt == "channels_last" else _to_first(ref, n)
    assert tuple(ref.shape) == expect
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------- pooling
@st.composite
def pool_cases(draw):
    n = draw(st.integers(1, 3))
    pool = tuple(draw(st.integers(1, 3)) for _ in range(n))
    strides = draw(st.one_of(st.none(), st.integers(1, 3), st.lists(st.integers(1, 3), min_size=n, max_size=n)))
    return dict(
        n=n, pool=pool, strides=strides, reduction=draw(st.sampled_from(["max", "avg"])),
        padding=draw(st.sampled_from(["SAME", "VALID", "same", "valid"])),
        data_format=draw(st.sampled_from(["channels_last", "channels_first"])),
        spatial=tuple(draw(st.integers(1, MAX_LEN[n])) for _ in range(n)),
        channels=draw(st.integers(1, 3)), batch=draw(st.integers(1, 2)), seed=draw(st.integers(0, 2**16)),
    )


@given(case=pool_cases())
@settings(max_examples=60, **SETTINGS)
def test_pool_shape_and_values_match_formula_and_tf_nn_pool(case):
    n, fmt = case["n"], case["data_format"]
    cls = POOL[(case["reduction"], n)]
    layer = cls(case["pool"], strides=case["strides"], padding=case["padding"], data_format=fmt, name="probe")
    s = case["strides"]
    strides = case["pool"] if s is None else ((s,) * n if isinstance(s, int) else tuple(s))
    same = case["padding"].upper() == "SAME"
    want = [-(-L // st_) if same else (L - k) // st_ + 1 for L, k, st_ in zip(case["spatial"], case["pool"], strides)]
    x_last = tf.constant(_random((case["batch"], *case["spatial"], case["channels"]), case["seed"]))
    checked = _checked_output(layer, cls, x_last, fmt, want, case["channels"])
    if checked is None:
        return
    _, y, _ = checked
    y_last = y if fmt == "channels_last" else _to_last(y, n)
    ref = _numpy_pool(x_last.numpy(), case["pool"], strides, same, case["reduction"])
    np.testing.assert_allclose(y_last.numpy(), ref, rtol=1e-5, atol=1e-5)
    if all(s_ <= k for s_, k in zip(strides, case["pool"])):  # tf.nn.pool refuses strides > window
        tf_ref = tf.nn.pool(x_last, window_shape=case["pool"], pooling_type=case["reduction"].upper(),
                            strides=strides, padding="SAME" if same else "VALID")
        np.testing.assert_allclose(y_last.numpy(), tf_ref.numpy(), rtol=1e-5, atol=1e-5)


def _numpy_pool(x, pool, strides, same, reduction):
    """Pooling by definition: SAME pads ``max((out-1)*s + k - L, 0)``, the odd one at the end; pads are ignored."""
    spatial = x.shape[1:-1]
    outs, befores = [], []
    for L, k, s in zip(spatial, pool, strides):
        out = -(-L // s) if same else (L - k) // s + 1
        outs.append(out)
        befores.append(max((out - 1) * s + k - L, 0) // 2 if same else 0)
    y = np.zeros((x.shape[0], *outs, x.shape[-1]), np.float32)
    for index in np.ndindex(*outs):
        window = tuple(
            slice(max(i * s - b, 0), min(i * s - b + k, L))
            for i, s, b, k, L in zip(index, strides, befores, pool, spatial)
        )
        block = x[(slice(None),) + window + (slice(None),)]
        axes = tuple(range(1, 1 + len(pool)))
        y[(slice(None),) + index + (slice(None),)] = block.max(axis=axes) if reduction == "max" else block.mean(axis=axes)
    return y


# ------------------------------------------------- transposed convolution
@st.composite
def transpose_cases(draw):
    n = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(n))
    strides = tuple(draw(st.integers(1, 3)) for _ in range(n))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(n))
    padding = draw(_padding_strategy(n, causal=False))
    same = isinstance(padding, str) and padding.upper() == "SAME"
    op = None
    if draw(st.booleans()):
        limits = [s if same else max(s, d) for s, d in zip(strides, dilation)]
        op = tuple(draw(st.integers(0, lim - 1)) for lim in limits)
    return dict(
        n=n, kernel=kernel, strides=strides, dilation=dilation, padding=padding, output_padding=op,
        in_ch=draw(st.integers(1, 3)), filters=draw(st.integers(1, 3)),
        data_format=draw(st.sampled_from(["channels_last", "channels_first"])),
        spatial=tuple(draw(st.integers(1, 4)) for _ in range(n)),
        batch=draw(st.integers(1, 2)), seed=draw(st.integers(0, 2**16)),
    )


def _reference_transpose(x_last, w, b, case, out_len):
    """The adjoint of a strided convolution with an explicitly dilated kernel (tf.nn.convolution + gradient)."""
    n = case["n"]
    w = w.numpy()
    eff = [d * (k - 1) + 1 for k, d in zip(case["kernel"], case["dilation"])]
    w_dil = np.zeros(eff + list(w.shape[n:]), np.float32)
    w_dil[tuple(slice(None, None, d) for d in case["dilation"])] = w
    pads = _pairs(case["padding"], n, case["kernel"], case["dilation"])
    batch = int(x_last.shape[0])
    if pads == "SAME":
        z = tf.zeros([batch, *out_len, w.shape[n]])
        sizes = out_len
    else:
        sizes = [(L - 1) * s + e for L, s, e in zip(case["spatial"], case["strides"], eff)]
        z = tf.zeros([batch, *sizes, w.shape[n]])
    with tf.GradientTape() as tape:
        tape.watch(z)
        # An explicit data_format: without it TF's eager Conv3D gradient fails.
        forward = tf.nn.convolution(z, w_dil, strides=case["strides"], padding="SAME" if pads == "SAME" else "VALID",
                                    data_format={1: "NWC", 2: "NHWC", 3: "NDHWC"}[n])
        assert tuple(forward.shape[1:-1]) == tuple(case["spatial"])
        y = tape.gradient(tf.reduce_sum(forward * x_last), z)
    if pads != "SAME":
        op = case["output_padding"] or (0,) * n
        y = tf.pad(y, [[0, 0]] + [[0, p] for p in op] + [[0, 0]])
        crops = [(0, 0)] * n if pads == "VALID" else pads
        y = y[(slice(None),) + tuple(slice(b_, y.shape[i + 1] - a_) for i, (b_, a_) in enumerate(crops))]
    return y + b


@given(case=transpose_cases())
@settings(max_examples=60, **SETTINGS)
def test_conv_transpose_shape_and_values_match_formula_and_adjoint(case):
    n, fmt = case["n"], case["data_format"]
    cls = CONV_T[n]
    layer = cls(case["filters"], case["kernel"], strides=case["strides"], padding=case["padding"],
                output_padding=case["output_padding"], dilation=case["dilation"], data_format=fmt, name="probe")
    pads = _pairs(case["padding"], n, case["kernel"], case["dilation"])
    want = []
    for i, length in enumerate(case["spatial"]):
        s, d, k = case["strides"][i], case["dilation"][i], case["kernel"][i]
        op = None if case["output_padding"] is None else case["output_padding"][i]
        if pads == "SAME":
            want.append((length - 1) * s + 1 + (s - 1 if op is None else op))
        else:
            crop = 0 if pads == "VALID" else sum(pads[i])
            want.append((length - 1) * s + d * (k - 1) + 1 - crop + (op or 0))
    x_last = tf.constant(_random((case["batch"], *case["spatial"], case["in_ch"]), case["seed"]))
    checked = _checked_output(layer, cls, x_last, fmt, want, case["filters"], "cropped to nothing", "")
    if checked is None:
        return
    x, _, expect = checked
    layer.bias.assign(_random(layer.bias.shape, case["seed"] + 1))
    y = layer(x)
    ref = _reference_transpose(x_last, layer.weights, layer.bias, case, want)
    ref = ref if fmt == "channels_last" else _to_first(ref, n)
    assert tuple(ref.shape) == expect
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)


# ---------------------------------------- anything at all: clean errors only
JUNK = st.one_of(
    st.integers(-2, 4), st.none(), st.booleans(), st.floats(-1.5, 3.5), st.just(float("nan")), st.text(max_size=3),
    st.lists(st.integers(-1, 3), max_size=4), st.tuples(st.integers(-1, 3), st.text(max_size=1)),
    st.lists(st.tuples(st.integers(-1, 2), st.integers(-1, 2)), max_size=4), st.just(object()),
)
PADDING_JUNK = st.one_of(JUNK, st.sampled_from(["SAME", "VALID", "CAUSAL", "FULL", "", "same"]))
FORMAT_JUNK = st.one_of(st.sampled_from(["channels_last", "channels_first", "NHWC", "NCHW", "nwc", "xyz", ""]), JUNK)


@st.composite
def any_layer(draw):
    def pick(valid, junk=JUNK):
        """Mostly a valid value, one time in eight junk."""
        return draw(junk) if draw(st.integers(0, 7)) == 0 else draw(valid)

    kind = draw(st.sampled_from(["conv", "conv_t", "pool", "depthwise"]))
    n = draw(st.integers(1, 3)) if kind != "depthwise" else 2
    small = st.integers(1, 3)
    common = dict(padding=pick(st.sampled_from(["SAME", "VALID", "same"]), PADDING_JUNK),
                  data_format=pick(st.sampled_from(["channels_last", "channels_first"]), FORMAT_JUNK), name="probe")
    if kind == "conv":
        cls = CONV[n]
        kwargs = dict(num_filters=pick(small), kernel_size=pick(small), strides=pick(small),
                      dilation=pick(st.just(1)), groups=pick(st.just(1)),
                      activation=pick(st.sampled_from([None, "relu"])), **common)
    elif kind == "conv_t":
        cls = CONV_T[n]
        kwargs = dict(num_filters=pick(small), kernel_size=pick(small), strides=pick(small),
                      dilation=pick(small), output_padding=pick(st.none()), **common)
    elif kind == "pool":
        cls = POOL[(draw(st.sampled_from(["max", "avg"])), n)]
        kwargs = dict(pool_size=pick(small), strides=pick(st.one_of(st.none(), small)), **common)
    else:
        cls = lm.DepthwiseConv2D
        kwargs = dict(kernel_size=pick(small), strides=pick(small), **common)
        if draw(st.booleans()):
            kwargs["depth_multiplier"] = pick(small)
    rank = pick(st.just(n + 2), st.sampled_from([n + 1, n + 3]))
    shape = tuple(pick(st.integers(1, 5), st.just(0)) for _ in range(rank))
    # float16 is left out here: CPU kernel gaps (see KNOWN_BUGS) are not configuration errors.
    dtype = pick(st.just(tf.float32), st.sampled_from([tf.int32, tf.int64, tf.bool]))
    return cls, kwargs, shape, dtype


def _known_bug(cls, kwargs, shape, dtype):
    """Cases that still end in a TensorFlow error (see test_known_layer_bugs); None otherwise."""
    channels = shape[1] if kwargs.get("data_format") == "channels_first" and len(shape) > 1 else shape[-1:]
    channels = channels if isinstance(channels, int) else (channels[0] if channels else None)
    conv = issubclass(cls, lm.ConvND)
    if (conv or cls is lm.DepthwiseConv2D) and shape and shape[0] == 0:
        return "convolution of an empty batch"
    if (conv or cls is lm.DepthwiseConv2D or issubclass(cls, lm.ConvNDTranspose)) and channels == 0:
        # Also: a float16 Conv3DTranspose of an empty batch with zero channels kills the
        # process (SIGFPE inside TensorFlow's Conv3DBackpropInputV2), so it cannot run here.
        return "zero input channels"
    return None


@given(spec=any_layer())
@settings(max_examples=150, **SETTINGS)
def test_any_configuration_works_or_raises_a_clear_error_naming_the_module(spec):
    cls, kwargs, shape, dtype = spec
    assume(_known_bug(cls, kwargs, shape, dtype) is None)
    prefix = _prefix(cls)
    try:
        layer = cls(**kwargs)
        x = tf.zeros(shape, dtype)
        y = layer(x)
    except (ValueError, TypeError) as e:
        event(f"clean {type(e).__name__}")
        assert str(e).startswith(prefix), f"{type(e).__name__} without the module prefix: {e}"
        assert "\n" not in str(e).strip(), f"not one line: {e!r}"
        return
    # No error: the promised shape.
    event("worked")
    assert tuple(y.shape) == tuple(layer.output_shape(shape)), (kwargs, shape)


EMPTY_BATCH_BUG = xfail_if_gap("empty_batch_conv_shape", "TensorFlow 2.21 oneDNN convolution: wrong output shape for "
                               "an empty batch (see docs/errors.md)")
F16_GAP = "TensorFlow 2.21 CPU: no float16 kernel for this op on a CPU without AVX512_FP16 (see docs/errors.md)"

KNOWN_BUGS = [
    # TF 2.21's oneDNN convolution (tf.nn.conv2d on CPU) returns the input's shape for an empty
    # batch: a wrong output shape, or BiasAdd fails. An empty batch reaches the model on a
    # replica given an empty slice of a short last batch. (A 1x1 Conv1D from 1 channel now
    # comes out right: the bias is a broadcast add, which broadcasts the wrong shape back.)
    pytest.param(lambda: lm.Conv2D(2, 3, name="probe"), (0, 4, 4, 3), tf.float32, id="conv-empty-batch",
                 marks=EMPTY_BATCH_BUG),
    pytest.param(lambda: lm.Conv2D(3, 3, strides=2, use_bias=False, name="probe"), (0, 4, 4, 1), tf.float32,
                 id="conv-empty-batch-no-bias-wrong-shape", marks=EMPTY_BATCH_BUG),
    pytest.param(lambda: lm.DepthwiseConv2D(3, strides=2, name="probe"), (0, 4, 4, 1), tf.float32,
                 id="depthwise-empty-batch-wrong-shape", marks=EMPTY_BATCH_BUG),
    # float16 on a CPU without native float16 kernels (TensorFlow's Eigen fallback): no
    # MaxPool3D/AvgPool3D kernel. Where the CPU has AVX512_FP16, oneDNN runs them and they
    # must work (tf_cpu_gaps.TF_CPU_GAPS probes).
    pytest.param(lambda: lm.MaxPool3D(1, name="probe"), (1, 2, 2, 2, 1), tf.float16, id="maxpool3d-float16",
                 marks=xfail_if_gap("f16_pool3d", F16_GAP)),
    pytest.param(lambda: lm.AvgPool3D(1, name="probe"), (1, 2, 2, 2, 1), tf.float16, id="avgpool3d-float16",
                 marks=xfail_if_gap("f16_pool3d", F16_GAP)),
    # Dilated float16 convolutions work everywhere: where the CPU has no such kernel,
    # lamina.layers.kernel_gaps computes them with undilated ones.
    pytest.param(lambda: lm.Conv2DTranspose(1, 2, dilation=2, dtype=tf.float16, name="probe"), (1, 3, 3, 1),
                 tf.float16, id="conv2d-transpose-dilated-float16"),
    pytest.param(lambda: lm.Conv3D(1, 2, dilation=2, dtype=tf.float16, name="probe"), (1, 5, 5, 5, 1),
                 tf.float16, id="conv3d-dilated-float16"),
]


@pytest.mark.parametrize("make, shape, dtype", KNOWN_BUGS)
def test_known_layer_bugs(make, shape, dtype):
    """Each works (the right output shape) or raises a clean error naming the module."""
    layer = make()
    try:
        y = layer(tf.zeros(shape, dtype))
    except (ValueError, TypeError) as e:
        assert str(e).startswith(f"{type(layer).__name__} 'probe': ")
        return
    assert tuple(y.shape) == tuple(layer.output_shape(shape))


@pytest.mark.parametrize("make", [lambda: lm.Conv2D(2, 1, name="probe"), lambda: lm.DepthwiseConv2D(1, name="probe")])
def test_zero_input_channels_is_a_clean_error(make):
    with pytest.raises(ValueError, match=r"'probe': the number of input channels must be > 0, got 0"):
        make()(tf.zeros((1, 3, 3, 0)))
