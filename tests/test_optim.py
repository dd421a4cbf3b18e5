"""Optimizers vs NumPy implementations of their update rules and vs torch.optim."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import torch

from conftest import assert_close
from lamina import optim
from lamina.optim import schedules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6

# A small least-squares problem: loss = 0.5 * ||A w - b||^2 + 0.5 * ||c||^2 ... with two variables.
_rng = np.random.default_rng(0)
A = _rng.normal(size=(8, 4)).astype(np.float32)
B = _rng.normal(size=(8, 3)).astype(np.float32)
W0 = _rng.normal(size=(4, 3)).astype(np.float32)
C0 = _rng.normal(size=(3,)).astype(np.float32)


def _np_grads(w, c):
    # loss = 0.5 * sum((A w + c - B)^2) / 8
    r = (A.astype(np.float64) @ w + c - B) / 8.0
    return A.T.astype(np.float64) @ r, r.sum(0)


def _tf_loss(w, c):
    return 0.5 * tf.reduce_sum(tf.square(tf.matmul(A, w) + c - B)) / 8.0


def _run_tf(opt, steps=STEPS, fn_wrapper=None):
    w, c = tf.Variable(W0), tf.Variable(C0)

    def step():
        with tf.GradientTape() as tape:
            loss = _tf_loss(w, c)
        opt.apply(tape.gradient(loss, [w, c]), [w, c])

    if fn_wrapper is not None:
        step = fn_wrapper(step)
    for _ in range(steps):
        step()
    return w.numpy(), c.numpy()


def _run_torch(make_opt, steps=STEPS, scheduler=None):
    w = torch.nn.Parameter(torch.from_numpy(W0.copy()))
    c = torch.nn.Parameter(torch.from_numpy(C0.copy()))
    opt = make_opt([w, c])
    sched = scheduler(opt) if scheduler else None
    a, b = torch.from_numpy(A), torch.from_numpy(B)
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * ((a @ w + c - b) ** 2).sum() / 8.0
        loss.backward()
        opt.step()
        if sched:
            sched.step()
    return w.detach().numpy(), c.detach().numpy()


# --------------------------------------------------------- NumPy references
def _np_run(update, init_state, steps=STEPS, lr_fn=lambda t: 0.1):
    params = [W0.astype(np.float64), C0.astype(np.float64)]
    states = [init_state(p) for p in params]
    for t in range(1, steps + 1):
        grads = _np_grads(*params)
        for i, (p, g) in enumerate(zip(params, grads)):
            params[i] = update(p, g, states[i], lr_fn(t - 1), t)
    return params


def np_sgd(lr, momentum=0.0, nesterov=False, wd=0.0):
    def update(p, g, s, lr_t, t):
        g = g + wd * p
        if momentum:
            s["b"] = momentum * s["b"] + g
            g = g + momentum * s["b"] if nesterov else s["b"]
        return p - lr_t * g

    return update, lambda p: {"b": np.zeros_like(p)}


def np_adam(b1=0.9, b2=0.999, eps=1e-8, amsgrad=False, wd=0.0, decoupled=False):
    def update(p, g, s, lr_t, t):
        if decoupled:
            p = p - lr_t * wd * p
        else:
            g = g + wd * p
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * g * g
        v = s["v"]
        if amsgrad:
            s["vmax"] = np.maximum(s["vmax"], s["v"])
            v = s["vmax"]
        m_hat = s["m"] / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        return p - lr_t * m_hat / (np.sqrt(v_hat) + eps)

    return update, lambda p: {"m": np.zeros_like(p), "v": np.zeros_like(p), "vmax": np.zeros_like(p)}


def np_rmsprop(rho=0.9, momentum=0.0, eps=1e-7, centered=False, wd=0.0):
    def update(p, g, s, lr_t, t):
        g = g + wd * p
        s["s"] = rho * s["s"] + (1 - rho) * g * g
        sq = s["s"]
        if centered:
            s["ga"] = rho * s["ga"] + (1 - rho) * g
            sq = sq - s["ga"] ** 2
        den = np.sqrt(sq) + eps
        if momentum:
            s["b"] = momentum * s["b"] + g / den
            return p - lr_t * s["b"]
        return p - lr_t * g / den

    return update, lambda p: {"s": np.zeros_like(p), "ga": np.zeros_like(p), "b": np.zeros_like(p)}


CASES = {
    "sgd": (lambda: optim.SGD(0.1), np_sgd(0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    "sgd_momentum_wd": (
        lambda: optim.SGD(0.1, momentum=0.9, weight_decay=0.01),
        np_sgd(0.1, 0.9, wd=0.01),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    ),
    "sgd_nesterov": (
        lambda: optim.SGD(0.1, momentum=0.8, nesterov=True),
        np_sgd(0.1, 0.8, nesterov=True),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.8, nesterov=True),
    ),
    "adam": (
        lambda: optim.Adam(0.1),
        np_adam(),
        lambda ps: torch.optim.Adam(ps, lr=0.1),
    ),
    "adam_amsgrad_wd": (
        lambda: optim.Adam(0.1, beta1=0.8, beta2=0.99, epsilon=1e-6, amsgrad=True, weight_decay=0.05),
        np_adam(0.8, 0.99, 1e-6, amsgrad=True, wd=0.05),
        lambda ps: torch.optim.Adam(ps, lr=0.1, betas=(0.8, 0.99), eps=1e-6, amsgrad=True, weight_decay=0.05),
    ),
    "adamw": (
        lambda: optim.AdamW(0.1, weight_decay=0.1),
        np_adam(wd=0.1, decoupled=True),
        lambda ps: torch.optim.AdamW(ps, lr=0.1, weight_decay=0.1),
    ),
    "rmsprop": (
        lambda: optim.RMSProp(0.1),
        np_rmsprop(),
        lambda ps: torch.optim.RMSprop(ps, lr=0.1, alpha=0.9, eps=1e-7),
    ),
    "rmsprop_centered_momentum_wd": (
        lambda: optim.RMSProp(0.05, decay=0.8, momentum=0.5, epsilon=1e-6, centered=True, weight_decay=0.01),
        np_rmsprop(0.8, 0.5, 1e-6, centered=True, wd=0.01),
        lambda ps: torch.optim.RMSprop(ps, lr=0.05, alpha=0.8, eps=1e-6, momentum=0.5, centered=True, weight_decay=0.01),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_numpy_and_torch(case):
    make, (np_update, np_init), make_torch = CASES[case]
    lr0 = make().current_learning_rate().numpy()
    got_w, got_c = _run_tf(make())
    want_w, want_c = _np_run(np_update, np_init, lr_fn=lambda t: float(lr0))
    moved = np.abs(want_w - W0).max()
    assert moved > 1e-2, "the problem must actually move the weights"
    assert_close(got_w, want_w, atol=2e-5, rtol=1e-4)
    assert_close(got_c, want_c, atol=2e-5, rtol=1e-4)
    t_w, t_c = _run_torch(make_torch)
    assert_close(got_w, t_w, atol=2e-5, rtol=1e-4)
    assert_close(got_c, t_c, atol=2e-5, rtol=1e-4)


def test_adamw_differs_from_adam_l2():
    w_adamw, _ = _run_tf(optim.AdamW(0.1, weight_decay=0.1))
    w_adam_l2, _ = _run_tf(optim.Adam(0.1, weight_decay=0.1))
    assert np.abs(w_adamw - w_adam_l2).max() > 1e-4


def test_schedule_drives_learning_rate():
    sched = schedules.step_decay(0.2, step_size=2, gamma=0.5)
    opt = optim.SGD(sched, momentum=0.9)
    seen = []
    w, c = tf.Variable(W0), tf.Variable(C0)
    for _ in range(STEPS):
        seen.append(float(opt.current_learning_rate()))
        with tf.GradientTape() as tape:
            loss = _tf_loss(w, c)
        opt.apply(tape.gradient(loss, [w, c]), [w, c])
    assert seen == pytest.approx([0.2 * 0.5 ** (t // 2) for t in range(STEPS)])
    assert int(opt.iterations) == STEPS and int(opt.step) == STEPS
    np_update, np_init = np_sgd(None, 0.9)
    want_w, _ = _np_run(np_update, np_init, lr_fn=lambda t: 0.2 * 0.5 ** (t // 2))
    assert_close(w.numpy(), want_w, atol=2e-5, rtol=1e-4)
    t_w, _ = _run_torch(
        lambda ps: torch.optim.SGD(ps, lr=0.2, momentum=0.9),
        scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
    )
    assert_close(w.numpy(), t_w, atol=2e-5, rtol=1e-4)


def test_cosine_schedule_with_adam_matches_torch_lambda_lr():
    sched = schedules.cosine(0.1, total_steps=STEPS, warmup_steps=2, final_lr=0.0)
    got_w, _ = _run_tf(optim.Adam(sched), fn_wrapper=tf.function)
    t_w, _ = _run_torch(
        lambda ps: torch.optim.Adam(ps, lr=0.1),
        scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: float(sched(t)) / 0.1),
    )
    assert_close(got_w, t_w, atol=2e-5, rtol=1e-4)


def test_learning_rate_variable_can_change_without_retracing():
    opt = optim.SGD(0.1)
    v = tf.Variable([1.0])
    traces = []

    @tf.function
    def step():
        traces.append(1)
        opt.apply([tf.constant([1.0])], [v])

    step()
    opt.learning_rate = 0.5
    step()
    assert_close(v.numpy(), [1.0 - 0.1 - 0.5])
    assert len(traces) == 1
    with pytest.raises(ValueError, match="learning_rate"):
        opt.learning_rate = -1.0


# ----------------------------------------------------------------- clipping
def test_clip_by_global_norm_matches_tf():
    rng = np.random.default_rng(1)
    grads = [tf.constant(rng.normal(size=(3, 2)), tf.float32), None, tf.constant(rng.normal(size=(5,)), tf.float32)]
    for max_norm in (0.5, 100.0):
        got, norm = optim.clip_by_global_norm(grads, max_norm)
        want, want_norm = tf.clip_by_global_norm([grads[0], grads[2]], max_norm)
        assert got[1] is None
        assert_close(norm, want_norm)
        assert_close(got[0], want[0])
        assert_close(got[2], want[1])
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_by_global_norm(grads, 0.0)


def test_clip_per_tensor_norm_and_value():
    g = [tf.constant([3.0, 4.0]), tf.constant([0.3, 0.4])]
    got = optim.clip_by_norm(g, 1.0)
    assert_close(got[0], [0.6, 0.8])
    assert_close(got[1], [0.3, 0.4])
    got = optim.clip_by_value([tf.constant([-3.0, 0.5, 2.0])], 1.0)
    assert_close(got[0], [-1.0, 0.5, 1.0])


def test_optimizer_global_clipnorm_equals_clipping_first():
    w = tf.Variable(W0)
    g = tf.constant(np.full(W0.shape, 10.0, np.float32))
    opt = optim.SGD(0.1, global_clipnorm=1.0)
    opt.apply([g], [w])
    clipped, _ = tf.clip_by_global_norm([g], 1.0)
    assert_close(w.numpy(), W0 - 0.1 * clipped[0].numpy())
    w2 = tf.Variable([0.0, 0.0])
    optim.SGD(1.0, clipvalue=0.5).apply([tf.constant([2.0, -0.1])], [w2])
    assert_close(w2.numpy(), [-0.5, 0.1])
    w3 = tf.Variable([0.0, 0.0])
    optim.SGD(1.0, clipnorm=1.0).apply([tf.constant([3.0, 4.0])], [w3])
    assert_close(w3.numpy(), [-0.6, -0.8])


# -------------------------------------------------------- graph / XLA / state
@pytest.mark.parametrize("jit", [False, True])
def test_apply_inside_tf_function_and_xla(jit):
    eager_w, eager_c = _run_tf(optim.Adam(0.05, amsgrad=True))
    opt = optim.Adam(0.05, amsgrad=True)
    got_w, got_c = _run_tf(opt, fn_wrapper=lambda f: tf.function(f, jit_compile=jit))
    assert_close(got_w, eager_w, atol=1e-6)
    assert_close(got_c, eager_c, atol=1e-6)
    assert int(opt.iterations) == STEPS
    assert len(opt.m) == len(opt.v) == len(opt.v_max) == 2


def test_slots_are_lazy_tracked_and_not_trainable():
    opt = optim.Adam(0.1)
    assert opt.m == [] and opt.v == []
    w, c = tf.Variable(W0), tf.Variable(C0)
    opt.apply([tf.ones_like(W0), None], [w, c])
    assert_close(c.numpy(), C0)  # None gradient: skipped
    assert [tuple(s.shape) for s in opt.m] == [W0.shape, C0.shape]
    assert all(not s.trainable for s in opt.m + opt.v)
    assert opt.slots_for(w)["m"] is opt.m[0]
    assert not opt.trainable_variables
    names = {v.name for v in opt.variables}
    assert len(names) == len(opt.variables)


def _make_model():
    class Model(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(W0)
            self.c = tf.Variable(C0)

    return Model()


def _train(model, opt, steps):
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = _tf_loss(model.w, model.c)
        opt.apply(tape.gradient(loss, [model.w, model.c]), [model.w, model.c])

    for _ in range(steps):
        step()


@pytest.mark.parametrize("make", [lambda: optim.Adam(0.05), lambda: optim.RMSProp(0.01, momentum=0.5, centered=True),
                                  lambda: optim.SGD(schedules.cosine(0.1, 10), momentum=0.9)])
def test_checkpoint_round_trip(tmp_path, make):
    ref_model, ref_opt = _make_model(), make()
    _train(ref_model, ref_opt, 5)

    model, opt = _make_model(), make()
    _train(model, opt, 3)
    path = tf.train.Checkpoint(model=model, optimizer=opt).save(str(tmp_path / "ckpt"))

    model2, opt2 = _make_model(), make()
    tf.train.Checkpoint(model=model2, optimizer=opt2).restore(path).assert_existing_objects_matched()
    assert int(opt2.iterations) == 3
    _train(model2, opt2, 2)
    assert_close(model2.w.numpy(), ref_model.w.numpy(), atol=1e-6)
    assert_close(model2.c.numpy(), ref_model.c.numpy(), atol=1e-6)
    # Without the restored slots the trajectory would differ.
    model3, opt3 = _make_model(), make()
    tf.train.Checkpoint(model=model3).restore(path).expect_partial()
    opt3.iterations.assign(3)
    _train(model3, opt3, 2)
    assert np.abs(model3.w.numpy() - ref_model.w.numpy()).max() > 1e-5


def test_half_precision_gradients_are_cast():
    w = tf.Variable([1.0, 2.0])
    optim.SGD(0.5).apply([tf.constant([1.0, 2.0], tf.float16)], [w])
    assert w.dtype == tf.float32
    assert_close(w.numpy(), [0.5, 1.0])


def test_sparse_gradients_match_dense():
    table0 = np.random.default_rng(2).normal(size=(6, 3)).astype(np.float32)
    ids = tf.constant([1, 4, 1])

    def run(sparse):
        table = tf.Variable(table0)
        opt = optim.Adam(0.1, global_clipnorm=1.0)
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(tf.gather(table, ids) - 1.0))
            (g,) = tape.gradient(loss, [table])
            assert isinstance(g, tf.IndexedSlices)
            opt.apply([g if sparse else tf.convert_to_tensor(g)], [table])
        return table.numpy()

    got = run(True)
    assert_close(got, run(False))
    assert_close(got[[0, 2, 3, 5]], table0[[0, 2, 3, 5]])  # untouched rows stay
    g = tf.IndexedSlices(tf.constant([[3.0, 4.0]]), tf.constant([1]), tf.constant([3, 2]))
    clipped, norm = optim.clip_by_global_norm([g], 1.0)
    assert float(norm) == pytest.approx(5.0)
    assert_close(tf.convert_to_tensor(clipped[0]), [[0, 0], [0.6, 0.8], [0, 0]])


def test_bfloat16_variables_step_with_float32_bias_correction():
    w32 = tf.Variable([1.0, -2.0, 0.5])
    w16 = tf.Variable(tf.constant([1.0, -2.0, 0.5], tf.bfloat16))
    o32, o16 = optim.Adam(0.01), optim.Adam(0.01)
    for _ in range(3):
        o32.apply([w32 * 2.0], [w32])
        o16.apply([w16 * 2.0], [w16])
    assert w16.dtype == tf.bfloat16 and o16.m[0].dtype == tf.float32
    assert_close(tf.cast(w16, tf.float32), w32.numpy(), atol=2e-2)
    assert np.abs(tf.cast(w16, tf.float32).numpy() - [1.0, -2.0, 0.5]).max() > 0.01


def test_apply_errors():
    w = tf.Variable([1.0])
    opt = optim.SGD(0.1)
    with pytest.raises(ValueError, match="1 gradients for 2 variables"):
        opt.apply([tf.ones(1)], [w, w])
    with pytest.raises(ValueError, match="no gradient for any"):
        opt.apply([None], [w])
    with pytest.raises(ValueError, match="no variables"):
        opt.apply([], [])
    with pytest.raises(ValueError, match="aggregate"):
        opt.apply([tf.ones(1)], [w], aggregate="max")


@pytest.mark.parametrize(
    "ctor,match",
    [
        (lambda: optim.SGD(-0.1), "learning_rate"),
        (lambda: optim.Adam(-1e-3), "learning_rate"),
        (lambda: optim.Adam(beta1=1.0), "beta1"),
        (lambda: optim.Adam(beta2=-0.1), "beta2"),
        (lambda: optim.AdamW(weight_decay=-0.1), "weight_decay"),
        (lambda: optim.SGD(0.1, nesterov=True), "nesterov"),
        (lambda: optim.SGD(0.1, momentum=1.5), "momentum"),
        (lambda: optim.RMSProp(decay=1.0), "decay"),
        (lambda: optim.Adam(epsilon=-1.0), "epsilon"),
        (lambda: optim.SGD(0.1, clipnorm=1.0, clipvalue=1.0), "at most one"),
        (lambda: optim.SGD(0.1, global_clipnorm=0.0), "global_clipnorm"),
        (lambda: optim.get("adagrad"), "unknown optimizer"),
    ],
)
def test_bad_arguments_raise_value_error(ctor, match):
    with pytest.raises(ValueError, match=match):
        ctor()


def test_get_and_repr():
    opt = optim.get("AdamW", learning_rate=0.01, weight_decay=0.1)
    assert isinstance(opt, optim.AdamW) and opt.weight_decay == 0.1
    assert isinstance(optim.get("sgd", learning_rate=0.1, momentum=0.9), optim.SGD)
    assert isinstance(optim.get("rmsprop"), optim.RMSProp)
    assert isinstance(optim.get("adam"), optim.Adam)
    assert optim.get(opt) is opt
    with pytest.raises(TypeError):
        optim.get(None)
    with pytest.raises(TypeError, match="learning_rate"):
        optim.SGD("fast")
    assert "weight_decay=0.1" in repr(opt)
    sched = schedules.cosine(0.1, 100)
    assert optim.SGD(sched).learning_rate is sched


_DIST_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from lamina import optim

    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 4)).astype(np.float32)
    Y = rng.normal(size=(16, 3)).astype(np.float32)
    W0 = rng.normal(size=(4, 3)).astype(np.float32)
    STEPS = 4

    def loss_fn(w, x, y):
        return tf.reduce_mean(tf.square(x @ w - y))

    def make():
        return [optim.Adam(0.05, global_clipnorm=0.5), optim.SGD(0.1, momentum=0.9, nesterov=True)]

    out = {}
    refs = []
    for opt in make():
        # Reference: one device, the whole batch of 16.
        w = tf.Variable(W0)
        for _ in range(STEPS):
            with tf.GradientTape() as t:
                loss = loss_fn(w, X, Y)
            opt.apply(t.gradient(loss, [w]), [w])
        refs.append(w.numpy())

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        ws = [tf.Variable(W0), tf.Variable(W0)]
        opts = make()
    ds = tf.data.Dataset.from_tensor_slices((X, Y)).batch(16).repeat()
    it = iter(strategy.experimental_distribute_dataset(ds))

    @tf.function
    def step(batch):
        def fn(x, y):
            for w, opt in zip(ws, opts):
                with tf.GradientTape() as t:
                    loss = loss_fn(w, x, y)
                opt.apply(t.gradient(loss, [w]), [w])  # the first call creates the slots
        strategy.run(fn, args=batch)

    for _ in range(STEPS):
        step(next(it))
    for k, (wd, optd, ref) in enumerate(zip(ws, opts, refs)):
        slots = [v for v in optd.variables if v is not optd.iterations and "learning_rate" not in v.name]
        out[k] = {
            "max_diff": float(np.abs(wd.numpy() - ref).max()),
            "moved": float(np.abs(ref - W0).max()),
            "replicas_equal": bool(np.array_equal(*[v.numpy() for v in wd.values])),
            "slot_types": sorted({type(v).__name__ for v in slots}),
            "n_slots": len(slots),
            "iterations": int(optd.iterations.numpy()),
        }
    outside = optim.SGD(0.1)
    try:
        with strategy.scope():
            wo = tf.Variable(W0)
        strategy.run(tf.function(lambda: outside.apply([tf.ones_like(W0)], [wo])))
        out["outside_error"] = None
    except ValueError as e:
        out["outside_error"] = str(e)
    print("RESULT" + json.dumps(out))
    """
)


def test_mirrored_strategy_matches_single_device(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", _DIST_SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1][len("RESULT"):])
    for k in ("0", "1"):
        r = out[k]
        assert r["moved"] > 1e-2
        assert r["max_diff"] < 1e-5, r
        assert r["replicas_equal"]
        assert r["slot_types"] == ["MirroredVariable"] and r["n_slots"] in (1, 2)
        assert r["iterations"] == 4
    assert out["outside_error"] and "strategy.scope()" in out["outside_error"]


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_adam_fused_kernel_equals_composite_ops(dtype):
    """Plain Adam runs ResourceApplyAdam per variable; it must equal the element-wise update."""
    rng = np.random.RandomState(0)
    w0 = rng.randn(5, 3)
    grads = [rng.randn(5, 3) * (i + 1) for i in range(6)]

    def run(fuse):
        opt = optim.Adam(schedules.Cosine(0.05, total_steps=6, warmup_steps=2), epsilon=1e-3)
        if not fuse:
            opt._can_fuse = lambda var, grad: False
        v = tf.Variable(w0, dtype=dtype)
        step = tf.function(lambda g: opt.apply([g], [v]))
        for g in grads:
            step(tf.constant(g, dtype))
        ops = {op.type for op in step.get_concrete_function(tf.constant(grads[0], dtype)).graph.get_operations()}
        return v.numpy(), ops

    fused, fused_ops = run(True)
    composite, composite_ops = run(False)
    assert "ResourceApplyAdam" in fused_ops and "ResourceApplyAdam" not in composite_ops
    assert np.abs(fused - w0).max() > 1e-2
    assert_close(fused, composite, atol=1e-6 if dtype == tf.float32 else 1e-12, rtol=1e-5)
