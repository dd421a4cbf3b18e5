"""BatchNorm, LayerNorm and GroupNorm against PyTorch and NumPy references."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from conftest import assert_close

torch = pytest.importorskip("torch")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rand(*shape, seed=0, loc=0.0, scale=1.0):
    return (np.random.RandomState(seed).randn(*shape) * scale + loc).astype(np.float32)


def _nchw_to_nhwc(a):
    return np.transpose(a, (0, 2, 3, 1))


# ----------------------------------------------------------------- BatchNorm
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_batchnorm_training_matches_torch_and_numpy_moving_stats(data_format):
    momentum, eps, c = 0.9, 1e-5, 3
    bn = lm.BatchNorm(momentum=momentum, eps=eps, data_format=data_format, name="bn")
    tbn = torch.nn.BatchNorm2d(c, eps=eps, momentum=1 - momentum)  # torch momentum = 1 - ours
    tbn.train()
    ref_mean, ref_var = np.zeros(c), np.ones(c)
    ref_var_unbiased = np.ones(c)
    for step in range(3):
        x = _rand(4, c, 5, 6, seed=step, loc=step + 1.0, scale=2.0)  # NCHW
        inp = x if data_format == "channels_first" else _nchw_to_nhwc(x)
        y = bn(inp, training=True).numpy()
        ty = tbn(torch.from_numpy(x)).detach().numpy()
        if data_format == "channels_last":
            ty = _nchw_to_nhwc(ty)
        np.testing.assert_allclose(y, ty, atol=2e-5, rtol=1e-5)
        # Independent NumPy reference of the moving averages (biased variance).
        ref_mean = momentum * ref_mean + (1 - momentum) * x.mean(axis=(0, 2, 3))
        ref_var = momentum * ref_var + (1 - momentum) * x.var(axis=(0, 2, 3))
        ref_var_unbiased = momentum * ref_var_unbiased + (1 - momentum) * x.var(axis=(0, 2, 3), ddof=1)
    assert_close(bn.moving_mean, ref_mean, atol=1e-5)
    assert_close(bn.moving_mean, tbn.running_mean.numpy(), atol=1e-5)
    assert_close(bn.moving_variance, ref_var, atol=1e-5)
    # The documented difference: torch folds the unbiased variance into its running variance.
    assert_close(tbn.running_var.numpy(), ref_var_unbiased, atol=1e-5)
    assert not np.allclose(bn.moving_variance.numpy(), tbn.running_var.numpy(), atol=1e-4)


@pytest.mark.parametrize("training", [False, None])
def test_batchnorm_inference_matches_torch_eval(training):
    c, eps = 4, 1e-3
    x = _rand(3, c, 4, 4, seed=1, loc=0.5)
    tbn = torch.nn.BatchNorm2d(c, eps=eps)
    with torch.no_grad():
        tbn.running_mean.copy_(torch.from_numpy(_rand(c, seed=2)))
        tbn.running_var.copy_(torch.from_numpy(np.abs(_rand(c, seed=3)) + 0.5))
        tbn.weight.copy_(torch.from_numpy(_rand(c, seed=4)))
        tbn.bias.copy_(torch.from_numpy(_rand(c, seed=5)))
    tbn.eval()
    bn = lm.BatchNorm(eps=eps, axis=1)
    bn(x, training=False)
    bn.set_weights(
        {
            "moving_mean": tbn.running_mean.numpy(),
            "moving_variance": tbn.running_var.numpy(),
            "scale": tbn.weight.detach().numpy(),
            "offset": tbn.bias.detach().numpy(),
        }
    )
    before = bn.get_weights()
    y = bn(x, training=training)
    assert_close(y, tbn(torch.from_numpy(x)).detach().numpy(), atol=1e-5)
    for k, v in bn.get_weights().items():  # inference leaves the moving stats alone
        np.testing.assert_array_equal(v, before[k])


def test_batchnorm_gradients_match_torch():
    c, eps = 3, 1e-5
    x = _rand(4, c, 3, 5, seed=7, loc=1.0)
    w = _rand(4, c, 3, 5, seed=8)
    gamma, beta = _rand(c, seed=9), _rand(c, seed=10)
    tbn = torch.nn.BatchNorm2d(c, eps=eps)
    with torch.no_grad():
        tbn.weight.copy_(torch.from_numpy(gamma))
        tbn.bias.copy_(torch.from_numpy(beta))
    tx = torch.from_numpy(x).requires_grad_(True)
    (tbn(tx) * torch.from_numpy(w)).sum().backward()

    bn = lm.BatchNorm(eps=eps, data_format="channels_first")
    bn(x, training=False)
    bn.scale.assign(gamma)
    bn.offset.assign(beta)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(bn(xt, training=True) * w)
    gx, gs, go = tape.gradient(loss, [xt, bn.scale, bn.offset])
    assert_close(gx, tx.grad.numpy(), atol=1e-4, rtol=1e-4)
    assert_close(gs, tbn.weight.grad.numpy(), atol=1e-4, rtol=1e-4)
    assert_close(go, tbn.bias.grad.numpy(), atol=1e-4, rtol=1e-4)
    # Moving statistics are not trainable and get no gradient.
    assert [v.name for v in bn.trainable_variables] == ["batch_norm/offset:0", "batch_norm/scale:0"]


def test_batchnorm_variables_names_and_flags():
    bn = lm.BatchNorm(name="bn1")
    bn(tf.zeros([2, 7]), training=True)
    names = {v.name: v.trainable for v in bn.variables}
    assert names == {
        "bn1/scale:0": True,
        "bn1/offset:0": True,
        "bn1/moving_mean:0": False,
        "bn1/moving_variance:0": False,
    }
    assert all(v.shape == (7,) and v.dtype == tf.float32 for v in bn.variables)
    assert_close(bn.scale, np.ones(7))
    assert_close(bn.offset, np.zeros(7))

    plain = lm.BatchNorm(center=False, scale=False, eps=1e-5)
    x = _rand(6, 3, seed=3, loc=2.0)
    y = plain(x, training=True)
    assert [v.name for v in plain.variables] == ["batch_norm/moving_mean:0", "batch_norm/moving_variance:0"]
    assert_close(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), atol=1e-5)


def test_batchnorm_in_tf_function_updates_each_step_and_tensor_training_flag():
    x1, x2 = _rand(8, 2, seed=1, loc=3.0), _rand(8, 2, seed=2, loc=-1.0)
    eager, graph = lm.BatchNorm(momentum=0.5), lm.BatchNorm(momentum=0.5)

    @tf.function
    def step(x, training):
        return graph(x, training=training)

    for x in (x1, x2):
        assert_close(step(tf.constant(x), tf.constant(True)), eager(x, training=True), atol=1e-6)
        assert_close(graph.moving_mean, eager.moving_mean, atol=1e-6)
        assert_close(graph.moving_variance, eager.moving_variance, atol=1e-6)
    expected_mean = 0.5 * (0.5 * x1.mean(0)) + 0.5 * x2.mean(0)
    assert_close(graph.moving_mean, expected_mean, atol=1e-5)
    before = graph.moving_mean.numpy()
    assert_close(step(tf.constant(x1), tf.constant(False)), eager(x1, training=False), atol=1e-6)
    np.testing.assert_array_equal(graph.moving_mean.numpy(), before)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_batchnorm_mixed_precision(dtype):
    # A large mean over many elements: statistics must be computed in float32.
    x16 = tf.cast(_rand(64, 8, 8, 4, seed=5, loc=100.0, scale=1.0), dtype)
    x32 = tf.cast(x16, tf.float32)
    bn16, bn32 = lm.BatchNorm(eps=1e-3), lm.BatchNorm(eps=1e-3)
    y16 = bn16(x16, training=True)
    y32 = bn32(x32, training=True)
    assert y16.dtype == dtype
    assert all(v.dtype == tf.float32 for v in bn16.variables)
    tol = 0.04 if dtype == tf.bfloat16 else 4e-3
    assert_close(tf.cast(y16, tf.float32), y32, atol=tol, rtol=tol)
    assert_close(bn16.moving_mean, bn32.moving_mean, atol=1e-5, rtol=1e-6)
    assert_close(bn16.moving_variance, bn32.moving_variance, atol=1e-5, rtol=1e-5)
    assert bn16(x16, training=False).dtype == dtype


def test_batchnorm_errors():
    with pytest.raises(ValueError, match=r"BatchNorm 'bad': momentum must be in \[0, 1\], got 1.5"):
        lm.BatchNorm(momentum=1.5, name="bad")
    with pytest.raises(ValueError, match="BatchNorm 'bad': eps must be > 0"):
        lm.BatchNorm(eps=0.0, name="bad")
    with pytest.raises(TypeError, match="BatchNorm 'bad': momentum"):
        lm.BatchNorm(momentum="high", name="bad")
    with pytest.raises(ValueError, match="contradicts data_format"):
        lm.BatchNorm(axis=-1, data_format="channels_first")
    with pytest.raises(ValueError, match="axis must not be 0"):
        lm.BatchNorm(axis=0)
    with pytest.raises(ValueError, match="data_format must be"):
        lm.BatchNorm(data_format="NHCW")
    with pytest.raises(TypeError, match="cross_replica"):
        lm.BatchNorm(cross_replica="yes")
    bn = lm.BatchNorm(name="test_bn")
    with pytest.raises(ValueError, match=r"BatchNorm 'test_bn': expected an input of rank >= 2, got rank 1"):
        bn(tf.zeros([3]))
    bn(tf.zeros([2, 4, 4, 5]), training=True)
    with pytest.raises(ValueError, match=r"BatchNorm 'test_bn': expected 5 channels \(fixed at first call\), got 3"):
        bn(tf.zeros([2, 4, 4, 3]))
    with pytest.raises(TypeError, match="BatchNorm 'test_bn': expected a floating-point input, got dtype int32"):
        bn(tf.zeros([2, 4, 4, 5], tf.int32))
    with pytest.raises(TypeError, match="training must be"):
        bn(tf.zeros([2, 5]), training="yes")
    wide = lm.BatchNorm(axis=3, name="wide")
    with pytest.raises(ValueError, match=r"BatchNorm 'wide': axis 3 is out of range for an input of rank 3"):
        wide(tf.zeros([2, 3, 4]))


_SYNC_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import lamina as lm

    x = (np.random.RandomState(0).randn(8, 3, 3, 4) * 2 + 5).astype(np.float32)
    weights = np.random.RandomState(1).randn(8, 3, 3, 4).astype(np.float32)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        bn = lm.BatchNorm(momentum=0.9, eps=1e-5, name="sync")
        local = lm.BatchNorm(momentum=0.9, eps=1e-5, cross_replica=False, name="local")
        bn(tf.zeros([1, 3, 3, 4]), training=False)
        local(tf.zeros([1, 3, 3, 4]), training=False)
    ref = lm.BatchNorm(momentum=0.9, eps=1e-5, name="ref")
    data = tf.data.Dataset.from_tensor_slices((x, weights)).batch(8)
    xb, wb = next(iter(strategy.experimental_distribute_dataset(data)))

    @tf.function
    def step(xb, wb):
        def fn(xr, wr):
            with tf.GradientTape() as tape:
                tape.watch(xr)
                y = bn(xr, training=True)
                loss = tf.reduce_sum(y * wr)
            gx, gs = tape.gradient(loss, [xr, bn.scale])
            return y, gx, gs, local(xr, training=True)
        return strategy.run(fn, args=(xb, wb))

    def cat(v):
        return np.concatenate([t.numpy() for t in strategy.experimental_local_results(v)])

    y, gx, gs, yl = step(xb, wb)
    gs = sum(t.numpy() for t in strategy.experimental_local_results(gs))
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        yr = ref(xt, training=True)
        loss = tf.reduce_sum(yr * weights)
    gxr, gsr = tape.gradient(loss, [xt, ref.scale])
    np.testing.assert_allclose(cat(y), yr.numpy(), atol=1e-5)
    np.testing.assert_allclose(cat(gx), gxr.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(gs, gsr.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(bn.moving_mean.numpy(), ref.moving_mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), ref.moving_variance.numpy(), atol=1e-5)
    # Per-replica statistics: each half normalized on its own.
    halves = np.concatenate([(h - h.mean((0, 1, 2))) / np.sqrt(h.var((0, 1, 2)) + 1e-5) for h in (x[:4], x[4:])])
    np.testing.assert_allclose(cat(yl), halves, atol=1e-4)
    assert np.abs(cat(yl) - yr.numpy()).max() > 1e-2
    print("SYNC_OK")
    """
)


def test_batchnorm_cross_replica_equals_global_batch():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", _SYNC_SCRIPT], capture_output=True, text=True, env=env, timeout=180, cwd=REPO
    )
    assert proc.returncode == 0 and "SYNC_OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


# ----------------------------------------------------------------- LayerNorm
@pytest.mark.parametrize("axis,normalized_shape", [(-1, (5,)), ([-2, -1], (4, 5)), ([2, 3], (4, 5))])
def test_layernorm_matches_torch_with_gradients(axis, normalized_shape):
    x = _rand(2, 3, 4, 5, seed=1, loc=2.0, scale=3.0)
    w = _rand(2, 3, 4, 5, seed=2)
    gamma, beta = _rand(*normalized_shape, seed=3), _rand(*normalized_shape, seed=4)
    tln = torch.nn.LayerNorm(normalized_shape, eps=1e-5)
    with torch.no_grad():
        tln.weight.copy_(torch.from_numpy(gamma))
        tln.bias.copy_(torch.from_numpy(beta))
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = tln(tx)
    (ty * torch.from_numpy(w)).sum().backward()

    ln = lm.LayerNorm(axis=axis, name="ln")
    ln(x)
    assert {v.name: tuple(v.shape) for v in ln.variables} == {
        "ln/scale:0": normalized_shape,
        "ln/offset:0": normalized_shape,
    }
    ln.set_weights({"scale": gamma, "offset": beta})
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = ln(xt)
        loss = tf.reduce_sum(y * w)
    gx, gs, go = tape.gradient(loss, [xt, ln.scale, ln.offset])
    assert_close(y, ty.detach().numpy(), atol=1e-5)
    assert_close(gx, tx.grad.numpy(), atol=1e-4, rtol=1e-4)
    assert_close(gs, tln.weight.grad.numpy(), atol=1e-4, rtol=1e-4)
    assert_close(go, tln.bias.grad.numpy(), atol=1e-4, rtol=1e-4)


def test_layernorm_middle_axis_numpy_and_half_precision():
    x = _rand(3, 6, 2, seed=5, loc=1.0)
    ln = lm.LayerNorm(axis=1, center=False, scale=False)
    y = ln(x)
    ref = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
    assert_close(y, ref, atol=1e-5)
    assert ln.variables == ()
    yb = ln(tf.cast(x, tf.bfloat16))
    assert yb.dtype == tf.bfloat16
    assert_close(tf.cast(yb, tf.float32), ref, atol=0.05, rtol=0.02)


def test_layernorm_errors():
    with pytest.raises(ValueError, match="LayerNorm 'ln0': axis must not contain 0"):
        lm.LayerNorm(axis=[0, 1], name="ln0")
    with pytest.raises(TypeError, match="LayerNorm 'ln0': axis must be"):
        lm.LayerNorm(axis="last", name="ln0")
    with pytest.raises(ValueError, match="eps must be > 0"):
        lm.LayerNorm(eps=-1.0)
    dup = lm.LayerNorm(axis=[-1, 2], name="dup")
    with pytest.raises(ValueError, match="LayerNorm 'dup': axis \\(-1, 2\\) names the same dimension twice"):
        dup(tf.zeros([2, 3, 4]))
    far = lm.LayerNorm(axis=5, name="far")
    with pytest.raises(ValueError, match="LayerNorm 'far': axis 5 is out of range for an input of rank 3"):
        far(tf.zeros([2, 3, 4]))
    ln = lm.LayerNorm(name="ln")
    ln(tf.zeros([2, 4]))
    msg = r"LayerNorm 'ln': expected 4 elements on normalized axis \(fixed at first call\), got 6"
    with pytest.raises(ValueError, match=msg):
        ln(tf.zeros([2, 6]))


# ----------------------------------------------------------------- GroupNorm
@pytest.mark.parametrize("groups", [1, 2, 6])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_groupnorm_matches_torch_with_gradients(groups, data_format):
    c = 6
    x = _rand(2, c, 3, 4, seed=groups, loc=1.0, scale=2.0)  # NCHW
    w = _rand(2, c, 3, 4, seed=11)
    gamma, beta = _rand(c, seed=12), _rand(c, seed=13)
    tgn = torch.nn.GroupNorm(groups, c, eps=1e-5)
    with torch.no_grad():
        tgn.weight.copy_(torch.from_numpy(gamma))
        tgn.bias.copy_(torch.from_numpy(beta))
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = tgn(tx)
    (ty * torch.from_numpy(w)).sum().backward()
    ty, tgx = ty.detach().numpy(), tx.grad.numpy()
    if data_format == "channels_last":
        x, w, ty, tgx = (_nchw_to_nhwc(a) for a in (x, w, ty, tgx))

    gn = lm.GroupNorm(groups, data_format=data_format, name="gn")
    gn(x)
    assert sorted(v.name for v in gn.variables) == ["gn/offset:0", "gn/scale:0"]
    gn.set_weights({"scale": gamma, "offset": beta})
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = gn(xt)
        loss = tf.reduce_sum(y * w)
    gx, gs, go = tape.gradient(loss, [xt, gn.scale, gn.offset])
    assert_close(y, ty, atol=1e-5)
    assert_close(gx, tgx, atol=1e-4, rtol=1e-4)
    assert_close(gs, tgn.weight.grad.numpy(), atol=1e-4, rtol=1e-4)
    assert_close(go, tgn.bias.grad.numpy(), atol=1e-4, rtol=1e-4)


def test_groupnorm_unknown_dims_in_tf_function_and_rank3():
    gn = lm.GroupNorm(2)
    f = tf.function(gn, input_signature=[tf.TensorSpec([None, None, 4], tf.float32)])
    x = _rand(3, 5, 4, seed=2)
    y = f(x)
    assert f.get_concrete_function().structured_outputs.shape.as_list() == [None, None, 4]
    g = x.reshape(3, 5, 2, 2)
    ref = ((g - g.mean((1, 3), keepdims=True)) / np.sqrt(g.var((1, 3), keepdims=True) + 1e-5)).reshape(3, 5, 4)
    assert_close(y, ref, atol=1e-5)
    y16 = gn(tf.cast(x, tf.float16))
    assert y16.dtype == tf.float16
    assert_close(tf.cast(y16, tf.float32), ref, atol=5e-3, rtol=5e-3)


def test_groupnorm_errors():
    with pytest.raises(ValueError, match="GroupNorm 'gn': num_groups must be > 0"):
        lm.GroupNorm(0, name="gn")
    with pytest.raises(TypeError, match="GroupNorm 'gn': num_groups must be a positive int"):
        lm.GroupNorm(2.0, name="gn")
    gn = lm.GroupNorm(4, name="gn4")
    with pytest.raises(ValueError, match=r"GroupNorm 'gn4': num_groups \(4\) must divide the number of channels, got 6 channels"):
        gn(tf.zeros([2, 3, 6]))
    ok = lm.GroupNorm(3, name="gn3", data_format="channels_first")
    ok(tf.zeros([2, 6, 5]))
    with pytest.raises(ValueError, match=r"GroupNorm 'gn3': expected 6 channels \(fixed at first call\), got 5"):
        ok(tf.zeros([2, 5, 6]))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_batchnorm_fused_kernel_equals_composite_ops(data_format, training, dtype):
    """Rank-4 inputs run one FusedBatchNormV3 (float32 statistics); it must equal the element-wise path."""
    shape = (6, 5, 4, 7) if data_format == "channels_last" else (6, 7, 5, 4)
    x = tf.cast(_rand(*shape, seed=3, loc=2.0, scale=3.0), dtype)
    up = tf.cast(_rand(*shape, seed=4), dtype)
    bn = lm.BatchNorm(data_format=data_format, momentum=0.9)
    bn(x, training=False)
    bn.scale.assign(_rand(7, seed=5))
    bn.offset.assign(_rand(7, seed=6))
    moving = (_rand(7, seed=7), 0.5 + np.abs(_rand(7, seed=8)))

    graph = tf.function(lambda t: bn(t, training=training)).get_concrete_function(x).graph
    fused_ops = [op for op in graph.get_operations() if op.type == "FusedBatchNormV3"]
    assert len(fused_ops) == 1
    # Half precision goes into the kernel as it is (no full-size casts around it).
    assert fused_ops[0].inputs[0].dtype == x.dtype
    assert not [op for op in graph.get_operations() if op.type == "Cast" and op.outputs[0].shape.rank == 4]

    def run():
        bn.moving_mean.assign(moving[0])
        bn.moving_variance.assign(moving[1])
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = bn(x, training=training)
            loss = tf.reduce_sum(tf.cast(y * up, tf.float32))
        grads = tape.gradient(loss, [x, bn.scale, bn.offset])
        assert y.dtype == x.dtype
        return [tf.cast(t, tf.float32).numpy() for t in [y] + grads] + [bn.moving_mean.numpy(), bn.moving_variance.numpy()]

    fused = run()
    bn._fused_args = lambda t: None  # force the composite path on this instance
    composite = run()
    tol = 1e-5 if dtype == "float32" else 2e-2  # outputs and gradients rounded to half precision
    for a, b in zip(fused, composite):
        assert_close(a, b, atol=tol * max(1.0, np.abs(b).max()), rtol=tol)
    if training:
        # The kernel returns the unbiased variance; the moving variance folds in the biased one (documented).
        axes = (0, 1, 2) if data_format == "channels_last" else (0, 2, 3)
        xf = tf.cast(x, tf.float32).numpy()
        assert_close(fused[-2], 0.1 * xf.mean(axis=axes) + 0.9 * moving[0], atol=1e-5, rtol=1e-5)
        assert_close(fused[-1], 0.1 * xf.var(axis=axes) + 0.9 * moving[1], atol=1e-5, rtol=1e-5)
    else:
        assert_close(fused[-1], moving[1])
