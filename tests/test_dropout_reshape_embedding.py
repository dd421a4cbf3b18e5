"""Dropout, Flatten, Reshape and Embedding."""

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm


# ------------------------------------------------------------------ Dropout
@pytest.mark.parametrize("training", [False, None])
def test_dropout_identity_when_not_training(training):
    x = np.random.RandomState(0).randn(4, 5).astype(np.float32)
    d = lm.Dropout(0.5)
    np.testing.assert_array_equal(d(x, training=training).numpy(), x)
    np.testing.assert_array_equal(d(x).numpy(), x)


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.7])
def test_dropout_statistics_and_scaling(rate):
    n = 40000
    x = tf.ones([n])
    y = lm.Dropout(rate)(x, training=True).numpy()
    dropped = np.mean(y == 0)
    # 5 standard deviations of a binomial proportion.
    assert abs(dropped - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
    np.testing.assert_allclose(y[y != 0], 1.0 / (1.0 - rate), rtol=1e-6)
    assert abs(y.mean() - 1.0) < 5 * np.sqrt(rate / (1 - rate) / n)


def test_dropout_gradient_is_the_scaled_mask():
    d = lm.Dropout(0.4)
    x = tf.constant(np.random.RandomState(1).randn(50, 20).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = d(x, training=True)
        loss = tf.reduce_sum(y)
    g = tape.gradient(loss, x).numpy()
    mask = (y.numpy() != 0).astype(np.float32)
    np.testing.assert_allclose(g, mask / 0.6, rtol=1e-6)
    np.testing.assert_allclose(y.numpy(), x.numpy() * mask / 0.6, rtol=1e-6)


def test_dropout_tf_function_gives_new_masks_each_step_without_retracing():
    d = lm.Dropout(0.5)
    traces = []

    @tf.function
    def step(x):
        traces.append(1)
        return d(x, training=True)

    x = tf.ones([256])
    masks = [step(x).numpy() != 0 for _ in range(3)]
    assert len(traces) == 1
    assert not np.array_equal(masks[0], masks[1])
    assert not np.array_equal(masks[1], masks[2])
    # A tensor training flag selects the branch at run time.
    flag = tf.function(lambda x, t: d(x, training=t))
    np.testing.assert_array_equal(flag(x, tf.constant(False)).numpy(), x.numpy())
    assert np.mean(flag(x, tf.constant(True)).numpy() == 0) > 0.2


def _mask_sequence(seed, global_seed=None, steps=3):
    lm.set_seed(seed if global_seed is None else global_seed)
    d = lm.Dropout(0.5, seed=None if global_seed is None else seed)
    f = tf.function(lambda x: d(x, training=True))
    eager = [d(tf.ones([64]), training=True).numpy()]
    return eager + [f(tf.ones([64])).numpy() for _ in range(steps)]


def test_dropout_deterministic_under_set_seed():
    a, b, c = _mask_sequence(3), _mask_sequence(3), _mask_sequence(4)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))
    # An explicit seed does not depend on the global seed.
    e, f = _mask_sequence(7, global_seed=1), _mask_sequence(7, global_seed=2)
    for u, v in zip(e, f):
        np.testing.assert_array_equal(u, v)


def test_dropout_noise_shape_and_half_precision():
    d = lm.Dropout(0.5, noise_shape=(None, 1, 1, None))
    x = tf.ones([8, 3, 3, 16], tf.bfloat16)
    y = d(x, training=True)
    assert y.dtype == tf.bfloat16
    y = y.numpy().astype(np.float32)
    # Each (example, channel) is dropped or kept across the whole 3x3 map.
    per_map = y.reshape(8, 9, 16)
    assert np.all(per_map.min(axis=1) == per_map.max(axis=1))
    assert 0 < np.mean(per_map[:, 0] == 0) < 1
    with pytest.raises(ValueError, match=r"Dropout 'drop': noise_shape \(None, 1\) has 2 entries, input has rank 4"):
        lm.Dropout(0.5, noise_shape=(None, 1), name="drop")(x, training=True)


def test_dropout_errors():
    for rate in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=rf"Dropout 'drop': rate must be in \[0, 1\), got {rate}"):
            lm.Dropout(rate, name="drop")
    with pytest.raises(TypeError, match="Dropout 'drop': rate must be a number"):
        lm.Dropout("0.5", name="drop")
    with pytest.raises(ValueError, match="noise_shape entries must be positive ints or None"):
        lm.Dropout(0.5, noise_shape=(0, 1))
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        lm.Dropout(0.5, seed=-3)
    with pytest.raises(TypeError, match="Dropout 'drop': expected a floating-point input, got dtype int32"):
        lm.Dropout(0.5, name="drop")(tf.ones([3], tf.int32), training=True)
    np.testing.assert_array_equal(lm.Dropout(0.0)(tf.ones([5]), training=True).numpy(), np.ones(5))


# ------------------------------------------------------------------ Flatten
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 7), (4,), (2, 0, 3)])
def test_flatten_matches_numpy(shape):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    y = lm.Flatten()(x)
    np.testing.assert_array_equal(y.numpy(), x.reshape(shape[0], -1))
    assert y.shape == (shape[0], int(np.prod(shape[1:])))


def test_flatten_unknown_batch_in_tf_function():
    flat = lm.Flatten()
    f = tf.function(flat, input_signature=[tf.TensorSpec([None, 3, 4], tf.float32)])
    assert f.get_concrete_function().structured_outputs.shape.as_list() == [None, 12]
    g = tf.function(flat, input_signature=[tf.TensorSpec([None, None, 2], tf.int32)])
    x = np.arange(30, dtype=np.int32).reshape(3, 5, 2)
    np.testing.assert_array_equal(g(x).numpy(), x.reshape(3, 10))
    for n in (1, 5):
        assert f(tf.zeros([n, 3, 4])).shape == (n, 12)
    with pytest.raises(ValueError, match=r"Flatten 'flatten': expected an input of rank >= 1, got rank 0"):
        lm.Flatten()(tf.constant(1.0))


# ------------------------------------------------------------------ Reshape
@pytest.mark.parametrize("target", [(6, 4), (-1,), (2, -1, 3), 24, (4, 3, 2)])
def test_reshape_matches_numpy(target):
    x = np.arange(2 * 24, dtype=np.float32).reshape(2, 4, 6)
    y = lm.Reshape(target)(x)
    per = (target,) if isinstance(target, int) else target
    np.testing.assert_array_equal(y.numpy(), x.reshape((2,) + tuple(per)))


def test_reshape_unknown_batch_in_tf_function():
    r = lm.Reshape((-1, 2))
    f = tf.function(r, input_signature=[tf.TensorSpec([None, 3, 4], tf.float32)])
    assert f.get_concrete_function().structured_outputs.shape.as_list() == [None, 6, 2]
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(f(x).numpy(), x.reshape(2, 6, 2))
    # Unknown per-example size: resolved at run time.
    g = tf.function(lm.Reshape((-1, 2)), input_signature=[tf.TensorSpec([None, None], tf.float32)])
    np.testing.assert_array_equal(g(np.zeros((3, 8), np.float32)).numpy().shape, (3, 4, 2))


def test_reshape_errors():
    msg = r"Reshape 'rs': cannot reshape examples of shape \(4, 6\) \(24 elements\) to \(5, 5\) \(25 elements\)"
    with pytest.raises(ValueError, match=msg):
        lm.Reshape((5, 5), name="rs")(tf.zeros([2, 4, 6]))
    with pytest.raises(ValueError, match=r"Reshape 'rs': .* 24 is not a multiple of 5"):
        lm.Reshape((-1, 5), name="rs")(tf.zeros([2, 4, 6]))
    with pytest.raises(ValueError, match=r"Reshape 'rs': shape may contain -1 at most once"):
        lm.Reshape((-1, -1), name="rs")
    with pytest.raises(ValueError, match=r"Reshape 'rs': shape entries must be > 0 or -1"):
        lm.Reshape((0, 3), name="rs")
    with pytest.raises(TypeError, match=r"Reshape 'rs': shape must be an int or a sequence of ints"):
        lm.Reshape((2.5, 3), name="rs")


# ---------------------------------------------------------------- Embedding
@pytest.mark.parametrize("dtype", [tf.int32, tf.int64, tf.uint8])
def test_embedding_lookup_matches_numpy(dtype):
    emb = lm.Embedding(10, 4, name="emb")
    ids = np.array([[1, 2, 9], [0, 0, 5]])
    y = emb(tf.constant(ids, dtype))
    assert [(v.name, tuple(v.shape)) for v in emb.variables] == [("emb/embeddings:0", (10, 4))]
    assert y.shape == (2, 3, 4) and y.dtype == tf.float32
    np.testing.assert_array_equal(y.numpy(), emb.embeddings.numpy()[ids])
    np.testing.assert_array_equal(emb([3, 4]).numpy(), emb.embeddings.numpy()[[3, 4]])


def test_embedding_gradient_hits_only_looked_up_rows():
    emb = lm.Embedding(6, 3)
    ids = tf.constant([1, 1, 4])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(emb(ids) * tf.constant([[1.0], [2.0], [3.0]]))
    g = tf.convert_to_tensor(tape.gradient(loss, emb.embeddings)).numpy()
    expected = np.zeros((6, 3), np.float32)
    expected[1] = 3.0
    expected[4] = 3.0
    np.testing.assert_array_equal(g, expected)


def test_embedding_default_init_and_custom_init():
    emb = lm.Embedding(2000, 64)
    emb([0])
    table = emb.embeddings.numpy()
    assert 0.0499 < np.abs(table).max() <= 0.05  # Keras' U(-0.05, 0.05)
    np.testing.assert_allclose(table.std(), 0.1 / np.sqrt(12), rtol=0.02)
    ones = lm.Embedding(3, 2, w_init="ones")
    np.testing.assert_array_equal(ones([2]).numpy(), np.ones((1, 2)))


def test_embedding_errors():
    emb = lm.Embedding(5, 2, name="emb")
    with pytest.raises(TypeError, match="Embedding 'emb': expected integer ids, got dtype float32"):
        emb(tf.constant([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"Embedding 'emb': expected ids in \[0, 5\), got id 5"):
        emb(tf.constant([0, 5]))
    with pytest.raises(ValueError, match=r"Embedding 'emb': expected ids in \[0, 5\), got id -1"):
        emb(np.array([-1, 2]))
    f = tf.function(emb, input_signature=[tf.TensorSpec([None], tf.int32)])
    np.testing.assert_array_equal(f(tf.constant([4])).numpy(), emb.embeddings.numpy()[[4]])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"ids must be in \[0, 5\)"):
        f(tf.constant([7]))
    with pytest.raises(ValueError, match="Embedding 'emb': vocab_size must be > 0"):
        lm.Embedding(0, 3, name="emb")
    with pytest.raises(TypeError, match="Embedding 'emb': dim must be a positive int"):
        lm.Embedding(3, 2.0, name="emb")
