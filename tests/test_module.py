"""The lamina Module base: lazy build, names, input checks, weights as NumPy, tracing."""

import logging

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from conftest import assert_close


class Scale(lm.Module):
    """Multiplies by a per-feature variable; counts its builds."""

    def __init__(self, name=None):
        super().__init__(name=name)
        self.builds = 0

    def build(self, input_shape):
        self.builds += 1
        self.w = tf.Variable(tf.fill([input_shape[-1]], 2.0), name="w")
        self.input_spec = lm.InputSpec(rank=2, axes={-1: (input_shape[-1], "features")})

    def __call__(self, x):
        return x * self.w


class Child(lm.Module):
    def build(self, input_shape):
        self.weights = tf.Variable(tf.ones([input_shape[-1]]), name="weights")

    def __call__(self, x):
        return x * self.weights


class Parent(lm.Module):
    def __init__(self, name=None):
        super().__init__(name=name)
        self.child = Child(name="child")
        self.inner = Middle(name="middle")
        self.linear = lm.Linear(2, name="fc")

    def __call__(self, x):
        return self.linear(self.inner(self.child(x)))


class Middle(lm.Module):
    def __init__(self, name=None):
        super().__init__(name=name)
        self.leaf = Child(name="leaf")

    def __call__(self, x):
        return self.leaf(x)


def test_build_runs_once_eagerly():
    m = Scale(name="scale")
    assert not m.built and m.variables == ()
    for _ in range(3):
        y = m(np.ones((2, 3), np.float32))
    assert m.builds == 1 and m.built
    assert_close(y, 2 * np.ones((2, 3)))
    assert [v.name for v in m.variables] == ["scale/w:0"]


def test_build_runs_once_when_first_called_inside_tf_function():
    m = Scale(name="scale")
    traces = []

    @tf.function
    def f(x):
        traces.append(1)
        return m(x) + 1.0

    for _ in range(3):
        y = f(tf.ones([2, 4]))
    assert m.builds == 1
    assert len(traces) >= 1
    assert_close(y, 3 * np.ones((2, 4)))
    # The variable was created eagerly (init_scope), not as a graph tensor.
    (w,) = m.variables
    assert w.name == "scale/w:0"
    assert_close(w.numpy(), 2 * np.ones(4))


def test_first_call_in_tf_function_of_module_without_build_is_not_autograph_warned(caplog):
    seq = lm.Sequential([tf.nn.relu])
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        y = tf.function(lambda x: seq(x))(tf.constant([-1.0, 2.0]))
    np.testing.assert_array_equal(y.numpy(), [0.0, 2.0])
    assert not [r for r in caplog.records if "could not transform" in r.getMessage() and "build" in r.getMessage()]


def test_hierarchical_variable_names():
    p = Parent(name="parent")
    p(tf.ones([1, 3]))
    assert sorted(v.name for v in p.variables) == [
        "parent/child/weights:0",
        "parent/fc/bias:0",
        "parent/fc/weights:0",
        "parent/middle/leaf/weights:0",
    ]
    # Modules made after the parent's constructor are not nested under it.
    free = lm.Linear(1, name="free")
    free(tf.ones([1, 2]))
    assert sorted(v.name for v in free.variables) == ["free/bias:0", "free/weights:0"]
    # Nor are modules made after a constructor that raised.

    class Broken(lm.Module):
        def __init__(self):
            super().__init__(name="broken")
            self.child = Child(name="c")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        Broken()
    after = Child(name="after")
    after(tf.ones([1, 2]))
    assert [v.name for v in after.variables] == ["after/weights:0"]
    # Default names are the snake-cased class name.
    assert lm.Linear(2).name == "linear" and lm.BatchNorm().name == "batch_norm"


def test_fixed_dimension_rank_and_dtype_checks():
    m = Scale(name="test_scale")
    m(tf.ones([2, 3]))
    with pytest.raises(ValueError, match=r"Scale 'test_scale': expected 3 features \(fixed at first call\), got 5"):
        m(tf.ones([2, 5]))
    with pytest.raises(ValueError, match=r"Scale 'test_scale': expected an input of rank 2, got rank 3 \(shape \(2, 2, 3\)\)"):
        m(tf.ones([2, 2, 3]))
    with pytest.raises(TypeError, match="Scale 'test_scale': expected a floating-point input, got dtype int32"):
        m(tf.ones([2, 3], tf.int32))

    conv = lm.Conv2D(4, 3, name="test_conv")
    with pytest.raises(ValueError, match=r"Conv2D 'test_conv': expected an input of rank 4, got rank 3"):
        conv(tf.ones([2, 5, 3]))
    assert not conv.built  # the check runs before build
    conv(tf.ones([1, 5, 5, 3]))
    with pytest.raises(ValueError, match=r"Conv2D 'test_conv': expected 3 input channels \(fixed at first call\), got 5"):
        conv(tf.ones([1, 5, 5, 5]))
    with pytest.raises(TypeError, match="Conv2D 'test_conv': expected a floating-point input, got dtype int32"):
        conv(tf.ones([1, 5, 5, 3], tf.int32))
    lin = lm.Linear(2, name="fc")
    with pytest.raises(TypeError, match="Linear 'fc': expected a floating-point input, got dtype int64"):
        lin(np.ones((2, 3), np.int64))
    assert not lin.built
    # Inside tf.function the same checks fire at trace time.
    with pytest.raises(ValueError, match=r"Conv2D 'test_conv': expected 3 input channels"):
        tf.function(conv)(tf.ones([1, 5, 5, 2]))


def test_numpy_float64_input_becomes_float32():
    m = Scale()
    y = m(np.ones((2, 3)))  # float64
    assert y.dtype == tf.float32
    assert m.w.dtype == tf.float32


def _mlp(name):
    return lm.Sequential([lm.Linear(5, name="a"), tf.nn.relu, lm.BatchNorm(name="bn"), lm.Linear(2, name="b")], name=name)


def test_get_set_weights_round_trip():
    x = np.random.RandomState(0).randn(4, 3).astype(np.float32)
    src, dst = _mlp("src"), _mlp("dst")
    src(x, training=True)
    dst(x)
    weights = src.get_weights()
    assert sorted(weights) == [
        "layers/0/bias",
        "layers/0/weights",
        "layers/2/moving_mean",
        "layers/2/moving_variance",
        "layers/2/offset",
        "layers/2/scale",
        "layers/3/bias",
        "layers/3/weights",
    ]
    assert all(isinstance(v, np.ndarray) for v in weights.values())
    assert not np.allclose(src(x).numpy(), dst(x).numpy())
    dst.set_weights(weights)
    assert_close(dst(x), src(x))
    for k, v in dst.get_weights().items():
        np.testing.assert_array_equal(v, weights[k])
    # get_weights returns copies.
    weights["layers/0/bias"][:] = 99.0
    assert not np.any(src.layers[0].bias.numpy() == 99.0)


def test_set_weights_errors():
    m = _mlp("m")
    with pytest.raises(ValueError, match="Sequential 'm': has no variables yet"):
        m.set_weights({})
    m(tf.ones([2, 3]))
    w = m.get_weights()
    missing = dict(w)
    del missing["layers/3/bias"]
    with pytest.raises(ValueError, match=r"Sequential 'm': set_weights: missing \['layers/3/bias'\]"):
        m.set_weights(missing)
    with pytest.raises(ValueError, match=r"Sequential 'm': set_weights: unknown \['extra'\]"):
        m.set_weights(dict(w, extra=np.zeros(2)))
    with pytest.raises(ValueError, match=r"set_weights: 'layers/0/weights' expected shape \(3, 5\), got \(5, 3\)"):
        m.set_weights(dict(w, **{"layers/0/weights": np.zeros((5, 3))}))
    before = m.get_weights()
    # A failed set_weights changes nothing.
    for k, v in m.get_weights().items():
        np.testing.assert_array_equal(v, before[k])
    # strict=False: a partial update.
    m.set_weights({"layers/3/bias": np.full(2, 7.0)}, strict=False)
    np.testing.assert_array_equal(m.layers[3].bias.numpy(), [7.0, 7.0])
    np.testing.assert_array_equal(m.layers[0].weights.numpy(), before["layers/0/weights"])


def test_traced_once_serves_every_batch_size():
    model = _mlp("net")
    model(tf.ones([2, 3]))  # built eagerly first
    traces = []

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def serve(x):
        traces.append(1)
        return model(x, training=False)

    for n in (1, 2, 9, 33):
        x = np.random.RandomState(n).randn(n, 3).astype(np.float32)
        assert_close(serve(x), model(x, training=False), atol=1e-5)
    assert len(traces) == 1


def test_call_with_training():
    seen = []

    class T(lm.Module):
        def __call__(self, x, training=None):
            seen.append(training)
            return x

    class N(lm.Module):
        def __call__(self, x):
            return x + 1

    assert lm.call_with_training(T(), 1.0, True) is not None and seen == [True]
    assert float(lm.call_with_training(N(), tf.constant(1.0), True)) == 2.0
    assert float(lm.call_with_training(lambda x: x * 3, tf.constant(1.0), False)) == 3.0
    assert float(lm.call_with_training(lambda x, training: x * (2 if training else 5), tf.constant(1.0), True)) == 2.0


def test_import_without_tensorflow_says_which_extra(tmp_path):
    """With TensorFlow missing, `import lamina` fails with one line naming the extras."""
    import subprocess
    import sys

    blocker = tmp_path / "tensorflow"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('No module named tensorflow')\n")
    code = "import lamina"
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: lamina needs TensorFlow")
    assert "lamina[cpu]" in last and "lamina[gpu]" in last


def test_symbolic_keras_inputs_fail_clearly():
    """keras.Input (a KerasTensor) is refused with a TypeError naming the module, not an
    AttributeError from deep inside the build; lamina itself never imports Keras."""
    keras = pytest.importorskip("keras")
    conv = lm.Conv2D(4, name="conv")
    with pytest.raises(TypeError, match=r"Conv2D 'conv': symbolic Keras tensors \(keras.Input\) are not supported; "
                                        r"got a KerasTensor as argument 0\. lamina modules take tf.Tensors / NumPy"):
        conv(keras.Input((8, 8, 3)))
    assert not conv.built
    assert conv(tf.zeros([1, 8, 8, 3])).shape == (1, 8, 8, 4)  # still usable on data
    mha = lm.MultiHeadAttention(2, 4, name="mha")
    with pytest.raises(TypeError, match="MultiHeadAttention 'mha': .*KerasTensor as argument 'key'"):
        mha(tf.zeros([1, 3, 8]), key=keras.Input((3, 8)))


def test_lamina_module_inside_a_keras_layer_fails_clearly():
    """Keras does not track lamina variables: a lamina module built inside a Keras layer's
    call (functional or subclassed model) would be silently left untrained. It raises."""
    keras = pytest.importorskip("keras")

    class Wrap(keras.layers.Layer):
        def __init__(self):
            super().__init__(name="wrap")
            self.inner = lm.Linear(3, name="inner")

        def call(self, x):
            return self.inner(x)

    with pytest.raises(TypeError, match=r"Linear 'inner': called inside the Keras layer 'wrap' \(Wrap\); Keras does "
                                        r"not track lamina variables"):
        inp = keras.Input((5,))
        keras.Model(inp, Wrap()(inp))

    class Sub(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.inner = lm.Linear(3, name="inner")

        def call(self, x):
            return self.inner(x)

    with pytest.raises(TypeError, match=r"Linear 'inner': called inside the Keras layer 'sub' \(Sub\)"):
        Sub()(tf.zeros([2, 5]))


def test_set_weights_of_a_built_module_without_variables():
    flat = lm.Flatten(name="flat")
    with pytest.raises(ValueError, match="Flatten 'flat': has no variables yet; call it once"):
        flat.set_weights({})
    flat(tf.zeros([1, 2, 3]))
    flat.set_weights(flat.get_weights())  # {} -> {}: nothing to set, nothing missing
    with pytest.raises(ValueError, match=r"Flatten 'flat': set_weights: unknown \['w'\]"):
        flat.set_weights({"w": np.zeros(1)})


def test_forgetting_super_init_says_what_to_do():
    class NoSuper(lm.Module):
        def __init__(self):
            self.fc = lm.Linear(3)

        def __call__(self, x):
            return self.fc(x)

    with pytest.raises(TypeError, match=r"NoSuper: lamina.Module.__init__ was never called; start NoSuper.__init__ "
                                        r"with super\(\).__init__\(\)"):
        NoSuper()(tf.ones([2, 2]))
