"""Exporting any module (input_signature): token ids, regression, two inputs, dict outputs; every format."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from lamina.export.saved_model import METADATA_NAME, ExportError


def _has_onnx():
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError:
        return False
    return True


FORMATS = ["savedmodel", "tflite"] + (["onnx"] if _has_onnx() else [])
EXPORT = {"savedmodel": lm.export.saved_model, "tflite": lm.export.tflite, "onnx": lm.export.onnx}
TOLERANCE = {"savedmodel": 1e-5, "tflite": 1e-4, "onnx": 1e-4}


class TwoInputs(lm.Module):
    """A module of two inputs: an image-like tensor and a feature vector."""

    def __init__(self, name=None):
        super().__init__(name=name)
        self.conv = lm.Conv2D(3, padding=1, activation="relu")
        self.pool = lm.GlobalAvgPool()
        self.dense = lm.Linear(3)
        self.head = lm.Linear(2)

    def __call__(self, image, features, training=False):
        return self.head(tf.concat([self.pool(self.conv(image)), self.dense(features)], axis=-1))


class MeanAndScale(lm.Module):
    """A module with a dict output (a Gaussian head), no training argument."""

    def __init__(self, name=None):
        super().__init__(name=name)
        self.body = lm.Linear(8, activation="tanh")
        self.mean = lm.Linear(2)
        self.log_scale = lm.Linear(2)

    def __call__(self, inputs):
        h = self.body(inputs["x"])
        return {"mean": self.mean(h), "scale": tf.exp(self.log_scale(h)), "argmax": tf.argmax(self.mean(h), -1, output_type=tf.int32)}


def _cases():
    rng = np.random.default_rng(0)
    lm.set_seed(0)
    transformer = lm.models.Transformer(vocab_size=50, num_classes=3, model_dim=16, num_heads=2, num_layers=1, max_len=16, dropout=0.0)
    ids = rng.integers(0, 50, (6, 12)).astype(np.int32)
    regressor = lm.models.MLP([16], 1)
    features = rng.normal(size=(6, 5)).astype(np.float32)
    two = TwoInputs()
    images = rng.random((6, 6, 6, 2)).astype(np.float32)
    gauss = MeanAndScale()
    x = rng.normal(size=(6, 4)).astype(np.float32)
    return {
        "transformer": (transformer, [tf.TensorSpec([None, 12], tf.int32, name="token_ids")], ids,
                        lambda s: transformer(tf.constant(s), training=False).numpy(), ["output_0"]),
        "regressor": (regressor, [tf.TensorSpec([None, 5], tf.float32)], features,
                      lambda s: regressor(tf.constant(s), training=False).numpy(), ["output_0"]),
        "two_inputs": (two, [tf.TensorSpec([None, 6, 6, 2], tf.float32, name="image"), tf.TensorSpec([None, 5], tf.float32, name="features")],
                       [images, features], lambda s: two(tf.constant(s[0]), tf.constant(s[1])).numpy(), ["output_0"]),
        "dict_output": (gauss, {"x": tf.TensorSpec([None, 4], tf.float32)}, {"x": x},
                        lambda s: {k: v.numpy() for k, v in gauss({"x": tf.constant(s["x"])}).items()}, ["mean", "scale", "argmax"]),
    }


@pytest.fixture(scope="module")
def cases():
    return _cases()


def _feed_of(sample, input_names):
    if isinstance(sample, dict):
        return sample
    values = sample if isinstance(sample, list) else [sample]
    return dict(zip(input_names, values))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["transformer", "regressor", "two_inputs", "dict_output"])
def test_module_export_matches_the_live_module(cases, kind, fmt, tmp_path, capsys):
    model, signature, sample, live, outputs = cases[kind]
    path = EXPORT[fmt](model, str(tmp_path / kind), input_signature=signature, sample=sample)
    printed = capsys.readouterr().out
    assert printed.startswith(fmt) and "verified on 6 examples: max |difference| " in printed
    meta = json.load(open(os.path.join(path, METADATA_NAME)))
    assert meta["kind"] == "module" and meta["format"] == fmt
    assert sorted(meta["signature"]["outputs"]) == sorted(outputs)
    loaded = lm.export.load(path)
    names = loaded.input_names
    expected_names = list(signature) if isinstance(signature, dict) else [s.name or f"input_{i}" for i, s in enumerate(signature)]
    assert names == meta["input_names"] == expected_names  # call order, not alphabetical
    got = loaded(**_feed_of(sample, names))
    ref = live(sample)
    ref = ref if isinstance(ref, dict) else {"output_0": ref}
    assert sorted(got) == sorted(ref)
    for key, value in ref.items():
        assert got[key].shape == value.shape, key
        if np.issubdtype(value.dtype, np.floating):
            np.testing.assert_allclose(got[key], value, atol=TOLERANCE[fmt] * max(1.0, np.abs(value).max()), err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert meta["verification"]["max_difference"] <= TOLERANCE[fmt]


def test_signature_names_dtypes_and_any_batch(cases, tmp_path):
    model, signature, sample, live, _ = cases["two_inputs"]
    path = lm.export.saved_model(model, str(tmp_path / "sm"), input_signature=signature, verbose=False)
    fn = tf.saved_model.load(path).signatures["serving_default"]
    specs = fn.structured_input_signature[1]
    assert {k: (v.dtype, v.shape.as_list()) for k, v in specs.items()} == {
        "image": (tf.float32, [None, 6, 6, 2]), "features": (tf.float32, [None, 5])}
    one = fn(image=tf.constant(sample[0][:1]), features=tf.constant(sample[1][:1]))["output_0"].numpy()
    np.testing.assert_allclose(one, live([sample[0][:1], sample[1][:1]]), atol=1e-5)
    # the default self-check uses random inputs from the specs
    model2, signature2, _, _, _ = cases["transformer"]
    path = lm.export.saved_model(model2, str(tmp_path / "tr"), input_signature=signature2, verbose=False)
    assert json.load(open(os.path.join(path, METADATA_NAME)))["verification"]["examples"] == 8


def test_module_export_errors(cases, tmp_path):
    model, signature, sample, _, _ = cases["regressor"]
    with pytest.raises(ValueError, match="input_shape applies to the image-classifier export only"):
        lm.export.saved_model(model, str(tmp_path / "a"), (5,), input_signature=signature)
    with pytest.raises(ValueError, match="the batch axis must be None"):
        lm.export.saved_model(model, str(tmp_path / "a"), input_signature=[tf.TensorSpec([4, 5], tf.float32)])
    with pytest.raises(ValueError, match=r"sample 'input_0' has shape \(3, 7\), the signature takes \(None, 5\)"):
        lm.export.saved_model(model, str(tmp_path / "a"), input_signature=signature, sample=np.zeros((3, 7)))
    with pytest.raises(ValueError, match="int8 quantization is available for the image-classifier export"):
        lm.export.tflite(model, str(tmp_path / "a"), input_signature=signature, quantize="int8")
    with pytest.raises(TypeError, match="pass input_shape .* or input_signature"):
        lm.export.saved_model(model, str(tmp_path / "a"))
    with pytest.raises(ValueError, match="nested outputs are not supported"):
        lm.export.saved_model(lambda x: {"a": (x, x)}, str(tmp_path / "a"), input_signature=signature)
    assert not os.path.exists(tmp_path / "a")

    class Wrong(lm.Module):
        """Traced differently from eagerly: the export cannot match the live module."""

        def __call__(self, x):
            return x * (2.0 if tf.executing_eagerly() else 3.0)

    with pytest.raises(ExportError, match="differs from the original module"):
        lm.export.saved_model(Wrong(), str(tmp_path / "w"), input_signature=signature, verbose=False)
    assert not os.path.exists(tmp_path / "w")


def test_predict_refuses_a_module_export_with_a_clear_message(cases, tmp_path):
    model, signature, sample, _, _ = cases["transformer"]
    path = lm.export.saved_model(model, str(tmp_path / "tr"), input_signature=signature, sample=sample, verbose=False)
    with pytest.raises(ValueError, match=r"exports a module with inputs token_ids int32 \[None, 12\], not an image classifier; .*lamina.export.load"):
        lm.export.load_predictor(path)
