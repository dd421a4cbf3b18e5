"""Recurrent cores and unroll: parity with torch.nn.RNN/LSTM/GRU, masking, tracing, gradients."""

import numpy as np
import pytest
import tensorflow as tf
import torch

import lamina as lm
from lamina.layers.recurrent import GRU, LSTM, RNN, Bidirectional, DeepRNN, LSTMState, SimpleRNN, unroll
from conftest import assert_close

B, T, F, H = 3, 6, 4, 5
TORCH = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def make_core(kind, **kw):
    return {"rnn": SimpleRNN, "lstm": LSTM, "gru": GRU}[kind](H, **kw)


def torch_weights(tm, kind, layer=0, suffix=""):
    """Our variables from a torch RNN's layer ``layer`` (``suffix="_reverse"`` for the backward direction)."""
    g = lambda n: getattr(tm, f"{n}_l{layer}{suffix}").detach().numpy()  # noqa: E731
    w = {"input_weights": g("weight_ih").T, "recurrent_weights": g("weight_hh").T}
    b_ih, b_hh = g("bias_ih"), g("bias_hh")
    if kind == "gru":
        w["bias"] = np.concatenate([b_ih[: 2 * H] + b_hh[: 2 * H], b_ih[2 * H:]])
        w["recurrent_bias"] = b_hh[2 * H:]
    else:
        w["bias"] = b_ih + b_hh
    return w


def build_like(core, kind, tm, layer=0, suffix="", features=F):
    core(tf.zeros((1, features)), core.initial_state(1))
    core.set_weights(torch_weights(tm, kind, layer, suffix))
    return core


def torch_state(kind, h0, c0=None):
    if kind == "lstm":
        return (torch.tensor(h0)[None], torch.tensor(c0)[None])
    return torch.tensor(h0)[None]


def our_state(kind, h0, c0=None):
    return LSTMState(tf.constant(h0), tf.constant(c0)) if kind == "lstm" else tf.constant(h0)


@pytest.fixture
def rng():
    torch.manual_seed(0)
    return np.random.default_rng(0)


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_unroll_matches_torch(kind, rng):
    tm = TORCH[kind](F, H, batch_first=True)
    core = build_like(make_core(kind), kind, tm)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    c0 = rng.standard_normal((B, H)).astype(np.float32)
    out, state = unroll(core, x, initial_state=our_state(kind, h0, c0))
    t_out, t_state = tm(torch.tensor(x), torch_state(kind, h0, c0))
    assert out.shape == (B, T, H)
    assert_close(out, t_out.detach().numpy(), atol=2e-6)
    if kind == "lstm":
        assert isinstance(state, LSTMState)
        assert_close(state.hidden, t_state[0][0].detach().numpy(), atol=2e-6)
        assert_close(state.cell, t_state[1][0].detach().numpy(), atol=2e-6)
    else:
        assert_close(state, t_state[0].detach().numpy(), atol=2e-6)


def test_simple_rnn_relu_matches_torch(rng):
    tm = torch.nn.RNN(F, H, nonlinearity="relu", batch_first=True)
    core = build_like(SimpleRNN(H, activation="relu"), "rnn", tm)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    out, _ = unroll(core, x)
    assert_close(out, tm(torch.tensor(x))[0].detach().numpy(), atol=2e-6)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_single_step_matches_torch_cell(kind, rng):
    cell = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[kind](F, H)
    core = make_core(kind)
    x = rng.standard_normal((B, F)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    c0 = rng.standard_normal((B, H)).astype(np.float32)
    core(x, core.initial_state(B))  # build
    w = {"input_weights": cell.weight_ih.detach().numpy().T, "recurrent_weights": cell.weight_hh.detach().numpy().T}
    b_ih, b_hh = cell.bias_ih.detach().numpy(), cell.bias_hh.detach().numpy()
    if kind == "gru":
        w["bias"], w["recurrent_bias"] = np.concatenate([b_ih[:2 * H] + b_hh[:2 * H], b_ih[2 * H:]]), b_hh[2 * H:]
    else:
        w["bias"] = b_ih + b_hh
    core.set_weights(w)
    out, state = core(x, our_state(kind, h0, c0))
    if kind == "lstm":
        th, tc = cell(torch.tensor(x), (torch.tensor(h0), torch.tensor(c0)))
        assert_close(state.cell, tc.detach().numpy(), atol=2e-6)
    else:
        th = cell(torch.tensor(x), torch.tensor(h0))
    assert_close(out, th.detach().numpy(), atol=2e-6)


def test_variables_and_gate_layout():
    x = tf.zeros((2, F))
    lstm, gru, rnn = LSTM(H), GRU(H), SimpleRNN(H)
    for core in (lstm, gru, rnn):
        core(x, core.initial_state(2))
    shapes = {k: v.shape for k, v in gru.get_weights().items()}
    assert shapes == {"input_weights": (F, 3 * H), "recurrent_weights": (H, 3 * H), "bias": (3 * H,), "recurrent_bias": (H,)}
    assert {k: v.shape for k, v in lstm.get_weights().items()} == {
        "input_weights": (F, 4 * H), "recurrent_weights": (H, 4 * H), "bias": (4 * H,)}
    assert {k: v.shape for k, v in rnn.get_weights().items()} == {
        "input_weights": (F, H), "recurrent_weights": (H, H), "bias": (H,)}
    # unit_forget_bias: the forget slice [H:2H] of the [i, f, g, o] bias starts at 1.
    b = lstm.bias.numpy()
    np.testing.assert_array_equal(b[H:2 * H], 1.0)
    np.testing.assert_array_equal(np.delete(b, np.s_[H:2 * H]), 0.0)
    plain = LSTM(H, unit_forget_bias=False)
    plain(x, plain.initial_state(2))
    np.testing.assert_array_equal(plain.bias.numpy(), 0.0)
    assert lstm.input_weights.name.startswith("lstm")


def test_forget_bias_is_added_to_forget_gate(rng):
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    a, b = LSTM(H, forget_bias=1.5), LSTM(H, forget_bias=0.0)
    a(x[:, 0], a.initial_state(B))
    b(x[:, 0], b.initial_state(B))
    w = a.get_weights()
    w2 = dict(w, bias=w["bias"].copy())
    w2["bias"][H:2 * H] += 1.5
    b.set_weights(w2)
    assert_close(unroll(a, x)[0], unroll(b, x)[0], atol=1e-6)


# ---------------------------------------------------------------- tracing
def test_lstm_matches_sonnet2_with_copied_weights(rng):
    """Sonnet 2's snt.LSTM adds forget_bias to b_f once, at initialization: lamina's default
    LSTM (unit_forget_bias=True, forget_bias=0) is the same cell. Copying w_i, w_h and b
    reproduces its outputs and states; the old docs' forget_bias=1.0 adds the 1 again."""
    snt = pytest.importorskip("sonnet")
    T, Bt, F, H = 6, 3, 5, 4
    x = rng.standard_normal((Bt, T, F)).astype(np.float32)
    core = snt.LSTM(H)
    core(tf.zeros([Bt, F]), core.initial_state(Bt))  # builds w_i, w_h, b
    fresh = LSTM(H)
    fresh(tf.zeros([1, F]), fresh.initial_state(1))
    np.testing.assert_array_equal(fresh.bias.numpy(), core.b.numpy())  # the same initial bias [0, 1, 0, 0]
    core.b.assign(core.b + rng.standard_normal(4 * H).astype(np.float32) * 0.3)  # a trained-looking bias

    def copied(**kw):
        lstm = LSTM(H, **kw)
        lstm(tf.zeros([1, F]), lstm.initial_state(1))
        lstm.input_weights.assign(core.input_to_hidden)
        lstm.recurrent_weights.assign(core.hidden_to_hidden)
        lstm.bias.assign(core.b)
        return unroll(lstm, x)

    state = core.initial_state(Bt)
    outs = []
    for t in range(T):
        out, state = core(tf.constant(x[:, t]), state)
        outs.append(out.numpy())
    ref_out, ref_state = np.stack(outs, 1), state
    out, final = copied()
    assert_close(out, ref_out, atol=1e-5)
    assert_close(final.hidden, ref_state.hidden, atol=1e-5)
    assert_close(final.cell, ref_state.cell, atol=1e-5)
    wrong, _ = copied(forget_bias=1.0, unit_forget_bias=False)  # what docs/sequence.md used to say
    assert np.abs(wrong.numpy() - ref_out).max() > 1e-2


def test_one_trace_serves_every_length(rng):
    core = LSTM(H)
    unroll(core, np.zeros((1, 1, F), np.float32))  # build first: a first call that creates variables traces twice

    @tf.function(input_signature=[tf.TensorSpec((None, None, F), tf.float32)])
    def run(x):
        return unroll(core, x)[0]

    for steps in (3, 7, 1):
        x = rng.standard_normal((2, steps, F)).astype(np.float32)
        y = run(x)
        assert y.shape == (2, steps, H)
        assert_close(y, unroll(core, x)[0], atol=1e-6)
    assert run.experimental_get_tracing_count() == 1


def test_time_major_matches_batch_major(rng):
    core = GRU(H)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    lengths = np.array([6, 2, 4])
    out, s = unroll(core, x, sequence_length=lengths, reverse=True)
    out_tm, s_tm = unroll(core, np.transpose(x, (1, 0, 2)), sequence_length=lengths, reverse=True, time_major=True)
    assert out_tm.shape == (T, B, H)
    assert_close(out, np.transpose(out_tm.numpy(), (1, 0, 2)), atol=1e-6)
    assert_close(s, s_tm, atol=1e-6)


# ---------------------------------------------------------------- masking
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_padded_batch_equals_unpadded_runs(kind, reverse, rng):
    core = make_core(kind)
    lengths = [6, 2, 4, 0]
    x = rng.standard_normal((len(lengths), T, F)).astype(np.float32)
    x_padded = x.copy()
    for i, n in enumerate(lengths):
        x_padded[i, n:] = 99.0  # garbage in the padding must not leak
    out, state = unroll(core, x_padded, sequence_length=lengths, reverse=reverse)
    for i, n in enumerate(lengths):
        assert_close(out[i, n:], np.zeros((T - n, H)))
        if n == 0:
            ref_state = core.initial_state(1)
        else:
            ref_out, ref_state = unroll(core, x[i:i + 1, :n], reverse=reverse)
            assert_close(out[i, :n], ref_out[0], atol=1e-6)
        for got, want in zip(tf.nest.flatten(state), tf.nest.flatten(ref_state)):
            assert_close(got[i], want[0], atol=1e-6)


def test_reverse_is_within_each_length(rng):
    # A core that outputs its input: reversal within length is then visible directly.
    core = SimpleRNN(F, activation="linear")
    core(tf.zeros((1, F)), core.initial_state(1))
    core.set_weights({"input_weights": np.eye(F, dtype=np.float32), "recurrent_weights": np.zeros((F, F), np.float32),
                      "bias": np.zeros(F, np.float32)})
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    lengths = np.array([6, 3, 1])
    out, _ = unroll(core, x, sequence_length=lengths, reverse=True)
    # Outputs go back to the original order: identical to the valid inputs, zeros after.
    mask = (np.arange(T)[None, :] < lengths[:, None])[..., None]
    assert_close(out, x * mask)
    # The state ends at the first step (the last one processed).
    _, state = unroll(core, x, sequence_length=lengths, reverse=True)
    assert_close(state, x[:, 0])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_bidirectional_matches_torch_packed(kind, rng):
    tm = TORCH[kind](F, H, batch_first=True, bidirectional=True)
    fw = build_like(make_core(kind), kind, tm)
    bw = build_like(make_core(kind), kind, tm, suffix="_reverse")
    bi = Bidirectional(fw, bw)
    lengths = [6, 3, 5]
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    out, (fs, bs) = bi(x, sequence_length=lengths)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(x), torch.tensor(lengths), batch_first=True,
                                                     enforce_sorted=False)
    t_out, t_state = tm(packed)
    t_out, _ = torch.nn.utils.rnn.pad_packed_sequence(t_out, batch_first=True, total_length=T)
    assert out.shape == (B, T, 2 * H)
    assert_close(out, t_out.detach().numpy(), atol=2e-6)
    h_n = (t_state[0] if kind == "lstm" else t_state).detach().numpy()
    ours_f = fs.hidden if kind == "lstm" else fs
    ours_b = bs.hidden if kind == "lstm" else bs
    assert_close(ours_f, h_n[0], atol=2e-6)
    assert_close(ours_b, h_n[1], atol=2e-6)
    # Unpadded full-length run as well.
    out_full, _ = bi(x)
    assert_close(out_full, tm(torch.tensor(x))[0].detach().numpy(), atol=2e-6)


def test_bidirectional_merge_modes(rng):
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    fw, bw = GRU(H), GRU(H)
    pair, _ = Bidirectional(fw, bw, merge=None)(x)
    for merge, fn in (("sum", np.add), ("mul", np.multiply), ("mean", lambda a, b: (a + b) / 2)):
        out, _ = Bidirectional(fw, bw, merge=merge)(x)
        assert_close(out, fn(pair[0].numpy(), pair[1].numpy()), atol=1e-6)
    with pytest.raises(ValueError, match="merge"):
        Bidirectional(fw, bw, merge="max")


def test_deep_rnn_matches_two_layer_torch_lstm(rng):
    tm = torch.nn.LSTM(F, H, num_layers=2, batch_first=True)
    l0 = build_like(LSTM(H), "lstm", tm, layer=0)
    l1 = build_like(LSTM(H), "lstm", tm, layer=1, features=H)
    deep = DeepRNN([l0, l1])
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    out, state = unroll(deep, x)
    t_out, (h_n, c_n) = tm(torch.tensor(x))
    assert_close(out, t_out.detach().numpy(), atol=2e-6)
    assert isinstance(state, tuple) and len(state) == 2
    for i in range(2):
        assert_close(state[i].hidden, h_n[i].detach().numpy(), atol=2e-6)
        assert_close(state[i].cell, c_n[i].detach().numpy(), atol=2e-6)


def test_deep_rnn_skip_connections_and_stateless_layers(rng):
    a, b = GRU(H), GRU(3)
    deep = DeepRNN([a, b], skip_connections=True)
    assert deep.output_size == H + 3
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    out, state = unroll(deep, x)
    assert out.shape == (B, T, H + 3)
    assert b.input_weights.shape == (F + H, 9)  # layer 2 sees [x_t, layer-1 output]
    out_a, _ = unroll(a, x)
    assert_close(out[..., :H], out_a, atol=1e-6)
    # A stateless layer between cores has the state ().
    mixed = DeepRNN([GRU(H), lm.Linear(7), GRU(2)])
    out, state = unroll(mixed, x, sequence_length=[6, 2, 3])
    assert out.shape == (B, T, 2) and state[1] == ()


# ---------------------------------------------------------------- RNN module
def test_rnn_module_last_output_and_sequential(rng):
    core = LSTM(H)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    lengths = np.array([6, 2, 4])
    seq = RNN(core)(x, sequence_length=lengths)
    last, state = RNN(core, return_sequences=False, return_state=True)(x, sequence_length=lengths)
    assert_close(last, seq.numpy()[np.arange(B), lengths - 1], atol=1e-6)
    assert_close(last, state.hidden, atol=1e-6)
    back = RNN(core, return_sequences=False, reverse=True)(x)
    assert_close(back, unroll(core, x, reverse=True)[0][:, 0], atol=1e-6)
    model = lm.Sequential([RNN(GRU(8), return_sequences=False), lm.Linear(3)])
    assert model(x, training=True).shape == (B, 3)
    bi = RNN(Bidirectional(GRU(H), GRU(H)), return_sequences=False)(x, sequence_length=lengths)
    assert bi.shape == (B, 2 * H)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gradients_match_torch_autograd(kind, rng):
    tm = TORCH[kind](F, H, batch_first=True)
    core = build_like(make_core(kind), kind, tm)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    g_out = rng.standard_normal((B, T, H)).astype(np.float32)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out, _ = unroll(core, xt)
        loss = tf.reduce_sum(out * g_out)
    dx, dwi, dwh = tape.gradient(loss, [xt, core.input_weights, core.recurrent_weights])
    tx = torch.tensor(x, requires_grad=True)
    (tm(tx)[0] * torch.tensor(g_out)).sum().backward()
    assert_close(dx, tx.grad.numpy(), atol=1e-5)
    assert_close(dwi, tm.weight_ih_l0.grad.numpy().T, atol=1e-5)
    assert_close(dwh, tm.weight_hh_l0.grad.numpy().T, atol=1e-5)


def test_numeric_gradient_with_masking():
    core = GRU(2, dtype=tf.float64)
    x = np.random.default_rng(1).standard_normal((2, 3, 2))
    lengths = tf.constant([3, 2])

    def f(x):
        out, state = unroll(core, x, sequence_length=lengths, reverse=True)
        return tf.reduce_sum(out ** 2) + tf.reduce_sum(state)

    f(tf.constant(x))
    theoretical, numerical = tf.test.compute_gradient(f, [tf.constant(x)])
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


# ---------------------------------------------------------------- misc
def test_low_precision_inputs(rng):
    core = LSTM(H)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    ref, _ = unroll(core, x)
    out, state = unroll(core, tf.cast(x, tf.bfloat16))
    assert out.dtype == tf.bfloat16 and state.cell.dtype == tf.bfloat16
    assert_close(tf.cast(out, tf.float32), ref, atol=5e-2)


def test_errors(rng):
    core = LSTM(H)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    with pytest.raises(ValueError, match=r"LSTM .lstm.: expected an input of rank 2"):
        core(x, core.initial_state(B))
    with pytest.raises(ValueError, match="rank >= 3"):
        unroll(core, x[:, 0])
    unroll(core, x)
    with pytest.raises(ValueError, match="expected 4 input features"):
        core(np.zeros((B, F + 1), np.float32), core.initial_state(B))
    with pytest.raises(ValueError, match="pair"):
        core(x[:, 0], tf.zeros((B, H)))
    with pytest.raises(ValueError, match="initial_state has 1 tensors, expected 2"):
        unroll(core, x, initial_state=tf.zeros((B, H)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="sequence_length"):
        unroll(core, x, sequence_length=[1, 2, T + 1])
    with pytest.raises(TypeError, match="recurrent core"):
        unroll(lm.Linear(3), x)
    with pytest.raises(ValueError, match="hidden_size must be > 0"):
        GRU(0)
    with pytest.raises(ValueError, match="state of shape"):
        GRU(H)(x[:, 0], tf.zeros((B, H + 1)))
    # A plain (h, c) tuple works as an LSTM initial state.
    out, state = unroll(core, x, initial_state=(tf.zeros((B, H)), tf.zeros((B, H))))
    assert isinstance(state, LSTMState)
