"""`lamina predict` on image files, from a run directory and from every export format."""

import contextlib
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import lamina as lm
from conftest import train_run
from lamina.cli import main
from lamina.export.predict import collect_images, load_image, load_predictor
from lamina.export.saved_model import METADATA_NAME


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def probs_of(model, ds, raw):
    return tf.nn.softmax(model(ds.normalize(raw), training=False)).numpy()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    run_dir = str(root / "run")
    model, ds = train_run(run_dir, steps=100, class_prefix="digit")
    x, y = ds.arrays("test")
    images = root / "images"
    images.mkdir()
    pixels = []
    for i in range(5):
        p = np.round(x[i, ..., 0].astype(np.float64) / 16 * 255).astype(np.uint8)
        Image.fromarray(p, "L").save(images / f"d{i}.png")
        pixels.append(p)
    with contextlib.redirect_stdout(io.StringIO()):
        exports = {fmt: lm.export.export_run(run_dir, fmt) for fmt in ("savedmodel", "tflite", "onnx")
                   if fmt != "onnx" or _has_onnx()}
    return {"run": run_dir, "model": model, "ds": ds, "images": images, "pixels": pixels, "exports": exports, "root": root}


def _has_onnx():
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError:
        return False
    return True


def test_predict_run_dir_table(setup):
    model, ds = setup["model"], setup["ds"]
    files = [str(setup["images"] / "d0.png"), str(setup["images"] / "d1.png")]
    rc, out, err = run_cli(["predict", setup["run"], *files, "--top-k", "2"])
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["image", "top-1", "top-2"] and len(lines) == 3
    raw = np.stack(setup["pixels"][:2])[..., None].astype(np.float32) / 255 * 16  # the documented pixel rule
    probs = probs_of(model, ds, raw)
    for line, f, p in zip(lines[1:], files, probs):
        best = int(np.argmax(p))
        assert line.startswith(f) and f"digit{best} ({p[best]:.2%})" in line


def test_predict_json_same_for_every_format(setup):
    folder = str(setup["images"])
    results = {}
    for name, path in [("run", setup["run"])] + sorted(setup["exports"].items()):
        rc, out, err = run_cli(["predict", path, folder, "--json", "--top-k", "10", "--batch-size", "2"])
        assert rc == 0, f"{name}: {err}"
        rows = [json.loads(line) for line in out.strip().splitlines()]
        assert [os.path.basename(r["image"]) for r in rows] == [f"d{i}.png" for i in range(5)]
        results[name] = np.array([[p["probability"] for p in sorted(r["predictions"], key=lambda p: p["class_id"])] for r in rows])
        assert all(r["predictions"][0]["class_name"].startswith("digit") for r in rows)
    tolerance = {"savedmodel": 1e-5, "tflite": 1e-4, "onnx": 1e-4}
    for name, probs in results.items():
        if name != "run":
            np.testing.assert_allclose(probs, results["run"], atol=tolerance[name], err_msg=name)
    assert "onnx" in results or not _has_onnx()


def test_rgb_large_image_is_converted_and_resized(setup):
    rgb = np.repeat(np.kron(setup["pixels"][0], np.ones((4, 4), np.uint8))[..., None], 3, axis=-1)  # 32x32 RGB
    path = setup["root"] / "big.jpg"
    Image.fromarray(rgb, "RGB").save(path, quality=95)
    rc, out, err = run_cli(["predict", setup["run"], str(path), "--top-k", "1"])
    assert rc == 0, err
    assert "big.jpg: converted RGB to grayscale; resized 32x32 to 8x8" in err
    raw, notes = load_image(str(path), [8, 8, 1], 16.0)
    assert raw.shape == (8, 8, 1) and raw.dtype == np.float32 and 0 <= raw.min() and raw.max() <= 16.0
    assert notes == ["converted RGB to grayscale", "resized 32x32 to 8x8"]
    # Block-averaging back down recovers the original digit closely.
    np.testing.assert_allclose(raw[..., 0], setup["pixels"][0] / 255 * 16, atol=1.0)


def test_image_formats_and_channel_conversions(setup, tmp_path):
    gray = setup["pixels"][1]
    expected = gray.astype(np.float32) / 255 * 16
    Image.fromarray(gray, "L").save(tmp_path / "a.bmp")
    Image.fromarray(gray, "L").save(tmp_path / "b.gif")
    Image.fromarray(np.dstack([gray, np.full_like(gray, 255)]), "LA").save(tmp_path / "c.png")
    for name in ("a.bmp", "b.gif", "c.png"):  # GIF decodes as RGB: luma weights round slightly
        raw, notes = load_image(str(tmp_path / name), [8, 8, 1], 16.0)
        np.testing.assert_allclose(raw[..., 0], expected, atol=1e-2 if name == "b.gif" else 1e-5, err_msg=name)
    assert load_image(str(tmp_path / "c.png"), [8, 8, 1], 16.0)[1] == ["dropped the alpha channel"]
    raw, notes = load_image(str(tmp_path / "a.bmp"), [8, 8, 3], 255.0)  # grayscale -> RGB model
    assert raw.shape == (8, 8, 3) and notes == ["converted grayscale to RGB"]
    np.testing.assert_allclose(raw[..., 2], gray, atol=1e-4)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8), "RGB").save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"rgb\.png: image has 3 channels, the model expects 2; cannot convert"):
        load_image(str(tmp_path / "rgb.png"), [8, 8, 2], 1.0)
    with pytest.raises(ValueError, match=r"input shape \(height, width, channels\), this one takes \(64,\)"):
        load_image(str(tmp_path / "rgb.png"), [64], 1.0)
    assert collect_images([str(tmp_path)]) == sorted(str(tmp_path / n) for n in ("a.bmp", "b.gif", "c.png", "rgb.png"))


def test_bad_inputs_are_one_line_errors(setup, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    rc, out, err = run_cli(["predict", setup["run"], str(bad)])
    assert rc == 2 and out == ""
    assert err.startswith("lamina: error: ") and str(bad) in err and "cannot read image" in err and err.count("\n") == 1
    rc, _, err = run_cli(["predict", str(tmp_path / "no_run"), str(bad)])
    assert rc == 2 and "no_run does not exist" in err
    rc, _, err = run_cli(["predict", setup["run"], str(tmp_path / "missing.png")])
    assert rc == 2 and "missing.png does not exist" in err
    (tmp_path / "empty").mkdir()
    rc, _, err = run_cli(["predict", setup["run"], str(tmp_path / "empty")])
    assert rc == 2 and "has no images" in err
    rc, _, err = run_cli(["predict", str(tmp_path), str(bad)])
    assert rc == 2 and "neither a run directory" in err
    rc, _, err = run_cli(["predict", setup["run"], str(bad), "--top-k", "0"])
    assert rc == 2 and "--top-k must be a positive integer" in err
    rc, _, err = run_cli(["predict", setup["run"]])
    assert rc == 2


def test_top_k_is_capped_and_plain_saved_model_works(setup, tmp_path):
    rc, out, _ = run_cli(["predict", setup["run"], str(setup["images"] / "d2.png"), "--top-k", "50", "--json"])
    assert rc == 0 and len(json.loads(out)["predictions"]) == 10
    # A SavedModel without lamina_export.json: shape from the signature, range 0..255 assumed (noted).
    plain = tmp_path / "plain"
    import shutil

    shutil.copytree(setup["exports"]["savedmodel"], plain)
    os.remove(plain / METADATA_NAME)
    predictor = load_predictor(str(plain))
    assert predictor.input_shape == [8, 8, 1] and predictor.raw_max == 255.0 and predictor.class_names[0] == "digit0"
    assert "assuming raw pixel range 0..255" in predictor.notes[0]


def test_a_recorded_resize_and_centre_crop_is_applied(tmp_path):
    """Pretrained weights record `resize` (the shorter side) and `crop`; predict applies them before the model."""
    from PIL import Image

    from lamina.export.predict import load_image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(16, 24, 3), dtype=np.uint8)  # H=16, W=24
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    raw, notes = load_image(str(tmp_path / "wide.png"), [8, 8, 3], 255.0, {"resize": 12, "crop": 8})
    # by hand: shorter side 16 -> 12 (so 24 -> 18), then the centred 8x8
    resized = tf.image.resize(pixels.astype(np.float32), (12, 18), method="bilinear", antialias=True).numpy()
    expected = np.clip(resized, 0, 255)[2:10, 5:13]
    np.testing.assert_allclose(raw, expected, atol=1e-4)
    assert notes == ["resized 24x16 to 18x12 (shorter side 12) and centre-cropped 8x8 (the weights' preprocessing)"]
    from lamina.export.saved_model import normalize_preprocessing

    with pytest.raises(ValueError, match="crop 20 is larger than resize 12"):
        normalize_preprocessing({"scale": 1, "mean": [0], "std": [1], "resize": 12, "crop": 20}, 3)
    with pytest.raises(ValueError, match="interpolation must be"):
        normalize_preprocessing({"scale": 1, "mean": [0], "std": [1], "interpolation": "lanczos9"}, 3)
