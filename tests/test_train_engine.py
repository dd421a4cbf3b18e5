"""The open training engine: custom steps, several optimizers, callbacks, EMA, parameter groups, rematerialization."""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from lamina.train import callbacks as cb


def _xy(n=64, d=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (np.abs(x[:, 0] * 2).astype(np.int32)) % classes
    return x, y


class NoTraining(lm.Module):
    """A model whose __call__ takes no `training` argument (Sequential accepts such modules)."""

    def __init__(self, name=None):
        super().__init__(name=name)
        self.fc = lm.Linear(3, name="fc")

    def __call__(self, x):
        return self.fc(x)


# ------------------------------------------------------------------ custom steps
def test_custom_step_with_two_optimizers_updates_both_and_logs_every_scalar():
    lm.set_seed(0)
    gen, disc = lm.Linear(4, name="gen"), lm.Linear(1, name="disc")
    gen(tf.zeros([1, 2]))
    disc(tf.zeros([1, 4]))
    g_opt, d_opt = lm.optim.SGD(0.1, name="g"), lm.optim.SGD(0.1, name="d")
    seen = []

    def step(batch, ctx):
        z = tf.random.stateless_normal([ctx.batch_size(batch), 2], seed=ctx.random_seed())
        with tf.GradientTape() as gt, tf.GradientTape() as dt:
            fake = gen(z)
            d_loss = tf.reduce_mean(tf.square(disc(batch) - 1.0)) + tf.reduce_mean(tf.square(disc(fake)))
            g_loss = tf.reduce_mean(tf.square(disc(fake) - 1.0))
            ds, gs = ctx.scale_loss(d_loss), ctx.scale_loss(g_loss)
        ctx.apply(dt.gradient(ds, disc.trainable_variables), disc.trainable_variables, optimizer=d_opt)
        ctx.apply(gt.gradient(gs, gen.trainable_variables), gen.trainable_variables, optimizer=g_opt)
        return {"d_loss": d_loss, "g_loss": g_loss}

    class Seen(cb.Callback):
        def on_step_end(self, step, logs):
            seen.append((step, sorted(logs)))

    x = np.random.default_rng(1).normal(size=(48, 4)).astype(np.float32)
    before = {"g": gen.weights.numpy().copy(), "d": disc.weights.numpy().copy()}
    trainer = lm.train.Trainer({"generator": gen, "discriminator": disc}, {"generator": g_opt, "discriminator": d_opt},
                               loss=None, metrics=(), step=step, quiet=True)
    history = trainer.fit((x,), batch_size=16, epochs=2, callbacks=[Seen()])
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"d_loss", "g_loss", "learning_rate/generator", "learning_rate/discriminator"} <= set(history[0])
    assert int(g_opt.iterations.numpy()) == int(d_opt.iterations.numpy()) == 6
    assert not np.allclose(before["g"], gen.weights.numpy()) and not np.allclose(before["d"], disc.weights.numpy())
    assert seen[0] == (1, ["d_loss", "g_loss"]) and len(seen) == 6
    assert trainer._train_fn.experimental_get_tracing_count() == 1


def test_x_only_step_matches_a_hand_written_sgd_update():
    lm.set_seed(1)
    model = lm.Linear(5, name="ae")
    x = np.random.default_rng(2).normal(size=(16, 5)).astype(np.float32)
    model(x[:1])
    w0, b0 = model.weights.numpy().copy(), model.bias.numpy().copy()

    def step(batch, ctx):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(batch) - batch))
            scaled = ctx.scale_loss(loss)
        ctx.apply(tape.gradient(scaled, model.trainable_variables), model.trainable_variables)
        return {"loss": loss}

    trainer = lm.train.Trainer(model, lm.optim.SGD(0.05), loss=None, metrics=(), step=step, quiet=True)
    logs = trainer.train_step(tf.constant(x))
    # the same update by hand, in NumPy
    pred = x @ w0 + b0
    g = 2.0 * (pred - x) / pred.size
    np.testing.assert_allclose(float(logs["loss"]), np.mean((pred - x) ** 2), rtol=1e-5)
    np.testing.assert_allclose(model.weights.numpy(), w0 - 0.05 * x.T @ g, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.bias.numpy(), b0 - 0.05 * g.sum(0), rtol=1e-5, atol=1e-6)


def test_dict_batches_and_gradient_accumulation_in_a_custom_step():
    x, y = _xy(32)

    def run(accum, batch):
        lm.set_seed(3)
        model = lm.models.MLP([8], 3)
        model(tf.zeros([1, 5]))

        def step(b, ctx):
            with tf.GradientTape() as tape:
                logits = model(b["features"], training=True)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(b["label"], logits))
                scaled = ctx.scale_loss(loss)
            ctx.apply(tape.gradient(scaled, model.trainable_variables), model.trainable_variables)
            return {"loss": loss}

        trainer = lm.train.Trainer(model, lm.optim.SGD(0.1), loss=None, metrics=(), step=step, quiet=True,
                                   grad_accum_steps=accum)
        ds = tf.data.Dataset.from_tensor_slices({"features": x, "label": y}).batch(batch)
        trainer.fit(ds, epochs=1)
        return model.get_weights()

    big, accumulated = run(1, 32), run(2, 16)
    for k in big:
        np.testing.assert_allclose(accumulated[k], big[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_compute_loss_override_logs_its_terms_and_evaluates():
    class L2Trainer(lm.train.Trainer):
        def compute_loss(self, batch, training):
            x, y = batch
            logits = tf.cast(self.model(x, training=training), tf.float32)
            ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            l2 = tf.add_n([tf.reduce_sum(tf.square(v)) for v in self.model.trainable_variables]) * 1e-3
            return {"loss": ce + l2, "ce": ce, "l2": l2}

    lm.set_seed(4)
    x, y = _xy(48)
    model = lm.models.MLP([8], 3)
    trainer = L2Trainer(model, "adam", loss=None, metrics=(), quiet=True)
    history = trainer.fit((x, y), batch_size=16, epochs=2, validation=(x, y))
    last = history[-1]
    assert last["loss"] == pytest.approx(last["ce"] + last["l2"], rel=1e-5)
    assert {"val_loss", "val_ce", "val_l2"} <= set(last)
    logits = model(tf.constant(x)).numpy()
    shifted = logits - logits.max(-1, keepdims=True)
    ce = -(shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)))[np.arange(len(y)), y].mean()
    assert last["val_ce"] == pytest.approx(ce, rel=1e-4)


def test_a_model_without_a_training_argument_and_an_optimizer_by_name():
    x, y = _xy(32)
    trainer = lm.train.Trainer(NoTraining(), "sgd", quiet=True)
    history = trainer.fit((x, y), batch_size=8, epochs=1)
    assert np.isfinite(history[0]["loss"]) and isinstance(trainer.optimizer, lm.optim.SGD)
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'"):
        lm.train.Trainer(NoTraining(), "adamm")
    with pytest.raises(TypeError, match="must be a lamina.optim optimizer"):
        lm.train.Trainer(NoTraining(), object())


def test_float16_loss_scaling_in_a_custom_step_skips_an_overflow():
    lm.set_seed(5)
    model = lm.Linear(2, name="fc")
    model(tf.zeros([1, 3]))

    def step(batch, ctx):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(tf.cast(model(ctx.cast(batch)), tf.float32)))
            scaled = ctx.scale_loss(loss)
        ctx.apply(tape.gradient(scaled, model.trainable_variables), model.trainable_variables)
        return {"loss": loss}

    trainer = lm.train.Trainer(model, lm.optim.SGD(0.1), loss=None, metrics=(), step=step, quiet=True,
                               precision="mixed_float16")
    x = tf.ones([4, 3])
    trainer.train_step(x)
    before = model.weights.numpy().copy()
    trainer.loss_scale.scale.assign(1e30)  # the float16 gradient overflows
    trainer.train_step(x)
    np.testing.assert_array_equal(model.weights.numpy(), before)
    assert float(trainer.loss_scale.scale.numpy()) == pytest.approx(5e29)
    trainer.check_finite()  # an overflow under loss scaling is expected, not a failure


# --------------------------------------------------------------------- data in
def test_fit_reshuffles_arrays_every_epoch_and_notes_a_fixed_dataset(capsys):
    x, y = _xy(40)
    order = []

    class Record(cb.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            order.append([])

    class Model(lm.Module):
        def __init__(self):
            super().__init__()
            self.fc = lm.Linear(3, name="fc")

        def __call__(self, t, training=False):
            return self.fc(t)

    trainer = lm.train.Trainer(Model(), "sgd", quiet=True, seed=7)
    from lamina.train.data_source import epoch_data

    data = epoch_data((x, y), batch_size=8, seed=7)
    first = [b[1].numpy().tolist() for b in data.epoch(0, 0)]
    second = [b[1].numpy().tolist() for b in data.epoch(1, 0)]
    assert first != second and sorted(sum(first, [])) == sorted(y.tolist())
    assert [b[1].numpy().tolist() for b in data.epoch(0, 2)] == first[2:]  # resuming skips batches exactly
    trainer.fit((x, y), batch_size=8, epochs=2, callbacks=[Record()])
    assert len(order) == 2
    loud = lm.train.Trainer(Model(), "sgd")
    loud.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=1)
    assert "does not shuffle, so every epoch sees the same order" in capsys.readouterr().out
    with pytest.raises(ValueError, match="batch_size applies to a lamina DataSet or arrays only"):
        trainer.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), batch_size=8)
    with pytest.raises(ValueError, match="needs batch_size="):
        trainer.fit((x, y))


def test_an_unbatched_dataset_says_so():
    x, y = _xy(8)
    trainer = lm.train.Trainer(NoTraining(), "sgd", quiet=True)
    with pytest.raises(ValueError, match=r"did you forget .batch\(\)"):
        trainer.fit(tf.data.Dataset.from_tensor_slices((x[:, 0], y)))


# ------------------------------------------------------------------------ EMA
def test_ema_follows_the_formula_is_evaluated_and_resumes_exactly(tmp_path):
    x, y = _xy(64)

    def make(run_dir=None, seed=8):
        lm.set_seed(seed)
        return lm.train.Trainer(lm.models.MLP([8], 3), lm.optim.SGD(0.2), quiet=True, ema=0.9, seed=8,
                                deterministic=True, run_dir=run_dir)

    t = make()
    t.build(tf.constant(x[:1]))
    w = [v.numpy().copy() for v in t.ema._untracked.variables]
    shadow = [v.copy() for v in w]
    for i, start in enumerate(range(0, 48, 16)):
        t.train_step(tf.constant(x[start:start + 16]), tf.constant(y[start:start + 16]))
        d = min(0.9, (1 + i) / (10 + i))
        live = [v.numpy() for v in t.ema._untracked.variables]
        shadow = [d * s + (1 - d) * v for s, v in zip(shadow, live)]
    for s, expected in zip(t.ema.shadows, shadow):
        np.testing.assert_allclose(s.numpy(), expected, rtol=1e-5, atol=1e-6)
    # evaluate() uses the averaged weights and gives the live ones back
    live = t.model.get_weights()
    got = t.evaluate((x, y))["accuracy"]
    with t.ema.averaged():
        expected = float(np.mean(t.model(tf.constant(x)).numpy().argmax(-1) == y))
    assert got == pytest.approx(expected)
    for k, v in t.model.get_weights().items():
        np.testing.assert_array_equal(v, live[k])
    # resume mid-run: the same average as an uninterrupted run
    full = make()
    full.fit((x, y), batch_size=16, epochs=2)
    part = make(str(tmp_path / "run"))
    part.fit((x, y), batch_size=16, epochs=2, max_steps=5)
    resumed = make(str(tmp_path / "run"), seed=99)
    resumed.fit((x, y), batch_size=16, epochs=2)
    for a, b in zip(full.ema.shadows, resumed.ema.shadows):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# ------------------------------------------------------------- parameter groups
def test_param_groups_and_no_weight_decay_match_torch():
    torch = pytest.importorskip("torch")
    lm.set_seed(9)
    model = lm.models.MLP([6], 3)
    x, y = _xy(16)
    model(tf.constant(x[:1]))
    first = model.layers[0] if hasattr(model, "layers") else None
    paths = model.variable_paths()
    hidden = [k for k in paths if k.endswith("weights")][0]
    group = lm.optim.ParamGroup([paths[hidden]], lr_scale=0.5)
    opt = lm.optim.AdamW(1e-2, weight_decay=0.1, no_weight_decay="bias_and_norm", groups=[group])
    names = list(paths)
    params = [torch.nn.Parameter(torch.tensor(paths[k].numpy())) for k in names]
    torch_groups = []
    for k, p in zip(names, params):
        lr = 1e-2 * (0.5 if k == hidden else 1.0)
        wd = 0.0 if paths[k].shape.rank <= 1 else 0.1
        torch_groups.append({"params": [p], "lr": lr, "weight_decay": wd})
    topt = torch.optim.AdamW(torch_groups, lr=1e-2)
    for _ in range(3):
        grads = [np.random.default_rng(_).normal(size=v.shape).astype(np.float32) for v in paths.values()]
        opt.apply([tf.constant(g) for g in grads], list(paths.values()))
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g)
        topt.step()
    for k, p in zip(names, params):
        np.testing.assert_allclose(paths[k].numpy(), p.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    assert first is None or first is not None  # the model type does not matter
    with pytest.raises(ValueError, match="sets neither lr_scale nor weight_decay"):
        lm.optim.ParamGroup(model)
    with pytest.raises(ValueError, match="no_weight_decay must be one of"):
        lm.optim.AdamW(1e-3, no_weight_decay="biases")


# ----------------------------------------------------------------- remat
@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
def test_remat_gives_the_same_gradients(mode):
    lm.set_seed(10)
    block = lm.Sequential([lm.Linear(16, activation="tanh"), lm.Linear(16, activation="tanh")])
    wrapped = lm.remat(block)
    x = tf.random.stateless_normal([4, 16], seed=[1, 2])
    wrapped(x)  # builds the block

    def grads(module):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(module(x) ** 2)
        return tape.gradient(loss, block.trainable_variables)

    run = {"eager": lambda f: f, "function": tf.function, "xla": lambda f: tf.function(f, jit_compile=True)}[mode]
    plain = run(lambda: grads(block))()
    remat = run(lambda: grads(wrapped))()
    assert len(wrapped.trainable_variables) == len(block.trainable_variables) == 4
    for a, b in zip(plain, remat):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)


def test_remat_trains_in_the_trainer():
    x, y = _xy(32)
    lm.set_seed(11)
    model = lm.Sequential([lm.remat(lm.Linear(8, activation="relu")), lm.Linear(3)])
    history = lm.train.Trainer(model, "adam", quiet=True).fit((x, y), batch_size=8, epochs=3)
    assert history[-1]["loss"] < history[0]["loss"]


# ------------------------------------------------------------- callbacks & files
def test_callbacks_see_the_loop_in_order_and_their_state_is_checkpointed(tmp_path):
    calls = []

    class Spy(cb.Callback):
        def on_train_begin(self, logs=None):
            calls.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            calls.append(f"epoch_begin {epoch}")

        def on_epoch_end(self, epoch, logs):
            calls.append(f"epoch_end {epoch} lr={'learning_rate' in logs}")

        def on_train_end(self, logs=None):
            calls.append("train_end")

    x, y = _xy(32)
    trainer = lm.train.Trainer(lm.models.MLP([4], 3), "adam", quiet=True, run_dir=str(tmp_path / "run"), patience=3,
                               monitor="loss", monitor_mode="min")
    trainer.fit((x, y), batch_size=16, epochs=2, callbacks=[Spy()])
    assert calls == ["train_begin", "epoch_begin 0", "epoch_end 0 lr=True", "epoch_begin 1", "epoch_end 1 lr=True",
                     "train_end"]
    keys = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")))
    names = set(keys.get_variable_to_shape_map())
    assert any(k.startswith("callbacks/early_stopping/bad_epochs") for k in names)
    assert any(k.startswith("callbacks/best_checkpoint/best_value") for k in names)
    with pytest.raises(TypeError, match="must be lamina.train.Callback instances"):
        trainer.fit((x, y), batch_size=16, epochs=3, callbacks=[object()])


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(tmp_path, capsys):
    x, y = _xy(32)
    run = str(tmp_path / "run")
    lm.train.Trainer(lm.models.MLP([4], 3), "adam", quiet=True, run_dir=run).fit((x, y), batch_size=16, epochs=1)
    with open(os.path.join(run, "metrics.jsonl"), "a") as f:
        f.write('{"epoch": 2, "loss": 0.')  # a kill in the middle of an append
    t = lm.train.Trainer(lm.models.MLP([4], 3), "adam", quiet=True, run_dir=run)
    t.fit((x, y), batch_size=16, epochs=2)
    assert "metrics.jsonl: dropped an incomplete last line" in capsys.readouterr().err
    lines = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert [r["epoch"] for r in lines] == [1, 2]


def test_a_diverging_run_stops_and_keeps_the_last_finite_checkpoint(tmp_path):
    x, y = _xy(64)
    run = str(tmp_path / "run")
    trainer = lm.train.Trainer(lm.models.MLP([8], 3), lm.optim.SGD(1e12), quiet=True, run_dir=run, checkpoint_every=1)
    with pytest.raises(lm.train.TrainingError, match=r"non-finite loss or gradient at step \d+"):
        trainer.fit((x, y), batch_size=8, epochs=3)
    latest = tf.train.latest_checkpoint(os.path.join(run, "checkpoints"))
    reader = tf.train.load_checkpoint(latest)
    for key in reader.get_variable_to_shape_map():
        if key.startswith("model/"):
            assert np.all(np.isfinite(reader.get_tensor(key))), key
    assert math.isfinite(trainer.model.get_weights()[list(trainer.model.get_weights())[0]].sum())
