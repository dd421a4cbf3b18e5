"""Ready models: ConvNet, MLP, ResNet (shapes, names, training, parity with torch/NumPy)."""

import numpy as np
import pytest
import tensorflow as tf
import torch
import torch.nn.functional as F

from lamina.models.convnet import ConvNet
from lamina.models.mlp import MLP
from lamina.models.resnet import ResNet, resnet18, resnet34, resnet50
from lamina.summary import summary

from conftest import assert_close


def _n_trainable(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


# ------------------------------------------------------------------ ConvNet
@pytest.mark.parametrize(
    "shape, widths, spatial_out",
    [
        ((8, 8, 1), (32, 64), 2),
        ((28, 28, 1), (32, 64), 7),
        ((32, 32, 3), (32, 64), 8),
        ((8, 8, 1), (8, 8, 8, 8, 8), 1),  # 8 -> 4 -> 2 -> 1, then pools are skipped
        ((7, 9, 2), (4, 4), 1),  # odd sizes: VALID pooling floors (7x9 -> 3x4 -> 1x2)
    ],
)
def test_convnet_shapes(shape, widths, spatial_out):
    model = ConvNet(5, widths=widths, hidden=16)
    x = tf.random.normal((3, *shape))
    assert model(x).shape == (3, 5)
    w = model.hidden.weights.shape
    if shape == (7, 9, 2):
        assert w[0] == 1 * 2 * widths[-1]
    else:
        assert w[0] == spatial_out * spatial_out * widths[-1]


def test_convnet_default_is_the_seed_cnn():
    model = ConvNet(10)
    assert model(tf.zeros((2, 28, 28, 1))).shape == (2, 10)
    shapes = {k: tuple(v.shape) for k, v in model.variable_paths().items()}
    assert shapes == {
        "blocks/0/convs/0/weights": (3, 3, 1, 32), "blocks/0/convs/0/bias": (32,),
        "blocks/0/convs/1/weights": (3, 3, 32, 32), "blocks/0/convs/1/bias": (32,),
        "blocks/1/convs/0/weights": (3, 3, 32, 64), "blocks/1/convs/0/bias": (64,),
        "blocks/1/convs/1/weights": (3, 3, 64, 64), "blocks/1/convs/1/bias": (64,),
        "hidden/weights": (7 * 7 * 64, 128), "hidden/bias": (128,),
        "classifier/weights": (128, 10), "classifier/bias": (10,),
    }
    # Explicit padding of 1 passed to the op; ReLU fused into the conv layer.
    conv = model.blocks[0].convs[0]
    assert conv.padding == ((1, 1), (1, 1)) and conv.activation is not None and conv.use_bias


def test_convnet_hierarchical_names_and_rank3_input():
    model = ConvNet(3, widths=(4, 8), batch_norm=True, dropout=0.2, hidden=8)
    model(tf.zeros((2, 8, 8)))  # (N, H, W): a channel axis is added
    names = {v.name for v in model.variables}
    for expected in [
        "convnet/block_0/conv_0/weights:0",
        "convnet/block_0/bn_0/scale:0",
        "convnet/block_1/bn_1/moving_mean:0",
        "convnet/hidden/weights:0",
        "convnet/classifier/bias:0",
    ]:
        assert expected in names, sorted(names)
    # With batch norm the convs have no bias.
    assert not any("conv_0/bias" in n for n in names)


def _torch_convnet(model, x_nhwc, batch_norm):
    """An independent PyTorch forward of a lamina ConvNet (weights copied, eval mode)."""
    t = torch.from_numpy(np.transpose(x_nhwc, (0, 3, 1, 2)).copy())
    for block in model.blocks:
        for j, conv in enumerate(block.convs):
            w = torch.from_numpy(np.transpose(conv.weights.numpy(), (3, 2, 0, 1)).copy())
            b = torch.from_numpy(conv.bias.numpy()) if conv.use_bias else None
            t = F.conv2d(t, w, b, padding=1)
            if batch_norm:
                bn = block.norms[j]
                t = F.batch_norm(
                    t, torch.from_numpy(bn.moving_mean.numpy()), torch.from_numpy(bn.moving_variance.numpy()),
                    torch.from_numpy(bn.scale.numpy()), torch.from_numpy(bn.offset.numpy()), False, 0.0, bn.eps,
                )
            t = torch.relu(t)
        if min(t.shape[2:]) >= 2:
            t = F.max_pool2d(t, 2)
    t = t.permute(0, 2, 3, 1).reshape(t.shape[0], -1)  # NHWC flatten order, as lamina
    for lin, act in [(model.hidden, True), (model.classifier, False)]:
        t = t @ torch.from_numpy(lin.weights.numpy()) + torch.from_numpy(lin.bias.numpy())
        t = torch.relu(t) if act else t
    return t.numpy()


@pytest.mark.parametrize("batch_norm", [False, True])
def test_convnet_matches_torch(batch_norm):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 10, 10, 3)).astype(np.float32)
    model = ConvNet(4, widths=(6, 8, 5), hidden=7, batch_norm=batch_norm)
    model(x)
    if batch_norm:  # non-trivial moving statistics and affine parameters
        for block in model.blocks:
            for bn in block.norms:
                c = bn.scale.shape[0]
                bn.moving_mean.assign(rng.normal(size=c).astype(np.float32))
                bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=c).astype(np.float32))
                bn.scale.assign(rng.uniform(0.5, 1.5, size=c).astype(np.float32))
                bn.offset.assign(rng.normal(size=c).astype(np.float32))
    assert_close(model(x, training=False), _torch_convnet(model, x, batch_norm), atol=1e-4, rtol=1e-4)


def test_convnet_channels_first_equals_channels_last():
    x = tf.random.normal((2, 12, 12, 3))
    last = ConvNet(4, widths=(4, 6), hidden=8)
    first = ConvNet(4, widths=(4, 6), hidden=8, data_format="channels_first")
    last(x)
    first(tf.transpose(x, (0, 3, 1, 2)))
    weights = last.get_weights()
    # Flatten order differs (NCHW vs NHWC): permute the hidden layer's rows.
    h = weights["hidden/weights"].reshape(3, 3, 6, 8).transpose(2, 0, 1, 3).reshape(54, 8)
    first.set_weights({**weights, "hidden/weights": h})
    assert_close(first(tf.transpose(x, (0, 3, 1, 2))), last(x), atol=1e-4, rtol=1e-4)


def test_convnet_training_flag_reaches_dropout_and_batchnorm():
    model = ConvNet(3, widths=(4,), hidden=16, dropout=0.5, batch_norm=True)
    x = tf.random.normal((8, 8, 8, 1))
    a, b = model(x, training=False), model(x, training=False)
    assert_close(a, b)
    mean_before = model.blocks[0].norms[0].moving_mean.numpy().copy()
    c = model(x, training=True)
    assert not np.allclose(a.numpy(), c.numpy())
    assert not np.allclose(mean_before, model.blocks[0].norms[0].moving_mean.numpy())


def test_convnet_traces_with_unknown_batch():
    model = ConvNet(10, widths=(8, 16), hidden=16, batch_norm=True)
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([None, 8, 8, 1], tf.float32))
    assert concrete.structured_outputs.shape.as_list() == [None, 10]
    for n in (1, 5):
        x = tf.random.normal((n, 8, 8, 1))
        assert_close(concrete(x), model(x), atol=1e-5)


def test_convnet_learns_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], y[perm]
    x_tr, y_tr, x_te, y_te = x[:1400], y[:1400], x[1400:], y[1400:]
    model = ConvNet(10, widths=(16, 32), hidden=64)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            logits = model(xb, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits))
        grads = tape.gradient(loss, model.trainable_variables)
        for v, g in zip(model.trainable_variables, grads):
            v.assign_sub(0.1 * g)
        return loss

    def accuracy():
        return float(np.mean(np.argmax(model(x_te).numpy(), -1) == y_te))

    before = accuracy()
    rng = np.random.default_rng(1)
    losses = []
    for _ in range(80):
        idx = rng.choice(len(x_tr), 64, replace=False)
        losses.append(float(step(x_tr[idx], y_tr[idx])))
    after = accuracy()
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    assert after > 0.8 and after > before + 0.5, (before, after)


def test_convnet_errors_name_the_module():
    with pytest.raises(ValueError, match="ConvNet 'convnet'.*rank"):
        ConvNet(3)(tf.zeros((2, 64)))
    with pytest.raises(ValueError, match="ConvNet 'net'.*dropout"):
        ConvNet(3, dropout=1.5, name="net")
    with pytest.raises(ValueError, match="ConvNet 'convnet'.*widths"):
        ConvNet(3, widths=())
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ConvNet(3, kernel_size=4)


# ---------------------------------------------------------------------- MLP
def test_mlp_matches_numpy():
    model = MLP([16, 8], 3, activation="tanh")
    x = np.random.default_rng(0).normal(size=(5, 2, 3, 2)).astype(np.float32)
    out = model(x).numpy()
    w = model.get_weights()
    h = x.reshape(5, -1)
    h = np.tanh(h @ w["linears/0/weights"] + w["linears/0/bias"])
    h = np.tanh(h @ w["linears/1/weights"] + w["linears/1/bias"])
    ref = h @ w["output/weights"] + w["output/bias"]
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
    assert {v.name for v in model.variables} >= {"mlp/linear_0/weights:0", "mlp/output/bias:0"}


def test_mlp_batchnorm_dropout_and_no_flatten():
    model = MLP([6], 2, batch_norm=True, dropout=0.5)
    x = tf.random.normal((16, 4))
    eval_out = model(x, training=False).numpy()
    w = model.get_weights()
    bn = model.norms[0]
    h = x.numpy() @ w["linears/0/weights"]  # no bias with batch norm
    h = (h - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + bn.eps) * bn.scale.numpy() + bn.offset.numpy()
    ref = np.maximum(h, 0) @ w["output/weights"] + w["output/bias"]
    np.testing.assert_allclose(eval_out, ref, atol=1e-5, rtol=1e-5)
    assert not np.allclose(model(x, training=True).numpy(), eval_out)
    # flatten=False: Linear acts on the last axis.
    assert MLP([4], 2, flatten=False)(tf.zeros((3, 5, 7))).shape == (3, 5, 2)
    # Empty hidden_sizes is a linear model.
    assert MLP([], 3)(tf.zeros((2, 4, 4))).shape == (2, 3)


# ------------------------------------------------------------------- ResNet
def test_resnet_parameter_counts_match_torchvision():
    r18 = resnet18(1000, stem="imagenet")
    r18(tf.zeros((1, 32, 32, 3)))
    assert _n_trainable(r18) == 11_689_512
    r34 = resnet34(1000, stem="imagenet")
    r34(tf.zeros((1, 32, 32, 3)))
    assert _n_trainable(r34) == 21_797_672
    r50 = resnet50()
    r50(tf.zeros((1, 32, 32, 3)))
    assert _n_trainable(r50) == 25_557_032
    # BN moving statistics exist but are not trainable.
    moving = [v for v in r50.variables if not v.trainable]
    assert moving and all("moving" in v.name for v in moving)
    assert "resnet50/stage_3/block_2/conv_2/weights:0" in {v.name for v in r50.variables}


def test_resnet_shapes_per_stem():
    cifar = resnet18(10, width=8)
    rows = summary(cifar, (32, 32, 3), print_fn=None).rows
    out = {r["path"]: r["output_shape"] for r in rows}
    assert out["resnet18/stage_0"] == (1, 32, 32, 8)
    assert out["resnet18/stage_3"] == (1, 4, 4, 64)
    assert out["resnet18"] == (1, 10)
    imnet = ResNet("bottleneck", (1, 1, 1), num_classes=5, width=4, stem="imagenet")
    rows = summary(imnet, (64, 64, 3), print_fn=None).rows
    out = {r["path"]: r["output_shape"] for r in rows}
    assert out["resnet/stem_pool"] == (1, 16, 16, 4)
    assert out["resnet/stage_2"] == (1, 4, 4, 64)
    assert out["resnet"] == (1, 5)


class _TorchBasic(torch.nn.Module):
    def __init__(self, cin, width, stride, eps):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(width, eps=eps)
        self.conv2 = torch.nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(width, eps=eps)
        self.down = None
        if stride != 1 or cin != width:
            self.down = torch.nn.Sequential(
                torch.nn.Conv2d(cin, width, 1, stride, bias=False), torch.nn.BatchNorm2d(width, eps=eps)
            )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class _TorchBottleneck(torch.nn.Module):
    def __init__(self, cin, width, stride, eps):
        super().__init__()
        out = 4 * width
        self.conv1 = torch.nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(width, eps=eps)
        self.conv2 = torch.nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(width, eps=eps)
        self.conv3 = torch.nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = torch.nn.BatchNorm2d(out, eps=eps)
        self.down = None
        if stride != 1 or cin != out:
            self.down = torch.nn.Sequential(
                torch.nn.Conv2d(cin, out, 1, stride, bias=False), torch.nn.BatchNorm2d(out, eps=eps)
            )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class _TorchResNet(torch.nn.Module):
    def __init__(self, block, layers, num_classes, width, stem, eps):
        super().__init__()
        k, s = (3, 1) if stem == "cifar" else (7, 2)
        self.conv1 = torch.nn.Conv2d(3, width, k, s, k // 2, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(width, eps=eps)
        self.pool = torch.nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else torch.nn.Identity()
        cls, exp = (_TorchBasic, 1) if block == "basic" else (_TorchBottleneck, 4)
        blocks, cin = [], width
        for i, n in enumerate(layers):
            for b in range(n):
                blocks.append(cls(cin, width * 2**i, 2 if (i > 0 and b == 0) else 1, eps))
                cin = width * 2**i * exp
        self.blocks = torch.nn.Sequential(*blocks)
        self.fc = torch.nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.blocks(x)
        return self.fc(x.mean((2, 3)))


def _copy_conv(tconv, lconv):
    tconv.weight.data = torch.from_numpy(np.transpose(lconv.weights.numpy(), (3, 2, 0, 1)).copy())


def _copy_bn(tbn, lbn, rng):
    c = lbn.scale.shape[0]
    for var, lo, hi in [(lbn.scale, 0.5, 1.5), (lbn.offset, -0.5, 0.5), (lbn.moving_mean, -0.5, 0.5),
                        (lbn.moving_variance, 0.5, 2.0)]:
        var.assign(rng.uniform(lo, hi, size=c).astype(np.float32))
    tbn.weight.data = torch.from_numpy(lbn.scale.numpy())
    tbn.bias.data = torch.from_numpy(lbn.offset.numpy())
    tbn.running_mean.data = torch.from_numpy(lbn.moving_mean.numpy())
    tbn.running_var.data = torch.from_numpy(lbn.moving_variance.numpy())


@pytest.mark.parametrize(
    "block, stem, data_format",
    [("basic", "cifar", "channels_last"), ("basic", "imagenet", "channels_first"), ("bottleneck", "imagenet", "channels_last")],
)
def test_resnet_matches_hand_built_torch(block, stem, data_format):
    eps = 1e-5
    layers, width, size = (1, 2, 1), 4, 32
    rng = np.random.default_rng(0)
    model = ResNet(block, layers, num_classes=7, width=width, stem=stem, data_format=data_format, bn_eps=eps)
    x = rng.normal(size=(2, 3, size, size)).astype(np.float32)  # NCHW
    lx = x if data_format == "channels_first" else np.transpose(x, (0, 2, 3, 1))
    model(lx)
    ref = _TorchResNet(block, layers, 7, width, stem, eps).eval()

    _copy_conv(ref.conv1, model.stem_conv)
    _copy_bn(ref.bn1, model.stem_bn, rng)
    tblocks = list(ref.blocks)
    lblocks = [b for stage in model.stages for b in stage.blocks]
    assert len(tblocks) == len(lblocks)
    for tb, lb in zip(tblocks, lblocks):
        n = 2 if block == "basic" else 3
        for j in range(n):
            _copy_conv(getattr(tb, f"conv{j + 1}"), getattr(lb, f"conv_{j}"))
            _copy_bn(getattr(tb, f"bn{j + 1}"), getattr(lb, f"bn_{j}"), rng)
        assert (tb.down is None) == (lb.proj is None)
        if lb.proj is not None:
            _copy_conv(tb.down[0], lb.proj)
            _copy_bn(tb.down[1], lb.proj_bn, rng)
    ref.fc.weight.data = torch.from_numpy(model.classifier.weights.numpy().T.copy())
    ref.fc.bias.data = torch.from_numpy(model.classifier.bias.numpy())

    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    assert_close(model(lx, training=False), expected, atol=1e-4, rtol=1e-4)
    # Training mode normalizes with batch statistics in both.
    ref.train()
    with torch.no_grad():
        expected_train = ref(torch.from_numpy(x)).numpy()
    assert_close(model(lx, training=True), expected_train, atol=1e-3, rtol=1e-3)


def test_resnet_traces_with_unknown_batch_and_errors():
    model = ResNet("basic", (1, 1), num_classes=3, width=4)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([None, 16, 16, 3], tf.float32)
    )
    x = tf.random.normal((3, 16, 16, 3))
    assert_close(concrete(x), model(x), atol=1e-5)
    with pytest.raises(ValueError, match="ResNet 'resnet'.*block"):
        ResNet("wide")
    with pytest.raises(ValueError, match="ResNet 'resnet'.*stem"):
        ResNet(stem="tiny")
    with pytest.raises(ValueError, match="ResNet 'resnet'.*rank 4"):
        model(tf.zeros((2, 16, 16)))


@pytest.mark.parametrize("activation", ["relu", "relu6"])
@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16, tf.float16])
def test_convnet_pooled_side_gradient_matches_composite(dtype, activation):
    """The blocks' last conv + bias + activation + pool, backpropagated on the pooled
    side, give the composite's function and gradients (weights and input bit-equal,
    bias sums up to their order). Odd sizes (13 -> 6) drop a row and column."""
    model = ConvNet(10, widths=(8, 16), hidden=32, activation=activation)
    # Scaled so that ReLU6 also clips (inputs of the activation beyond 6).
    x = tf.cast(4.0 * tf.random.stateless_normal([4, 13, 13, 1], seed=[1, 2]), dtype)
    model(x)
    up = tf.random.stateless_normal([4, 10], seed=[3, 4])

    def run():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(model(x), tf.float32) * up)
        grads = tape.gradient(loss, [x] + list(model.trainable_variables))
        return [tf.cast(g, tf.float32).numpy() for g in grads], loss.numpy()

    assert all(b._pool_act == activation for b in model.blocks)
    fused, fused_loss = run()
    for b in model.blocks:
        b._pool_act = None  # the composite: conv + bias + activation, pool, differentiated by TF
    plain, plain_loss = run()
    np.testing.assert_array_equal(fused_loss, plain_loss)
    paths = ["input"] + [v.name for v in model.trainable_variables]
    for path, f, p in zip(paths, fused, plain):
        if "block" in path and path.endswith("conv_1/bias:0"):
            scale = np.abs(p).max() + 1e-12
            tol = 1e-5 if dtype == tf.float32 else 1e-2
            np.testing.assert_allclose(f, p, atol=tol * scale, err_msg=path)
            assert np.abs(p).max() > 0, path
        else:
            np.testing.assert_array_equal(f, p, err_msg=path)


@pytest.mark.parametrize("mode", ["eager", "function", "xla", "mirrored", "mirrored_function"])
def test_convnet_pooled_side_gradient_in_every_mode(mode):
    """The default ConvNet (pooled-side custom gradient) builds and differentiates
    under tf.function, XLA and a tf.distribute strategy, with the composite's
    gradients. Before the fix, building it in any strategy's scope raised
    "@tf.custom_gradient grad_fn must accept keyword argument 'variables'"
    (the distributed bias variable itself went into the custom-gradient function)."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"]) if mode.startswith("mirrored") else None
    with strategy.scope() if strategy else tf.device("/cpu:0"):
        model = ConvNet(10, widths=(8, 16), hidden=16)
        x = 3.0 * tf.random.stateless_normal([4, 9, 9, 1], seed=[5, 6])
        model(x)
    up = tf.random.stateless_normal([4, 10], seed=[7, 8])

    def grads():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(model(x) * up)
        return tape.gradient(loss, [x] + list(model.trainable_variables))

    def run():
        if mode == "eager":
            return grads()
        if mode == "mirrored":
            return strategy.run(grads)
        fn = tf.function(grads, jit_compile=mode == "xla")
        return strategy.run(fn) if strategy else fn()

    assert all(b._pool_act == "relu" for b in model.blocks)
    fast = [g.numpy() for g in run()]
    for b in model.blocks:
        b._pool_act = None  # the composite, differentiated by TensorFlow
    plain = [g.numpy() for g in run()]
    names = ["input"] + [v.name for v in model.trainable_variables]
    for name, f, p in zip(names, fast, plain):
        assert np.abs(p).max() > 0, name
        np.testing.assert_allclose(f, p, rtol=1e-5, atol=1e-5 * np.abs(p).max(), err_msg=name)
