"""Property tests (hypothesis): tampered run and export directories, and data files whose headers lie.

Whatever a file says, lamina answers with a result or one clear line: no
``internal error``, no traceback, no allocation a header asked for, nothing
read from outside the folder, and never a silently wrong checkpoint.
"""

import io
import json
import os
import shutil
import struct
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lamina as lm
from conftest import run_cli
from lamina.data import DataError
from lamina.data.idx import IDX_DTYPES, read_idx

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                derandomize=True)


def cli(argv):
    return run_cli([str(a) for a in argv])


def assert_clean(code, err):
    """Exit 0, or exit 2 with exactly one ``lamina: error:`` line; warnings allowed either way."""
    lines = [l for l in err.strip().splitlines() if l and not l.startswith(("lamina: warning: ", "lamina: note: "))]
    assert "internal error" not in err and "Traceback" not in err, err
    if code == 0:
        assert not lines, err
    else:
        assert code == 2 and len(lines) == 1 and lines[0].startswith("lamina: error: "), (code, err)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("prop")
    rng = np.random.default_rng(0)
    x = rng.random((40, 4, 4), dtype=np.float32)
    np.savez(root / "tiny.npz", x_train=x[:32], y_train=np.arange(32) % 3, x_test=x[32:], y_test=np.arange(8) % 3)
    path = str(root / "run")
    code, out, err = cli(["train", "--data", root / "tiny.npz", "--model", "mlp", "--epochs", 1, "--batch-size", 16,
                          "--val-split", 0.25, "--checkpoint-every", 1, "--run-dir", path, "--quiet"])
    assert code == 0, err
    return path


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
CONFIG_KEYS = ["model", "num_classes", "input_shape", "class_names", "preprocessing", "model_kwargs", "data",
               "epochs", "batch_size", "image_size", "ema", "seed", "val_split", "precision_resolved", "resumes"]
# Input shapes either small or absurd (refused before building): a tampered shape in between is only
# caught when building the model runs out of memory, which a test machine should not be made to try.
SHAPES = st.lists(st.integers(1, 48), min_size=1, max_size=4) | st.lists(st.integers(1 << 15, 1 << 40), min_size=2,
                                                                           max_size=4)


@settings(max_examples=45, **SETTINGS)
@given(edit=st.one_of(
    st.tuples(st.just("set"), st.sampled_from(CONFIG_KEYS), json_values),
    st.tuples(st.just("set"), st.just("input_shape"), SHAPES),
    st.tuples(st.just("set"), st.just("num_classes"), st.integers(-5, 64) | st.integers(10**7, 10**12)),
    st.tuples(st.just("set"), st.just("model_kwargs"), st.fixed_dictionaries({"hidden_sizes": st.lists(
        st.integers(1, 10**15), min_size=1, max_size=2)})),
    st.tuples(st.just("delete"), st.sampled_from(CONFIG_KEYS), st.none()),
    st.tuples(st.just("bytes"), st.none(), st.binary(max_size=64)),
    st.tuples(st.just("truncate"), st.integers(0, 400), st.none()),
))
def test_a_tampered_config_json_is_a_result_or_one_line(run, tmp_path_factory, edit):
    work = str(tmp_path_factory.mktemp("cfg") / "run")
    shutil.copytree(run, work)
    path = os.path.join(work, "config.json")
    kind, key, value = edit
    raw = open(path, "rb").read()
    if kind == "bytes":
        raw = value
    elif kind == "truncate":
        raw = raw[:key]
    else:
        data = json.loads(raw)
        if kind == "set":
            data[key] = value
        else:
            data.pop(key, None)
        raw = json.dumps(data, allow_nan=True).encode()
    with open(path, "wb") as f:
        f.write(raw)
    for argv in (["evaluate", work, "--checkpoint", "latest"], ["predict", work, os.path.join(work, "confusion.png")]):
        code, out, err = cli(argv)
        assert_clean(code, err)


def _checkpoint_values(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith("model/")}


@settings(max_examples=40, **SETTINGS)
@given(damage=st.lists(st.tuples(
    st.sampled_from(["flip", "truncate", "delete", "state", "sidecar", "symlink", "garbage"]),
    st.integers(0, 10**6), st.binary(max_size=40)), min_size=1, max_size=3))
def test_a_damaged_checkpoint_folder_loads_an_intact_checkpoint_or_says_so(run, tmp_path_factory, damage):
    """Flipped bytes, truncations, deleted files, edited state files and sidecars, symbolic links."""
    from lamina.train.run import load_run_checkpoint

    work = str(tmp_path_factory.mktemp("ck") / "run")
    shutil.copytree(run, work)
    folder = os.path.join(work, "checkpoints")
    originals = {os.path.basename(p[: -len(".index")]): _checkpoint_values(p[: -len(".index")])
                 for p in (os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".index"))}
    outside = tmp_path_factory.mktemp("outside")
    for kind, n, blob in damage:
        names = sorted(os.listdir(folder))
        if not names:
            break
        target = os.path.join(folder, names[n % len(names)])
        if kind == "flip" and os.path.isfile(target) and os.path.getsize(target):
            raw = bytearray(open(target, "rb").read())
            raw[n % len(raw)] ^= 0xFF
            open(target, "wb").write(bytes(raw))
        elif kind == "truncate" and os.path.isfile(target):
            open(target, "r+b").truncate(n % (os.path.getsize(target) + 1))
        elif kind == "delete":
            os.remove(target)
        elif kind == "state":
            other = os.path.join(str(outside), "ckpt-1")
            lines = [f'model_checkpoint_path: "{other}"', f'all_model_checkpoint_paths: "../../{n}/ckpt-1"',
                     f'all_model_checkpoint_paths: "{blob.decode("latin-1").replace(chr(34), "")}"']
            open(os.path.join(folder, "checkpoint"), "w").write("\n".join(lines[: 1 + n % 3]) + "\n")
        elif kind == "sidecar":
            sidecars = [x for x in names if x.endswith(".sha256")]
            if sidecars:
                entry = {"files": {"../" * (n % 4) + "config.json": {"size": n, "sha256": "0" * 64}}}
                open(os.path.join(folder, sidecars[n % len(sidecars)]), "w").write(json.dumps(entry))
        elif kind == "symlink" and os.path.isfile(target) and not os.path.islink(target):
            decoy = os.path.join(str(outside), os.path.basename(target))
            shutil.copy(target, decoy)
            os.remove(target)
            os.symlink(decoy, target)
        elif kind == "garbage" and os.path.isfile(target):
            open(target, "wb").write(blob)
    try:
        model, record, used = load_run_checkpoint(work, "latest")
    except (lm.train.RunDirError, lm.train.CheckpointError):
        return
    name = os.path.basename(used)
    assert os.path.dirname(os.path.realpath(used + ".index")) == os.path.realpath(folder)
    want = originals[name]  # an untouched checkpoint of this run, and exactly its weights
    got = _checkpoint_values(used)
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)


@settings(max_examples=150, **SETTINGS)
@given(type_code=st.sampled_from(sorted(IDX_DTYPES) + [0x07]), dims=st.lists(st.integers(0, 2**32 - 1), max_size=4),
       body=st.binary(max_size=64), ndim=st.sampled_from([None, 1, 3]))
def test_idx_headers_that_lie_are_refused_before_allocating(tmp_path_factory, type_code, dims, body, ndim):
    path = str(tmp_path_factory.mktemp("idx") / "f-idx3-ubyte")
    with open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, type_code, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + body)
    try:
        arr = read_idx(path, ndim=ndim)
    except DataError:
        return
    assert list(arr.shape) == dims and arr.nbytes == len(body)


def _npy(shape, descr, body):
    header = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (descr, tuple(shape))
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + body


@settings(max_examples=120, **SETTINGS)
@given(shape=st.lists(st.integers(0, 2**63 - 1) | st.integers(0, 40), max_size=4),
       descr=st.sampled_from(["<f4", "|u1", "<i8", ">f8", "<c16"]), body=st.binary(max_size=200))
def test_npz_array_headers_that_lie_are_refused_before_allocating(tmp_path_factory, shape, descr, body):
    path = str(tmp_path_factory.mktemp("npz") / "h.npz")
    buf = io.BytesIO()
    np.save(buf, np.arange(4) % 2)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x_train.npy", _npy(shape, descr, body))
        z.writestr("y_train.npy", buf.getvalue())
        for key, value in (("x_test", np.zeros((2, 2, 2), np.float32)), ("y_test", np.arange(2))):
            b = io.BytesIO()
            np.save(b, value)
            z.writestr(key + ".npy", b.getvalue())
    try:
        ds = lm.data.load(path)
    except DataError:
        return
    assert ds.splits["train"] == 4


@settings(max_examples=120, **SETTINGS)
@given(length=st.integers(0, 2**64 - 1) | st.integers(0, 300), header=json_values, body=st.binary(max_size=64))
def test_safetensors_headers_that_lie_are_one_clear_error(tmp_path_factory, length, header, body):
    from lamina.export.safetensors import load_file

    text = json.dumps(header, allow_nan=True).encode()
    path = str(tmp_path_factory.mktemp("st") / "w.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", length if length > 300 else len(text)) + text + body)
    try:
        tensors = load_file(path)
    except ValueError as e:
        assert str(e).startswith(f"safetensors: {path}: ") and "\n" not in str(e)
        return
    assert all(isinstance(v, np.ndarray) for v in tensors.values())


NAMES = st.one_of(st.text(max_size=30), st.sampled_from(["../secret.txt", "../../x", "/etc/passwd", "model.tflite",
                                                          "sub/../../secret.txt", ".", "", "link"]),
                  st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2))


@settings(max_examples=60, **SETTINGS)
@given(name=NAMES, fmt=st.sampled_from(["tflite", "onnx"]))
def test_export_metadata_never_reads_outside_its_folder(tmp_path_factory, name, fmt):
    import importlib

    onnx_mod = importlib.import_module("lamina.export.onnx")  # (lamina.export.onnx is also a function)
    tflite_mod = importlib.import_module("lamina.export.tflite")

    root = tmp_path_factory.mktemp("exp")
    secret = root / "secret.txt"
    secret.write_bytes(b"TFL3 secret")  # even a file that looks like a model
    folder = root / "export"
    folder.mkdir()
    os.symlink(secret, folder / "link")
    meta = {"format": fmt, "file": name, "input_shape": [4, 4, 1], "class_names": ["a"],
            "preprocessing": {"scale": 1.0, "mean": [0.0], "std": [1.0]}}
    (folder / "lamina_export.json").write_text(json.dumps(meta))
    opened = []

    class Runner:  # stands in for the TFLite / ONNX runtimes, which read the file themselves
        def __init__(self, path, *a, **k):
            opened.append(os.path.realpath(path))
            raise ValueError("stand-in runner")

    saved = tflite_mod.TFLiteRunner, onnx_mod.ONNXRunner
    tflite_mod.TFLiteRunner = onnx_mod.ONNXRunner = Runner
    try:
        with pytest.raises((ValueError, lm.export.ExportError)):
            lm.export.load(str(folder))
    finally:
        tflite_mod.TFLiteRunner, onnx_mod.ONNXRunner = saved
    assert all(os.path.dirname(p) == os.path.realpath(folder) for p in opened), opened


@settings(max_examples=60, **SETTINGS)
@given(records=st.integers(1, 4), cut=st.integers(0, 10**4))
def test_a_metrics_log_cut_anywhere_keeps_every_complete_record(tmp_path_factory, records, cut):
    from lamina.train.callbacks.metrics_log import read_metrics

    lines = [json.dumps({"epoch": i + 1, "loss": 1.0 / (i + 1)}) + "\n" for i in range(records)]
    raw = "".join(lines).encode()
    cut = cut % (len(raw) + 1)
    path = str(tmp_path_factory.mktemp("log") / "metrics.jsonl")
    open(path, "wb").write(raw[:cut])
    got = read_metrics(path, warn=False)
    complete = raw[:cut].count(b"\n")
    assert [r["epoch"] for r in got] in ([i + 1 for i in range(complete)], [i + 1 for i in range(complete + 1)])
    if len(got) > complete:  # a record whose newline was lost is whole: kept
        assert raw[:cut] == b"".join(l.encode() for l in lines[:complete + 1]).rstrip(b"\n")
