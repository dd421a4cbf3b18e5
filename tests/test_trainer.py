"""Trainer: compiled steps, resume, accumulation, precision, determinism, artifacts."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm


class TinyNet(lm.Module):
    """Conv -> global mean -> linear, small enough for fast tests."""

    def __init__(self, num_classes=4, name=None):
        super().__init__(name=name)
        self.conv = lm.Conv2D(8, activation="relu", name="conv")
        self.fc = lm.Linear(num_classes, name="fc")

    def __call__(self, x, training=False):
        h = self.conv(x)
        return self.fc(tf.reduce_mean(h, axis=[1, 2]))


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=n).astype("int32")
    x = rng.normal(size=(n, 6, 6, 2)).astype("float32") * 0.3
    x[np.arange(n), :, :, 0] += (y[:, None, None] - 1.5)  # class signal in channel 0
    return x, y


def _ds(batch=16, n=96, seed=0):
    x, y = _data(n, seed)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _trainer(**kw):
    model = TinyNet()
    opt = kw.pop("optimizer", None) or lm.optim.Adam(1e-2)
    return lm.train.Trainer(model, opt, "cross_entropy", metrics=["accuracy"], quiet=True, **kw)


def test_fit_learns_and_writes_artifacts(tmp_path):
    run = str(tmp_path / "run")
    t = _trainer(run_dir=run, seed=1)
    hist = t.fit(_ds(), validation=_ds(n=48, seed=1), epochs=6)
    assert len(hist) == 6
    assert hist[-1]["loss"] < hist[0]["loss"] * 0.7
    assert hist[-1]["val_accuracy"] > 0.6
    lines = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "images_per_sec"} <= set(lines[0])
    assert os.path.getsize(os.path.join(run, "history.png")) > 1000
    assert tf.train.latest_checkpoint(os.path.join(run, "checkpoints"))
    assert tf.train.latest_checkpoint(os.path.join(run, "best"))
    for sub in ("train", "validation"):  # two TensorBoard runs, the same tags: train and validation overlay
        events = os.listdir(os.path.join(run, "tensorboard", sub))
        assert any(e.startswith("events.out.tfevents") for e in events)


def test_train_step_returns_loss_and_traces_once():
    t = _trainer(seed=2)
    x, y = _data(40)
    l1 = t.train_step(tf.constant(x[:16]), tf.constant(y[:16]))["loss"]
    t.train_step(tf.constant(x[16:32]), tf.constant(y[16:32]))
    t.train_step(tf.constant(x[32:40]), tf.constant(y[32:40]))  # a smaller batch: no retrace
    assert l1.shape == () and np.isfinite(l1.numpy())
    assert t._train_fn.experimental_get_tracing_count() == 1
    assert int(t.step.numpy()) == 3


def test_train_step_matches_manual_gradient_step():
    lm.set_seed(3)
    t = _trainer(optimizer=lm.optim.SGD(0.1), seed=3)
    x, y = _data(16)
    t.build(tf.constant(x))
    before = {k: v.numpy().copy() for k, v in t.model.variable_paths().items()}
    variables = t.model.trainable_variables
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, t.model(x)))
    grads = tape.gradient(loss, variables)
    expected = {v.ref(): v.numpy() - 0.1 * g.numpy() for v, g in zip(variables, grads)}
    got_loss = t.train_step(tf.constant(x), tf.constant(y))["loss"]
    np.testing.assert_allclose(got_loss.numpy(), loss.numpy(), rtol=1e-5)
    for v in variables:
        np.testing.assert_allclose(v.numpy(), expected[v.ref()], rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(before[k], v.numpy()) for k, v in t.model.variable_paths().items())


def test_resume_mid_epoch_gives_identical_weights(tmp_path):
    """Stop after 5 steps (checkpointed), resume, end equal to an uninterrupted run."""
    x, y = _data(96)

    def data(epoch, skip_batches):
        order = np.random.default_rng(epoch).permutation(96)  # a pure function of the epoch
        return tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(16).skip(skip_batches)

    full = _trainer(seed=5, deterministic=True)
    full.fit(data, epochs=2)
    ref = full.model.get_weights()

    run = str(tmp_path / "run")
    part = _trainer(seed=5, deterministic=True, run_dir=run)
    part.fit(data, epochs=2, max_steps=8)  # stops inside epoch 2 (6 steps per epoch)
    assert int(part.step.numpy()) == 8 and int(part.step_in_epoch.numpy()) == 2

    resumed = _trainer(seed=99, deterministic=True, run_dir=run)  # different init: all must come from the checkpoint
    resumed.fit(data, epochs=2)
    assert int(resumed.step.numpy()) == 12
    got = resumed.model.get_weights()
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def test_two_deterministic_runs_are_identical():
    ws = []
    for _ in range(2):
        t = _trainer(seed=11, deterministic=True)
        t.fit(_ds(), epochs=2)
        ws.append(t.model.get_weights())
    for k in ws[0]:
        np.testing.assert_array_equal(ws[0][k], ws[1][k])


def test_gradient_accumulation_equals_big_batch():
    x, y = _data(32)
    big = _trainer(optimizer=lm.optim.SGD(0.05), seed=7)
    big.train_step(tf.constant(x), tf.constant(y))
    acc = _trainer(optimizer=lm.optim.SGD(0.05), seed=7, grad_accum_steps=2)
    acc.train_step(tf.constant(x[:16]), tf.constant(y[:16]))
    mid = acc.model.get_weights()
    acc.train_step(tf.constant(x[16:]), tf.constant(y[16:]))
    # Weights change only at the second micro-step, and then match the big batch.
    lm.set_seed(7)
    fresh = TinyNet()
    fresh(tf.constant(x[:1]))
    for k, v in fresh.get_weights().items():
        np.testing.assert_allclose(mid[k], v, rtol=0, atol=0)
    for k, v in big.model.get_weights().items():
        np.testing.assert_allclose(acc.model.get_weights()[k], v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains(precision):
    t = _trainer(seed=4, precision=precision)
    hist = t.fit(_ds(), epochs=4)
    assert all(v.dtype == tf.float32 for v in t.model.variables)
    assert np.isfinite(hist[-1]["loss"]) and hist[-1]["loss"] < hist[0]["loss"]
    if precision == "mixed_float16":
        assert t.loss_scale is not None and float(t.loss_scale.scale.numpy()) >= 1.0


def test_float16_loss_scale_skips_non_finite_step():
    t = _trainer(seed=4, precision="mixed_float16")
    x, y = _data(16)
    t.build(tf.constant(x))
    t.loss_scale.scale.assign(1e30)  # overflows float16 gradients
    before = t.model.get_weights()
    t.train_step(tf.constant(x), tf.constant(y))
    after = t.model.get_weights()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    assert float(t.loss_scale.scale.numpy()) == pytest.approx(5e29)


def test_jit_step_matches_plain_step():
    x, y = _data(16)
    a = _trainer(optimizer=lm.optim.SGD(0.1), seed=8)
    la = a.train_step(tf.constant(x), tf.constant(y))["loss"]  # builds a, from seed 8
    b = _trainer(optimizer=lm.optim.SGD(0.1), seed=8, jit_compile=True)
    lb = b.train_step(tf.constant(x), tf.constant(y))["loss"]  # builds b, from seed 8 again
    np.testing.assert_allclose(la.numpy(), lb.numpy(), rtol=1e-5)
    for k, v in a.model.get_weights().items():
        np.testing.assert_allclose(b.model.get_weights()[k], v, rtol=1e-4, atol=1e-5)


def test_check_numerics_names_step_and_module():
    t = _trainer(seed=9, check_numerics=True)
    x, y = _data(16)
    t.train_step(tf.constant(x), tf.constant(y))
    bad = x.copy()
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(lm.train.TrainingError, match=r"step 2; first non-finite output: the input batch itself"):
        t.train_step(tf.constant(bad), tf.constant(y))
    huge = x.copy()
    huge[0] = 3e38  # finite, but the convolution overflows (all-positive weights: no cancellation)
    t2 = _trainer(seed=9, check_numerics=True)
    t2.model(tf.constant(x))
    t2.model.conv.weights.assign(tf.fill(t2.model.conv.weights.shape, 0.5))
    with pytest.raises(lm.train.TrainingError, match=r"step 1; first non-finite output: Conv2D 'conv'"):
        t2.train_step(tf.constant(huge), tf.constant(y))


def test_early_stopping(tmp_path):
    t = _trainer(optimizer=lm.optim.SGD(1e-9), seed=10, patience=2, monitor="val_loss", monitor_mode="min")
    hist = t.fit(_ds(), validation=_ds(n=32, seed=3), epochs=20)
    assert len(hist) < 20


def test_evaluate_matches_numpy():
    t = _trainer(seed=12)
    t.fit(_ds(), epochs=2)
    x, y = _data(48, seed=5)
    logits = t.model(tf.constant(x)).numpy()
    res = t.evaluate(tf.data.Dataset.from_tensor_slices((x, y)).batch(20))
    assert res["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == y), abs=1e-6)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    nll = -logp[np.arange(48), y]
    # Mean of per-batch means weighted by batch size == mean over examples.
    assert res["loss"] == pytest.approx(nll.mean(), rel=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="grad_accum_steps"):
        _trainer(grad_accum_steps=0)
    with pytest.raises(ValueError, match="precision"):
        _trainer(precision="float8")
    with pytest.raises(ValueError, match="epochs"):
        _trainer().fit(_ds(), epochs=0)


def test_step_runs_the_concrete_function_and_rejects_mismatched_batches():
    t = _trainer(seed=0)
    x, y = _data(32)
    first = t.train_step(tf.constant(x[:16]), tf.constant(y[:16]))["loss"]
    assert t._train_concrete is not None  # later tensor batches skip tf.function's argument binding
    calls = []
    concrete = t._train_concrete
    t._train_concrete = lambda *a: calls.append(1) or concrete(*a)
    t.train_step(tf.constant(x[16:20]), tf.constant(y[16:20]))  # another batch size: same concrete function
    t.train_step(x[:8], y[:8])  # NumPy goes through the tf.function, which converts it
    assert calls == [1]
    assert np.isfinite(first.numpy())
    with pytest.raises(ValueError, match=r"Trainer: the training step was compiled for .*\(None, 6, 6, 2\) float32.*"
                                         r"got \[\(4, 6, 6, 3\) float32"):
        t.train_step(tf.zeros([4, 6, 6, 3]), tf.zeros([4], tf.int32))
    with pytest.raises(ValueError, match=r"got \[\(4, 6, 6, 2\) float64, \(4,\) int32\]"):
        t.train_step(tf.zeros([4, 6, 6, 2], tf.float64), tf.zeros([4], tf.int32))


def test_mixed_float16_on_cpu_warns_once(monkeypatch, capsys):
    """mixed_float16 without a GPU trains ~50x slower than float32: one warning per process, the run goes on."""
    import io

    from lamina.train import precision as P

    monkeypatch.setattr(P, "_WARNED", set())
    for name in ("float32", "mixed_bfloat16"):
        assert P.warn_if_slow(P.resolve_precision(name), io.StringIO()) is False
    out = io.StringIO()
    assert P.warn_if_slow(P.resolve_precision("mixed_float16"), out) is True
    assert out.getvalue().startswith("lamina: warning: mixed_float16 on a CPU is slow")
    assert "mixed_bfloat16" in out.getvalue() and out.getvalue().count("\n") == 1
    assert P.warn_if_slow(P.resolve_precision("mixed_float16"), io.StringIO()) is False  # once
    monkeypatch.setattr(P, "_WARNED", set())
    lm.Trainer(lm.Linear(2), lm.optim.SGD(0.1), loss="mse", precision="mixed_float16", quiet=True)
    assert "mixed_float16 on a CPU is slow" in capsys.readouterr().err
