"""The exact replacements for TensorFlow's missing CPU kernels (``lamina.layers.kernel_gaps``).

Where oneDNN is off (AVX2-only CPUs, ``TF_ENABLE_ONEDNN_OPTS=0``) TensorFlow has
no dilated convolution gradients, no dilated 3-D convolution and no depthwise
convolution with unequal strides; lamina computes them another way. These tests
force that path on any CPU (``fallback`` fixture) and check it against PyTorch,
in eager mode, ``tf.function`` with unknown sizes and XLA; one test runs the
layers in a process with oneDNN off, as on such a CPU.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from conftest import assert_close
from lamina.layers import kernel_gaps
from test_conv import CASES as CONV_CASES
from test_conv import DW_CASES, _tup
from test_conv import test_conv_matches_torch_and_tf as _conv_vs_torch
from test_conv import test_depthwise_matches_torch_and_grouped_conv as _depthwise_vs_torch
from test_conv import test_gradients_match_torch_autograd as _conv_grads_vs_torch
from test_conv_transpose import CASES as CONVT_CASES
from test_conv_transpose import SPATIAL as CONVT_SPATIAL
from test_conv_transpose import _make as _make_transpose
from test_conv_transpose import _torch_conv_transpose
from test_conv_transpose import test_matches_torch_conv_transpose as _transpose_vs_torch


@pytest.fixture
def fallback(monkeypatch):
    """Makes every probe say the native kernel is missing; yields the list of probes consulted."""
    asked = []

    def missing(*args):
        asked.append(args)
        return False

    monkeypatch.setattr(kernel_gaps, "_native_dilated_conv", missing)
    monkeypatch.setattr(kernel_gaps, "_native_depthwise_strides", missing)
    yield asked
    assert asked, "no layer consulted the kernel probe: the fallback did not run"


DILATED_CONV = [c for c in CONV_CASES if max(_tup(c[4], c[0])) > 1]
DILATED_CONVT = [c for c in CONVT_CASES if max(_tup(c[5], c[0])) > 1]
UNEQUAL_DW = [c for c in DW_CASES if len(set(_tup(c[2], 2))) > 1]


@pytest.mark.parametrize("case", DILATED_CONV, ids=[f"{c[0]}d-{i}" for i, c in enumerate(DILATED_CONV)])
def test_dilated_conv_fallback_matches_torch(case, fallback):
    _conv_vs_torch(case, "channels_last")


@pytest.mark.parametrize("case", [(1, 3, 1, "CAUSAL", 2, 2, True, "tanh"),
                                  (2, 3, 1, ((1, 0), (2, 1)), (2, 1), 1, True, "relu"),
                                  (3, 2, 1, "SAME", (1, 2, 2), 2, True, None)])
def test_dilated_conv_fallback_gradients_match_torch(case, fallback):
    _conv_grads_vs_torch(case)


@pytest.mark.parametrize("case", DILATED_CONVT, ids=[f"{c[0]}d-{i}" for i, c in enumerate(DILATED_CONVT)])
def test_dilated_conv_transpose_fallback_matches_torch(case, fallback):
    _transpose_vs_torch(case, "channels_last")


@pytest.mark.parametrize("case", UNEQUAL_DW + [((3, 2), 2, (2, 3), "SAME", 1), (3, 1, (3, 1), "VALID", 1)])
def test_depthwise_unequal_strides_fallback_matches_torch(case, fallback):
    _depthwise_vs_torch(case, "channels_last")


def _grads(layer, x, g):
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) * g)
    return [loss] + tape.gradient(loss, [x, layer.weights])


@pytest.mark.parametrize("make, shape", [
    (lambda: lm.Conv1D(3, 3, padding="CAUSAL", dilation=3), (2, 11, 2)),
    (lambda: lm.Conv2D(3, 3, dilation=(2, 3)), (2, 9, 10, 2)),
    (lambda: lm.Conv3D(2, 2, padding="VALID", dilation=2), (2, 5, 6, 5, 2)),
    (lambda: lm.Conv2DTranspose(3, 3, strides=2, dilation=2, padding="SAME"), (2, 4, 5, 2)),
    (lambda: lm.Conv1DTranspose(3, 3, strides=2, dilation=2, padding="VALID", output_padding=1), (2, 5, 2)),
    (lambda: lm.Conv3DTranspose(2, 2, strides=1, dilation=2), (1, 3, 4, 3, 2)),
    (lambda: lm.DepthwiseConv2D(3, 2, strides=(1, 2)), (2, 7, 9, 2)),
], ids=["conv1d", "conv2d", "conv3d", "conv2d-transpose", "conv1d-transpose", "conv3d-transpose", "depthwise"])
def test_fallback_in_every_mode_equals_the_native_op(make, shape, monkeypatch):
    """Eager, tf.function with unknown batch and spatial sizes, and XLA: the same values and gradients.

    The native op is the reference where this CPU has it (and XLA's, which has every kernel).
    """
    x = tf.random.normal(shape)
    layer = make()
    g = tf.random.normal(layer.output_shape(shape))
    probed = kernel_gaps.native_dilated_conv(len(shape) - 2, tf.float32) and kernel_gaps.native_depthwise_strides(
        tf.float32)
    reference = [t.numpy() for t in tf.function(_grads, jit_compile=True)(layer, x, g)]
    if probed:
        for got, want in zip(_grads(layer, x, g), reference):
            assert_close(got, want, atol=1e-4, rtol=1e-4)
    monkeypatch.setattr(kernel_gaps, "_native_dilated_conv", lambda *a: False)
    monkeypatch.setattr(kernel_gaps, "_native_depthwise_strides", lambda *a: False)
    spec = tf.TensorSpec([None] * (len(shape) - 1) + [shape[-1]], tf.float32)
    dynamic = tf.function(lambda x, g: _grads(layer, x, g), input_signature=[spec, tf.TensorSpec(None, tf.float32)])
    for run in (lambda: _grads(layer, x, g), lambda: dynamic(x, g),
                lambda: tf.function(_grads, jit_compile=True)(layer, x, g)):
        for got, want in zip(run(), reference):
            assert_close(got, want, atol=1e-4, rtol=1e-4)
    # the graph really holds no dilated kernel now
    graph = tf.function(lambda x: layer(x)).get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    for op in graph.get_operations():
        if "dilations" in op.node_def.attr:
            assert set(op.get_attr("dilations")) == {1}, op.name


@pytest.mark.parametrize("case", [c for c in DILATED_CONVT if c[0] == 2][:2])
def test_dilated_conv_transpose_fallback_half_precision(case, fallback):
    """bfloat16 and float16 too (the dtypes with the most missing kernels), against float32 PyTorch."""
    n = case[0]
    x = np.random.normal(size=(2, *CONVT_SPATIAL[n], 4)).astype(np.float32)
    for dtype in (tf.bfloat16, tf.float16):
        layer = _make_transpose(case, dtype=tf.float32)
        y = layer(tf.cast(x, dtype))
        assert y.dtype == dtype
        ref = _torch_conv_transpose(x, layer.weights.numpy(), layer.bias.numpy(), *case[1:])
        assert_close(tf.cast(y, tf.float32), ref, atol=0.1, rtol=0.05)


def _max_pool_reference(x, pool, strides):
    """NumPy SAME max pooling of a channels-last array: TensorFlow's padding rule, padded positions ignored."""
    n = x.ndim - 2
    out_shape, starts = [], []
    for L, k, s in zip(x.shape[1:-1], pool, strides):
        out = -(-L // s)
        before = max((out - 1) * s + k - L, 0) // 2
        out_shape.append(out)
        starts.append([i * s - before for i in range(out)])
    y = np.empty((x.shape[0], *out_shape, x.shape[-1]), x.dtype)
    for index in np.ndindex(*out_shape):
        window = tuple(slice(max(starts[d][index[d]], 0), starts[d][index[d]] + pool[d]) for d in range(n))
        y[(slice(None),) + index] = x[(slice(None),) + window].max(axis=tuple(range(1, n + 1)))
    return y


@pytest.mark.parametrize("pool, strides, spatial", [
    ((1, 1, 1), (3, 3, 3), (1, 1, 3)),
    ((1, 2, 1), (3, 3, 2), (7, 5, 4)),
    ((2, 2, 2), (3, 4, 2), (8, 9, 5)),
])
def test_pool3d_same_with_stride_beyond_the_window(pool, strides, spatial):
    """TensorFlow's Eigen 3-D pooling shifts these windows; lamina cuts the unread tail first."""
    x = np.random.normal(size=(2, *spatial, 3)).astype(np.float32)
    layer = lm.MaxPool3D(pool, strides=strides, padding="SAME")
    want = _max_pool_reference(x, pool, strides)
    assert_close(layer(tf.constant(x)), want, atol=0, rtol=0)
    fn = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, None, 3), tf.float32)])
    assert_close(fn(tf.constant(x)), want, atol=0, rtol=0)
    # the average agrees with the max's windows: pool of ones is one
    ones = lm.AvgPool3D(pool, strides=strides, padding="SAME")(tf.ones_like(x))
    assert_close(ones, np.ones(want.shape, np.float32), atol=0, rtol=0)


_WITHOUT_ONEDNN = textwrap.dedent("""
    import numpy as np, tensorflow as tf, lamina as lm
    from lamina.layers import kernel_gaps
    assert not kernel_gaps.native_dilated_conv(1, tf.float32), "the probe missed the absent kernel"
    assert not kernel_gaps.native_depthwise_strides(tf.float32)
    layers = [(lm.Conv1D(3, 3, padding="CAUSAL", dilation=2), (2, 9, 2)),
              (lm.Conv3D(2, 2, dilation=2), (1, 5, 5, 5, 2)),
              (lm.Conv2DTranspose(2, 3, dilation=2), (2, 4, 4, 2)),
              (lm.DepthwiseConv2D(3, strides=(1, 2)), (2, 6, 6, 2))]
    for layer, shape in layers:
        x = tf.random.normal(shape)
        with tf.GradientTape() as tape:  # eager: TensorFlow computes both gradients of a conv
            tape.watch(x)
            y = tf.reduce_sum(layer(x) ** 2)
        grads = tape.gradient(y, [x, layer.weights])
        assert all(np.isfinite(g.numpy()).all() for g in grads)
    x = tf.constant(np.arange(3, dtype=np.float32).reshape(1, 1, 1, 3, 1))
    print("pool", lm.MaxPool3D(1, strides=3, padding="SAME")(x).numpy().ravel().tolist())
    model = lm.Sequential([lm.Conv1D(4, 3, padding="CAUSAL", dilation=2, activation="relu"),
                           lm.Conv1D(4, 3, padding="CAUSAL", dilation=4), lm.GlobalAvgPool(), lm.Linear(2)])
    xs = np.random.normal(size=(32, 16, 1)).astype(np.float32)
    ys = (xs.mean(axis=(1, 2)) > 0).astype(np.int32)
    trainer = lm.Trainer(model, lm.optim.Adam(1e-2), quiet=True, tensorboard=False, seed=0)
    history = trainer.fit((xs, ys), epochs=3, batch_size=16)
    print("loss", history[0]["loss"], history[-1]["loss"])
""")


def test_layers_train_in_a_process_without_onednn():
    """As on an AVX2-only CPU: the probes see the missing kernels and a dilated stack trains."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", _WITHOUT_ONEDNN], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "pool [0.0]" in out.stdout, out.stdout
    first, last = (float(v) for v in out.stdout.split("loss")[1].split())
    assert np.isfinite(first) and last < first, out.stdout
