"""The safetensors layer of lamina (the ``safetensors`` package underneath, atomic write, one-line errors) and
lm.save_weights/load_weights, including the deferred restore into an unbuilt model."""

import json
import re
import struct

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from lamina.export.safetensors import load_file, read_metadata, save_file
from lamina.layers.conv import Conv2D
from lamina.layers.linear import Linear

st_numpy = pytest.importorskip("safetensors.numpy", reason="the safetensors package is a test-only dependency")


class Tiny(lm.Module):
    """Conv2D + Linear, enough to have nested variable paths."""

    def __init__(self, name=None):
        super().__init__(name=name)
        self.conv = Conv2D(4, 3)
        self.head = Linear(3)

    def __call__(self, x, training=False):
        h = tf.nn.relu(self.conv(x))
        return self.head(tf.reshape(h, [tf.shape(h)[0], -1]))


def _built(seed):
    lm.set_seed(seed)
    model = Tiny()
    model(tf.zeros((1, 6, 6, 2)))
    return model


def _arrays():
    rng = np.random.RandomState(0)
    return {
        "f32": rng.randn(3, 4).astype(np.float32),
        "f64": rng.randn(5).astype(np.float64),
        "f16": rng.randn(2, 2).astype(np.float16),
        "i8": np.array([-128, 0, 127], np.int8),
        "u8": np.arange(6, dtype=np.uint8).reshape(2, 3),
        "i32": np.array([[1, -2], [3, 4]], np.int32),
        "i64": np.array([2**40, -5], np.int64),
        "u16": np.array([65535], np.uint16),
        "bool": np.array([True, False, True]),
        "scalar": np.array(3.5, np.float32),
        "empty": np.zeros((0, 3), np.float32),
    }


def test_round_trip_all_dtypes(tmp_path):
    arrays = _arrays()
    path = str(tmp_path / "a.safetensors")
    assert save_file(arrays, path, {"note": "hi"}) == path
    back = load_file(path)
    assert sorted(back) == sorted(arrays)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v)
        assert back[k].flags.writeable
    assert read_metadata(path) == {"note": "hi"}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    assert (8 + n) % 8 == 0  # header padded for alignment, like the reference writer


def test_bfloat16_and_big_endian(tmp_path):
    bf16 = tf.bfloat16.as_numpy_dtype
    arrays = {"bf": np.array([1.5, -2.0, 0.25], bf16), "be": np.array([1.0, 2.0], ">f4")}
    path = str(tmp_path / "b.safetensors")
    save_file(arrays, path)
    back = load_file(path)
    assert back["bf"].dtype == bf16
    np.testing.assert_array_equal(back["bf"].astype(np.float32), [1.5, -2.0, 0.25])
    np.testing.assert_array_equal(back["be"], [1.0, 2.0])
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    assert header["bf"]["dtype"] == "BF16" and header["be"]["dtype"] == "F32"


def test_reference_package_reads_ours_and_we_read_theirs(tmp_path):
    arrays = {k: v for k, v in _arrays().items()}
    ours = str(tmp_path / "ours.safetensors")
    save_file(arrays, ours, {"format": "np"})
    theirs_view = st_numpy.load_file(ours)
    assert sorted(theirs_view) == sorted(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(theirs_view[k], v)
        assert theirs_view[k].dtype == v.dtype
    theirs = str(tmp_path / "theirs.safetensors")
    st_numpy.save_file(arrays, theirs, metadata={"format": "np", "x": "1"})
    back = load_file(theirs)
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].dtype == v.dtype
    assert read_metadata(theirs) == {"format": "np", "x": "1"}


def test_save_and_load_weights_round_trip(tmp_path):
    a, b = _built(1), _built(2)
    x = tf.random.stateless_normal((2, 6, 6, 2), seed=[1, 2])
    assert not np.allclose(a(x).numpy(), b(x).numpy())
    path = str(tmp_path / "w.safetensors")
    assert lm.save_weights(a, path) == path
    keys = set(st_numpy.load_file(path))
    assert keys == set(a.get_weights()) and "conv/weights" in keys and "head/bias" in keys
    assert read_metadata(path)["format"] == "lamina"
    assert lm.load_weights(b, path) is b
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


def test_load_weights_from_reference_writer(tmp_path):
    a, b = _built(3), _built(4)
    path = str(tmp_path / "ref.safetensors")
    st_numpy.save_file({k: v.astype(np.float64) for k, v in a.get_weights().items()}, path)  # float64 is cast
    lm.load_weights(b, path)
    for k, v in a.get_weights().items():
        np.testing.assert_allclose(b.get_weights()[k], v, rtol=1e-7)


def test_load_weights_strict_and_shape_errors(tmp_path):
    a, b = _built(5), _built(6)
    weights = a.get_weights()
    partial = {k: v for k, v in weights.items() if k.startswith("conv/")}
    path = str(tmp_path / "partial.safetensors")
    save_file(partial, path)
    with pytest.raises(ValueError, match=r"partial\.safetensors.*missing.*head/"):
        lm.load_weights(b, path)
    lm.load_weights(b, path, strict=False)
    np.testing.assert_array_equal(b.get_weights()["conv/weights"], weights["conv/weights"])
    assert not np.array_equal(b.get_weights()["head/weights"], weights["head/weights"])

    bad = dict(weights, **{"head/bias": np.zeros(7, np.float32)})
    path = str(tmp_path / "shape.safetensors")
    save_file(bad, path)
    with pytest.raises(ValueError, match=r"shape\.safetensors.*head/bias.*expected shape \(3,\), got \(7,\)"):
        lm.load_weights(b, path)

    extra = dict(weights, **{"other/w": np.zeros(2, np.float32)})
    path = str(tmp_path / "extra.safetensors")
    save_file(extra, path)
    with pytest.raises(ValueError, match="unknown.*other/w"):
        lm.load_weights(b, path)


def test_save_weights_of_unbuilt_model_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no variables yet"):
        lm.save_weights(Tiny(), str(tmp_path / "x.safetensors"))


def _write_raw(path, header_bytes, data=b"", n=None):
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes) if n is None else n))
        f.write(header_bytes)
        f.write(data)
    return str(path)


def test_bad_files_raise_clear_errors(tmp_path):
    good = str(tmp_path / "good.safetensors")
    save_file({"w": np.arange(12, dtype=np.float32).reshape(3, 4)}, good)
    blob = open(good, "rb").read()

    def fails(name, pattern):
        with pytest.raises(ValueError) as info:
            load_file(str(tmp_path / name))
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"safetensors: {tmp_path / name}: "), message
        assert re.search(pattern, message), message

    (tmp_path / "cut.safetensors").write_bytes(blob[:-5])
    fails("cut.safetensors", "not fully covered")
    (tmp_path / "tiny.safetensors").write_bytes(b"\x01\x02")
    fails("tiny.safetensors", "header too small")
    _write_raw(tmp_path / "huge.safetensors", b"{}", n=10**9)
    fails("huge.safetensors", "header too large")
    _write_raw(tmp_path / "nj.safetensors", b"{not json}")
    fails("nj.safetensors", "invalid JSON")
    _write_raw(tmp_path / "list.safetensors", b"[1, 2]")
    fails("list.safetensors", "invalid JSON")
    header = json.dumps({"w": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 40]}}).encode()
    _write_raw(tmp_path / "wrongshape.safetensors", header, b"\0" * 40)
    fails("wrongshape.safetensors", "invalid shape, data type, or offset")
    header = json.dumps({"w": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}}).encode()
    _write_raw(tmp_path / "dtype.safetensors", header, b"\0" * 4)
    fails("dtype.safetensors", "unknown variant `Q7`")
    header = json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                         "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    _write_raw(tmp_path / "overlap.safetensors", header, b"\0" * 8)
    fails("overlap.safetensors", "invalid offset for tensor `[ab]`")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_file(str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="header too small"):
        read_metadata(str(tmp_path / "tiny.safetensors"))


def test_loaded_arrays_do_not_depend_on_the_file(tmp_path):
    path = str(tmp_path / "a.safetensors")
    save_file({"w": np.arange(4, dtype=np.float32)}, path)
    back = load_file(path)
    save_file({"w": np.full(4, 9.0, np.float32)}, path)  # replaced on disk (atomic rename)
    np.testing.assert_array_equal(back["w"], [0, 1, 2, 3])
    back["w"][0] = 5.0


def test_writer_rejects_bad_names_and_dtypes(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_file({"__metadata__": np.zeros(1)}, str(tmp_path / "a.safetensors"))
    with pytest.raises(ValueError, match="tensor 'c' has dtype complex128"):
        save_file({"c": np.zeros(2, np.complex128)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(ValueError, match="tensor 'o' has dtype object"):
        save_file({"o": np.array(["x"], object)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(ValueError, match="metadata must map str to str"):
        save_file({"a": np.zeros(1)}, str(tmp_path / "c.safetensors"), {"n": 1})
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_load_weights_without_a_matching_name_is_an_error(tmp_path):
    """strict=False with zero matching keys used to load nothing and say nothing."""
    b = _built(8)
    path = str(tmp_path / "foreign.safetensors")
    save_file({"conv1.weight": np.zeros((4, 2, 3, 3), np.float32), "fc.bias": np.zeros(3, np.float32)}, path)
    before = b.get_weights()
    with pytest.raises(ValueError, match=r"foreign\.safetensors.*none of the 2 given names.*4 variables.*"
                                         r"given \['conv1.weight', 'fc.bias'\].*expected \['conv/bias'"):
        lm.load_weights(b, path, strict=False)
    for k, v in b.get_weights().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_weights_into_an_unbuilt_model_is_deferred_to_its_first_call(tmp_path):
    a = _built(9)
    x = tf.random.stateless_normal((2, 6, 6, 2), seed=[3, 4])
    path = str(tmp_path / "w.safetensors")
    lm.save_weights(a, path)
    fresh = Tiny()
    assert lm.load_weights(fresh, path) is fresh and not fresh.built
    # The first call already computes with the loaded values (restored as each layer builds).
    np.testing.assert_array_equal(fresh(x).numpy(), a(x).numpy())
    for k, v in a.get_weights().items():
        np.testing.assert_array_equal(fresh.get_weights()[k], v)

    # Also when the first call is traced by tf.function.
    traced = Tiny()
    lm.load_weights(traced, path)
    np.testing.assert_array_equal(tf.function(lambda t: traced(t))(x).numpy(), a(x).numpy())


def test_deferred_restore_checks_names_and_shapes_at_the_first_call(tmp_path):
    a = _built(10)
    x = tf.zeros((1, 6, 6, 2))
    weights = a.get_weights()
    path = str(tmp_path / "partial.safetensors")
    save_file({k: v for k, v in weights.items() if k.startswith("conv/")}, path)
    m = Tiny()
    lm.load_weights(m, path)
    with pytest.raises(ValueError, match=r"partial\.safetensors: deferred restore into Tiny 'tiny.*' at its first call: "
                                         r"missing \['head/bias', 'head/weights'\]"):
        m(x)
    m2 = Tiny()
    lm.load_weights(m2, path, strict=False)
    m2(x)
    np.testing.assert_array_equal(m2.get_weights()["conv/weights"], weights["conv/weights"])
    assert not np.array_equal(m2.get_weights()["head/weights"], weights["head/weights"])

    bad = str(tmp_path / "bad.safetensors")
    save_file(dict(weights, **{"head/bias": np.zeros(7, np.float32)}), bad)
    m3 = Tiny()
    lm.load_weights(m3, bad)
    with pytest.raises(ValueError, match=r"deferred restore into Tiny.*'head/bias' expected shape \(3,\), got \(7,\)"):
        m3(x)

    foreign = str(tmp_path / "foreign.safetensors")
    save_file({"fc.bias": np.zeros(3, np.float32)}, foreign)
    m4 = Tiny()
    lm.load_weights(m4, foreign, strict=False)
    with pytest.raises(ValueError, match=r"none of the file's 1 tensors names one of the model's 4 variables"):
        m4(x)
