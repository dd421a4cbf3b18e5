"""lamina.data: sharded TFRecords (convert, index.json, SHA-256, streaming plan), inspect, tfds streaming."""

import hashlib
import json
import os
import re
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

import lamina.data as ld
from lamina.cli import main


def _folder(root, n=10, classes=("a", "b", "c"), size=(6, 6), channels=3, seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        os.makedirs(os.path.join(root, c))
        for i in range(n):
            img = rng.integers(0, 256, size + (channels,), dtype=np.uint8)
            tf.io.write_file(os.path.join(root, c, f"{i:02d}.png"), tf.io.encode_png(img))
    return str(root)


def _keys(x, y):
    return sorted((int(label), img.tobytes()) for img, label in zip(x, y))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A 30-image folder and its conversion to 3 train + 3 test shards."""
    base = tmp_path_factory.mktemp("tfr")
    src = _folder(base / "src")
    out = str(base / "shards")
    index = ld.convert(src, out, num_shards=3, seed=1, quiet=True)
    return src, out, index


# ------------------------------------------------------------ round trip
def test_convert_writes_shards_and_an_index(shards):
    src, out, index = shards
    names = sorted(os.listdir(out))
    assert names == ["index.json"] + [f"{s}-{i:05d}-of-00003.tfrecord" for s in ("test", "train") for i in range(3)]
    doc = json.load(open(os.path.join(out, "index.json")))
    assert doc == index and doc["format"] == "lamina.tfrecord" and doc["version"] == 1
    assert doc["class_names"] == ["a", "b", "c"] and doc["image_shape"] == [6, 6, 3]
    assert doc["splits"]["train"]["count"] == 24 and doc["splits"]["test"]["count"] == 6
    assert doc["splits"]["train"]["per_class"] == [8, 8, 8] and doc["splits"]["test"]["per_class"] == [2, 2, 2]
    for split in ("train", "test"):
        entry = doc["splits"][split]
        assert sum(s["count"] for s in entry["shards"]) == entry["count"]
        assert max(s["count"] for s in entry["shards"]) - min(s["count"] for s in entry["shards"]) <= 1
        for s in entry["shards"]:
            data = open(os.path.join(out, s["file"]), "rb").read()
            assert s["bytes"] == len(data) and s["sha256"] == hashlib.sha256(data).hexdigest()
    mem = ld.load(src)
    pixels = mem.arrays("train")[0].reshape(-1, 3).astype(np.float64) / 255.0
    np.testing.assert_allclose(doc["statistics"]["train"]["mean"], pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(doc["statistics"]["train"]["std"], pixels.std(0), rtol=1e-12)


def test_round_trip_gives_identical_images_and_labels(shards):
    src, out, _ = shards
    mem = ld.load(src)
    st = ld.load(out, stream=True)
    assert isinstance(st, ld.StreamingDataSet) and st.splits == mem.splits and st.class_names == mem.class_names
    assert st.num_files("train") == 3
    for split in ("train", "test"):
        assert _keys(*st.arrays(split, limit=100)) == _keys(*mem.arrays(split))
        assert st.class_counts(split) == mem.class_counts(split)
    small = ld.load(out)  # below the threshold: decoded into memory
    assert not small.streaming and _keys(*small.arrays("train")) == _keys(*mem.arrays("train"))
    std = ld.load(out, stream=True, normalize="standardize")  # the statistics stored with the shards
    assert std.preprocessing == ld.load(src, normalize="standardize").preprocessing


def test_digits_convert_keeps_their_scale(tmp_path):
    out = str(tmp_path / "digits")
    ld.convert("digits", out, quiet=True)
    back = ld.load(out)
    digits = ld.load("digits")
    assert back.preprocessing["scale"] == digits.preprocessing["scale"] == 1 / 16
    assert _keys(*back.arrays("test")) == _keys(*digits.arrays("test"))


# ---------------------------------------------------------- the epoch plan
def test_interleave_is_deterministic_with_a_seed_and_resumes_exactly(shards):
    _, out, _ = shards
    a, b = ld.load(out, stream=True, seed=4), ld.load(out, stream=True, seed=4)
    run = lambda ds, **kw: [(x.numpy(), y.numpy()) for x, y in ds.batches("train", 5, **kw)]
    full = run(a, epoch=2, augment="crop,flip")
    again = run(b, epoch=2, augment="crop,flip")
    assert len(full) == 5
    for (x1, y1), (x2, y2) in zip(full, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    for k in (1, 2, 4, 5):
        tail = run(a, epoch=2, augment="crop,flip", skip_batches=k)
        assert len(tail) == len(full) - k
        for (x1, y1), (x2, y2) in zip(full[k:], tail):
            np.testing.assert_array_equal(x1, x2)
            np.testing.assert_array_equal(y1, y2)
    flat = lambda ds, **kw: np.concatenate([x.reshape(len(x), -1) for x, _ in run(ds, **kw)])
    e2, e3, s5 = flat(a, epoch=2), flat(a, epoch=3), flat(a, epoch=2, seed=5)
    assert not np.array_equal(e2, e3) and not np.array_equal(e2, s5)
    assert sorted(map(bytes, e2)) == sorted(map(bytes, e3))  # each record once per epoch


def test_validation_is_held_out_per_shard(shards):
    _, out, _ = shards
    ds = ld.load(out, stream=True, validation_split=0.25, seed=2)
    assert ds.splits == {"train": 18, "validation": 6, "test": 6}  # ceil(0.25 * 8) of each 8-record shard
    train, val = _keys(*ds.arrays("train", limit=50)), _keys(*ds.arrays("validation", limit=50))
    assert not set(train) & set(val) and sorted(train + val) == _keys(*ld.load(out, stream=True).arrays("train", limit=50))
    assert sum(ds.class_counts("validation")) == 6
    other = ld.load(out, stream=True, validation_split=0.25, seed=3)
    assert _keys(*other.arrays("validation", limit=50)) != val


# ------------------------------------------------------------- corruption
def test_a_flipped_byte_is_detected_and_a_truncated_shard_refused(shards, tmp_path, capsys):
    _, out, _ = shards
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in os.listdir(out):
        (copy / name).write_bytes(open(os.path.join(out, name), "rb").read())
    report = ld.inspect(str(copy), verify=True)
    assert report["verified"] == 6
    shard = copy / "train-00001-of-00003.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x40
    shard.write_bytes(bytes(data))
    with pytest.raises(ld.DataError, match=r"train-00001-of-00003\.tfrecord: SHA-256 mismatch .* the shard is corrupt"):
        ld.inspect(str(copy), verify=True)
    # streaming it does not crash: the corrupt record ends its shard early, and the records
    # lost are counted and named with the shard
    capsys.readouterr()
    ds = ld.load(str(copy), stream=True)
    n = sum(int(y.shape[0]) for _, y in ds.batches("train", 8))
    assert 16 <= n < 24
    err = capsys.readouterr().err
    assert re.search(r"lamina: warning: \S*train-00001-of-00003\.tfrecord \(records (\d+)-7\): corrupt record", err), err
    assert ds.bad_files == 24 - n
    assert f"{24 - n} of its 8 records lost" in err
    with pytest.raises(ld.DataError, match=r"train-00001-of-00003\.tfrecord \(records \d+-7\): corrupt record .*"
                                           r"stopped by on_bad_file='fail'"):
        failing = ld.load(str(copy), stream=True, on_bad_file="fail")
        try:
            for _ in failing.batches("train", 8):
                pass
        except Exception as e:  # noqa: BLE001 - the pipeline wraps the DataError
            raise ld.pipeline_error(e) or e
    shard.write_bytes(bytes(data[:-10]))
    with pytest.raises(ld.DataError, match=r"shard is \d+ bytes but index\.json says \d+; it is truncated"):
        ld.load(str(copy))


def _write_foreign(path, images, labels, keys=("image/encoded", "image/class/label")):
    with tf.io.TFRecordWriter(path) as w:
        for img, label in zip(images, labels):
            data = img if isinstance(img, bytes) else tf.io.encode_png(img).numpy()
            feature = {
                keys[0]: tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                keys[1]: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
            }
            w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def test_foreign_shards_are_scanned_once_and_bad_records_named(tmp_path, capsys):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (20, 5, 5, 3), dtype=np.uint8)
    y = np.arange(20) % 4
    root = tmp_path / "foreign"
    root.mkdir()
    _write_foreign(str(root / "train-0.tfrecord"), x[:10], y[:10])
    _write_foreign(str(root / "train-1.tfrecord"), x[10:16], y[10:16])
    _write_foreign(str(root / "test-0.tfrecord"), x[16:], y[16:])
    ds = ld.load(str(root), stream=True)
    assert "no index.json; scanned 20 records in 3 shards" in capsys.readouterr().err
    assert ds.splits == {"train": 16, "test": 4} and ds.class_names == ["0", "1", "2", "3"]
    assert ds.input_shape == (5, 5, 3)
    assert _keys(*ds.arrays("train", limit=50)) == _keys(x[:16], y[:16])
    _write_foreign(str(root / "test-0.tfrecord"), [x[16], x[17], b"not an image", x[19]], y[16:])
    ds = ld.load(str(root), stream=True)
    got = sum(int(b.shape[0]) for _, b in ds.batches("test", 4))
    assert got == 3 and ds.bad_files == 1
    assert "test-0.tfrecord (record 2): corrupt or unreadable image" in capsys.readouterr().err
    (root / "notes.tfrecord").write_bytes(b"")
    with pytest.raises(ld.DataError, match=r"notes\.tfrecord: cannot tell the split of this shard"):
        ld.load(str(root))


# ------------------------------------------------------------------ the CLI
def test_cli_convert_and_inspect(tmp_path, capsys):
    src = _folder(tmp_path / "src", n=4, size=(5, 5))
    out = str(tmp_path / "out")
    assert main(["data", "convert", src, out, "--image-size", "4,4", "--num-shards", "2", "--quiet"]) == 0
    assert json.load(open(os.path.join(out, "index.json")))["image_shape"] == [4, 4, 3]
    assert main(["data", "convert", src, out]) == 2
    assert "folder is not empty (pass overwrite=True / --overwrite" in capsys.readouterr().err
    grid = str(tmp_path / "grid.png")
    assert main(["data", "inspect", out, "--verify", "--grid", grid, "--samples", "6", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["splits"] == {"train": 9, "test": 3} and report["verified"] == 4 and report["grid"] == grid
    png = tf.io.decode_png(open(grid, "rb").read()).numpy()
    assert png.shape[0] > 50 and png.shape[1] > 100
    assert main(["data", "inspect", src]) == 0
    text = capsys.readouterr().out
    assert "streamed from disk; input shape (5, 5, 3); 3 classes" in text and "train" in text
    assert main(["data", "inspect", src, "--verify"]) == 2
    assert "verify applies to TFRecord folders" in capsys.readouterr().err


# ------------------------------------------------------------------- tfds
def test_tfds_sets_are_streamed_from_their_prepared_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (30, 4, 4, 1), dtype=np.uint8)
    y = np.arange(30) % 3
    folder = tmp_path / "toy" / "1.0.0"
    folder.mkdir(parents=True)
    paths = [str(folder / f"toy-train.tfrecord-0000{i}-of-00002") for i in range(2)]
    _write_foreign(paths[0], x[:18], y[:18], keys=("image", "label"))
    _write_foreign(paths[1], x[18:], y[18:], keys=("image", "label"))
    split = types.SimpleNamespace(filepaths=paths, shard_lengths=[18, 12])
    info = types.SimpleNamespace(
        splits={"train": split}, supervised_keys=("image", "label"), file_format="tfrecord",
        features={"image": types.SimpleNamespace(shape=(4, 4, 1)),
                  "label": types.SimpleNamespace(names=["x", "y", "z"], num_classes=3)},
    )
    calls = {}

    def builder(name, data_dir):
        calls.update(name=name, data_dir=data_dir)
        return types.SimpleNamespace(info=info)

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", types.SimpleNamespace(builder=builder))
    ds = ld.load("tfds:toy", cache_dir=str(tmp_path), stream=True)
    assert calls == {"name": "toy", "data_dir": str(tmp_path)}
    assert isinstance(ds, ld.StreamingDataSet) and ds.name == "tfds:toy" and ds.class_names == ["x", "y", "z"]
    assert ds.splits == {"train": 23, "test": 7}  # no test split: ceil(20%) of each file held out (seed 0)
    both = ds.arrays("train", limit=50), ds.arrays("test", limit=50)
    assert sorted(_keys(*both[0]) + _keys(*both[1])) == _keys(x, y)
    info.file_format = "array_record"
    with pytest.raises(ld.DataError, match="stored as array_record; streaming reads TFRecord files"):
        ld.load("tfds:toy", cache_dir=str(tmp_path), stream=True)
