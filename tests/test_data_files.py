"""lamina.data: .npz, IDX and CSV sources, and their bad-input errors."""

import gzip
import os
import struct

import numpy as np
import pytest

import lamina.data as ld


def write_idx(path, arr, *, gz=None, type_code=0x08, magic=None):
    """Writes an IDX file byte by byte: 00 00 type ndim, big-endian sizes, data."""
    arr = np.asarray(arr)
    head = magic if magic is not None else struct.pack(">BBBB", 0, 0, type_code, arr.ndim)
    data = head + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(">u1").tobytes()
    if gz if gz is not None else str(path).endswith(".gz"):
        data = gzip.compress(data)
    with open(path, "wb") as f:
        f.write(data)
    return data


def make_idx_folder(folder, n_train=12, n_test=5, h=4, w=3, gz=False, spelling="-idx"):
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    arrays = {
        "train-images": rng.integers(0, 256, (n_train, h, w), dtype=np.uint8),
        "train-labels": rng.integers(0, 4, n_train).astype(np.uint8),
        "t10k-images": rng.integers(0, 256, (n_test, h, w), dtype=np.uint8),
        "t10k-labels": rng.integers(0, 4, n_test).astype(np.uint8),
    }
    arrays["train-labels"][:4] = [0, 1, 2, 3]
    ext = ".gz" if gz else ""
    for stem, arr in arrays.items():
        kind = "idx3" if "images" in stem else "idx1"
        name = f"{stem}-{kind}-ubyte" if spelling == "-idx" else f"{stem}.{kind}-ubyte"
        write_idx(os.path.join(folder, name + ext), arr)
    return arrays


# ---------------------------------------------------------------- npz
def test_npz_images_values_and_channel(tmp_path):
    rng = np.random.default_rng(1)
    x_tr = rng.integers(0, 256, (10, 5, 4), dtype=np.uint8)
    x_te = rng.integers(0, 256, (3, 5, 4), dtype=np.uint8)
    y_tr = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 4])
    y_te = np.array([[1], [0], [2]], np.uint8)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    ds = ld.load(str(path))
    assert ds.name == "tiny"
    assert ds.input_shape == (5, 4, 1) and ds.num_classes == 5
    assert ds.splits == {"train": 10, "test": 3}
    assert ds.preprocessing["scale"] == pytest.approx(1 / 255)
    xb, yb = next(iter(ds.batches("test", 8)))
    np.testing.assert_allclose(xb.numpy()[..., 0], x_te / 255.0, atol=1e-7)
    np.testing.assert_array_equal(yb.numpy(), [1, 0, 2])
    x_raw, y_raw = ds.arrays("train")
    np.testing.assert_array_equal(x_raw[..., 0], x_tr)
    np.testing.assert_array_equal(y_raw, y_tr)


def test_npz_features_and_validation_split(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20) % 2
    path = tmp_path / "feat.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:4], y_test=y[:4].astype(np.float64))
    ds = ld.load(str(path), validation_split=0.25, seed=4)
    assert ds.input_shape == (2,) and ds.splits == {"train": 15, "validation": 5, "test": 4}
    assert ds.preprocessing == {"scale": 1.0, "mean": [0.0, 0.0], "std": [1.0, 1.0]}
    xv = np.concatenate([b.numpy() for b, _ in ds.batches("validation", 10)])
    np.testing.assert_array_equal(xv, ds.arrays("validation")[0])
    merged = np.concatenate([ds.arrays("train")[0], ds.arrays("validation")[0]])
    np.testing.assert_array_equal(np.sort(merged[:, 0]), x[:, 0])
    with pytest.raises(ld.DataError, match="image_size and color_mode apply to images"):
        ld.load(str(path), image_size=8)


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = {"a": 1}, [2]
    np.savez(path, x_train=obj, y_train=np.zeros(2), x_test=obj, y_test=np.zeros(2))
    with pytest.raises(ld.DataError, match=r"evil\.npz.*contains pickled objects; refusing to load"):
        ld.load(str(path))


def test_npz_missing_keys_named(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((2, 3)), y_train=np.zeros(2))
    with pytest.raises(ld.DataError, match=r"partial\.npz: missing array\(s\) x_test, y_test"):
        ld.load(str(path))


@pytest.mark.parametrize(
    "y_train, pattern",
    [
        (np.array([0, 1, 2]), r"x_train has 4 examples but y_train has 3 labels"),
        (np.array([0, -1, 2, 1]), r"\[y_train\]: labels must be >= 0, found -1"),
        (np.array([0, 1.5, 2, 1]), r"\[y_train\]: labels must be integer class ids"),
        (np.array(["a", "b", "c", "d"]), r"\[y_train\]: labels must be integer class ids"),
    ],
)
def test_npz_bad_labels(tmp_path, y_train, pattern):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((4, 3)), y_train=y_train, x_test=np.zeros((1, 3)), y_test=np.zeros(1, int))
    with pytest.raises(ld.DataError, match=pattern):
        ld.load(str(path))


def test_npz_corrupt_or_mismatched(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, x_train=np.zeros((4, 3)), y_train=np.zeros(4, int), x_test=np.zeros((2, 3)), y_test=np.zeros(2, int))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ld.DataError, match=r"cut\.npz"):
        ld.load(str(cut))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"hello, not a zip")
    with pytest.raises(ld.DataError, match=r"junk\.npz: not a valid \.npz"):
        ld.load(str(junk))
    shapes = tmp_path / "shapes.npz"
    np.savez(shapes, x_train=np.zeros((4, 3)), y_train=np.zeros(4, int), x_test=np.zeros((2, 5)), y_test=np.zeros(2, int))
    with pytest.raises(ld.DataError, match=r"x_test has example shape \(5,\), but x_train has \(3,\)"):
        ld.load(str(shapes))


# ---------------------------------------------------------------- IDX
@pytest.mark.parametrize("gz, spelling", [(False, "-idx"), (True, "-idx"), (True, ".idx")])
def test_idx_folder_values(tmp_path, gz, spelling):
    arrays = make_idx_folder(tmp_path / "mn", gz=gz, spelling=spelling)
    ds = ld.load(str(tmp_path / "mn"))
    assert ds.name == "mn" and ds.input_shape == (4, 3, 1) and ds.num_classes == 4
    assert ds.splits == {"train": 12, "test": 5}
    x, y = next(iter(ds.batches("test", 5)))
    np.testing.assert_allclose(x.numpy()[..., 0], arrays["t10k-images"] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y.numpy(), arrays["t10k-labels"])
    np.testing.assert_array_equal(ds.arrays("train")[0][..., 0], arrays["train-images"])


def test_read_idx_parses_header_and_dtypes(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", arr)
    out = ld.read_idx(str(tmp_path / "a"), ndim=3)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)
    # a big-endian int32 (type 0x0C) 1-D file
    vals = np.array([1, -2, 70000], ">i4")
    (tmp_path / "b").write_bytes(struct.pack(">BBBBI", 0, 0, 0x0C, 1, 3) + vals.tobytes())
    np.testing.assert_array_equal(ld.read_idx(str(tmp_path / "b")), [1, -2, 70000])


def test_idx_bad_magic_truncated_and_trailing(tmp_path):
    folder = tmp_path / "mn"
    arrays = make_idx_folder(folder)
    bad = folder / "train-images-idx3-ubyte"
    write_idx(bad, arrays["train-images"], magic=b"\x00\x00\x08\x02")
    with pytest.raises(ld.DataError, match=r"train-images-idx3-ubyte: bad magic number 0x00000802"):
        ld.load(str(folder))
    write_idx(bad, arrays["train-images"], magic=b"PK\x03\x04")
    with pytest.raises(ld.DataError, match=r"train-images-idx3-ubyte: bad magic number 0x504b0304"):
        ld.load(str(folder))
    data = write_idx(bad, arrays["train-images"])
    bad.write_bytes(data[:-7])
    with pytest.raises(ld.DataError, match=r"train-images-idx3-ubyte: truncated IDX file.*needs 144 data bytes, found 137"):
        ld.load(str(folder))
    bad.write_bytes(data[:10])
    with pytest.raises(ld.DataError, match=r"truncated IDX header"):
        ld.load(str(folder))
    bad.write_bytes(data + b"xx")
    with pytest.raises(ld.DataError, match=r"2 unexpected bytes"):
        ld.load(str(folder))


def test_idx_truncated_gzip(tmp_path):
    folder = tmp_path / "mn"
    make_idx_folder(folder, gz=True)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(ld.DataError, match=r"t10k-labels-idx1-ubyte\.gz: corrupt or truncated gzip"):
        ld.load(str(folder))


def test_idx_count_mismatch_and_missing_file(tmp_path):
    folder = tmp_path / "mn"
    make_idx_folder(folder)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(ld.DataError, match=r"t10k-images-idx3-ubyte has 5 images but .*t10k-labels-idx1-ubyte has 4 labels"):
        ld.load(str(folder))
    os.remove(folder / "t10k-labels-idx1-ubyte")
    with pytest.raises(ld.DataError, match=r"mn: IDX folder is missing t10k-labels-idx1-ubyte\[\.gz\]"):
        ld.load(str(folder))


# ---------------------------------------------------------------- CSV
def test_csv_header_label_detection_and_values(tmp_path):
    path = tmp_path / "iris.csv"
    rows = ["sepal,petal,target,width"]
    feats = []
    for i in range(10):
        f = (i * 0.5, -i, i * 2.0)
        feats.append(f)
        rows.append(f"{f[0]},{f[1]},{i % 3},{f[2]}")
    path.write_text("\n".join(rows) + "\n")
    ds = ld.load(str(path))
    assert ds.name == "iris" and ds.input_shape == (3,) and ds.num_classes == 3
    assert ds.splits == {"train": 8, "test": 2}
    x_tr, y_tr = ds.arrays("train")
    x_te, y_te = ds.arrays("test")
    got = sorted(zip(map(tuple, np.concatenate([x_tr, x_te]).tolist()), np.concatenate([y_tr, y_te]).tolist()))
    assert got == sorted(zip(feats, [i % 3 for i in range(10)]))
    xb = np.concatenate([b.numpy() for b, _ in ds.batches("train", 3)])
    assert sorted(map(tuple, xb.tolist())) == sorted(map(tuple, x_tr.tolist()))


def test_csv_string_labels_no_header_and_label_column(tmp_path):
    path = tmp_path / "animals.csv"
    path.write_text("".join(f"{i},{i * 10},{'dog' if i % 2 else 'cat'}\n" for i in range(10)))
    ds = ld.load(str(path))
    assert ds.class_names == ["cat", "dog"] and ds.input_shape == (2,)
    x, y = ds.arrays("train")
    np.testing.assert_array_equal(y, (x[:, 0].astype(int) % 2))
    by_index = ld.load(str(path), label_column=-1)
    np.testing.assert_array_equal(by_index.arrays("test")[0], ds.arrays("test")[0])
    with pytest.raises(ld.DataError, match=r"animals\.csv:1: column 'column 3': non-numeric value 'cat'"):
        ld.load(str(path), label_column=0)
    named = tmp_path / "named.csv"
    named.write_text("y,a,b\n" + "".join(f"{i % 2},{i},{i + 1}\n" for i in range(6)))
    ds2 = ld.load(str(named), label_column="y")
    xs, ys = ds2.arrays("train")
    np.testing.assert_array_equal(ys, xs[:, 0].astype(int) % 2)
    with pytest.raises(ld.DataError, match=r"named\.csv: no column named 'z'; columns: y, a, b"):
        ld.load(str(named), label_column="z")


@pytest.mark.parametrize(
    "body, pattern",
    [
        ("a,b,label\n1,2,0\n3,x7,1\n", r"bad\.csv:3: column 'b': non-numeric value 'x7'"),
        ("a,b,label\n1,2,0\n3,4\n", r"bad\.csv:3: expected 3 columns, found 2"),
        ("a,b,label\n1,2,0\n3,4,-1\n", r"bad\.csv:3: label '-1' is negative"),
        ("a,b,label\n1,2,0\n3,4,1.5\n", r"bad\.csv:3: label '1.5' is not an integer class id"),
        ("a,b,label\n1,2,0\n\n3,4,cat\n", r"bad\.csv:4: label 'cat' is not a number"),
        ("a,b,label\n", r"bad\.csv: CSV file has a header but no data rows"),
        ("", r"bad\.csv: empty CSV file"),
    ],
)
def test_csv_bad_cells(tmp_path, body, pattern):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(ld.DataError, match=pattern):
        ld.load(str(path))


# ---------------------------------------------------------------- dispatch
def test_missing_path_and_unknown_type(tmp_path):
    with pytest.raises(ld.DataError, match=r"nope\.npz: no such file or folder"):
        ld.load(str(tmp_path / "nope.npz"))
    other = tmp_path / "data.json"
    other.write_text("1,2")
    with pytest.raises(ld.DataError, match=r"data\.json: unsupported file type '\.json'; expected \.npz, \.csv or \.txt"):
        ld.load(str(other))
    (tmp_path / "book.txt").write_text("x")
    assert ld.source_kind(str(tmp_path / "book.txt")) == "text"
    assert ld.source_kind("digits") == "digits" and ld.source_kind(None) == "digits"
    assert ld.source_kind("MNIST") == "named" and ld.source_kind("tfds:mnist") == "tfds"


def test_error_messages_are_one_line(tmp_path):
    err = ld.DataError("first line\nsecond line")
    assert "\n" not in str(err) and str(err) == "first line second line"


def test_npz_own_validation_split_is_kept(tmp_path):
    x = np.arange(30, dtype=np.uint8).reshape(10, 3)
    y = np.arange(10) % 2
    path = tmp_path / "v.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:2], y_test=y[:2], x_val=x[7:], y_val=y[7:])
    ds = ld.load(str(path), validation_split=0.5)
    assert ds.splits == {"train": 10, "validation": 3, "test": 2}
    np.testing.assert_array_equal(ds.arrays("validation")[0], x[7:])
