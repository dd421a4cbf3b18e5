"""Autoregressive decoding: scaled dot-product attention (grouped heads, dropout), rotary positions,
position offsets, key/value caches, GPT and its compiled generate — against PyTorch and NumPy."""

import numpy as np
import pytest
import tensorflow as tf
import torch

import lamina as lm
from lamina.models.gpt import filter_logits
from conftest import assert_close, t2n

B, D = 2, 16


# ------------------------------------------------------ scaled dot-product attention
@pytest.mark.parametrize("hq, hkv", [(4, 4), (4, 2), (4, 1)])
def test_sdpa_grouped_heads_match_torch_forward_and_gradients(hq, hkv, rng):
    q = rng.standard_normal((B, hq, 5, 8)).astype(np.float32)
    k = rng.standard_normal((B, hkv, 7, 8)).astype(np.float32)
    v = rng.standard_normal((B, hkv, 7, 3)).astype(np.float32)
    mask = rng.random((B, 5, 7)) < 0.8
    mask[..., 0] = True
    g = rng.standard_normal((B, hq, 5, 3)).astype(np.float32)
    tensors = [tf.constant(a) for a in (q, k, v)]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        out = lm.scaled_dot_product_attention(*tensors, mask=mask)
        loss = tf.reduce_sum(out * g)
    grads = tape.gradient(loss, tensors)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    ref = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch.tensor(mask)[:, None],
                                                           enable_gqa=hkv != hq)
    (ref * torch.tensor(g)).sum().backward()
    assert_close(out, t2n(ref), atol=2e-6)
    for got, want in zip(grads, (tq.grad, tk.grad, tv.grad)):
        assert_close(got, want.numpy(), atol=1e-5)


def test_sdpa_causal_is_bottom_right_and_scale(rng):
    from torch.nn.attention.bias import causal_lower_right

    q = rng.standard_normal((B, 2, 3, 4)).astype(np.float32)
    k = rng.standard_normal((B, 2, 6, 4)).astype(np.float32)
    v = rng.standard_normal((B, 2, 6, 4)).astype(np.float32)
    out = lm.scaled_dot_product_attention(q, k, v, causal=True, scale=0.3)
    ref = torch.nn.functional.scaled_dot_product_attention(torch.tensor(q), torch.tensor(k), torch.tensor(v),
                                                           attn_mask=causal_lower_right(3, 6), scale=0.3)
    assert_close(out, t2n(ref), atol=2e-6)
    # An explicit offset: queries at positions 1..3 of the 6 keys.
    off = lm.scaled_dot_product_attention(q, k, v, causal=True, query_offset=1, scale=0.3)
    allowed = np.arange(6)[None, :] <= 1 + np.arange(3)[:, None]
    ref = torch.nn.functional.scaled_dot_product_attention(torch.tensor(q), torch.tensor(k), torch.tensor(v),
                                                           attn_mask=torch.tensor(allowed), scale=0.3)
    assert_close(off, t2n(ref), atol=2e-6)


def test_sdpa_dropout_is_the_stateless_mask_on_the_weights(rng):
    q, k, v = (rng.standard_normal((B, 2, 4, 5)).astype(np.float32) for _ in range(3))
    seed = tf.constant([3, 4], tf.int64)
    out, w = lm.scaled_dot_product_attention(q, k, v, dropout=0.4, seed=seed, return_weights=True)
    _, plain = lm.scaled_dot_product_attention(q, k, v, return_weights=True)
    dropped = tf.nn.experimental.stateless_dropout(plain, 0.4, seed=seed)  # the independent recomputation
    assert_close(w, dropped, atol=1e-7)
    assert_close(out, dropped.numpy() @ v, atol=1e-5)
    kept = (w.numpy() != 0).mean()
    assert 0.4 < kept < 0.8  # some weights were dropped, the rest scaled by 1/(1-p)
    again = lm.scaled_dot_product_attention(q, k, v, dropout=0.4, seed=seed)
    assert_close(again, out, atol=0)
    with pytest.raises(ValueError, match="needs seed"):
        lm.scaled_dot_product_attention(q, k, v, dropout=0.4)
    with pytest.raises(ValueError, match="must be equal and divide the query heads"):
        lm.scaled_dot_product_attention(q, k[:, :1].repeat(3, 1), v[:, :1].repeat(3, 1))


def test_mha_grouped_query_heads_match_torch(rng):
    x = rng.standard_normal((B, 6, D)).astype(np.float32)
    mha = lm.MultiHeadAttention(4, 4, num_kv_heads=2)
    out = mha(x, causal=True)
    w = mha.get_weights()
    assert w["key_proj/weights"].shape == (D, 8) and w["query_proj/weights"].shape == (D, 16)

    def heads(name, n):
        y = torch.tensor(x @ w[f"{name}_proj/weights"] + w[f"{name}_proj/bias"])
        return y.reshape(B, 6, n, 4).transpose(1, 2)

    a = torch.nn.functional.scaled_dot_product_attention(heads("query", 4), heads("key", 2), heads("value", 2),
                                                         is_causal=True, enable_gqa=True)
    ref = a.transpose(1, 2).reshape(B, 6, 16).numpy() @ w["output_proj/weights"] + w["output_proj/bias"]
    assert_close(out, ref, atol=2e-6)
    with pytest.raises(ValueError, match="num_kv_heads .3. must divide num_heads .4."):
        lm.MultiHeadAttention(4, 4, num_kv_heads=3)


# ------------------------------------------------------------------- rotary
def rope_numpy(x, positions, dim, interleaved, base=10000.0):
    """RoPE as complex multiplication: pair (a, b) -> (a + ib) * exp(i * p * theta_j)."""
    x = x.astype(np.float64)
    half = dim // 2
    theta = base ** (-np.arange(half) * 2.0 / dim)
    rot = np.exp(1j * positions[:, None] * theta[None, :])  # (T, half)
    if interleaved:
        z = x[..., 0:dim:2] + 1j * x[..., 1:dim:2]
    else:
        z = x[..., :half] + 1j * x[..., half:dim]
    z = z * rot
    out = x.copy()
    if interleaved:
        out[..., 0:dim:2], out[..., 1:dim:2] = z.real, z.imag
    else:
        out[..., :half], out[..., half:dim] = z.real, z.imag
    return out


@pytest.mark.parametrize("interleaved, dim", [(False, None), (True, None), (False, 4)])
def test_rotary_matches_complex_rotation(interleaved, dim, rng):
    x = rng.standard_normal((B, 3, 5, 8)).astype(np.float32)
    rope = lm.RotaryEmbedding(dim, interleaved=interleaved)
    for offset in (0, 7, tf.constant(11)):
        got = rope(x, offset=offset)
        ref = rope_numpy(x, np.arange(5) + int(offset), dim or 8, interleaved)
        assert_close(got, ref, atol=2e-5)
    # Relative: q(p) . k(p') depends on p - p' only.
    q, k = x[:1, :1, :1], x[:1, :1, 1:2]
    a = float(tf.reduce_sum(rope(q, offset=9) * rope(k, offset=4)))
    b = float(tf.reduce_sum(rope(q, offset=15) * rope(k, offset=10)))
    assert a == pytest.approx(b, abs=1e-4)
    with pytest.raises(ValueError, match="dim must be even"):
        lm.RotaryEmbedding(3)
    with pytest.raises(ValueError, match="dim=10 is larger than the 8 input features"):
        lm.RotaryEmbedding(10)(x)


# ------------------------------------------------------------- positional offset
def test_positional_embeddings_take_an_offset(rng):
    x = rng.standard_normal((B, 3, D)).astype(np.float32)
    learned = lm.LearnedPositionalEmbedding(10, D)
    learned(x)
    table = learned.embeddings.numpy()
    assert_close(learned(x, offset=4), x + table[4:7][None], atol=1e-6)
    sin = lm.SinusoidalPositionalEmbedding(10)
    assert_close(sin(x, offset=2), x + lm.sinusoidal_table(10, D)[2:5][None], atol=1e-6)
    with pytest.raises(ValueError, match=r"at most max_len=10 steps, got 3 steps at offset 8"):
        learned(x, offset=8)

    @tf.function(input_signature=[tf.TensorSpec([None, None, D]), tf.TensorSpec([], tf.int32)])
    def run(x, offset):
        return learned(x, offset=offset)

    assert_close(run(x, tf.constant(5)), x + table[5:8][None], atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_len=10"):
        run(x, tf.constant(8))


# ------------------------------------------------------------ key/value caches
@pytest.mark.parametrize("rotary", [False, True])
def test_attention_cache_equals_full_recomputation_at_every_position(rotary, rng):
    h = rng.standard_normal((B, 9, D)).astype(np.float32)
    mha = lm.MultiHeadAttention(4, 4, num_kv_heads=2, rotary=lm.RotaryEmbedding() if rotary else None)
    full = mha(h, causal=True).numpy()
    cache = mha.init_cache(B, max_len=12)
    assert cache.keys.shape == (B, 2, 12, 4)
    out, cache = mha(h[:, :4], causal=True, cache=cache, query_offset=0)  # a prefill of 4
    got = [out.numpy()]
    for p in range(4, 9):
        out, cache = mha(h[:, p:p + 1], causal=True, cache=cache, query_offset=p)
        got.append(out.numpy())
    assert_close(np.concatenate(got, 1), full, atol=1e-5)
    assert np.abs(cache.keys.numpy()[:, :, 9:]).max() == 0  # positions never written
    with pytest.raises(ValueError, match="a cache needs query_offset"):
        mha(h[:, :1], causal=True, cache=cache)
    with pytest.raises(ValueError, match="a cache applies to self-attention"):
        mha(h[:, :1], h, cache=cache, query_offset=0)


def test_block_cache_and_one_trace_for_every_step(rng):
    h = rng.standard_normal((1, 6, D)).astype(np.float32)
    block = lm.TransformerEncoderBlock(4, D, 32, dropout=0.0, norm="rms")
    full = block(h, causal=True).numpy()
    step = tf.function(lambda x, c, p: block(x, causal=True, cache=c, query_offset=p))
    cache = block.init_cache(1, 8)
    got = []
    for p in range(6):
        out, cache = step(tf.constant(h[:, p:p + 1]), cache, tf.constant(p))
        got.append(out.numpy())
    assert_close(np.concatenate(got, 1), full, atol=1e-5)
    assert step.experimental_get_tracing_count() == 1


# --------------------------------------------------------------------- GPT
def gpt_torch(w, layers, heads, x):
    """The GPT (learned positions, tied embeddings, LayerNorm, exact GELU) in plain torch."""
    t = {k: torch.tensor(v) for k, v in w.items()}
    h = t["embed/embeddings"][x] + t["positions/embeddings"][: x.shape[1]]
    n = h.shape[1]

    def ln(y, p):
        return torch.nn.functional.layer_norm(y, y.shape[-1:], t[f"{p}/scale"], t[f"{p}/offset"], 1e-5)

    def lin(y, p):
        return y @ t[f"{p}/weights"] + t[f"{p}/bias"]

    for i in range(layers):
        p = f"blocks/{i}"
        a = ln(h, f"{p}/norm1")
        split = lambda y: y.reshape(x.shape[0], n, heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = (split(lin(a, f"{p}/attention/{m}_proj")) for m in ("query", "key", "value"))
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + lin(o.transpose(1, 2).reshape(h.shape), f"{p}/attention/output_proj")
        h = h + lin(torch.nn.functional.gelu(lin(ln(h, f"{p}/norm2"), f"{p}/fc1")), f"{p}/fc2")
    return ln(h, "norm") @ t["embed/embeddings"].T


def test_gpt_matches_torch_reference(rng):
    model = lm.models.GPT(37, max_len=16, model_dim=D, num_heads=2, num_layers=2)
    x = rng.integers(0, 37, (B, 11)).astype(np.int32)
    logits = model(x)
    assert logits.shape == (B, 11, 37) and logits.dtype == tf.float32
    assert "head" not in "".join(model.get_weights())  # tied: the embedding is the output layer
    assert_close(logits, gpt_torch(model.get_weights(), 2, 2, torch.tensor(x, dtype=torch.long)).numpy(), atol=1e-5)


@pytest.mark.parametrize("positional, kv", [("learned", None), ("sinusoidal", 1), ("rope", 2)])
def test_gpt_cached_decoding_equals_full_recomputation(positional, kv, rng):
    model = lm.models.GPT(29, max_len=24, model_dim=D, num_heads=4, num_layers=2, positional=positional,
                          num_kv_heads=kv, tie_embeddings=positional != "rope")
    x = rng.integers(0, 29, (B, 20)).astype(np.int32)
    full = model(x).numpy()
    caches = model.init_cache(B)
    logits, caches = model(x[:, :7], cache=caches, position=0)
    got = [logits.numpy()]
    for p in range(7, 20):
        logits, caches = model(x[:, p:p + 1], cache=caches, position=p)
        got.append(logits.numpy())
    got = np.concatenate(got, 1)
    assert np.abs(got - full).max() <= 1e-5 * max(1.0, np.abs(full).max())


def test_generate_one_trace_deterministic_and_equal_to_recomputation(rng):
    model = lm.models.GPT(23, max_len=32, model_dim=D, num_heads=2, num_layers=2)
    prompt = rng.integers(0, 23, (3, 5)).astype(np.int32)
    a = model.generate(prompt, 9, temperature=0.9, top_k=8, top_p=0.9, seed=7)
    assert a.shape == (3, 14) and a.dtype == np.int32
    np.testing.assert_array_equal(a[:, :5], prompt)
    np.testing.assert_array_equal(model.generate(prompt, 9, temperature=0.9, top_k=8, top_p=0.9, seed=7), a)
    assert (model.generate(prompt, 9, temperature=0.9, seed=8) != a).any()
    ref = model.generate(prompt, 9, temperature=0.9, top_k=8, top_p=0.9, seed=7, use_cache=False)
    np.testing.assert_array_equal(ref, a)  # same per-step seeds: the cache changes nothing
    # Other prompt lengths, numbers of tokens and settings reuse the one trace.
    model.generate(prompt[:1, :2], 20, temperature=0.0)
    model.generate(prompt[0], 3, top_k=1)
    assert model.generate_function().experimental_get_tracing_count() == 1
    # Greedy decoding re-derived from the full model, one token at a time.
    greedy = model.generate(prompt, 6, temperature=0.0)
    seq = prompt
    for _ in range(6):
        nxt = model(seq).numpy()[:, -1].argmax(-1).astype(np.int32)
        seq = np.concatenate([seq, nxt[:, None]], 1)
    np.testing.assert_array_equal(greedy, seq)
    np.testing.assert_array_equal(model.generate(prompt, 6, top_k=1, seed=3), seq)  # top-1 sampling = greedy


def test_generate_compiles_under_xla(rng):
    model = lm.models.GPT(19, max_len=16, model_dim=8, num_heads=2, num_layers=1, positional="rope")
    prompt = rng.integers(0, 19, (2, 3)).astype(np.int32)
    greedy = model.generate(prompt, 5, temperature=0.0, jit_compile=True)
    np.testing.assert_array_equal(greedy, model.generate(prompt, 5, temperature=0.0))
    # XLA's Philox streams differ from the CPU kernels' for non-constant seeds: sampling is deterministic
    # per seed within each setting.
    sampled = model.generate(prompt, 5, seed=1, jit_compile=True)
    np.testing.assert_array_equal(sampled, model.generate(prompt, 5, seed=1, jit_compile=True))


def test_generate_xla_step_agrees_with_the_tensorflow_kernels(rng):
    # The default cached loop runs each one-token step as one XLA-compiled function;
    # the prefill and the sampling stay in TensorFlow's kernels, so the tokens are those of xla_step=False.
    model = lm.models.GPT(31, max_len=40, model_dim=D, num_heads=4, num_layers=2, num_kv_heads=2)
    prompt = rng.integers(0, 31, (2, 6)).astype(np.int32)
    for kw in ({"temperature": 0.0}, {"temperature": 0.9, "top_k": 10, "seed": 4}, {"temperature": 1.2, "seed": 9}):
        np.testing.assert_array_equal(model.generate(prompt, 12, **kw), model.generate(prompt, 12, xla_step=False, **kw))
    model.generate(prompt[:, :2], 20, temperature=0.0)  # another prompt length: the same traces
    model.generate(prompt[:1], 3, temperature=0.0)  # another batch size: XLA compiles again, no retrace
    assert model.generate_function().experimental_get_tracing_count() == 1
    assert model.generate_function(xla_step=True) is model.generate_function()
    with pytest.raises(ValueError, match=r"xla_step=True needs use_cache=True and jit_compile=False"):
        model.generate(prompt, 2, use_cache=False, xla_step=True)
    with pytest.raises(ValueError, match=r"xla_step=True needs use_cache=True and jit_compile=False"):
        model.generate(prompt, 2, jit_compile=True, xla_step=True)


def test_filter_logits_matches_numpy():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((4, 12)).astype(np.float32) * 2
    for k, p in [(0, 1.0), (3, 1.0), (0, 0.5), (5, 0.7), (12, 0.99)]:
        got = filter_logits(tf.constant(logits), k, p).numpy()
        want = logits.copy()
        for row in want:
            if k:
                row[row < np.sort(row)[::-1][k - 1]] = -np.inf
            if p < 1:
                order = np.argsort(-row)
                probs = np.exp(row[order] - row[order][0])
                probs /= probs.sum()
                before = np.cumsum(probs) - probs
                row[order[before >= p]] = -np.inf
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want), err_msg=f"k={k}, p={p}")
        assert_close(np.where(np.isinf(want), 0, got), np.where(np.isinf(want), 0, want))
        assert np.isfinite(got).sum(axis=1).min() >= 1


def test_gpt_errors(rng):
    model = lm.models.GPT(11, max_len=8, model_dim=8, num_heads=2, num_layers=1)
    prompt = rng.integers(0, 11, (1, 4)).astype(np.int32)
    with pytest.raises(ValueError, match=r"prompt \(4\) \+ max_new_tokens \(5\) exceeds max_len=8"):
        model.generate(prompt, 5)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 11\)"):
        model.generate(prompt + 10, 1)
    with pytest.raises(ValueError, match="top_k must be in"):
        model.generate(prompt, 1, top_k=0)
    with pytest.raises(ValueError, match="top_p must be in"):
        model.generate(prompt, 1, top_p=0.0)
    with pytest.raises(TypeError, match="expected integer token ids"):
        model(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="a cache needs position"):
        model(prompt, cache=model.init_cache(1))
    with pytest.raises(ValueError, match="position= applies to cached decoding"):
        model(prompt, position=2)
    with pytest.raises(ValueError, match="positional must be one of"):
        lm.models.GPT(11, positional="alibi")


def test_generate_prints_no_onednn_integer_noise():
    # An int32 transpose of the new tokens made oneDNN print "supports DT_INT32 only on platforms
    # with AVX-512" (also on CPUs that have it), once per process.
    import json
    import subprocess
    import sys

    code = ("import numpy as np, lamina as lm\n"
            "m = lm.models.GPT(vocab_size=32, max_len=32, model_dim=16, num_heads=2, num_layers=1)\n"
            "print(m.generate(np.array([1, 2, 3]), 4, temperature=0.0).tolist())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "DT_INT32" not in proc.stderr
    assert len(json.loads(proc.stdout.strip().splitlines()[-1])) == 7
