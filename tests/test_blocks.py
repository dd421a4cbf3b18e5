"""The building blocks of generative and vision models against references with copied weights, forward and
gradient: Upsample, InstanceNorm, RMSNorm, LSTM(projection) vs PyTorch; VectorQuantizer(EMA), Bias, BatchApply
vs Sonnet 2; ConvLSTM2D vs Keras 3; the Identity initializer vs torch.nn.init."""

import numpy as np
import pytest
import tensorflow as tf
import torch

import lamina as lm
from conftest import assert_close, t2n


def tf_grads(fn, x, g, variables=()):
    """``fn(x)``, and the gradients of ``sum(fn(x) * g)`` for ``x`` and ``variables``."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * g)
    return y, tape.gradient(loss, [x, *variables])


def nchw(x):
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


def nhwc(x):
    return np.moveaxis(x, 1, -1)


# ------------------------------------------------------------------ Upsample
@pytest.mark.parametrize("kw, torch_kw", [
    (dict(scale=2, mode="nearest"), dict(scale_factor=2, mode="nearest")),
    (dict(scale=(3, 2), mode="bilinear"), dict(scale_factor=(3, 2), mode="bilinear", align_corners=False)),
    (dict(size=(7, 9), mode="nearest"), dict(size=(7, 9), mode="nearest")),
    (dict(size=(7, 9), mode="bilinear"), dict(size=(7, 9), mode="bilinear", align_corners=False)),
    (dict(size=(3, 2), mode="bilinear"), dict(size=(3, 2), mode="bilinear", align_corners=False)),  # down
    (dict(scale=1.5, mode="bilinear"), dict(scale_factor=1.5, mode="bilinear", align_corners=False,
                                            recompute_scale_factor=True)),
])
def test_upsample_matches_torch_interpolate(kw, torch_kw, rng):
    x = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    up = lm.Upsample(**kw)
    tx = torch.tensor(nchw(x), requires_grad=True)
    ref = torch.nn.functional.interpolate(tx, **torch_kw)
    g = rng.standard_normal(nhwc(t2n(ref)).shape).astype(np.float32)
    y, (dx,) = tf_grads(up, x, g)
    (ref * torch.tensor(nchw(g))).sum().backward()
    assert_close(y, nhwc(t2n(ref)), atol=1e-6)
    assert_close(dx, nhwc(tx.grad.numpy()), atol=1e-5)
    first = lm.Upsample(**kw, data_format="channels_first")(nchw(x))
    assert_close(first, t2n(ref), atol=1e-6)


def test_upsample_errors_and_dtype():
    with pytest.raises(ValueError, match="give exactly one of scale and size"):
        lm.Upsample()
    with pytest.raises(ValueError, match="mode must be one of"):
        lm.Upsample(scale=2, mode="bicubic")
    with pytest.raises(ValueError, match="size must be positive ints"):
        lm.Upsample(size=(2.5, 3))
    y = lm.Upsample(scale=2, mode="bilinear")(tf.zeros([1, 2, 2, 1], tf.bfloat16))
    assert y.dtype == tf.bfloat16 and y.shape == (1, 4, 4, 1)
    with pytest.raises(ValueError, match="expected an input of rank 4"):
        lm.Upsample(scale=2)(tf.zeros([1, 2, 2]))


# ------------------------------------------------------------------- norms
@pytest.mark.parametrize("shape, data_format", [((2, 5, 6, 3), "channels_last"), ((2, 3, 5, 6), "channels_first"),
                                                ((2, 7, 4), "channels_last")])
def test_instance_norm_matches_torch(shape, data_format, rng):
    x = rng.standard_normal(shape).astype(np.float32) * 2 + 1
    norm = lm.InstanceNorm(data_format=data_format)
    norm(x)
    c = shape[-1] if data_format == "channels_last" else shape[1]
    scale, offset = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    norm.set_weights({"scale": scale, "offset": offset})
    to_torch = (lambda a: np.ascontiguousarray(np.moveaxis(a, -1, 1))) if data_format == "channels_last" else np.asarray
    from_torch = (lambda a: np.moveaxis(a, 1, -1)) if data_format == "channels_last" else np.asarray
    cls = torch.nn.InstanceNorm2d if len(shape) == 4 else torch.nn.InstanceNorm1d
    tn = cls(c, affine=True, eps=1e-5)
    with torch.no_grad():
        tn.weight.copy_(torch.tensor(scale))
        tn.bias.copy_(torch.tensor(offset))
    tx = torch.tensor(to_torch(x), requires_grad=True)
    ref = tn(tx)
    g = rng.standard_normal(shape).astype(np.float32)
    y, (dx, ds, do) = tf_grads(norm, x, g, [norm.scale, norm.offset])
    (ref * torch.tensor(to_torch(g))).sum().backward()
    assert_close(y, from_torch(t2n(ref)), atol=2e-5)
    assert_close(dx, from_torch(tx.grad.numpy()), atol=2e-5)
    assert_close(ds, tn.weight.grad.numpy(), atol=2e-4)
    assert_close(do, tn.bias.grad.numpy(), atol=2e-4)


@pytest.mark.parametrize("axis, normalized", [(-1, (6,)), ([-2, -1], (4, 6))])
def test_rms_norm_matches_torch(axis, normalized, rng):
    x = rng.standard_normal((3, 4, 6)).astype(np.float32)
    norm = lm.RMSNorm(axis=axis, eps=1e-6)
    norm(x)
    w = rng.standard_normal(normalized).astype(np.float32)
    norm.set_weights({"scale": w})
    tn = torch.nn.RMSNorm(normalized, eps=1e-6)
    with torch.no_grad():
        tn.weight.copy_(torch.tensor(w))
    tx = torch.tensor(x, requires_grad=True)
    ref = tn(tx)
    g = rng.standard_normal(x.shape).astype(np.float32)
    y, (dx, dw) = tf_grads(norm, x, g, [norm.scale])
    (ref * torch.tensor(g)).sum().backward()
    assert_close(y, t2n(ref), atol=1e-5)
    assert_close(dx, tx.grad.numpy(), atol=1e-5)
    assert_close(dw, tn.weight.grad.numpy(), atol=1e-4)
    assert [v.name.split("/")[-1] for v in norm.variables] == ["scale:0"]  # no offset unless center=True
    half = norm(tf.cast(x, tf.bfloat16))
    assert half.dtype == tf.bfloat16
    assert_close(tf.cast(half, tf.float32), y, atol=0.05)


# --------------------------------------------------------- vector quantizers
def sonnet():
    return pytest.importorskip("sonnet")


def test_vector_quantizer_matches_sonnet_forward_and_gradients(rng):
    snt = sonnet()
    x = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
    ours = lm.VectorQuantizer(10, 3, commitment_cost=0.3)
    ours(x)
    ref = snt.nets.VectorQuantizer(embedding_dim=3, num_embeddings=10, commitment_cost=0.3)
    ref.embeddings.assign(tf.transpose(ours.codebook))
    xt = tf.constant(x)
    g = rng.standard_normal(x.shape).astype(np.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        a, b = ours(xt), ref(xt, is_training=True)
        la = tf.reduce_sum(a.quantized * g) + a.loss
        lb = tf.reduce_sum(b["quantize"] * g) + b["loss"]
    assert_close(a.quantized, b["quantize"], atol=1e-6)
    assert_close(a.loss, b["loss"], atol=1e-6)
    assert_close(a.perplexity, b["perplexity"], atol=1e-5)
    assert a.encodings.shape == (2, 4, 4, 10)
    assert_close(tf.reshape(a.encodings, [-1, 10]), b["encodings"])
    np.testing.assert_array_equal(a.encoding_indices.numpy(), b["encoding_indices"].numpy())
    assert a.encoding_indices.shape == (2, 4, 4)
    dxa, dca = tape.gradient(la, [xt, ours.codebook])
    dxb, dcb = tape.gradient(lb, [xt, ref.embeddings])
    assert_close(dxa, dxb, atol=1e-6)  # straight-through + the commitment term
    assert_close(tf.convert_to_tensor(dca), tf.transpose(tf.convert_to_tensor(dcb)), atol=1e-6)  # moves the chosen codes
    # Every code row is the nearest: quantized == codebook[indices].
    assert_close(a.quantized, tf.gather(ours.codebook, a.encoding_indices), atol=1e-6)


def test_vector_quantizer_ema_matches_sonnet_over_steps(rng):
    snt = sonnet()
    ours = lm.VectorQuantizerEMA(8, 3, commitment_cost=0.25, decay=0.9)
    batches = [rng.standard_normal((16, 3)).astype(np.float32) for _ in range(4)]
    ours(batches[0], training=False)
    ref = snt.nets.VectorQuantizerEMA(embedding_dim=3, num_embeddings=8, commitment_cost=0.25, decay=0.9)
    ref.embeddings.assign(tf.transpose(ours.codebook))
    ref.ema_dw.initialize(ref.embeddings)  # its hidden states start at zero, as ours
    assert not ours.trainable_variables
    before = ours.codebook.numpy()
    for x in batches:
        xt = tf.constant(x)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(xt)
            a, b = ours(xt, training=True), ref(xt, is_training=True)
            la, lb = tf.reduce_sum(a.quantized) + a.loss, tf.reduce_sum(b["quantize"]) + b["loss"]
        assert_close(a.quantized, b["quantize"], atol=1e-5)
        assert_close(a.loss, b["loss"], atol=1e-6)
        assert_close(a.perplexity, b["perplexity"], atol=1e-5)
        assert_close(tape.gradient(la, xt), tape.gradient(lb, xt), atol=1e-6)
        assert_close(ours.codebook, tf.transpose(ref.embeddings), atol=1e-5)
    assert ours.ema_steps.numpy() == 4 and np.abs(ours.codebook.numpy() - before).max() > 1e-3
    frozen = ours.codebook.numpy()
    ours(batches[0], training=False)
    np.testing.assert_array_equal(ours.codebook.numpy(), frozen)
    step = tf.function(lambda x, t: ours(x, training=t).loss)
    step(batches[1], tf.constant(False))
    np.testing.assert_array_equal(ours.codebook.numpy(), frozen)
    step(batches[1], tf.constant(True))
    assert ours.ema_steps.numpy() == 5


def test_vector_quantizer_errors_and_precision(rng):
    with pytest.raises(ValueError, match="decay must be a number"):
        lm.VectorQuantizerEMA(4, 2, decay=1.5)
    with pytest.raises(ValueError, match="commitment_cost must be"):
        lm.VectorQuantizer(4, 2, commitment_cost=-1)
    vq = lm.VectorQuantizer(4, 2)
    with pytest.raises(ValueError, match=r"expected 2 features \(embedding_dim\)"):
        vq(np.zeros((3, 5), np.float32))
    out = vq(tf.cast(rng.standard_normal((3, 2)), tf.bfloat16))
    assert out.quantized.dtype == tf.bfloat16 and out.encoding_indices.dtype == tf.int64
    assert_close(vq.lookup([1, 2]), vq.codebook.numpy()[[1, 2]])


# --------------------------------------------------------- Bias, BatchApply
@pytest.mark.parametrize("bias_dims, shape", [(None, (4, 5, 3)), ([-1], (3,)), ([1], (4, 1, 1)), ([], ())])
def test_bias_matches_sonnet(bias_dims, shape, rng):
    snt = sonnet()
    x = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
    ours = lm.Bias(bias_dims=bias_dims)
    ours(x)
    assert ours.bias.shape == shape
    b = rng.standard_normal(shape).astype(np.float32)
    ours.set_weights({"bias": b})
    ref = snt.Bias(bias_dims=bias_dims)
    ref(x)
    ref.b.assign(b)
    assert_close(ours(x), ref(x))
    with pytest.raises(ValueError, match="must not contain 0"):
        lm.Bias(bias_dims=[0])


def test_batch_apply_matches_sonnet_and_numpy(rng):
    snt = sonnet()
    x = rng.standard_normal((3, 4, 6, 6, 2)).astype(np.float32)  # (T, B, H, W, C)
    conv = lm.Conv2D(5, 3)
    out = lm.BatchApply(conv)(x)
    assert out.shape == (3, 4, 6, 6, 5)
    assert_close(out, conv(x.reshape(12, 6, 6, 2)).numpy().reshape(3, 4, 6, 6, 5), atol=1e-6)
    assert_close(out, snt.BatchApply(conv)(tf.constant(x)), atol=1e-6)
    three = lm.BatchApply(lm.Linear(2), num_dims=3)(x)
    assert three.shape == (3, 4, 6, 6, 2)
    assert lm.merge_leading_dims(x, 3).shape == (72, 6, 2)
    assert lm.split_leading_dim(tf.zeros([72, 6, 1]), x, 3).shape == (3, 4, 6, 6, 1)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 6, 6, 2])])
    def run(t):
        return lm.BatchApply(conv)(t)

    assert_close(run(x), out, atol=1e-6)


# ---------------------------------------------------------- recurrent cores
@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
def test_lstm_projection_matches_torch(rng):
    F, H, P, T = 5, 6, 3, 4
    x = rng.standard_normal((2, T, F)).astype(np.float32)
    tl = torch.nn.LSTM(F, H, proj_size=P, batch_first=True)
    core = lm.LSTM(H, projection_size=P)
    layer = lm.RNN(core)
    layer(x)
    assert core.recurrent_weights.shape == (P, 4 * H) and core.projection.shape == (H, P)
    core.set_weights({"input_weights": t2n(tl.weight_ih_l0).T, "recurrent_weights": t2n(tl.weight_hh_l0).T,
                      "bias": t2n(tl.bias_ih_l0 + tl.bias_hh_l0), "projection": t2n(tl.weight_hr_l0).T})
    tx = torch.tensor(x, requires_grad=True)
    ref, _ = tl(tx)
    g = rng.standard_normal((2, T, P)).astype(np.float32)
    y, (dx, dp) = tf_grads(layer, x, g, [core.projection])
    (ref * torch.tensor(g)).sum().backward()
    assert_close(y, t2n(ref), atol=1e-5)
    assert_close(dx, tx.grad.numpy(), atol=1e-5)
    assert_close(dp, tl.weight_hr_l0.grad.numpy().T, atol=1e-5)
    state = core.initial_state(2)
    assert state.hidden.shape == (2, P) and state.cell.shape == (2, H)


def test_conv_lstm_matches_keras_forward_and_gradients(rng):
    keras = pytest.importorskip("keras")
    x = rng.standard_normal((2, 3, 5, 5, 2)).astype(np.float32)
    ref = keras.layers.ConvLSTM2D(4, 3, padding="same", return_sequences=True)
    ref(x)
    layer = lm.RNN(lm.ConvLSTM2D(4, 3))
    layer(x)
    core = layer.core
    assert core.input_weights.shape == (3, 3, 2, 16) and core.recurrent_weights.shape == (3, 3, 4, 16)
    np.testing.assert_array_equal(core.bias.numpy()[4:8], 1.0)  # unit forget bias, as Keras
    kernel, recurrent, bias = (w.numpy() for w in ref.weights)
    core.set_weights({"input_weights": kernel, "recurrent_weights": recurrent, "bias": bias + 0.1})
    ref.weights[2].assign(bias + 0.1)
    xt = tf.constant(x)
    g = rng.standard_normal((2, 3, 5, 5, 4)).astype(np.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        a, b = layer(xt), ref(xt)
        la, lb = tf.reduce_sum(a * g), tf.reduce_sum(b * g)
    assert_close(a, b, atol=1e-5)
    assert_close(tape.gradient(la, xt), tape.gradient(lb, xt), atol=1e-5)
    assert_close(tape.gradient(la, core.recurrent_weights), tape.gradient(lb, ref.weights[1]), atol=1e-4)
    last = lm.RNN(lm.ConvLSTM2D(4, 3), return_sequences=False)
    assert last(x).shape == (2, 5, 5, 4)
    with pytest.raises(ValueError, match="the image size is fixed at the first call"):
        lm.ConvLSTM2D(2).initial_state(1)


# -------------------------------------------------------------- initializer
def test_identity_initializer_matches_torch_eye_and_dirac():
    eye = torch.empty(5, 3)  # torch (out, in) = our (in, out) transposed
    torch.nn.init.eye_(eye)
    assert_close(lm.initializers.Identity()((3, 5)), eye.numpy().T)
    dirac = torch.empty(4, 3, 3, 5)  # (out, in, kh, kw)
    torch.nn.init.dirac_(dirac)
    ours = lm.initializers.Identity(gain=1.0)((3, 5, 3, 4))  # (kh, kw, in, out)
    assert_close(ours, dirac.numpy().transpose(2, 3, 1, 0))
    conv = lm.Conv2D(3, 3, w_init="identity", use_bias=False)
    x = np.random.default_rng(0).standard_normal((1, 6, 6, 3)).astype(np.float32)
    assert_close(conv(x), x, atol=1e-6)  # a Dirac kernel passes the input through
    assert_close(lm.initializers.get("identity")((2, 2)) * 1, np.eye(2))
    assert_close(lm.initializers.Identity(gain=0.5)((2, 2)), 0.5 * np.eye(2))
    with pytest.raises(ValueError, match="rank >= 2"):
        lm.initializers.Identity()((3,))
