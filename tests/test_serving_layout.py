"""TF Serving's layout (<base>/<version>/saved_model.pb), its signature as saved_model_cli shows it, LiteRT."""

import importlib
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import lamina as lm
from conftest import run_cli, train_run
from lamina.export.saved_model import METADATA_NAME

tfl = importlib.import_module("lamina.export.tflite")  # the module (lamina.export.tflite is the function)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    run_dir = str(root / "run")
    model, ds = train_run(run_dir, steps=30)
    x, _ = ds.arrays("test")
    image = root / "digit.png"
    Image.fromarray(np.round(x[0, ..., 0] / 16 * 255).astype(np.uint8), "L").save(image)
    return {"run": run_dir, "model": model, "ds": ds, "image": str(image), "root": root}


def serving_version_dir(base):
    """TF Serving's rule: children named by an integer are versions; the highest is served."""
    versions = [int(n) for n in os.listdir(base) if n.isdigit() and os.path.isdir(os.path.join(base, n))]
    if not versions:
        raise AssertionError(f"No versions of servable found under base path {base}")
    return os.path.join(base, str(max(versions)))


def test_versions_signature_and_loaders(run):
    run_dir = run["run"]
    base = os.path.join(run_dir, "export", "savedmodel")
    for expected, extra in ((1, []), (2, []), (7, ["--version", "7"]), (8, [])):
        rc, out, err = run_cli(["export", run_dir, "--format", "savedmodel", *extra])
        assert rc == 0, err
        assert f"exported savedmodel to {os.path.join(base, str(expected))}" in out
    assert sorted(os.listdir(base)) == ["1", "2", "7", "8"]  # no temporary folder left
    served = serving_version_dir(base)
    assert served == os.path.join(base, "8") and os.path.isfile(os.path.join(served, "saved_model.pb"))
    assert lm.export.latest_version(base) == 8 and lm.export.next_version(base) == 9

    # the signature as `saved_model_cli show --dir ... --tag_set serve --signature_def serving_default` reads it
    from tensorflow.python.tools import saved_model_utils

    meta_graph = saved_model_utils.get_meta_graph_def(served, "serve")
    sig = meta_graph.signature_def["serving_default"]
    assert sig.method_name == "tensorflow/serving/predict"
    (name, image), = sig.inputs.items()
    assert name == "image" and image.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in image.tensor_shape.dim] == [-1, 8, 8, 1]
    assert {k: v.dtype for k, v in sig.outputs.items()} == {
        "logits": tf.float32.as_datatype_enum, "probabilities": tf.float32.as_datatype_enum,
        "class_id": tf.int64.as_datatype_enum}
    assert [d.size for d in sig.outputs["probabilities"].tensor_shape.dim] == [-1, 10]

    # the loaders take the base folder (highest version), a version folder, and an old unversioned export
    x = run["ds"].arrays("test")[0][:4]
    want = tf.nn.softmax(run["model"](run["ds"].normalize(x), training=False)).numpy()
    old = os.path.join(run["root"], "old-layout")
    shutil.copytree(os.path.join(base, "2"), old)
    for path, source in ((base, served), (os.path.join(base, "1"), os.path.join(base, "1")), (old, old)):
        predictor = lm.export.load_predictor(path)
        assert predictor.source == source
        np.testing.assert_allclose(predictor.probabilities(x), want, atol=1e-5)
        np.testing.assert_allclose(lm.export.load(path)(x)["probabilities"], want, atol=1e-5)
    rc, out, err = run_cli(["predict", base, run["image"], "--json"])
    assert rc == 0, err
    top = json.loads(out)["predictions"][0]
    image_raw = np.asarray(Image.open(run["image"]), np.float32)[None, ..., None] / 255 * 16
    assert top["class_id"] == int(np.argmax(lm.export.load(served)(image_raw)["probabilities"][0]))

    # REST-shaped request (row format, as in docs/export.md) -> the signature -> REST-shaped response
    request = {"signature_name": "serving_default", "instances": [{"image": x[0].tolist()}, {"image": x[1].tolist()}]}
    fn = tf.saved_model.load(served).signatures[request["signature_name"]]
    batch = np.array([inst["image"] for inst in request["instances"]], np.float32)
    out = {k: v.numpy() for k, v in fn(image=tf.constant(batch)).items()}
    response = {"predictions": [{k: out[k][i].tolist() for k in out} for i in range(len(batch))]}
    assert set(response["predictions"][0]) == {"logits", "probabilities", "class_id"}
    np.testing.assert_allclose(response["predictions"][1]["probabilities"], want[1], atol=1e-5)


def test_version_errors(run, tmp_path):
    rc, _, err = run_cli(["export", run["run"], "--format", "tflite", "--version", "3"])
    assert rc == 2 and err.strip() == "lamina: error: lamina export: --version applies to --format savedmodel only (TF Serving's layout), got --format tflite"
    rc, _, err = run_cli(["export", run["run"], "--format", "savedmodel", "--version", "0"])
    assert rc == 2 and "--version must be a positive integer, got '0'" in err
    with pytest.raises(ValueError, match="version must be a positive integer or 'next'"):
        lm.export.saved_model(run["model"], str(tmp_path / "m"), (8, 8, 1), version=-2)


def test_litert_is_used_and_matches_tf_lite(run, tmp_path, monkeypatch):
    path = lm.export.tflite(run["model"], str(tmp_path / "t"), (8, 8, 1), run["ds"].preprocessing, verbose=False)
    file = os.path.join(path, "model.tflite")
    x = run["ds"].arrays("test")[0][:5]
    litert = tfl.TFLiteRunner(file)
    pytest.importorskip("ai_edge_litert")
    assert litert.runtime == "litert" and type(litert.interpreter).__module__.startswith("ai_edge_litert")
    assert json.load(open(os.path.join(path, METADATA_NAME)))["runtime"] == "litert"
    # without LiteRT: tf.lite's interpreter, and its deprecation warning is not shown
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallback = tfl.TFLiteRunner(file)
    assert fallback.runtime == "tf.lite"
    assert not [w for w in caught if "deprecated" in str(w.message)]
    a, b = litert(x), fallback(image=x)
    for key in ("logits", "probabilities", "class_id"):
        np.testing.assert_allclose(a[key], b[key], atol=1e-6, err_msg=key)


def test_stderr_filter_keeps_everything_but_the_xnnpack_line(capfd):
    with tfl._without_stderr_lines([tfl._XNNPACK_INFO]):
        os.write(2, (tfl._XNNPACK_INFO + "\nERROR: a real problem\n").encode())
        print("python warning", file=sys.stderr)
    err = capfd.readouterr().err
    assert "XNNPACK" not in err and "ERROR: a real problem" in err and "python warning" in err


def test_export_and_predict_print_nothing_on_stderr(run):
    """The user's commands, each in a fresh process (TFLite logs its XNNPACK line once per process)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(lm.__file__)), os.environ.get("PYTHONPATH", "")]))
    out_dir = os.path.join(run["root"], "tfl")
    export = subprocess.run([sys.executable, "-m", "lamina", "export", run["run"], "--format", "tflite", "--output", out_dir],
                            env=env, capture_output=True, text=True, timeout=300)
    assert export.returncode == 0, export.stderr
    assert "tflite: verified on 256 examples" in export.stdout
    assert export.stderr == ""
    predict = subprocess.run([sys.executable, "-m", "lamina", "predict", out_dir, run["image"]],
                             env=env, capture_output=True, text=True, timeout=300)
    assert predict.returncode == 0, predict.stderr
    assert predict.stdout.startswith("image") and predict.stderr == ""
