"""UNet and MobileNetV2: shapes, sizes, errors; MobileNetV2 against torchvision with copied weights and
through TFLite."""

import os

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from conftest import assert_close
from pretrained_refs import import_torchvision

torch = pytest.importorskip("torch")


# ----------------------------------------------------------------------- UNet
@pytest.mark.parametrize("upsampling", ["bilinear", "nearest", "transpose"])
def test_unet_shapes_and_any_divisible_size(upsampling):
    model = lm.models.UNet(3, depth=2, widths=(4, 6, 8), upsampling=upsampling)
    for h, w in ((8, 12), (16, 4)):
        assert model(tf.random.normal([2, h, w, 1])).shape == (2, h, w, 3)
    paths = model.variable_paths()
    assert "down/0/conv_0/weights" in paths and "bottleneck/conv_1/weights" in paths
    assert paths["up_convs/0/conv_0/weights"].shape == (3, 3, 6 + 6, 6)  # skip (6) ++ upsampled (6)
    assert paths["classifier/weights"].shape == (1, 1, 4, 3)
    with pytest.raises(ValueError, match=r"the image height must be divisible by 2\^depth = 4, got 10"):
        model(tf.zeros([1, 10, 8, 1]))


def test_unet_channels_first_equals_channels_last_and_learns():
    lm.set_seed(0)
    model = lm.models.UNet(2, depth=1, widths=(4, 8))
    twin = lm.models.UNet(2, depth=1, widths=(4, 8), data_format="channels_first")
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 1)).astype(np.float32)
    model(x)
    twin(np.moveaxis(x, -1, 1))
    twin.set_weights(model.get_weights())
    assert_close(np.moveaxis(twin(np.moveaxis(x, -1, 1)).numpy(), 1, -1), model(x), atol=1e-5)
    # A few steps on "pixel > 0" reduce the per-pixel cross-entropy.
    y = (x[..., 0] > 0).astype(np.int32)
    opt = lm.optim.Adam(1e-2)
    losses = []
    for _ in range(15):
        with tf.GradientTape() as tape:
            loss = lm.losses.softmax_cross_entropy(y, model(x, training=True))
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        losses.append(float(loss))
    assert losses[-1] < 0.6 * losses[0]


# ---------------------------------------------------------------- MobileNetV2
def _copy_torchvision(tv, model):
    """torchvision mobilenet_v2 state -> our variables (conv (O, I, kh, kw) -> (kh, kw, I, O))."""
    sd = {k: v.detach().numpy() for k, v in tv.state_dict().items()}
    w = {}

    def conv(ours, theirs, depthwise=False):
        k = sd[f"{theirs}.weight"]
        w[f"{ours}/weights"] = k.transpose(2, 3, 0, 1) if depthwise else k.transpose(2, 3, 1, 0)

    def bn(ours, theirs):
        for a, b in (("scale", "weight"), ("offset", "bias"), ("moving_mean", "running_mean"),
                     ("moving_variance", "running_var")):
            w[f"{ours}/{a}"] = sd[f"{theirs}.{b}"]

    conv("stem", "features.0.0")
    bn("stem_bn", "features.0.1")
    for i, block in enumerate(model.blocks):
        p, t = f"blocks/{i}", f"features.{i + 1}.conv"
        if block.expand is None:
            conv(f"{p}/depthwise", f"{t}.0.0", True), bn(f"{p}/depthwise_bn", f"{t}.0.1")
            conv(f"{p}/project", f"{t}.1"), bn(f"{p}/project_bn", f"{t}.2")
        else:
            conv(f"{p}/expand", f"{t}.0.0"), bn(f"{p}/expand_bn", f"{t}.0.1")
            conv(f"{p}/depthwise", f"{t}.1.0", True), bn(f"{p}/depthwise_bn", f"{t}.1.1")
            conv(f"{p}/project", f"{t}.2"), bn(f"{p}/project_bn", f"{t}.3")
    conv("last_conv", "features.18.0")
    bn("last_bn", "features.18.1")
    w["classifier/weights"] = sd["classifier.1.weight"].T
    w["classifier/bias"] = sd["classifier.1.bias"]
    model.set_weights(w)


def test_mobilenet_v2_matches_torchvision_with_copied_weights():
    torchvision = import_torchvision()
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v2(num_classes=7, width_mult=0.5).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model = lm.models.MobileNetV2(7, width_multiplier=0.5)
    x = np.random.default_rng(0).standard_normal((2, 48, 48, 3)).astype(np.float32)
    model(x)
    n_ours = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert n_ours == sum(p.numel() for p in tv.parameters())
    _copy_torchvision(tv, model)
    with torch.no_grad():
        ref = tv(torch.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    assert_close(model(x), ref, atol=2e-4, rtol=1e-4)
    assert model.features(x).shape == (2, 2, 2, 1280)
    big = lm.models.MobileNetV2(1000)
    big(tf.zeros([1, 32, 32, 3]))
    assert sum(int(np.prod(v.shape)) for v in big.trainable_variables) == 3_504_872  # torchvision's count


def test_mobilenet_v2_exports_to_tflite_and_matches(tmp_path):
    from lamina.export.tflite import TFLiteRunner

    lm.set_seed(0)
    model = lm.models.MobileNetV2(5, width_multiplier=0.35)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    model(x / 255.0)
    pre = {"scale": 1 / 255.0, "mean": [0.0] * 3, "std": [1.0] * 3}
    path = lm.export.tflite(model, str(tmp_path / "m"), (32, 32, 3), pre, [str(i) for i in range(5)], sample=x,
                            verbose=False)
    got = TFLiteRunner(os.path.join(path, "model.tflite"))(x)
    assert_close(got["logits"], model(x / 255.0), atol=1e-4)
