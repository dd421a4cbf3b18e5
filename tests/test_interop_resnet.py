"""ResNet checkpoints from torchvision, timm and Keras into lamina (random weights), and back to torchvision."""

import re
import sys

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from lamina.interop import keymap, resnet_keys
from pretrained_refs import (
    difference,
    images,
    import_package,
    import_torchvision,
    lamina_logits,
    randomize,
    save_state_dict,
    torch,
    torch_logits,
)

FORMATS = ("channels_last", "channels_first")
TOL = 1e-4  # max |difference| relative to the reference logits' scale


def _torchvision_resnet(arch, seed=0, **kw):
    models = import_torchvision().models
    torch.manual_seed(seed)
    return randomize(getattr(models, arch)(weights=None, **kw), seed)


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_torchvision_resnet_matches_in_both_data_formats(tmp_path, arch):
    ref_model = _torchvision_resnet(arch)
    path = save_state_dict(ref_model, tmp_path / f"{arch}.safetensors")
    x = images(2, 64)
    ref = torch_logits(ref_model, x)
    for data_format in FORMATS:
        model = lm.interop.create_model(arch, "torchvision", data_format=data_format)
        report = lm.interop.load_pretrained(model, path)
        _, rel = difference(lamina_logits(model, x), ref)
        assert rel <= TOL, (arch, data_format, rel)
        assert report.source == "torchvision" and report.arch == arch and report.head_loaded
        assert len(report.loaded) == len(model.variable_paths())
        assert report.skipped and all(k.endswith("num_batches_tracked") for k in report.skipped)
        assert report.preprocessing["mean"] == [0.485, 0.456, 0.406] and report.preprocessing["crop"] == 224


def test_round_trip_to_torchvision_after_fine_tuning(tmp_path):
    ref_model = _torchvision_resnet("resnet18")
    path = save_state_dict(ref_model, tmp_path / "r18.safetensors")
    model = lm.interop.create_model("resnet18", "torchvision", num_classes=10, data_format="channels_first")
    report = lm.interop.load_pretrained(model, path)
    assert report.notes == ["dropped the checkpoint's head fc (1000 classes); the new head has 10"]
    # "Fine-tune": move every variable so the export cannot just echo the original file.
    rng = np.random.RandomState(1)
    model.set_weights({k: v + rng.uniform(-0.05, 0.05, v.shape).astype(v.dtype) for k, v in model.get_weights().items()})
    out = str(tmp_path / "back.safetensors")
    lm.interop.save_state_dict(model, out)
    import safetensors.torch

    back = import_torchvision().models.resnet18(weights=None, num_classes=10).eval()
    back.load_state_dict(safetensors.torch.load_file(out), strict=True)
    x = images(2, 64, seed=3)
    _, rel = difference(torch_logits(back, x), lamina_logits(model, x))
    assert rel <= TOL, rel


def test_timm_resnet50_matches_and_its_features_are_lamina_features(tmp_path):
    timm = import_package("timm")
    torch.manual_seed(0)
    ref_model = randomize(timm.create_model("resnet50", pretrained=False), 0)
    path = save_state_dict(ref_model, tmp_path / "timm_r50.safetensors")
    x = images(2, 64, seed=1)
    ref = torch_logits(ref_model, x)
    backbone = randomize(timm.create_model("resnet50", pretrained=False, features_only=True), 0)
    backbone.load_state_dict({k: v for k, v in ref_model.state_dict().items() if not k.startswith("fc.")})
    with torch.no_grad():
        ref_maps = [m.numpy() for m in backbone(torch.from_numpy(x))]
    for data_format in FORMATS:
        model = lm.interop.create_model("resnet50", "timm", data_format=data_format)
        report = lm.interop.load_pretrained(model, path, source="timm")
        assert report.source == "timm" and report.preprocessing["interpolation"] == "bicubic"
        _, rel = difference(lamina_logits(model, x), ref)
        assert rel <= TOL, (data_format, rel)
        xin = x if data_format == "channels_first" else x.transpose(0, 2, 3, 1)
        maps = model.features(tf.constant(xin))
        assert [i["reduction"] for i in model.feature_info] == [2, 4, 8, 16, 32]
        assert [i["channels"] for i in model.feature_info] == [64, 256, 512, 1024, 2048]
        assert len(maps) == len(ref_maps) == 5
        for ours, theirs in zip(maps, ref_maps):
            ours = ours.numpy() if data_format == "channels_first" else ours.numpy().transpose(0, 3, 1, 2)
            assert ours.shape == theirs.shape
            assert difference(ours, theirs)[1] <= TOL


@pytest.mark.parametrize("arch", ["resnet101", "resnet152"])
def test_large_resnets_key_map_accounts_for_every_tensor(arch):
    """Names and shapes only (no forward): the torch model lives on the meta device."""
    models = import_torchvision().models
    with torch.device("meta"):
        state = getattr(models, arch)(weights=None).state_dict()
    fake = {k: np.broadcast_to(np.zeros((), np.float32), tuple(v.shape)) for k, v in state.items()}
    model = lm.interop.create_model(arch, "torchvision")
    model(tf.zeros((1, 32, 32, 3)))
    shapes = {k: tuple(v.shape) for k, v in model.variable_paths().items()}
    result = keymap.apply_map(resnet_keys.torch_entries(model), fake, shapes, tolerate=resnet_keys.TORCH_TOLERATE)
    assert sorted(result.weights) == sorted(shapes)
    assert len(result.used) + len(result.tolerated) == len(state)


def _keras_resnet50(tmp_path, classes=10, size=64):
    keras = pytest.importorskip("keras")
    ref_model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3), classes=classes,
                                            classifier_activation=None)
    rng = np.random.RandomState(0)
    for layer in ref_model.layers:  # non-trivial BatchNorm statistics and conv biases
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.uniform(-0.5, 0.5, b.shape),
                               rng.uniform(-0.5, 0.5, m.shape), rng.uniform(0.5, 2.0, v.shape)])
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            w, b = layer.get_weights()
            layer.set_weights([w, rng.uniform(-0.1, 0.1, b.shape)])
    path = str(tmp_path / "resnet50.weights.h5")
    ref_model.save_weights(path)
    return ref_model, path


def test_keras_resnet50_weights_h5_matches_in_both_data_formats(tmp_path):
    ref_model, path = _keras_resnet50(tmp_path)
    rgb = np.random.RandomState(2).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    # Keras' "caffe" preprocessing: RGB -> BGR, minus the BGR means; lamina's model takes RGB minus the RGB means.
    ref = ref_model(rgb[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32), training=False).numpy()
    for data_format in FORMATS:
        model = lm.interop.create_model("resnet50", "keras", num_classes=10, data_format=data_format)
        report = lm.interop.load_pretrained(model, path)
        assert report.source == "keras" and report.arch == "resnet50" and not report.skipped
        p = report.preprocessing
        x = (rgb * p["scale"] - np.array(p["mean"], np.float32)) / np.array(p["std"], np.float32)
        x = x if data_format == "channels_last" else x.transpose(0, 3, 1, 2)
        out = model(tf.constant(np.ascontiguousarray(x))).numpy()
        _, rel = difference(out, ref)
        assert rel <= TOL, (data_format, rel)


def test_keras_legacy_h5_layout_reads_the_same(tmp_path):
    h5py = pytest.importorskip("h5py")
    from keras.src.legacy.saving import legacy_h5_format

    ref_model, path = _keras_resnet50(tmp_path)
    legacy = str(tmp_path / "legacy.h5")
    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, ref_model)
    a, _, _ = lm.interop.read_checkpoint(path)
    b, _, _ = lm.interop.read_checkpoint(legacy)
    assert sorted(a) == sorted(b) and "conv1_bn/moving_variance" in a and "predictions/kernel" in a
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_variant_and_options_that_the_weights_cannot_show_are_checked(tmp_path):
    path = save_state_dict(_torchvision_resnet("resnet50"), tmp_path / "r50.safetensors")
    with pytest.raises(ValueError, match=r"torchvision ResNet checkpoints are variant 'v1.5'.*variant='v1'"):
        lm.interop.load_pretrained(lm.models.resnet50(variant="v1"), path)
    with pytest.raises(ValueError, match=r"BatchNorm eps 1e-05, the model has bn_eps=0.001"):
        lm.interop.load_pretrained(lm.models.resnet50(bn_eps=1e-3), path)
    with pytest.raises(ValueError, match=r"torchvision ResNet convolutions have no biases, the model has conv_bias=True"):
        lm.interop.load_pretrained(lm.models.resnet50(conv_bias=True), path)
    with pytest.raises(ValueError, match=r"the names are torchvision's, not keras's"):
        lm.interop.load_pretrained(lm.models.resnet50(), path, source="keras")


def test_missing_unknown_and_misshapen_tensors_fail_in_one_line(tmp_path):
    import safetensors.torch

    state = _torchvision_resnet("resnet18").state_dict()
    path = str(tmp_path / "r18.safetensors")
    safetensors.torch.save_file(state, path)

    def fails(tensors, pattern, **kw):
        p = str(tmp_path / "bad.safetensors")
        safetensors.torch.save_file(tensors, p)
        with pytest.raises(ValueError) as info:
            lm.interop.load_pretrained(lm.models.resnet18(1000, stem="imagenet"), p, **kw)
        assert "\n" not in str(info.value) and re.search(pattern, str(info.value)), str(info.value)

    fails({k: v for k, v in state.items() if k != "layer1.0.bn1.running_var"},
          r"torchvision checkpoint does not fit ResNet 'resnet18': missing 1 key\(s\) \['layer1.0.bn1.running_var'\]")
    fails(dict(state, **{"extra.weight": torch.zeros(3)}), r"unknown 1 key\(s\) \['extra.weight'\]")
    fails(dict(state, **{"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)}),
          r"misshapen 1: layer1.0.conv1.weight \(64, 64, 1, 1\) -> stages/0/blocks/0/conv_0/weights expects \(3, 3, 64, 64\)")
    fails(dict(state, **{"fc.weight": torch.zeros(5, 512), "fc.bias": torch.zeros(5)}),
          r"misshapen 2: fc.weight \(5, 512\) -> classifier/weights", head="load")
    r50 = {k: v.contiguous() for k, v in _torchvision_resnet("resnet50").state_dict().items()}
    fails(r50, r"unknown \d+ key\(s\).*misshapen.*\(the checkpoint looks like resnet50 \(bottleneck blocks \(3, 4, 6, 3\)\)\)")

    # An explicit ignore= leaves a key out on purpose, and the report says so.
    p = str(tmp_path / "extra.safetensors")
    safetensors.torch.save_file(dict(state, **{"aux.weight": torch.zeros(3)}), p)
    report = lm.interop.load_pretrained(lm.models.resnet18(1000, stem="imagenet"), p, ignore=["aux.*"])
    assert report.dropped == ["aux.weight"] and report.head_loaded


def test_head_modes(tmp_path):
    ref_model = _torchvision_resnet("resnet18")
    path = save_state_dict(ref_model, tmp_path / "r18.safetensors")
    x = images(1, 64)
    kept = lm.interop.create_model("resnet18", num_classes=1000)
    dropped = lm.interop.create_model("resnet18", num_classes=1000)
    report = lm.interop.load_pretrained(dropped, path, head="drop")
    assert not report.head_loaded and sorted(report.dropped) == ["fc.bias", "fc.weight"] and not report.notes
    before = dropped.classifier.weights.numpy()
    assert not np.allclose(before, ref_model.fc.weight.detach().numpy().T)
    lm.interop.load_pretrained(kept, path, head="auto")
    np.testing.assert_array_equal(kept.classifier.weights.numpy(), ref_model.fc.weight.detach().numpy().T)
    # The backbone is the same either way: equal features.
    a = kept.features(tf.constant(x.transpose(0, 2, 3, 1)))[-1].numpy()
    b = dropped.features(tf.constant(x.transpose(0, 2, 3, 1)))[-1].numpy()
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="head must be one of"):
        lm.interop.load_pretrained(kept, path, head="keep")


def test_pytorch_pt_files_and_a_clear_error_without_torch(tmp_path, monkeypatch):
    ref_model = _torchvision_resnet("resnet18")
    pt = str(tmp_path / "r18.pth")
    torch.save({"state_dict": ref_model.state_dict()}, pt)
    model = lm.interop.create_model("resnet18")
    report = lm.interop.load_pretrained(model, pt)
    assert "read the state dict under the file's 'state_dict' entry" in report.notes
    x = images(1, 64)
    assert difference(lamina_logits(model, x), torch_logits(ref_model, x))[1] <= TOL
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(ValueError, match=r"r18\.pth: reading a PyTorch .pt/.pth/.bin file needs PyTorch.*convert it to safetensors"):
        lm.interop.load_pretrained(lm.interop.create_model("resnet18"), pt)


def test_resnet_options_keep_their_defaults_and_do_what_they_say():
    r = lm.models.resnet50(zero_init_residual=True)
    r(tf.zeros((1, 32, 32, 3)))
    for stage in r.stages:
        for block in stage.blocks:
            assert not np.any(block.bn_2.scale.numpy()) and np.all(block.bn_0.scale.numpy() == 1)
    default = lm.models.resnet50()
    assert default.variant == "v1.5" and not default.conv_bias
    default(tf.zeros((1, 32, 32, 3)))
    assert np.all(default.stages[0].blocks[0].bn_2.scale.numpy() == 1)
    v1 = lm.models.resnet50(variant="v1")
    block = v1.stages[1].blocks[0]
    assert (block.conv_0.strides, block.conv_1.strides) == ((2, 2), (1, 1))
    block = default.stages[1].blocks[0]
    assert (block.conv_0.strides, block.conv_1.strides) == ((1, 1), (2, 2))
    with pytest.raises(ValueError, match=r"variant must be one of \['v1', 'v1.5'\], got 'v2'"):
        lm.models.resnet50(variant="v2")
    r18 = lm.models.resnet18(10, stem="cifar")
    assert [i["reduction"] for i in r18.feature_info] == [1, 1, 2, 4, 8]
    maps = r18.features(tf.zeros((2, 16, 16, 3)))
    assert [tuple(m.shape) for m in maps] == [(2, 16, 16, 64), (2, 16, 16, 64), (2, 8, 8, 128), (2, 4, 4, 256), (2, 2, 2, 512)]


def test_recorded_preprocessing_drives_the_serving_module_like_torchvision_transforms(tmp_path):
    tv = import_torchvision()
    ref_model = _torchvision_resnet("resnet18")
    path = save_state_dict(ref_model, tmp_path / "r18.safetensors")
    model = lm.interop.create_model("resnet18")
    report = lm.interop.load_pretrained(model, path)
    serving = lm.export.ServingModule(model, (64, 64, 3), report.preprocessing)
    raw = np.random.RandomState(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    normalize = tv.transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    x = normalize(torch.from_numpy(raw.transpose(0, 3, 1, 2) / 255.0)).numpy()
    ours = serving.serve(tf.constant(raw))["logits"].numpy()
    assert serving.preprocessing["raw_max"] == 255.0
    assert difference(ours, torch_logits(ref_model, x.astype(np.float32)))[1] <= TOL


def test_init_from_builds_the_source_model_and_replaces_the_head(tmp_path):
    """What `lamina train --init-from FILE --model ARCH` calls (the lead wires it into the CLI)."""
    ref_model, path = _keras_resnet50(tmp_path, classes=1000)
    model, report = lm.interop.init_from(path, "resnet50", num_classes=10)
    assert (model.variant, model.conv_bias, model.num_classes) == ("v1", True, 10)
    assert report.source == "keras" and report.notes == ["dropped the checkpoint's head predictions (1000 classes); the new head has 10"]
    # The backbone is Keras': its pooled features equal Keras' penultimate layer.
    keras = pytest.importorskip("keras")
    trunk = keras.Model(ref_model.input, ref_model.get_layer("avg_pool").output)
    rgb = np.random.RandomState(4).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    ref = trunk(rgb[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)).numpy()
    ours = model.pool(model.features(tf.constant(rgb - np.array([123.68, 116.779, 103.939], np.float32)))[-1]).numpy()
    assert difference(ours, ref)[1] <= TOL
    # A converted file needs no --model: its metadata says what it is.
    dst = str(tmp_path / "r50k.safetensors")
    lm.interop.convert(path, dst, arch="ResNet50")
    again, report = lm.interop.init_from(dst, num_classes=3, data_format="channels_first")
    assert (again.variant, again.conv_bias, again.data_format) == ("v1", True, "channels_first")
    assert report.source == "keras" and report.preprocessing["mean"] == [123.68, 116.779, 103.939]
    with pytest.raises(ValueError, match="give the architecture"):
        lm.interop.init_from(path)
