"""``lamina train --model gpt | unet | mobilenet_v2`` on the data each fits: a text file, a segmentation
folder, images; what each run records, and ``lamina export`` (TFLite for MobileNetV2; Python-only for GPT)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from lamina.cli import main


def _run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    import pydoc_data.topics

    path = tmp_path_factory.mktemp("text") / "help.txt"
    path.write_text("".join(pydoc_data.topics.topics.values())[:12000])
    return str(path)


def test_text_source_windows_and_codec(text_file):
    ds = lm.data.load(text_file + "?tokens=char&window=24", validation_split=0.1)
    assert ds.task == "language_model" and ds.input_shape == (24,) and ds.target_shape == (24,)
    x, y = ds.arrays("train")
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # targets are the next tokens
    np.testing.assert_array_equal(x[1:, 0], y[:-1, -1])  # windows follow each other
    codec = lm.data.TextCodec("char", ds.info()["vocabulary"])
    text = open(text_file).read()
    assert codec.decode(np.concatenate([x[0], y[0, -1:]])) == text[:25]
    n = len(text)  # 10 % test, then 10 % of the rest for validation: contiguous parts, windows of 24 + 1
    parts = (int(int(n * 0.9) * 0.9), int(n * 0.9) - int(int(n * 0.9) * 0.9), n - int(n * 0.9))
    assert ds.splits == dict(zip(("train", "validation", "test"), [(p - 1) // 24 for p in parts]))
    assert ds.num_classes == len(set(text))
    bx, by = next(iter(ds.batches("train", 8, shuffle=True, seed=1, epoch=2)))
    assert bx.dtype == tf.int32 and by.dtype == tf.int32 and bx.shape == (8, 24)
    nx, _ = next(iter(ds.batches("train", 8, shuffle=True, seed=1, epoch=2)))
    np.testing.assert_array_equal(bx, nx)  # the order is a function of (seed, epoch)
    byte = lm.data.load(text_file)
    assert byte.num_classes == 256 and byte.input_shape == (128,)
    assert lm.data.TextCodec().decode(lm.data.TextCodec().encode("é ok")) == "é ok"


def test_train_gpt_on_a_text_file(tmp_path, text_file, capsys):
    run = str(tmp_path / "gpt")
    code, out, err = _run(["train", "--model", "gpt", "--data", text_file + "?window=32", "--epochs", "1",
                           "--max-steps", "2", "--batch-size", "16", "--run-dir", run, "--quiet"], capsys)
    assert code == 0, err
    record = json.load(open(os.path.join(run, "config.json")))
    assert record["model_kwargs"] == {"max_len": 32} and record["num_classes"] == 256
    results = json.load(open(os.path.join(run, "results.json")))
    assert results["test_perplexity"] == pytest.approx(np.exp(results["test_loss"]), rel=1e-6)
    assert "confusion_matrix" not in results and not os.path.exists(os.path.join(run, "confusion.png"))
    model, _ = lm.train.run.load_run(run, "latest")
    assert isinstance(model, lm.models.GPT) and model.max_len == 32
    assert model.generate(np.array([72, 105]), 5).shape == (7,)
    code, out, err = _run(["export", run, "--format", "savedmodel"], capsys)
    assert code == 2 and "--model gpt (language model) is exported from Python" in err


def test_train_unet_on_a_segmentation_folder(tmp_path, capsys):
    root = tmp_path / "shapes"
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 4)):
        for d in ("images", "masks"):
            (root / split / d).mkdir(parents=True)
        for i in range(n):
            mask = np.zeros((16, 16, 1), np.uint8)  # the default UNet (depth 4) needs sides divisible by 16
            mask[rng.integers(0, 8):, rng.integers(0, 8):] = 1 + i % 2
            image = (mask * 100 + rng.integers(0, 30, (16, 16, 3))).astype(np.uint8)
            tf.io.write_file(str(root / split / "images" / f"{i}.png"), tf.io.encode_png(image))
            tf.io.write_file(str(root / split / "masks" / f"{i}.png"), tf.io.encode_png(mask))
    (root / "classes.txt").write_text("background\nsquare\nother\n")
    ds = lm.data.load(str(root))
    assert ds.task == "segmentation" and ds.input_shape == (16, 16, 3) and ds.target_shape == (16, 16)
    assert ds.class_names == ["background", "square", "other"] and ds.splits == {"train": 8, "test": 4}
    run = str(tmp_path / "unet")
    code, out, err = _run(["train", "--model", "unet", "--data", str(root), "--epochs", "1", "--batch-size", "4",
                           "--val-split", "0", "--run-dir", run, "--quiet"], capsys)
    assert code == 0, err
    results = json.load(open(os.path.join(run, "results.json")))
    m = np.asarray(results["confusion_matrix"], np.float64)
    assert m.sum() == 4 * 16 * 16  # one count per test pixel
    iou = np.diag(m) / (m.sum(0) + m.sum(1) - np.diag(m))
    assert results["test_miou"] == pytest.approx(float(np.nanmean(iou)))
    assert set(results["test_iou"]) == {"background", "square", "other"}
    code, out, err = _run(["train", "--model", "unet", "--data", str(root), "--image-size", "12,12",
                           "--run-dir", str(tmp_path / "odd"), "--quiet"], capsys)
    assert code == 2 and "must be divisible by 2^depth = 16, got 12" in err


def test_train_mobilenet_v2_and_export_tflite(tmp_path, capsys):
    from lamina.export.tflite import TFLiteRunner

    run = str(tmp_path / "mnv2")
    code, out, err = _run(["train", "--model", "mobilenet_v2", "--epochs", "1",
                           "--max-steps", "2", "--batch-size", "16", "--run-dir", run, "--quiet"], capsys)
    assert code == 0, err
    code, out, err = _run(["export", run, "--format", "tflite"], capsys)
    assert code == 0, err
    assert "tflite: verified on" in out  # the export compared the .tflite with the model (1e-4)
    model, record = lm.train.run.load_run(run, "best")
    ds = lm.data.load("digits")
    x = ds.arrays("test", limit=8)[0].astype(np.float32)
    got = TFLiteRunner(os.path.join(run, "export", "tflite", "model.tflite"))(x)["logits"]
    np.testing.assert_allclose(got, model(ds.normalize(x)).numpy(), atol=1e-4)
