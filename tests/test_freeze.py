"""Freezing: ``module.trainable = False`` / ``lm.freeze`` / ``lm.unfreeze``."""

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm


class Holder(lm.Module):
    """Children in a dict and a list (tf.Module tracks both)."""

    def __init__(self, name=None):
        super().__init__(name=name)
        self.parts = {"a": lm.Linear(3, name="a"), "more": [lm.Linear(3, name="b"), lm.Linear(2, name="c")]}

    def __call__(self, x):
        return self.parts["more"][1](self.parts["more"][0](self.parts["a"](x)))


def _names(variables):
    return sorted(v.name for v in variables)


def test_frozen_children_leave_every_parents_trainable_variables():
    model = lm.Sequential([Holder(name="holder"), lm.Linear(1, name="head")], name="seq")
    model(tf.zeros([2, 4]))
    everything = _names(model.trainable_variables)
    assert len(everything) == 8
    b = model.layers[0].parts["more"][0]
    lm.freeze(b)
    assert b.trainable is False and b.trainable_variables == ()
    assert _names(b.variables) == ["holder/b/bias:0", "holder/b/weights:0"]  # still variables
    expected = [n for n in everything if "/b/" not in n]
    assert _names(model.layers[0].trainable_variables) == [n for n in expected if "head" not in n]
    assert _names(model.trainable_variables) == expected
    assert sorted(model.variable_paths(trainable_only=True)) == [
        "layers/0/parts/a/bias", "layers/0/parts/a/weights", "layers/0/parts/more/1/bias",
        "layers/0/parts/more/1/weights", "layers/1/bias", "layers/1/weights"]
    assert len(model.variable_paths()) == 8 and len(model.get_weights()) == 8
    lm.unfreeze(b)
    assert _names(model.trainable_variables) == everything


def test_freezing_a_parent_freezes_the_subtree_before_and_after_build():
    mha = lm.MultiHeadAttention(2, 4, name="mha")  # output_proj is created at the first call
    assert lm.freeze(mha) is mha
    assert mha.query_proj.trainable is False
    mha(tf.zeros([1, 3, 8]))
    assert mha.output_proj.trainable is False  # created by build, frozen too
    assert mha.trainable_variables == () and len(mha.variables) == 8
    outer = lm.Sequential([mha, lm.Linear(2, name="head")], name="outer")
    outer(tf.zeros([1, 3, 8]))
    assert _names(outer.trainable_variables) == ["head/bias:0", "head/weights:0"]
    # A child unfrozen inside a frozen parent stays out of the parent's list (as in Keras).
    mha.query_proj.trainable = True
    assert len(mha.query_proj.trainable_variables) == 2 and mha.trainable_variables == ()
    lm.unfreeze(outer)  # unfreezes everything inside
    assert len(outer.trainable_variables) == 10


def test_trainable_errors():
    layer = lm.Linear(2, name="lin")
    with pytest.raises(TypeError, match="Linear 'lin': trainable must be True or False, got 0"):
        layer.trainable = 0
    with pytest.raises(TypeError, match="freeze: expected a lamina Module, got ResourceVariable"):
        lm.freeze(tf.Variable(1.0))
    with pytest.raises(TypeError, match="unfreeze: expected a lamina Module, got str"):
        lm.unfreeze("lin")


def test_summary_counts_frozen_parameters_as_non_trainable():
    model = lm.models.MLP([8], 3, name="mlp")
    lm.summary(model, (5,), print_fn=None)
    frozen = next(m for m in model.submodules if isinstance(m, lm.Linear))
    lm.freeze(frozen)
    n_frozen = sum(int(np.prod(v.shape)) for v in frozen.variables)
    res = lm.summary(model, (5,), print_fn=None)
    total = sum(int(np.prod(v.shape)) for v in model.variables)
    assert res.total_params == total and res.non_trainable_params == n_frozen > 0
    assert res.trainable_params == total - n_frozen
    assert "Non-trainable params: " + f"{n_frozen:,}" in res.table
    row = next(r for r in res.rows if r["name"] == frozen.name)
    assert row["params"] == n_frozen and row["trainable_params"] == 0


def test_checkpoints_keep_frozen_variables(tmp_path):
    def make():
        m = lm.Sequential([lm.Linear(3, name="a"), lm.Linear(2, name="b")], name="s")
        m(tf.zeros([1, 4]))
        lm.freeze(m.layers[0])
        return m

    src = make()
    path = tf.train.Checkpoint(model=src).write(str(tmp_path / "ckpt"))
    dst = make()
    tf.train.Checkpoint(model=dst).read(path).assert_consumed()
    for k, v in src.get_weights().items():
        np.testing.assert_array_equal(dst.get_weights()[k], v)


def test_trainer_fit_leaves_a_frozen_layer_bit_identical():
    lm.set_seed(3)
    model = lm.models.ConvNet(4, widths=(4,), convs_per_block=1, batch_norm=True, hidden=8)
    x = tf.random.stateless_normal([16, 6, 6, 1], seed=[1, 2])
    y = tf.random.stateless_uniform([16], seed=[3, 4], maxval=4, dtype=tf.int32)
    model(x)
    block = model.blocks[0]
    lm.freeze(block)  # its conv and its BatchNorm (statistics included)
    before = {k: v.copy() for k, v in model.get_weights().items()}
    trainer = lm.train.Trainer(model, lm.optim.SGD(0.1), "cross_entropy", metrics=(), quiet=True)
    trainer.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=2)
    after = model.get_weights()
    frozen = [k for k in before if k.startswith("blocks/")]
    assert sorted(frozen) == ["blocks/0/convs/0/weights", "blocks/0/norms/0/moving_mean",
                              "blocks/0/norms/0/moving_variance", "blocks/0/norms/0/offset", "blocks/0/norms/0/scale"]
    for k in frozen:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    for k in before:
        if k not in frozen:
            assert np.abs(after[k] - before[k]).max() > 1e-4, k


def test_frozen_batchnorm_runs_in_inference_mode_like_keras():
    """Keras: a BatchNormalization with trainable=False normalizes with its moving
    statistics and does not update them even when called with training=True."""
    keras = pytest.importorskip("keras")
    x = tf.random.stateless_normal([8, 3, 3, 4], seed=[1, 1]) * 2.0 + 1.0
    bn = lm.BatchNorm(name="bn")
    bn(x, training=True)  # moves the statistics away from 0 / 1
    mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    ref = keras.layers.BatchNormalization(epsilon=bn.eps)
    ref.build(x.shape)
    ref.set_weights([bn.scale.numpy(), bn.offset.numpy(), mean, var])
    ref.trainable = False
    lm.freeze(bn)
    for training in (True, tf.constant(True), False):
        y = bn(x, training=training)
        np.testing.assert_allclose(y.numpy(), ref(x, training=True).numpy(), atol=1e-5)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mean)
    np.testing.assert_array_equal(bn.moving_variance.numpy(), var)
    lm.unfreeze(bn)
    bn(x, training=True)
    assert np.abs(bn.moving_mean.numpy() - mean).max() > 1e-4  # trains (and updates) again


def test_cli_freeze_backbone_trains_only_the_head(tmp_path):
    """`lamina train --freeze backbone` (lamina/app.py sets .trainable = False on every child but
    the head): two runs of 2 and 4 steps from the same seed end with the same backbone."""
    from conftest import run_cli

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (100, 8, 8)).astype(np.uint8)
    y = rng.integers(0, 3, 100)
    np.savez(tmp_path / "d.npz", x_train=x[:80], y_train=y[:80], x_test=x[80:], y_test=y[80:])
    weights = []
    for epochs in (1, 2):
        run = tmp_path / f"run{epochs}"
        code, out, err = run_cli(["train", "--data", str(tmp_path / "d.npz"), "--val-split", "0", "--batch-size", "40",
                                  "--epochs", str(epochs), "--freeze", "backbone", "--run-dir", str(run)])
        assert code == 0, err
        assert "frozen: blocks/0, blocks/1, flatten, hidden" in out
        reader = tf.train.load_checkpoint(str(run / "checkpoints"))
        weights.append({k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
                        if k.startswith("model/") and k.endswith("VARIABLE_VALUE")})
    first, second = weights
    backbone = [k for k in first if not k.startswith("model/classifier/")]
    head = [k for k in first if k.startswith("model/classifier/")]
    assert len(backbone) == 10 and len(head) == 2  # 4 convs and the hidden layer; the classifier
    for k in backbone:
        np.testing.assert_array_equal(first[k], second[k], err_msg=k)
    assert all(np.abs(first[k] - second[k]).max() > 1e-5 for k in head)
