"""lamina.train.numerics.first_non_finite and the module call observer it uses."""

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from lamina.module import _observers, observe_calls
from lamina.train.numerics import first_non_finite, non_finite_summary


class Log(lm.Module):
    """log(x): NaN for negative inputs."""

    def __call__(self, x):
        return tf.math.log(x)


def test_names_the_first_conv_that_overflows():
    lm.set_seed(0)
    model = lm.models.ConvNet(num_classes=4)
    x = np.random.default_rng(0).random((6, 8, 8, 1), dtype=np.float32)
    model(tf.constant(x))
    assert first_non_finite(model, tf.constant(x)) is None
    x[3] = 3e38  # finite, but 3e38 * weights overflows in the first convolution
    assert first_non_finite(model, tf.constant(x)) == "Conv2D 'conv_0'"
    # the reference: the first convolution alone is already non-finite on that batch
    conv = model.blocks[0].convs[0]
    assert not np.all(np.isfinite(conv(tf.constant(x)).numpy()))


def test_names_the_innermost_module_in_a_nest():
    model = lm.Sequential([lm.Linear(4, name="first"), Log(name="log"), lm.Linear(2, name="last")], name="net")
    x = tf.constant(np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32))
    model(x)
    # a Linear output has negative entries, so log gives NaN: the Log module, not the Sequential around it
    assert first_non_finite(model, x, training=False) == "Log 'log'"


def test_non_finite_input_and_summary():
    x = np.zeros((4, 10), np.float32)
    x[2, 1] = np.nan
    x[3, 0] = np.inf
    model = lm.models.MLP([8], 3)
    assert first_non_finite(model, x) == "the input batch itself (1 NaN, 1 inf of 40 values (first at index (2, 1)))"
    assert non_finite_summary({"a": tf.constant([1, 2]), "b": tf.constant([0.0, 1.0])}) is None


def test_no_class_is_patched_and_the_observer_is_removed():
    model = lm.models.MLP([8], 3)
    x = tf.ones((2, 5))
    model(x)
    before = {cls: cls.__dict__.get("__call__") for cls in (type(model), lm.Linear)}
    first_non_finite(model, x)
    assert {cls: cls.__dict__.get("__call__") for cls in before} == before
    assert getattr(_observers, "stack", []) == []


def test_observe_calls_sees_calls_innermost_first():
    seen = []
    model = lm.Sequential([lm.Linear(3, name="a"), lm.Linear(2, name="b")], name="seq")
    with observe_calls(lambda m, args, kwargs, out: seen.append((m.name, tuple(out.shape)))):
        model(tf.ones((4, 5)))
    assert seen == [("a", (4, 3)), ("b", (4, 2)), ("seq", (4, 2))]
    model(tf.ones((4, 5)))
    assert len(seen) == 3  # gone after the block


def test_refuses_to_run_inside_tf_function():
    model = lm.models.MLP([8], 3)

    @tf.function
    def f(x):
        return first_non_finite(model, x)

    with pytest.raises(RuntimeError, match="outside tf.function"):
        f(tf.ones((2, 5)))
