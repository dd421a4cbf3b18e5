"""lamina's default initializers are the rule docs/initializers.md states: Keras 3's.

Every dense/conv kernel is Glorot-uniform ``U(±sqrt(6 / (fan_in + fan_out)))`` with
the fans of the kernel's layout (receptive field x channels), every bias zeros,
recurrent weights orthogonal, embeddings ``U(±0.05)``. Checked on large draws
against the formula (fans written out here, not taken from ``compute_fans``), against
the actual Keras 3 layers' defaults and against ``torch.nn.init`` on the same shapes.
An explicit initializer always wins.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from lamina import initializers as init

# (lamina layer, input shape, kernel shape, (fan_in, fan_out)) - fans written out by hand.
KERNELS = {
    "linear": (lambda: lm.Linear(512), (1, 256), (256, 512), (256, 512)),
    "conv1d": (lambda: lm.Conv1D(128, 5), (1, 16, 64), (5, 64, 128), (5 * 64, 5 * 128)),
    "conv2d": (lambda: lm.Conv2D(128, 3), (1, 8, 8, 64), (3, 3, 64, 128), (9 * 64, 9 * 128)),
    "conv2d_groups": (lambda: lm.Conv2D(64, 3, groups=4), (1, 8, 8, 64), (3, 3, 16, 64), (9 * 16, 9 * 64)),
    "conv3d": (lambda: lm.Conv3D(32, 3), (1, 4, 4, 4, 16), (3, 3, 3, 16, 32), (27 * 16, 27 * 32)),
    # transposed kernels are (*k, out, in); Glorot's sum of fans is the same either way
    "conv2d_transpose": (lambda: lm.Conv2DTranspose(32, 3), (1, 4, 4, 64), (3, 3, 32, 64), (9 * 32, 9 * 64)),
    "conv1d_transpose": (lambda: lm.Conv1DTranspose(96, 4), (1, 5, 48), (4, 96, 48), (4 * 96, 4 * 48)),
    # depthwise (kh, kw, in, multiplier): Keras' fans, kh*kw*in and kh*kw*multiplier
    "depthwise": (lambda: lm.DepthwiseConv2D(3, depth_multiplier=8), (1, 6, 6, 256), (3, 3, 256, 8), (9 * 256, 9 * 8)),
}


def _glorot_bound(fan_in: float, fan_out: float) -> float:
    return math.sqrt(6.0 / (fan_in + fan_out))


def _assert_uniform(w: np.ndarray, bound: float, what: str) -> None:
    """``w`` looks like a draw of U(-bound, bound): inside it, reaching its edge, the right std, centred."""
    a = np.abs(w)
    assert a.max() <= bound * (1 + 1e-6), f"{what}: max |w| {a.max()} > bound {bound}"
    edge = 1.0 - 20.0 / w.size  # P(max < edge * bound) = edge**n < e**-20
    assert a.max() > edge * bound, f"{what}: max |w| {a.max()} never reaches the bound {bound}"
    std = bound / math.sqrt(3.0)
    # The sample std of n uniforms has a relative standard error of sqrt(0.2 / n): 5 of them here.
    np.testing.assert_allclose(w.std(), std, rtol=5.0 * math.sqrt(0.2 / w.size) + 0.002, err_msg=what)
    assert abs(w.mean()) < 6 * std / math.sqrt(w.size), what


def _built(factory, input_shape, dtype=tf.float32):
    layer = factory()
    layer(tf.zeros(input_shape, dtype))
    return layer


def test_default_rule_functions():
    assert isinstance(init.default_weights("kernel"), init.GlorotUniform)
    assert isinstance(init.default_weights("recurrent"), init.Orthogonal)
    emb = init.default_weights("embedding")
    assert isinstance(emb, init.Uniform) and (emb.minval, emb.maxval) == (-0.05, 0.05)
    assert isinstance(init.default_bias(), init.Zeros)
    assert init.default_weights("kernel") is not init.default_weights("kernel")  # a fresh one each call
    with pytest.raises(ValueError, match=r"default_weights: kind must be one of \['kernel', 'recurrent', 'embedding'\], "
                                         r"got 'conv'"):
        init.default_weights("conv")


@pytest.mark.parametrize("kind", sorted(KERNELS))
def test_layer_default_kernel_is_glorot_uniform_and_bias_zeros(kind):
    factory, input_shape, kernel_shape, fans = KERNELS[kind]
    layer = _built(factory, input_shape)
    w = layer.weights.numpy()
    assert w.shape == kernel_shape
    _assert_uniform(w, _glorot_bound(*fans), kind)
    np.testing.assert_array_equal(layer.bias.numpy(), np.zeros(layer.bias.shape))


def _keras_layer(kind):
    keras = pytest.importorskip("keras")
    layers = keras.layers
    return {
        "linear": lambda: layers.Dense(512),
        "conv1d": lambda: layers.Conv1D(128, 5),
        "conv2d": lambda: layers.Conv2D(128, 3),
        "conv2d_groups": lambda: layers.Conv2D(64, 3, groups=4),
        "conv3d": lambda: layers.Conv3D(32, 3),
        "conv2d_transpose": lambda: layers.Conv2DTranspose(32, 3),
        "conv1d_transpose": lambda: layers.Conv1DTranspose(96, 4),
        "depthwise": lambda: layers.DepthwiseConv2D(3, depth_multiplier=8),
    }[kind]()


@pytest.mark.parametrize("kind", sorted(KERNELS))
def test_layer_default_kernel_matches_keras_layer_default(kind):
    factory, input_shape, _, _ = KERNELS[kind]
    ours = _built(factory, input_shape)
    theirs = _keras_layer(kind)
    theirs.build(input_shape)
    kernel = np.asarray(theirs.kernel)
    w = ours.weights.numpy()
    assert w.shape == kernel.shape  # the same layout, so the same fans
    np.testing.assert_allclose(np.abs(w).max(), np.abs(kernel).max(), rtol=0.01, err_msg=kind)
    np.testing.assert_allclose(w.std(), kernel.std(), rtol=0.04, err_msg=kind)
    np.testing.assert_array_equal(ours.bias.numpy(), np.asarray(theirs.bias))


@pytest.mark.parametrize("kind,torch_shape", [
    ("linear", (512, 256)),  # (out, in)
    ("conv2d", (128, 64, 3, 3)),  # (out, in / groups, kh, kw)
    ("conv2d_groups", (64, 16, 3, 3)),
    ("conv3d", (32, 16, 3, 3, 3)),
    ("conv2d_transpose", (64, 32, 3, 3)),  # (in, out / groups, kh, kw)
    ("conv1d_transpose", (48, 96, 4)),
])
def test_layer_default_kernel_matches_torch_xavier_uniform(kind, torch_shape):
    # Depthwise is left out on purpose: PyTorch's (C * m, 1, kh, kw) layout gives other fans (docs/initializers.md).
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ref = torch.nn.init.xavier_uniform_(torch.empty(torch_shape)).numpy()
    factory, input_shape, _, _ = KERNELS[kind]
    w = _built(factory, input_shape).weights.numpy()
    assert w.size == ref.size
    np.testing.assert_allclose(np.abs(w).max(), np.abs(ref).max(), rtol=0.01, err_msg=kind)
    np.testing.assert_allclose(w.std(), ref.std(), rtol=0.04, err_msg=kind)


def test_attention_projections_default_and_keras_multi_head_attention():
    mha = lm.MultiHeadAttention(num_heads=4, key_size=32, value_size=48)
    q = tf.zeros((1, 3, 128))
    mha(q, q, q)
    for name, shape in (("query", (128, 128)), ("key", (128, 128)), ("value", (128, 192)), ("output", (192, 128))):
        proj = getattr(mha, f"{name}_proj")
        assert proj.weights.shape == shape
        _assert_uniform(proj.weights.numpy(), _glorot_bound(*shape), name)
        np.testing.assert_array_equal(proj.bias.numpy(), np.zeros(shape[1]))
    keras = pytest.importorskip("keras")
    theirs = keras.layers.MultiHeadAttention(num_heads=4, key_dim=32, value_dim=48)
    x = np.zeros((1, 3, 128), np.float32)
    theirs(x, x)
    kernels = {
        "query": theirs._query_dense.kernel, "key": theirs._key_dense.kernel,  # (128, 4, 32)
        "value": theirs._value_dense.kernel, "output": theirs._output_dense.kernel,  # (128, 4, 48), (4, 48, 128)
    }
    for name, kernel in kernels.items():
        kernel = np.asarray(kernel)
        w = getattr(mha, f"{name}_proj").weights.numpy()
        assert kernel.size == w.size
        np.testing.assert_allclose(np.abs(w).max(), np.abs(kernel).max(), rtol=0.02, err_msg=name)
        np.testing.assert_allclose(w.std(), kernel.std(), rtol=0.05, err_msg=name)


@pytest.mark.parametrize("cls,gates", [(lm.SimpleRNN, 1), (lm.GRU, 3), (lm.LSTM, 4)])
def test_recurrent_defaults_glorot_orthogonal_zeros(cls, gates):
    h, f = 128, 64
    core = cls(h)
    core(tf.zeros((1, f)), core.initial_state(1))
    _assert_uniform(core.input_weights.numpy(), _glorot_bound(f, gates * h), cls.__name__)
    r = core.recurrent_weights.numpy()  # (h, gates * h) with orthonormal rows
    np.testing.assert_allclose(r @ r.T, np.eye(h), atol=1e-4)
    expected = np.zeros(gates * h)
    if cls is lm.LSTM:
        expected[h:2 * h] = 1.0  # unit_forget_bias, as Keras
    np.testing.assert_array_equal(core.bias.numpy(), expected)
    if cls is lm.GRU:
        np.testing.assert_array_equal(core.recurrent_bias.numpy(), np.zeros(h))
    keras = pytest.importorskip("keras")
    theirs = {lm.SimpleRNN: keras.layers.SimpleRNN, lm.GRU: keras.layers.GRU, lm.LSTM: keras.layers.LSTM}[cls](h)
    theirs(np.zeros((1, 2, f), np.float32))
    kernel = np.asarray(theirs.cell.kernel)
    assert kernel.shape == core.input_weights.shape
    np.testing.assert_allclose(np.abs(core.input_weights.numpy()).max(), np.abs(kernel).max(), rtol=0.01)


def test_embedding_default_is_keras_uniform():
    emb = lm.Embedding(2000, 64)
    emb([0])
    _assert_uniform(emb.embeddings.numpy(), 0.05, "embedding")
    keras = pytest.importorskip("keras")
    theirs = keras.layers.Embedding(2000, 64)
    theirs.build((None,))
    table = np.asarray(theirs.embeddings)
    np.testing.assert_allclose(np.abs(table).max(), 0.05, rtol=1e-3)
    np.testing.assert_allclose(emb.embeddings.numpy().std(), table.std(), rtol=0.02)


@pytest.mark.parametrize("name,model,input_shape", [
    ("convnet_glorot", lambda: lm.models.ConvNet(10, w_init="glorot_uniform"), (1, 28, 28, 1)),
    ("mlp", lambda: lm.models.MLP([256, 128], 10), (1, 784)),
    ("transformer", lambda: lm.models.Transformer(num_classes=5, input_dim=24, model_dim=64, num_layers=1, max_len=8),
     (1, 8, 24)),
])
def test_models_use_the_layer_defaults(name, model, input_shape):
    # Every model but ConvNet (test below) takes the layers' defaults.
    m = model()
    m(tf.zeros(input_shape))
    checked = 0
    for path, var in m.variable_paths().items():
        leaf = path.rsplit("/", 1)[-1]
        w = var.numpy()
        if leaf == "weights":
            shape = w.shape
            receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
            _assert_uniform(w, _glorot_bound(shape[-2] * receptive, shape[-1] * receptive), f"{name} {path}")
            checked += 1
        elif leaf in ("bias", "offset"):
            np.testing.assert_array_equal(w, np.zeros_like(w), err_msg=path)
    assert checked >= 3


def _fan_in(w: np.ndarray) -> int:
    return int(np.prod(w.shape[:-1]))


@pytest.mark.parametrize("activation,hidden_rule", [("relu", "he"), ("tanh", "lecun")])
def test_convnet_keeps_its_measured_rule(activation, hidden_rule):
    # ConvNet's own default (docs/initializers.md): He-normal (truncated, variance 2 / fan_in)
    # before ReLU-like activations, LeCun-normal (1 / fan_in) before others and for the logits.
    m = lm.models.ConvNet(10, widths=(64, 128), hidden=256, activation=activation)
    m(tf.zeros((1, 16, 16, 8)))
    scale = {"he": 2.0, "lecun": 1.0}[hidden_rule]
    paths = m.variable_paths()
    weights = {p: v.numpy() for p, v in paths.items() if p.endswith("weights")}
    assert len(weights) == 6
    for path, w in weights.items():
        want = math.sqrt((1.0 if path.startswith("classifier") else scale) / _fan_in(w))
        # the sample std of n draws: a relative standard error of about 1 / sqrt(2n)
        np.testing.assert_allclose(w.std(), want, rtol=6 / math.sqrt(2 * w.size) + 0.01, err_msg=path)
        assert np.abs(w).max() <= 2 * want / 0.87962566 + 1e-6, path  # truncated at two standard deviations
    for path, v in paths.items():
        if path.endswith("bias"):
            np.testing.assert_array_equal(v.numpy(), 0.0, err_msg=path)


def test_explicit_initializers_are_kept():
    c = init.Constant(0.25)
    b = init.Constant(-0.5)
    layers = [
        (lm.Linear(3, w_init=c, b_init=b), (1, 4)),
        (lm.Conv2D(3, w_init=c, b_init=b), (1, 4, 4, 2)),
        (lm.Conv2DTranspose(3, w_init=c, b_init=b), (1, 4, 4, 2)),
        (lm.DepthwiseConv2D(3, depth_multiplier=2, w_init=c, b_init=b), (1, 4, 4, 2)),
    ]
    for layer, shape in layers:
        layer(tf.zeros(shape))
        np.testing.assert_array_equal(layer.weights.numpy(), np.full(layer.weights.shape, 0.25))
        np.testing.assert_array_equal(layer.bias.numpy(), np.full(layer.bias.shape, -0.5))
    emb = lm.Embedding(5, 3, w_init=c)
    emb([1])
    np.testing.assert_array_equal(emb.embeddings.numpy(), np.full((5, 3), 0.25))
    lstm = lm.LSTM(4, w_init=c, recurrent_init=init.Ones(), b_init=b)
    lstm(tf.zeros((1, 2)), lstm.initial_state(1))
    np.testing.assert_array_equal(lstm.input_weights.numpy(), np.full((2, 16), 0.25))
    np.testing.assert_array_equal(lstm.recurrent_weights.numpy(), np.ones((4, 16)))
    np.testing.assert_array_equal(lstm.bias.numpy(), np.full(16, -0.5))  # no unit forget bias over an explicit b_init
    mha = lm.MultiHeadAttention(2, 4, w_init="ones")
    x = tf.zeros((1, 2, 6))
    mha(x, x, x)
    for proj in (mha.query_proj, mha.key_proj, mha.value_proj, mha.output_proj):
        np.testing.assert_array_equal(proj.weights.numpy(), np.ones(proj.weights.shape))
