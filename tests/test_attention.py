"""MultiHeadAttention, TransformerEncoderBlock and positional embeddings vs PyTorch / NumPy."""

import math

import numpy as np
import pytest
import tensorflow as tf
import torch

from lamina.layers.attention import MultiHeadAttention, TransformerEncoderBlock
from lamina.layers.positional import LearnedPositionalEmbedding, SinusoidalPositionalEmbedding
from conftest import assert_close, t2n

B, TQ, TK, D, HEADS = 2, 5, 7, 8, 2


def mha_weights(tm, prefix=""):
    """Our MultiHeadAttention variables from a torch.nn.MultiheadAttention."""
    e = tm.embed_dim
    if tm._qkv_same_embed_dim:
        w = t2n(tm.in_proj_weight)
        wq, wk, wv = w[:e], w[e:2 * e], w[2 * e:]
    else:
        wq, wk, wv = t2n(tm.q_proj_weight), t2n(tm.k_proj_weight), t2n(tm.v_proj_weight)
    b = t2n(tm.in_proj_bias)
    return {
        prefix + "query_proj/weights": wq.T, prefix + "query_proj/bias": b[:e],
        prefix + "key_proj/weights": wk.T, prefix + "key_proj/bias": b[e:2 * e],
        prefix + "value_proj/weights": wv.T, prefix + "value_proj/bias": b[2 * e:],
        prefix + "output_proj/weights": t2n(tm.out_proj.weight).T, prefix + "output_proj/bias": t2n(tm.out_proj.bias),
    }


def causal_torch(tq, tk):
    return torch.triu(torch.ones(tq, tk, dtype=torch.bool), 1)  # True = not allowed


# ------------------------------------------------------------ attention
@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_torch(causal, rng):
    x = rng.standard_normal((B, TQ, D)).astype(np.float32)
    pad = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)  # True = real token
    tm = torch.nn.MultiheadAttention(D, HEADS, batch_first=True)
    mha = MultiHeadAttention(HEADS, D // HEADS)
    mha(x)
    mha.set_weights(mha_weights(tm))
    out, weights = mha(x, mask=pad, causal=causal, return_weights=True)
    tx = torch.tensor(x)
    t_out, t_w = tm(tx, tx, tx, key_padding_mask=torch.tensor(~pad),
                    attn_mask=causal_torch(TQ, TQ) if causal else None, average_attn_weights=False)
    assert out.shape == (B, TQ, D) and weights.shape == (B, HEADS, TQ, TQ)
    assert_close(out, t2n(t_out), atol=2e-6)
    assert_close(weights, t2n(t_w), atol=2e-6)


def test_cross_attention_with_full_mask_matches_torch(rng):
    dk, dv = 3, 6
    q = rng.standard_normal((B, TQ, D)).astype(np.float32)
    k = rng.standard_normal((B, TK, dk)).astype(np.float32)
    v = rng.standard_normal((B, TK, dv)).astype(np.float32)
    full = rng.random((B, TQ, TK)) < 0.7
    full[..., 0] = True  # every query keeps at least one key
    tm = torch.nn.MultiheadAttention(D, HEADS, batch_first=True, kdim=dk, vdim=dv)
    mha = MultiHeadAttention(HEADS, D // HEADS)
    mha(q, k, v)
    mha.set_weights(mha_weights(tm))
    out = mha(q, k, v, mask=full)
    t_mask = torch.tensor(~full).repeat_interleave(HEADS, dim=0)  # (B*heads, Tq, Tk)
    t_out, _ = tm(torch.tensor(q), torch.tensor(k), torch.tensor(v), attn_mask=t_mask)
    assert_close(out, t2n(t_out), atol=2e-6)


@pytest.mark.filterwarnings("ignore:Lower right causal bias")  # torch: NaN rows for Tq > Tk; we compare masks
@pytest.mark.parametrize("tq, tk, offset", [(1, 7, None), (3, 7, None), (7, 7, None), (9, 7, None), (2, 7, 1),
                                             (tf.constant(3), tf.constant(7), tf.constant(0))])
def test_causal_mask_is_bottom_right_like_torch_causal_lower_right(tq, tk, offset):
    """Query i sits at position offset + i (default Tk - Tq): FlashAttention 2's and PyTorch's
    causal_lower_right alignment (torch's SDPA is_causal is top-left: not used)."""
    from torch.nn.attention.bias import causal_lower_right

    from lamina.layers.attention import causal_mask

    got = causal_mask(tq, tk, offset).numpy()
    nq, nk = int(tq), int(tk)
    if offset is None:
        ref = causal_lower_right(nq, nk)._materialize().numpy()
    else:  # the NumPy reference: key j visible to query i iff j <= offset + i
        ref = np.arange(nk)[None, :] <= int(offset) + np.arange(nq)[:, None]
    np.testing.assert_array_equal(got, ref)


def test_causal_attention_with_fewer_queries_matches_torch_and_decoding(rng):
    """The last token decoded alone sees every key: a(h[:, -1:], h) == a(h)[:, -1:] (it saw only
    key 0 with the old top-left mask), and the outputs equal SDPA with causal_lower_right."""
    from torch.nn.attention.bias import causal_lower_right

    h = rng.standard_normal((B, TK, D)).astype(np.float32)
    mha = MultiHeadAttention(HEADS, D // HEADS)
    full = mha(h, causal=True).numpy()
    assert_close(mha(h[:, -1:], h, causal=True), full[:, -1:], atol=1e-6)
    assert_close(mha(h[:, -3:], h, causal=True), full[:, -3:], atol=1e-6)
    # The same tokens with an explicit position offset (e.g. queries 2..4 of 7 keys).
    assert_close(mha(h[:, 2:5], h, causal=True, query_offset=2), full[:, 2:5], atol=1e-6)

    tq = 3
    q = torch.tensor(h[:, -tq:])
    tx = torch.tensor(h)
    w = {k: torch.tensor(v) for k, v in mha.get_weights().items()}

    def heads(t, name):  # (B, T, D) -> (B, heads, T, D // heads)
        y = t @ w[f"{name}_proj/weights"] + w[f"{name}_proj/bias"]
        return y.reshape(B, -1, HEADS, D // HEADS).transpose(1, 2)

    attn = torch.nn.functional.scaled_dot_product_attention(
        heads(q, "query"), heads(tx, "key"), heads(tx, "value"), attn_mask=causal_lower_right(tq, TK))
    ref = attn.transpose(1, 2).reshape(B, tq, D) @ w["output_proj/weights"] + w["output_proj/bias"]
    assert_close(mha(h[:, -tq:], h, causal=True), t2n(ref), atol=2e-6)
    with pytest.raises(ValueError, match="query_offset only applies to causal attention"):
        mha(h, query_offset=1)


def test_value_and_output_sizes_against_numpy(rng):
    q = rng.standard_normal((B, TQ, D)).astype(np.float32)
    kv = rng.standard_normal((B, TK, 5)).astype(np.float32)
    mha = MultiHeadAttention(3, key_size=4, value_size=2, output_size=9)
    out = mha(q, kv)
    assert out.shape == (B, TQ, 9)
    w = {k: v for k, v in mha.get_weights().items()}
    assert w["value_proj/weights"].shape == (5, 6) and w["output_proj/weights"].shape == (6, 9)

    def proj(x, name):
        return x @ w[f"{name}/weights"] + w[f"{name}/bias"]

    def heads(x, size):
        return x.reshape(B, -1, 3, size).transpose(0, 2, 1, 3)

    qh, kh, vh = heads(proj(q, "query_proj"), 4), heads(proj(kv, "key_proj"), 4), heads(proj(kv, "value_proj"), 2)
    logits = qh @ kh.transpose(0, 1, 3, 2) / math.sqrt(4)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref = (p @ vh).transpose(0, 2, 1, 3).reshape(B, TQ, 6)
    assert_close(out, proj(ref, "output_proj"), atol=1e-5)


def test_fully_masked_rows_are_finite_zero_weights(rng):
    x = tf.constant(rng.standard_normal((B, TQ, D)).astype(np.float32))
    mask = np.ones((B, TQ, TQ), bool)
    mask[1, 2, :] = False  # query 2 of example 1 may attend to nothing
    mha = MultiHeadAttention(HEADS, 4)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out, w = mha(x, mask=mask, return_weights=True)
        loss = tf.reduce_sum(out ** 2)
    grad = tape.gradient(loss, [x] + list(mha.trainable_variables))
    assert all(np.isfinite(g.numpy()).all() for g in grad)
    assert np.isfinite(out.numpy()).all()
    assert_close(w[1, :, 2], np.zeros((HEADS, TQ)))
    assert_close(out[1, 2], mha.output_proj.bias.numpy(), atol=1e-6)
    assert_close(tf.reduce_sum(w[0], -1), np.ones((HEADS, TQ)), atol=1e-6)


def test_attention_dropout_only_in_training(rng):
    x = rng.standard_normal((B, TQ, D)).astype(np.float32)
    mha = MultiHeadAttention(HEADS, 4, dropout=0.5)
    a, b = mha(x), mha(x, training=False)
    assert_close(a, b)
    c = mha(x, training=True)
    assert np.abs(c.numpy() - a.numpy()).max() > 1e-3


def test_one_trace_for_any_length_and_low_precision(rng):
    mha = MultiHeadAttention(HEADS, 4)
    mha(np.zeros((1, 3, D), np.float32))

    @tf.function(input_signature=[tf.TensorSpec((None, None, D), tf.float32)])
    def run(x):
        return mha(x, causal=True)

    for t in (2, 9):
        x = rng.standard_normal((B, t, D)).astype(np.float32)
        assert_close(run(x), mha(x, causal=True), atol=1e-6)
    assert run.experimental_get_tracing_count() == 1
    x = rng.standard_normal((B, TQ, D)).astype(np.float32)
    low = mha(tf.cast(x, tf.bfloat16), causal=True)
    assert low.dtype == tf.bfloat16 and mha.query_proj.weights.dtype == tf.float32
    assert_close(tf.cast(low, tf.float32), mha(x, causal=True), atol=0.1)


def test_attention_errors(rng):
    x = rng.standard_normal((B, TQ, D)).astype(np.float32)
    mha = MultiHeadAttention(HEADS, 4)
    with pytest.raises(ValueError, match=r"MultiHeadAttention .*mask must have shape"):
        mha(x, mask=np.ones((TQ,), bool))
    with pytest.raises(ValueError, match="must have 5 keys"):
        mha(x, mask=np.ones((B, TQ + 1), bool))
    with pytest.raises(ValueError, match="same length"):
        mha(x, x, x[:, :3])
    with pytest.raises(ValueError, match="expected 8 query features"):
        mha(np.zeros((B, TQ, D + 1), np.float32))
    with pytest.raises(ValueError, match="num_heads must be > 0"):
        MultiHeadAttention(0, 4)
    with pytest.raises(ValueError, match="dropout must be in"):
        MultiHeadAttention(2, 4, dropout=1.0)


# ------------------------------------------------------------ encoder block
def block_weights(tl):
    w = mha_weights(tl.self_attn, "attention/")
    w.update({
        "norm1/scale": t2n(tl.norm1.weight), "norm1/offset": t2n(tl.norm1.bias),
        "norm2/scale": t2n(tl.norm2.weight), "norm2/offset": t2n(tl.norm2.bias),
        "fc1/weights": t2n(tl.linear1.weight).T, "fc1/bias": t2n(tl.linear1.bias),
        "fc2/weights": t2n(tl.linear2.weight).T, "fc2/bias": t2n(tl.linear2.bias),
    })
    return w


def make_block_pair(mlp=16):
    tl = torch.nn.TransformerEncoderLayer(D, HEADS, mlp, dropout=0.0, activation="gelu", batch_first=True,
                                          norm_first=True)
    with torch.no_grad():  # non-trivial norm parameters
        for p in (tl.norm1.weight, tl.norm1.bias, tl.norm2.weight, tl.norm2.bias):
            p.add_(torch.randn_like(p) * 0.3)
    block = TransformerEncoderBlock(HEADS, D, mlp, dropout=0.0)
    block(np.zeros((1, 2, D), np.float32))
    block.set_weights(block_weights(tl))
    return block, tl


@pytest.mark.parametrize("causal", [False, True])
def test_encoder_block_matches_torch(causal, rng):
    block, tl = make_block_pair()
    x = rng.standard_normal((B, TQ, D)).astype(np.float32)
    pad = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], bool)
    out = block(x, mask=pad, causal=causal)
    t_out = tl(torch.tensor(x), src_mask=causal_torch(TQ, TQ) if causal else None,
               src_key_padding_mask=torch.tensor(~pad))
    assert_close(out, t2n(t_out), atol=1e-5)


def test_encoder_block_gradients_match_torch(rng):
    block, tl = make_block_pair()
    x = rng.standard_normal((B, TQ, D)).astype(np.float32)
    g = rng.standard_normal((B, TQ, D)).astype(np.float32)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(block(xt, causal=True) * g)
    dx, dfc1, dq = tape.gradient(loss, [xt, block.fc1.weights, block.attention.query_proj.weights])
    tx = torch.tensor(x, requires_grad=True)
    (tl(tx, src_mask=causal_torch(TQ, TQ)) * torch.tensor(g)).sum().backward()
    assert_close(dx, tx.grad.numpy(), atol=1e-5)
    assert_close(dfc1, tl.linear1.weight.grad.numpy().T, atol=1e-5)
    assert_close(dq, tl.self_attn.in_proj_weight.grad.numpy()[:D].T, atol=1e-5)


def test_encoder_block_dropout_and_errors(rng):
    x = rng.standard_normal((B, TQ, D)).astype(np.float32)
    block = TransformerEncoderBlock(HEADS, D, 16, dropout=0.3)
    assert_close(block(x), block(x, training=False))
    assert np.abs(block(x, training=True).numpy() - block(x).numpy()).max() > 1e-4
    with pytest.raises(ValueError, match="must divide model_dim"):
        TransformerEncoderBlock(3, D, 16)
    with pytest.raises(ValueError, match=r"expected 8 features \(model_dim\)"):
        block(np.zeros((B, TQ, D + 2), np.float32))


# ------------------------------------------------------------ positions
def test_sinusoidal_positions_formula():
    max_len, dim = 12, 7
    pe = SinusoidalPositionalEmbedding(max_len)
    x = np.zeros((2, 9, dim), np.float32)
    out = pe(x).numpy()
    ref = np.zeros((max_len, dim))
    for pos in range(max_len):
        for j in range(dim):
            angle = pos / 10000 ** ((j - j % 2) / dim)
            ref[pos, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    assert_close(out[0], ref[:9], atol=1e-6)
    assert_close(out[1], ref[:9], atol=1e-6)
    assert pe.trainable_variables == () or len(pe.trainable_variables) == 0
    with pytest.raises(ValueError, match=r"at most max_len=12 steps, got 13"):
        pe(np.zeros((1, 13, dim), np.float32))


def test_learned_positions(rng):
    pe = LearnedPositionalEmbedding(6, D)
    x = rng.standard_normal((B, 4, D)).astype(np.float32)
    out = pe(x)
    assert pe.embeddings.shape == (6, D) and pe.embeddings.name.startswith("learned_positional_embedding/embeddings")
    assert_close(out, x + pe.embeddings.numpy()[:4][None], atol=1e-6)
    with pytest.raises(ValueError, match="expected 8 features"):
        LearnedPositionalEmbedding(6, D)(np.zeros((1, 2, D + 1), np.float32))

    @tf.function(input_signature=[tf.TensorSpec((None, None, D), tf.float32)])
    def run(x):
        return pe(x)

    assert run(x).shape == (B, 4, D)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_len=6"):
        run(np.zeros((1, 7, D), np.float32))
