"""SavedModel / TFLite / ONNX export of a small trained model: same answers, self-checks, CLI."""

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from conftest import train_run
from lamina.cli import main
from lamina.export.saved_model import METADATA_NAME, ExportError, normalize_preprocessing
from lamina.export.tflite import TFLiteRunner


def reference(model, ds, raw):
    logits = model(ds.normalize(raw), training=False)
    return {"logits": logits.numpy(), "probabilities": tf.nn.softmax(logits).numpy(),
            "class_id": tf.argmax(logits, -1).numpy()}


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("export") / "run")
    model, ds = train_run(run_dir, steps=120)
    x, y = ds.arrays("test")
    assert np.mean(reference(model, ds, x)["class_id"] == y) > 0.8  # really trained
    return run_dir, model, ds


@pytest.fixture(scope="module")
def savedmodel_dir(trained):
    run_dir = trained[0]
    rc, out, err = run_cli(["export", run_dir, "--format", "savedmodel"])
    assert rc == 0, err
    assert "savedmodel: verified on 256 examples: max |difference|" in out
    # TF Serving's layout: <model base>/<integer version>/saved_model.pb, the first export is version 1
    assert os.listdir(os.path.join(run_dir, "export", "savedmodel")) == ["1"]
    return os.path.join(run_dir, "export", "savedmodel", "1"), out


def test_savedmodel_signature_and_outputs(trained, savedmodel_dir):
    run_dir, model, ds = trained
    path, _ = savedmodel_dir
    loaded = tf.saved_model.load(path)
    fn = loaded.signatures["serving_default"]
    spec = fn.structured_input_signature[1]["image"]
    assert spec.shape.as_list() == [None, 8, 8, 1] and spec.dtype == tf.float32
    assert set(fn.structured_outputs) == {"logits", "probabilities", "class_id"}
    assert fn.structured_outputs["class_id"].dtype == tf.int64
    x, _ = ds.arrays("test")
    for batch in (x[:1], x[:7], x[:300]):  # batch-polymorphic
        out = fn(image=tf.constant(batch, tf.float32))
        ref = reference(model, ds, batch)
        np.testing.assert_allclose(out["logits"].numpy(), ref["logits"], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(out["probabilities"].numpy(), ref["probabilities"], atol=1e-5)
        np.testing.assert_array_equal(out["class_id"].numpy(), ref["class_id"])
    assert [c.decode() for c in loaded.class_names.numpy()] == ds.class_names
    meta = json.load(open(os.path.join(path, METADATA_NAME)))
    assert meta["format"] == "savedmodel" and meta["input_shape"] == [8, 8, 1]
    assert meta["preprocessing"]["raw_max"] == pytest.approx(16.0)
    assert meta["source_run"] == os.path.abspath(run_dir)
    assert meta["verification"]["max_difference"] <= 1e-5 and meta["verification"]["examples"] == 256
    assert json.loads(loaded.metadata.numpy().decode())["input_shape"] == [8, 8, 1]
    assert not [d for d in os.listdir(os.path.dirname(path)) if d.startswith(".")]  # no temp folders left


def test_savedmodel_loads_in_a_process_without_lamina(trained, savedmodel_dir, tmp_path):
    _, model, ds = trained
    path, _ = savedmodel_dir
    x = ds.arrays("test")[0][:16].astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "lamina" or name.startswith("lamina."):
                    raise ImportError("lamina is blocked in this process")
        sys.meta_path.insert(0, Block())
        try:
            import lamina
            raise SystemExit("lamina was importable")
        except ImportError:
            pass
        import numpy as np, tensorflow as tf
        fn = tf.saved_model.load({path!r}).signatures["serving_default"]
        out = fn(image=tf.constant(np.load({str(tmp_path / 'x.npy')!r})))
        np.save({str(tmp_path / 'logits.npy')!r}, out["logits"].numpy())
        np.save({str(tmp_path / 'probs.npy')!r}, out["probabilities"].numpy())
        print("ok", "lamina" in sys.modules)
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    proc = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok False")
    ref = reference(model, ds, x)
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), ref["logits"], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "probs.npy"), ref["probabilities"], atol=1e-5)


def test_tflite_float_matches(trained, tmp_path):
    run_dir, model, ds = trained
    x, _ = ds.arrays("test")
    out_dir = str(tmp_path / "tfl")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        path = lm.export.tflite(model, out_dir, ds.input_shape, ds.preprocessing, ds.class_names, sample=x[:64])
    assert path == os.path.normpath(out_dir) and "tflite: verified on 64 examples" in buf.getvalue()
    assert sorted(os.listdir(path)) == [METADATA_NAME, "model.tflite"]
    runner = TFLiteRunner(os.path.join(path, "model.tflite"))
    for batch in (x[:1], x[:5], x[:100]):  # resized per call
        out = runner(batch.astype(np.float32))
        ref = reference(model, ds, batch)
        np.testing.assert_allclose(out["logits"], ref["logits"], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(out["probabilities"], ref["probabilities"], atol=1e-4)
        np.testing.assert_array_equal(out["class_id"], ref["class_id"])
    meta = json.load(open(os.path.join(path, METADATA_NAME)))
    assert meta["verification"]["max_difference"] <= 1e-4 and meta["quantize"] is None


def test_tflite_quantized_cli(trained):
    run_dir, model, ds = trained
    rc, out, err = run_cli(["export", run_dir, "--format", "tflite", "--quantize", "float16"])
    assert rc == 0, err
    meta16 = json.load(open(os.path.join(run_dir, "export", "tflite-float16", METADATA_NAME)))
    assert meta16["quantize"] == "float16" and meta16["verification"]["max_difference"] <= 5e-2
    assert "tflite (float16): test accuracy" in out

    rc, out, err = run_cli(["export", run_dir, "--format", "tflite", "--quantize", "int8"])
    assert rc == 0, err
    path = os.path.join(run_dir, "export", "tflite-int8")
    meta8 = json.load(open(os.path.join(path, METADATA_NAME)))
    acc = meta8["test_accuracy"]
    assert acc["examples"] == 360 and acc["exported"] >= acc["original"] - 0.05
    assert meta8["size_bytes"] < meta16["size_bytes"]
    x, y = ds.arrays("test")
    got = TFLiteRunner(os.path.join(path, "model.tflite"))(x.astype(np.float32))["class_id"]
    assert np.mean(got == y) == pytest.approx(acc["exported"])


def test_onnx_matches(trained):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    from lamina.export.onnx import ONNXRunner

    run_dir, model, ds = trained
    rc, out, err = run_cli(["export", run_dir, "--format", "onnx"])
    assert rc == 0, err
    assert "onnx (opset 17): verified on 256 examples" in out
    path = os.path.join(run_dir, "export", "onnx")
    runner = ONNXRunner(os.path.join(path, "model.onnx"))
    assert runner.input_name == "image" and set(runner.output_names) == {"logits", "probabilities", "class_id"}
    x, _ = ds.arrays("test")
    for batch in (x[:1], x[:33]):
        got = runner(batch.astype(np.float32))
        ref = reference(model, ds, batch)
        np.testing.assert_allclose(got["logits"], ref["logits"], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(got["probabilities"], ref["probabilities"], atol=1e-4)
        np.testing.assert_array_equal(got["class_id"], ref["class_id"])
    assert json.load(open(os.path.join(path, METADATA_NAME)))["opset"] == 17


def test_onnx_missing_packages_message(trained, tmp_path, monkeypatch):
    _, model, ds = trained
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(ExportError, match=r"^ONNX export needs tf2onnx and onnxruntime: pip install 'lamina\[onnx\]'$"):
        lm.export.onnx(model, str(tmp_path / "o"), ds.input_shape, ds.preprocessing)
    rc, _, err = run_cli(["export", trained[0], "--format", "onnx", "--output", str(tmp_path / "o")])
    assert rc == 2 and "pip install 'lamina[onnx]'" in err
    assert not os.path.exists(tmp_path / "o")


def test_mismatch_is_an_error_and_nothing_is_written(trained, tmp_path):
    _, model, ds = trained
    out_dir = tmp_path / "f16"
    with pytest.raises(ExportError, match=r"tflite \(float16\) output differs .* > tolerance 1e-09"):
        lm.export.tflite(model, str(out_dir), ds.input_shape, ds.preprocessing, quantize="float16",
                         tolerance=1e-9, verbose=False)
    assert list(tmp_path.iterdir()) == []  # no output, no temp folder

    # A failed re-export keeps the previous export intact.
    lm.export.saved_model(model, str(out_dir), ds.input_shape, ds.preprocessing, verbose=False)
    before = sorted(os.listdir(out_dir))
    with pytest.raises(ExportError):
        lm.export.tflite(model, str(out_dir), ds.input_shape, ds.preprocessing, quantize="float16",
                         tolerance=1e-9, verbose=False)
    assert sorted(os.listdir(out_dir)) == before and "saved_model.pb" in before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f16"]


def test_refuses_to_replace_a_foreign_folder(trained, tmp_path):
    _, model, ds = trained
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="exists and is not a lamina export"):
        lm.export.saved_model(model, str(tmp_path / "mine"), ds.input_shape, ds.preprocessing, verbose=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_bad_arguments(trained, tmp_path):
    run_dir, model, ds = trained
    rc, _, err = run_cli(["export", str(tmp_path / "nope"), "--format", "savedmodel"])
    assert rc == 2 and "does not exist" in err and err.count("\n") == 1
    rc, _, err = run_cli(["export", run_dir, "--format", "savedmodel", "--quantize", "int8"])
    assert rc == 2 and "--quantize applies to --format tflite only" in err
    rc, _, err = run_cli(["export", run_dir, "--format", "pt"])
    assert rc == 2 and "--format must be one of savedmodel, tflite, onnx" in err
    rc, _, err = run_cli(["export", run_dir])
    assert rc == 2 and "--format" in err
    with pytest.raises(ValueError, match=r"sample must have shape \(batch, 8, 8, 1\), got \(4, 8, 8\)"):
        lm.export.saved_model(model, str(tmp_path / "s"), ds.input_shape, ds.preprocessing, sample=np.zeros((4, 8, 8)))
    with pytest.raises(ValueError, match="3 class names for a model with 10 outputs"):
        lm.export.saved_model(model, str(tmp_path / "s"), ds.input_shape, ds.preprocessing, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="quantize must be one of float16, int8"):
        lm.export.tflite(model, str(tmp_path / "s"), ds.input_shape, quantize="int4")
    with pytest.raises(ValueError, match="int8 quantization needs representative_data"):
        lm.export.tflite(model, str(tmp_path / "s"), ds.input_shape, quantize="int8")
    assert not os.path.exists(tmp_path / "s")


def test_preprocessing_rule():
    p = normalize_preprocessing({"scale": 1 / 16, "mean": [0.0], "std": [1.0]}, 1)
    assert p["raw_max"] == pytest.approx(16.0)
    assert normalize_preprocessing({"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.2] * 3}, 3)["raw_max"] == pytest.approx(255.0)
    assert normalize_preprocessing({"scale": 1.0, "mean": [0], "std": [1], "raw_max": 16}, 1)["raw_max"] == 16.0
    assert normalize_preprocessing(None, 3) == {"scale": 1.0, "mean": [0.0], "std": [1.0], "raw_max": 1.0}
    with pytest.raises(ValueError, match="mean must hold 1 or 3"):
        normalize_preprocessing({"scale": 1.0, "mean": [0, 0], "std": [1]}, 3)
    with pytest.raises(ValueError, match="std must be positive"):
        normalize_preprocessing({"scale": 1.0, "mean": [0], "std": [0]}, 1)
    with pytest.raises(ValueError, match="'scale' is missing"):
        normalize_preprocessing({"mean": [0], "std": [1]}, 1)


def test_standardized_preprocessing_is_baked_in(tmp_path):
    """Per-channel mean/std (3 channels) go into the graph: raw pixels in, same outputs."""
    lm.set_seed(3)
    from lamina.layers.conv import Conv2D
    from lamina.layers.linear import Linear

    class Small(lm.Module):
        def __init__(self):
            super().__init__()
            self.conv = Conv2D(4, 3, strides=2)
            self.head = Linear(5)

        def __call__(self, x, training=False):
            h = tf.nn.relu(self.conv(x))
            return self.head(tf.reshape(h, [tf.shape(h)[0], -1]))

    model = Small()
    prep = {"scale": 1 / 255, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}
    x = np.random.RandomState(0).uniform(0, 255, (6, 12, 12, 3)).astype(np.float32)
    path = lm.export.saved_model(model, str(tmp_path / "sm"), (12, 12, 3), prep, list("abcde"), verbose=False)
    out = tf.saved_model.load(path).signatures["serving_default"](image=tf.constant(x))
    norm = (x / 255 - np.array(prep["mean"], np.float32)) / np.array(prep["std"], np.float32)
    np.testing.assert_allclose(out["logits"].numpy(), model(norm).numpy(), atol=1e-5, rtol=1e-5)
    assert json.load(open(os.path.join(path, METADATA_NAME)))["preprocessing"]["raw_max"] == pytest.approx(255.0)


def test_exports_work_when_keras_cannot_be_imported(tmp_path):
    """TF imports standalone keras if installed; with it blocked, every export path still works (no keras use)."""
    formats = ["savedmodel", "tflite", "int8"] + (["onnx"] if _has_onnx() else [])
    script = textwrap.dedent(f"""
        import importlib.abc, importlib.machinery, sys
        class _Loader(importlib.abc.Loader):
            def create_module(self, spec):
                raise ModuleNotFoundError(f"No module named {{spec.name!r}} (blocked)", name=spec.name)
            def exec_module(self, module):
                pass
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("keras", "tf_keras"):
                    return importlib.machinery.ModuleSpec(name, _Loader())
        sys.meta_path.insert(0, Block())
        import tensorflow as tf
        import lamina as lm
        from lamina.export.saved_model import random_sample
        from lamina.models.registry import create_model
        model = create_model("convnet", 10)
        model(tf.zeros((1, 8, 8, 1)))
        prep = {{"scale": 1 / 16, "mean": [0.0], "std": [1.0]}}
        root = {str(tmp_path)!r}
        for fmt in {formats!r}:
            if fmt == "savedmodel":
                lm.export.saved_model(model, root + "/sm", (8, 8, 1), prep, verbose=False)
            elif fmt == "tflite":
                lm.export.tflite(model, root + "/tfl", (8, 8, 1), prep, verbose=False)
            elif fmt == "int8":
                lm.export.tflite(model, root + "/int8", (8, 8, 1), prep, quantize="int8",
                                 representative_data=random_sample((8, 8, 1), 16.0, 20), verbose=False)
            else:
                lm.export.onnx(model, root + "/onnx", (8, 8, 1), prep, verbose=False)
        print("keras imported:", any(m.split(".")[0] in ("keras", "tf_keras") for m in sys.modules))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(lm.__file__))))
    proc = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "keras imported: False" in proc.stdout
    assert sorted(os.listdir(tmp_path)) == sorted({"savedmodel": "sm", "tflite": "tfl", "int8": "int8", "onnx": "onnx"}[f] for f in formats)


def _has_onnx():
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError:
        return False
    return True


def test_onnx_handles_tensordot_reshape_and_exact_gelu(tmp_path):
    """Two tf2onnx 1.17 gaps hit by transformer models: Erfc (exact GELU) and Reshape-after-tensordot."""
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    from lamina.export.onnx import ONNXRunner
    from lamina.layers.linear import Linear

    class Tokens(lm.Module):
        def __init__(self):
            super().__init__()
            self.proj = Linear(8, use_bias=False)  # as in attention projections
            self.head = Linear(3)

        def __call__(self, x, training=False):
            h = self.proj(x)  # (B, 5, 8) via tf.tensordot: MatMul then Reshape
            s = tf.shape(h)
            h = tf.reshape(h, tf.stack([s[0], s[1], 2, 4]))  # split "heads" right after it
            h = tf.nn.gelu(h, approximate=False)  # lowers to Erfc
            return self.head(tf.reshape(tf.reduce_mean(h, axis=1), [-1, 8]))

    lm.set_seed(7)
    model = Tokens()
    x = np.random.RandomState(1).uniform(-2, 2, (4, 5, 6)).astype(np.float32)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        path = lm.export.onnx(model, str(tmp_path / "o"), (5, 6), {"scale": 1.0, "mean": [0.0], "std": [1.0]}, sample=x)
    got = ONNXRunner(os.path.join(path, "model.onnx"))(x[:3])
    np.testing.assert_allclose(got["logits"], model(x[:3]).numpy(), atol=1e-4, rtol=1e-4)


def test_batchnorm_model_exports_match(tmp_path):
    """A ConvNet with BatchNorm (FusedBatchNormV3 with moving statistics at inference) in every format."""
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    from lamina.export.onnx import ONNXRunner

    lm.set_seed(3)
    model = lm.models.ConvNet(4, widths=(6,), hidden=None, batch_norm=True)
    x = np.random.RandomState(2).uniform(0, 1, (8, 8, 8, 1)).astype(np.float32)
    for _ in range(20):  # move the moving statistics away from 0 / 1
        model(x * 3.0 + 1.0, training=True)
    assert np.abs(model.blocks[0].norms[0].moving_mean.numpy()).max() > 0.2
    prep = {"scale": 1.0, "mean": [0.0], "std": [1.0]}
    want = model(x, training=False).numpy()
    with contextlib.redirect_stdout(io.StringIO()):
        sm = lm.export.saved_model(model, str(tmp_path / "sm"), (8, 8, 1), prep, sample=x)
        tl = lm.export.tflite(model, str(tmp_path / "tl"), (8, 8, 1), prep, sample=x)
        ox = lm.export.onnx(model, str(tmp_path / "ox"), (8, 8, 1), prep, sample=x)
    loaded = tf.saved_model.load(sm)
    np.testing.assert_allclose(loaded.signatures["serving_default"](tf.constant(x))["logits"].numpy(), want,
                               atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(TFLiteRunner(os.path.join(tl, "model.tflite"))(x)["logits"], want, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(ONNXRunner(os.path.join(ox, "model.onnx"))(x)["logits"], want, atol=1e-4, rtol=1e-4)
