"""A catalogue of bad command lines and bad files: each is one clear line and exit code 2.

Every case checks: exit code 2, exactly one line on standard error, starting with
``lamina: error:``, containing the expected text, no traceback. A few run through
``python -m lamina`` (the real console entry point); the rest call
``lamina.cli.main`` in-process. ``docs/errors.md`` lists them with cause and fix.
"""

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lamina.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------ the files
def _npz(path, **override):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.random((40, 6, 6), dtype=np.float32), y_train=np.arange(40) % 4,
                  x_test=rng.random((8, 6, 6), dtype=np.float32), y_test=np.arange(8) % 4)
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return str(path)


def _png(path, value=128):
    from PIL import Image

    Image.fromarray(np.full((6, 6), value, np.uint8)).save(path)


def _flip(path, offset=None):
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2 if offset is None else offset] ^= 0xFF
    open(path, "wb").write(bytes(data))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A small real run directory (3 steps of the default ConvNet on digits)."""
    run = str(tmp_path_factory.mktemp("trained") / "run")
    assert main(["train", "--epochs", "1", "--max-steps", "3", "--batch-size", "32", "--run-dir", run, "--quiet"]) == 0
    return run


def _copy_run(trained_run, tmp_path):
    dst = str(tmp_path / "run")
    shutil.copytree(trained_run, dst)
    return dst


def _only_checkpoint(run):
    folder = os.path.join(run, "checkpoints")
    index = [n for n in os.listdir(folder) if n.endswith(".index")]
    assert len(index) == 1
    return os.path.join(folder, index[0][: -len(".index")])


# Each setup returns the command line (a list) for the files it made under tmp.
def s_config(text, suffix):
    def make(tmp, run):
        path = tmp / f"config{suffix}"
        path.write_text(text)
        return ["train", "--config", str(path)]

    return make


def s_data(make_file):
    def make(tmp, run):
        return ["train", "--data", make_file(tmp), "--run-dir", str(tmp / "r"), "--quiet"]

    return make


def _pickle_file(tmp):
    path = tmp / "raw.npz"
    with open(path, "wb") as f:
        pickle.dump({"x_train": [1, 2, 3]}, f)  # the test writes a pickle; lamina must refuse it
    return str(path)


def _image_folder(tmp, corrupt):
    root = tmp / "images"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            _png(root / cls / f"{i}.png", 40 * i)
    if corrupt:
        (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return str(root)


def _text(tmp, content):
    path = tmp / "book.txt"
    path.write_text(content)
    return str(path)


def _segmentation_without_mask(tmp):
    root = tmp / "seg"
    for d in ("images", "masks"):
        (root / d).mkdir(parents=True)
    for name in ("a", "b"):
        _png(root / "images" / f"{name}.png")
    _png(root / "masks" / "a.png", 1)
    return str(root)


def _foreign_run(tmp, run):
    d = tmp / "foreign"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model": "mlp", "model_kwargs": {}, "num_classes": 10,
                                               "input_shape": [8, 8, 1]}))
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "ckpt-5.index").write_bytes(b"")  # it trained: something to protect
    return ["train", "--run-dir", str(d), "--quiet"]


def _checkpoints_without_config(tmp, run):
    (tmp / "orphan" / "checkpoints").mkdir(parents=True)
    return ["train", "--run-dir", str(tmp / "orphan"), "--quiet"]


def _run_dir_is_a_file(tmp, run):
    (tmp / "a_file").write_text("x")
    return ["train", "--run-dir", str(tmp / "a_file"), "--quiet"]


def _corrupt_latest(tmp, run):
    run = _copy_run(run, tmp)
    _flip(_only_checkpoint(run) + ".data-00000-of-00001", offset=1000)  # inside the model's first weights
    return run


def _truncated_index(tmp, run):
    run = _copy_run(run, tmp)
    with open(_only_checkpoint(run) + ".index", "r+b") as f:
        f.truncate(20)
    return run


def _no_checkpoint_run(tmp, run):
    d = tmp / "fresh"
    d.mkdir()
    shutil.copy(os.path.join(run, "config.json"), d / "config.json")
    return str(d)


_HELD = []  # locks held by a "run dir in use" case until the end of the session


def _resume_other_batch(tmp, run):
    return ["train", "--run-dir", _copy_run(run, tmp), "--epochs", "1", "--max-steps", "3", "--batch-size", "64",
            "--quiet"]


def _run_in_use(tmp, run):
    from lamina.train.lock import RunLock

    run = _copy_run(run, tmp)
    _HELD.append(RunLock(run).acquire())  # as another process would
    return ["train", "--run-dir", run, "--epochs", "1", "--max-steps", "3", "--batch-size", "32", "--quiet"]


def _config_link_outside(tmp, run):
    run = _copy_run(run, tmp)
    shutil.move(os.path.join(run, "config.json"), tmp / "elsewhere.json")
    os.symlink(tmp / "elsewhere.json", os.path.join(run, "config.json"))
    return ["evaluate", run]


def _export_file_outside(tmp, run):
    (tmp / "secret.txt").write_text("secret")
    folder = tmp / "a" / "export"
    folder.mkdir(parents=True)
    (folder / "lamina_export.json").write_text(json.dumps({
        "format": "tflite", "file": "../../secret.txt", "input_shape": [6, 6, 1], "class_names": ["a", "b"],
        "preprocessing": {"scale": 1.0, "mean": [0.0], "std": [1.0]}}))
    _png(tmp / "x.png")
    return ["predict", str(folder), str(tmp / "x.png")]


def _fifo_data(tmp, run):
    os.mkfifo(tmp / "pipe.npz")
    return ["train", "--data", str(tmp / "pipe.npz"), "--run-dir", str(tmp / "r"), "--quiet"]


CASES = [
    # command line
    ("unknown flag", lambda t, r: ["train", "--epochz", "3"], "unrecognized arguments: --epochz"),
    ("unknown command", lambda t, r: ["fit"], "invalid choice: 'fit'"),
    ("negative epochs", lambda t, r: ["train", "--epochs", "-3"], "--epochs must be a positive integer, got '-3'"),
    ("fractional epochs", lambda t, r: ["train", "--epochs", "2.5"], "--epochs must be a positive integer"),
    ("zero batch size", lambda t, r: ["train", "--batch-size", "0"], "--batch-size must be a positive integer"),
    ("nan learning rate", lambda t, r: ["train", "--lr", "nan"], "--lr must be a positive number, got 'nan'"),
    ("negative learning rate", lambda t, r: ["train", "--lr", "-0.1"], "--lr must be a positive number"),
    ("validation split 1.5", lambda t, r: ["train", "--val-split", "1.5"], "--val-split must be a number in [0, 1)"),
    ("label smoothing 1", lambda t, r: ["train", "--label-smoothing", "1"], "--label-smoothing must be a number in [0, 1)"),
    ("bad image size", lambda t, r: ["train", "--image-size", "0,4"], "--image-size must be comma-separated positive integers"),
    ("unknown optimizer", lambda t, r: ["train", "--optimizer", "adagrad"], "--optimizer must be one of adam, adamw, sgd, rmsprop"),
    ("unknown precision", lambda t, r: ["train", "--precision", "float8"], "--precision must be one of"),
    ("unknown strategy", lambda t, r: ["train", "--strategy", "tpu"], "--strategy must be one of default, mirrored, multiworker"),
    ("unknown model", lambda t, r: ["train", "--model", "resnet9000"], "unknown model 'resnet9000'; expected one of"),
    ("value for a switch", lambda t, r: ["train", "--jit", "maybe"], "unrecognized arguments: maybe"),
    ("negative seed", lambda t, r: ["train", "--seed", "-1"], "--seed must be a non-negative integer"),
    ("zero checkpoint interval", lambda t, r: ["train", "--checkpoint-every", "0"], "--checkpoint-every must be a positive integer"),
    # config files
    ("config: wrong type (json)", s_config('{"epochs": "many"}', ".json"), "--epochs must be a positive integer, got 'many'"),
    ("config: wrong type (yaml)", s_config("batch_size: [1, 2]\n", ".yaml"), "--batch-size must be a positive integer, got [1, 2]"),
    ("config: wrong type (toml)", s_config('lr = "fast"\n', ".toml"), "--lr must be a positive number, got 'fast'"),
    ("config: bad boolean", s_config("deterministic: maybe\n", ".yaml"), "--deterministic must be true or false, got 'maybe'"),
    ("config: not a mapping", s_config("[1, 2]", ".json"), "expected a mapping of option: value, got list"),
    ("config: unknown option", s_config("epoch: 3\n", ".yaml"), "unknown option 'epoch'"),
    ("config: syntax error", s_config("epochs: [1, 2\n", ".yaml"), "cannot read config file"),
    ("config: unsupported format", s_config("epochs=3\n", ".ini"), "expected a .yaml, .yml, .toml or .json file"),
    ("config: missing file", lambda t, r: ["train", "--config", str(t / "nope.yaml")], "does not exist"),
    # data
    ("missing data folder", lambda t, r: ["train", "--data", str(t / "no_such_folder")], "no_such_folder: no such file or folder"),
    ("unsupported data file", s_data(lambda t: (t / "notes.md").write_text("hi") and str(t / "notes.md")),
     "unsupported file type '.md'"),
    ("text too short", lambda t, r: ["train", "--model", "gpt", "--data", _text(t, "hi"), "--run-dir", str(t / "r")],
     "tokens leave no 129-token window for the train split"),
    ("text option on other data", lambda t, r: ["train", "--data", "digits?window=3"], "window apply to .txt files only"),
    ("classifier on text", lambda t, r: ["train", "--data", _text(t, "abc " * 400), "--run-dir", str(t / "r")],
     "--model convnet trains on classification data, but 'book' is a text (.txt) file: use --model gpt"),
    ("language model on images", lambda t, r: ["train", "--model", "gpt"],
     "--model gpt trains on a text (.txt) file, but 'digits' is classification data"),
    ("segmentation: missing mask", s_data(_segmentation_without_mask), "no mask for image 'b'"),
    ("raw pickle named .npz", s_data(_pickle_file), "is a Python pickle, it contains pickled objects; refusing to load"),
    ("corrupt .npz", s_data(lambda t: (t / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip") and str(t / "junk.npz")),
     "not a valid .npz file"),
    ("npz without labels", s_data(lambda t: _npz(t / "nolabels.npz", y_train=None)), "missing array(s) y_train"),
    ("npz with NaN pixels", s_data(lambda t: _npz(t / "nan.npz", x_train=np.full((40, 6, 6), np.nan, np.float32))),
     "examples contain NaN or infinity"),
    ("npz with negative labels", s_data(lambda t: _npz(t / "neg.npz", y_train=-np.ones(40, np.int64))), "labels must be >= 0"),
    ("unreadable image", s_data(lambda t: _image_folder(t, corrupt=True)), "broken.png: corrupt or unreadable image"),
    ("empty image folder", s_data(lambda t: (t / "empty").mkdir() or str(t / "empty")), "empty folder"),
    ("npz with a label past 2**31", s_data(lambda t: _npz(t / "big.npz", y_train=np.r_[np.arange(39) % 4, 2**32 + 1])),
     "big.npz [y_train]: label 4294967297 is out of range [0, 2**31) for a class id"),
    ("npz with an absurd label", s_data(lambda t: _npz(t / "absurd.npz", y_train=np.r_[np.arange(39) % 4, 10**9])),
     "absurd.npz [y_train]: label 1000000000 implies 1,000,000,001 classes, more than 100,000"),
    ("FIFO named like data", _fifo_data, "pipe.npz: is a FIFO, not a regular file; refusing to read it"),
    ("absurd image size", lambda t, r: ["train", "--image-size", "100000,100000"],
     "image_size must be at most 16384 pixels a side, got (100000, 100000)"),
    ("image size past memory", lambda t, r: ["train", "--image-size", "16000,16000"],
     "resizing 1437 images to 16000x16000 needs"),
    # run directories and checkpoints
    ("run dir of another model", _foreign_run, "holds a different run (model: 'mlp' there, 'convnet' now)"),
    ("checkpoints without config", _checkpoints_without_config, "holds checkpoints but no config.json"),
    ("run dir is a file", _run_dir_is_a_file, "is a file, not a folder"),
    ("resume with another option", _resume_other_batch, "with --batch-size 64: it was trained with 32 (only --epochs,"),
    ("run dir in use", _run_in_use, f"is in use by another lamina train (pid {os.getpid()} on "),
    ("config.json leads outside", _config_link_outside, "outside the run directory; refusing to read it"),
    ("export metadata names a file outside", _export_file_outside,
     "lamina_export.json names '../../secret.txt', which leads outside the folder; refusing to read it"),
    ("resume from a corrupt checkpoint", lambda t, r: ["train", "--run-dir", _corrupt_latest(t, r), "--quiet"],
     "no intact checkpoint: ckpt-3 is corrupt (ckpt-3.data-00000-of-00001 does not match its SHA-256 checksum)"),
    ("evaluate: missing run dir", lambda t, r: ["evaluate", str(t / "nope")], "does not exist"),
    ("evaluate: empty run dir", lambda t, r: (t / "empty_run").mkdir() or ["evaluate", str(t / "empty_run")],
     "is not a lamina run directory (no config.json)"),
    ("evaluate: no checkpoint yet", lambda t, r: ["evaluate", _no_checkpoint_run(t, r)], "has no checkpoint yet"),
    ("evaluate: corrupt checkpoint", lambda t, r: ["evaluate", _corrupt_latest(t, r)],
     "ckpt-3 is corrupt (ckpt-3.data-00000-of-00001 does not match its SHA-256 checksum)"),
    ("evaluate: truncated checkpoint index", lambda t, r: ["evaluate", _truncated_index(t, r)], "ckpt-3 is corrupt ("),
    ("evaluate: unknown split", lambda t, r: ["evaluate", r, "--split", "nope"], "unknown split 'nope'"),
    ("export: missing run dir", lambda t, r: ["export", str(t / "nope"), "--format", "savedmodel"], "does not exist"),
    ("export: no format", lambda t, r: ["export", r], "the following arguments are required: --format"),
    ("export: bad quantize", lambda t, r: ["export", r, "--format", "tflite", "--quantize", "int7"], "--quantize must be one of"),
    ("export: corrupt checkpoint", lambda t, r: ["export", _corrupt_latest(t, r), "--format", "savedmodel",
                                                 "--output", str(t / "out")], "ckpt-3 is corrupt ("),
    ("predict: missing model", lambda t, r: ["predict", str(t / "nope"), str(t / "x.png")], "does not exist"),
    ("predict: missing image", lambda t, r: ["predict", r, str(t / "nope.png")], "nope.png does not exist"),
    ("predict: unreadable image", lambda t, r: (t / "bad.png").write_bytes(b"garbage") and ["predict", r, str(t / "bad.png")],
     "bad.png: cannot read image"),
]


@pytest.mark.parametrize("name, make, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_exit_2(name, make, message, tmp_path, trained_run, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = make(tmp_path, trained_run)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("lamina: error: "), lines[0]
    assert message in lines[0], lines[0]
    assert "Traceback" not in err


SUBPROCESS_CASES = [
    (["train", "--epochz", "3"], "lamina: error: lamina: unrecognized arguments: --epochz 3"),
    (["train", "--epochs", "-3"], "lamina: error: --epochs must be a positive integer, got '-3'"),
    (["evaluate", "{tmp}/empty"], "lamina: error: '{tmp}/empty' is not a lamina run directory (no config.json)"),
    (["train", "--data", "{tmp}/objects.npz"], "lamina: error: {tmp}/objects.npz: array 'x_train' contains pickled objects; refusing to load"),
]


def test_console_entry_point_one_line_exit_2(tmp_path):
    """Through `python -m lamina`: nothing but the one line on stderr (no TensorFlow chatter), run side by side."""
    (tmp_path / "empty").mkdir()
    _npz(tmp_path / "objects.npz", x_train=np.array([{"a": 1}] * 40, dtype=object))
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI itself must keep TensorFlow quiet
    env.pop("LAMINA_DEBUG", None)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    procs = []
    try:
        for args, _ in SUBPROCESS_CASES:
            argv = [a.format(tmp=tmp_path) for a in args]
            procs.append(subprocess.Popen([sys.executable, "-m", "lamina", *argv], cwd=str(tmp_path), env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for proc, (_, want) in zip(procs, SUBPROCESS_CASES):
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 2, err
            assert err.strip().splitlines() == [want.format(tmp=tmp_path)]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_debug_mode_shows_the_traceback(capsys, monkeypatch):
    """LAMINA_DEBUG=1: the error propagates (for bug reports) instead of becoming one line."""
    monkeypatch.setenv("LAMINA_DEBUG", "1")
    from lamina.train.config import ConfigError

    with pytest.raises(ConfigError, match="--epochs must be a positive integer"):
        main(["train", "--epochs", "0"])


def test_errors_doc_lists_every_catalogue_entry():
    text = open(os.path.join(REPO, "docs", "errors.md"), encoding="utf-8").read()
    missing = [name for name, _, _ in CASES if name not in text]
    assert missing == []
