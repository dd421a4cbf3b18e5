"""lamina.data streaming: image folders read from disk batch by batch (StreamingDataSet).

Tiny generated folders (tens of 8x8 images, PNG/JPEG/BMP/GIF, gray/RGB/RGBA).
The in-memory path is the reference: a small folder loaded into memory and
the same folder streamed must give the same batches bit for bit.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import lamina.data as ld
from lamina.data import streaming
from lamina.data.images import convert_channels


def _png(path, pixels):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.asarray(pixels, np.uint8)
    tf.io.write_file(str(path), tf.io.encode_png(pixels if pixels.ndim == 3 else pixels[..., None]))


def _folder(root, n=12, classes=("a", "b", "c"), size=(8, 8), modes=(3,), seed=0):
    """``n`` images per class, cycling through channel counts ``modes``; returns {path: (pixels, class)}."""
    rng = np.random.default_rng(seed)
    made = {}
    for c in classes:
        for i in range(n):
            ch = modes[i % len(modes)]
            img = rng.integers(0, 256, size + (ch,), dtype=np.uint8)
            path = os.path.join(str(root), c, f"{i:03d}.png")
            _png(path, img)
            made[path] = (img, c)
    return made


def _batches(ds, split, batch, **kw):
    return [(x.numpy(), y.numpy()) for x, y in ds.batches(split, batch, **kw)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)


# ------------------------------------------------------------------ identity
def test_streamed_folder_gives_the_in_memory_batches_bit_for_bit(tmp_path):
    _folder(tmp_path / "f", n=14, size=(9, 11), modes=(1, 3, 4))
    kw = dict(image_size=(8, 8), color_mode="rgb", validation_split=0.2, seed=3)
    mem = ld.load(str(tmp_path / "f"), **kw)
    st = ld.load(str(tmp_path / "f"), stream=True, **kw)
    assert isinstance(mem, ld.DataSet) and isinstance(st, ld.StreamingDataSet) and st.streaming and not mem.streaming
    assert st.splits == mem.splits == {"train": 26, "validation": 7, "test": 9}
    assert st.input_shape == mem.input_shape == (8, 8, 3) and st.class_names == mem.class_names == ["a", "b", "c"]
    assert st.preprocessing == mem.preprocessing
    for split in ("train", "validation", "test"):
        _assert_same(_batches(mem, split, 5), _batches(st, split, 5))
    for kw2 in (dict(epoch=2, augment="crop,flip,translate"), dict(epoch=1, skip_batches=3, augment="crop"),
                dict(epoch=4, drop_remainder=True, one_hot=True), dict(seed=11, shuffle=True)):
        _assert_same(_batches(mem, "train", 4, **kw2), _batches(st, "train", 4, **kw2))


def test_channels_are_normalized_with_a_note_and_match_numpy(tmp_path, capsys):
    made = _folder(tmp_path / "m", n=6, modes=(1, 2, 3, 4))
    ds = ld.load(str(tmp_path / "m"), color_mode="grayscale", stream=True)
    assert ds.input_shape == (8, 8, 1)
    assert "images are grayscale, grayscale+alpha, RGB, RGBA; all are read as grayscale (1 channel)" in capsys.readouterr().err
    x, y = ds.arrays("train", limit=100)
    want = {convert_channels(img, "grayscale").tobytes() for img, _ in made.values()}
    assert len(x) == ds.splits["train"] and all(img.tobytes() in want for img in x)
    rgb = ld.load(str(tmp_path / "m"), color_mode="rgb", stream=True, quiet=True)
    x, _ = rgb.arrays("test", limit=100)
    want = {convert_channels(img, "rgb").tobytes() for img, _ in made.values()}
    assert x.shape[-1] == 3 and all(img.tobytes() in want for img in x)


def test_jpeg_bmp_gif_are_decoded_like_pil(tmp_path):
    root = tmp_path / "fmt"
    rng = np.random.default_rng(1)
    imgs = {}
    for cls, ext in (("j", "jpg"), ("b", "bmp"), ("g", "gif")):
        os.makedirs(root / cls)
        for i in range(3):
            img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            if ext == "jpg":  # smooth: decoders with other DCT/upsampling settings agree closely
                img = (np.add.outer(np.arange(8), np.arange(8))[..., None] * [9, 5, 3] + 20 * i).astype(np.uint8)
            if ext == "gif":
                img = np.full((8, 8, 3), 40 * (i + 1), np.uint8)  # exact in a palette
            path = root / cls / f"{i}.{ext}"
            Image.fromarray(img).save(path, quality=95) if ext == "jpg" else Image.fromarray(img).save(path)
            imgs[str(path)] = (np.asarray(Image.open(path).convert("RGB")), ext)
    ds = ld.load(str(root), stream=True)
    got = np.concatenate([ds.arrays(s, limit=50)[0] for s in ("train", "test")])
    assert len(got) == 9
    for path, (want, ext) in imgs.items():
        if ext == "jpg":  # TensorFlow's decoder (fast integer DCT): its exact pixels, and PIL's within a few levels
            tf_pixels = tf.io.decode_jpeg(open(path, "rb").read(), channels=3).numpy()
            assert any(np.array_equal(g, tf_pixels) for g in got)
            assert min(np.abs(g.astype(int) - want.astype(int)).max() for g in got) <= 8
        else:
            assert any(np.array_equal(g, want) for g in got), path


# ----------------------------------------------------------------- resuming
def test_skip_batches_resumes_exactly_without_reading_the_skipped_files(tmp_path, capsys):
    _folder(tmp_path / "r", n=10)
    ds = ld.load(str(tmp_path / "r"), stream=True)
    full = _batches(ds, "train", 4, epoch=5, augment="crop,flip")
    assert len(full) == ds.num_batches("train", 4) == 6
    for k in (1, 3, 5, 6):
        _assert_same(_batches(ds, "train", 4, epoch=5, augment="crop,flip", skip_batches=k), full[k:])
    # Delete every file of the first 3 planned batches: a resumed epoch never opens them.
    order = np.random.default_rng([0, 5]).permutation(ds.splits["train"])
    for path in ds.files("train", order[:12]):
        os.remove(path)
    capsys.readouterr()
    _assert_same(_batches(ds, "train", 4, epoch=5, augment="crop,flip", skip_batches=3), full[3:])
    assert ds.bad_files == 0 and "warning" not in capsys.readouterr().err
    # ...while the full epoch now meets them as bad files.
    assert sum(len(y) for _, y in _batches(ds, "train", 4, epoch=5)) == ds.splits["train"] - 12
    assert ds.bad_files == 12


def test_order_is_a_pure_function_of_seed_and_epoch(tmp_path):
    _folder(tmp_path / "o", n=8)
    a = ld.load(str(tmp_path / "o"), stream=True, seed=2)
    b = ld.load(str(tmp_path / "o"), stream=True, seed=2)
    _assert_same(_batches(a, "train", 5, epoch=1), _batches(b, "train", 5, epoch=1))
    ids = lambda ds, **kw: np.concatenate([x.reshape(len(x), -1)[:, :4] for x, _ in _batches(ds, "train", 5, **kw)])
    assert not np.array_equal(ids(a, epoch=1), ids(a, epoch=2))
    assert not np.array_equal(ids(a, epoch=1), ids(a, epoch=1, seed=3))


# ---------------------------------------------------------------- bad files
def _corrupt_jpeg():
    data = tf.io.encode_jpeg(np.full((8, 8, 3), 120, np.uint8)).numpy()
    return data[: len(data) // 2]  # cut in the middle of the entropy-coded data


def test_bad_files_mid_epoch_are_skipped_with_a_counted_warning(tmp_path, capsys):
    _folder(tmp_path / "bad", n=10)
    root = tmp_path / "bad"
    good = (root / "a" / "000.png").read_bytes()
    bad = {
        root / "a" / "003.png": good[: len(good) // 2],  # truncated PNG
        root / "b" / "004.png": b"",  # zero bytes
        root / "b" / "005.png": b"this is a text file, not an image",
        root / "c" / "006.jpg": _corrupt_jpeg(),
    }
    for path, data in bad.items():
        path.write_bytes(data)
    os.mkfifo(root / "c" / "pipe.png")  # reading a FIFO would block forever
    ds = ld.load(str(root), stream=True, image_size=(8, 8))
    err = capsys.readouterr().err
    assert "skipped 1 file(s) that are not regular files" in err and "pipe.png" in err
    assert sum(ds.splits.values()) == 31  # the FIFO is not listed; the bad files are
    seen = sum(len(y) for split in ds.splits for _, y in _batches(ds, split, 4))
    assert seen == 27 and ds.bad_files == 4
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("lamina: warning:")]
    assert len(lines) == 4 and all("skipped (" in l and "bad file" in l for l in lines)
    text = "\n".join(lines)
    assert "003.png: corrupt or unreadable image" in text and "004.png: corrupt image (empty file)" in text
    assert "005.png: corrupt or unreadable image (Unknown image file format" in text and "006.jpg" in text
    assert "4 bad files in bad so far" in text
    # the other examples of a batch with a bad file keep their place: later batches are unchanged
    mem = ld.load(str(root), image_size=(8, 8), on_bad_file="skip", quiet=True)
    assert sum(mem.splits.values()) == 27


def test_on_bad_file_fail_stops_with_the_file_name(tmp_path):
    _folder(tmp_path / "f", n=6)
    (tmp_path / "f" / "b" / "002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    ds = ld.load(str(tmp_path / "f"), stream=True, on_bad_file="fail")
    with pytest.raises(tf.errors.OpError) as info:
        for split in ds.splits:
            for _ in ds.batches(split, 4):
                pass
    error = ld.pipeline_error(info.value)
    assert isinstance(error, ld.DataError)
    assert "002.png: corrupt or unreadable image" in str(error) and "on_bad_file='fail'" in str(error)
    assert ld.pipeline_error(ValueError("x")) is None
    # loading into memory fails at once by default (the error shows before training)
    with pytest.raises(ld.DataError, match=r"002\.png: corrupt or unreadable image"):
        ld.load(str(tmp_path / "f"))
    with pytest.raises(ld.DataError, match="on_bad_file must be 'skip' or 'fail'"):
        ld.load(str(tmp_path / "f"), on_bad_file="ignore")


def test_a_size_mismatch_without_image_size_is_a_named_bad_file(tmp_path, capsys, monkeypatch):
    _folder(tmp_path / "s", n=10)
    _png(tmp_path / "s" / "b" / "005.png", np.zeros((5, 7, 3)))
    # among the files decoded at load (the probes): a clear error at once
    with pytest.raises(ld.DataError, match=r"005\.png: image is 5x7 but .* is 8x8; resize them all with --image-size H,W"):
        ld.load(str(tmp_path / "s"), stream=True)
    # met while streaming: a named bad file
    import lamina.data.folder_stream as folder_stream

    monkeypatch.setattr(folder_stream, "_PROBES", 1)
    ds = ld.load(str(tmp_path / "s"), stream=True)
    n = sum(len(y) for split in ds.splits for _, y in _batches(ds, split, 8))
    assert n == 29 and ds.bad_files == 1
    assert "005.png: image is 5x7 but" in capsys.readouterr().err


# ------------------------------------------------- statistics and samples
def test_streaming_mean_std_equal_numpy(tmp_path):
    made = _folder(tmp_path / "st", n=8, size=(6, 5))
    ds = ld.load(str(tmp_path / "st"), stream=True, normalize="standardize")
    train = set(ds.files("train", range(ds.splits["train"])))
    pixels = np.stack([made[p][0] for p in sorted(train)]).reshape(-1, 3).astype(np.float64) / 255.0
    np.testing.assert_allclose(ds.preprocessing["mean"], pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(ds.preprocessing["std"], pixels.std(0), rtol=1e-12)
    mem = ld.load(str(tmp_path / "st"), normalize="standardize")
    np.testing.assert_allclose(mem.preprocessing["mean"], ds.preprocessing["mean"], rtol=1e-12)
    x, _ = next(iter(ds.batches("train", 6, shuffle=False)))
    raw = ds.arrays("train", limit=6)[0].astype(np.float32)
    np.testing.assert_allclose(x.numpy(), ds.normalize(raw), rtol=1e-6)
    # on a seeded sample: the statistics of exactly those images
    some = ld.load(str(tmp_path / "st"), stream=True, normalize="standardize", stats_sample=5)
    sample = some.sample("train", 5)[0].reshape(-1, 3).astype(np.float64) / 255.0
    np.testing.assert_allclose(some.preprocessing["mean"], sample.mean(0), rtol=1e-12)
    with pytest.raises(ld.DataError, match="stats_sample applies to normalize='standardize'"):
        ld.load(str(tmp_path / "st"), stream=True, stats_sample=5)


def test_arrays_needs_a_limit_and_sample_is_bounded_and_seeded(tmp_path):
    _folder(tmp_path / "q", n=8)
    st = ld.load(str(tmp_path / "q"), stream=True)
    mem = ld.load(str(tmp_path / "q"))
    with pytest.raises(ld.DataError, match=r"streams from disk \(19 train examples\); arrays\(\) needs limit=N"):
        st.arrays("train")
    x, y = st.arrays("train", limit=7)
    np.testing.assert_array_equal(x, mem.arrays("train")[0][:7])
    for seed in (0, 4):
        xs, ys = st.sample("train", 6, seed=seed)
        xm, ym = mem.sample("train", 6, seed=seed)
        np.testing.assert_array_equal(xs, xm)
        np.testing.assert_array_equal(ys, ym)
    assert st.sample("test", 100)[0].shape == (5, 8, 8, 3)
    assert st.class_counts("train") == mem.class_counts("train") == np.bincount(mem.arrays("train")[1]).tolist()
    assert st.info()["streaming"] and st.info()["files"] == {"train": 19, "test": 5}


# --------------------------------------------------------- choosing streaming
def test_streaming_is_chosen_above_the_threshold_or_when_asked(tmp_path, monkeypatch):
    _folder(tmp_path / "t", n=4)
    path = str(tmp_path / "t")
    assert not ld.load(path).streaming
    assert ld.load(path + "?stream=1").streaming and ld.load(path, stream=True).streaming
    assert not ld.load(path + "?stream=0").streaming
    monkeypatch.setattr(streaming, "STREAM_THRESHOLD_BYTES", 12 * 8 * 8 * 3 - 1)  # 12 decoded images
    assert ld.load(path).streaming and not ld.load(path, stream=False).streaming
    with pytest.raises(ld.DataError, match="contradicts stream=False"):
        ld.load(path + "?stream=1", stream=False)
    with pytest.raises(ld.DataError, match=r"unknown data option 'fast=1'"):
        ld.load(path + "?fast=1")
    with pytest.raises(ld.DataError, match="stream=True applies to image folders, TFRecord folders, tfds: sets and .csv files"):
        ld.load("digits", stream=True)
    with pytest.raises(ld.DataError, match="on_bad_file applies to image folders"):
        ld.load("digits", on_bad_file="skip")
    assert ld.load(path + "?on_bad_file=fail", stream=True).on_bad_file == "fail"


# ----------------------------------------------------------------------- CSV
def _csv(path, n=300, blank_at=150):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).round(4)
    y = rng.integers(0, 3, n)
    with open(path, "w") as f:
        f.write("a,label,b,c\n")
        for i in range(n):
            f.write(f"{x[i, 0]},{['cat', 'dog', 'eel'][y[i]]},{x[i, 1]},{x[i, 2]}\n")
            if i == blank_at:
                f.write("\n")
    return str(path)


def test_csv_streams_in_chunks_with_the_in_memory_splits_and_exact_resume(tmp_path):
    from lamina.data.csv_stream import CSVStream

    path = _csv(tmp_path / "t.csv")
    mem = ld.load(path, validation_split=0.1, seed=1)
    st = CSVStream(path, name="t", source=path, validation_split=0.1, seed=1, chunk_rows=32)
    assert st.streaming and st.splits == mem.splits and st.class_names == mem.class_names == ["cat", "dog", "eel"]
    assert st.info()["chunks"] == 10 and st.class_counts("test") == mem.class_counts("test")
    for split in st.splits:
        xm, ym = mem.arrays(split)
        xs, ys = st.arrays(split, limit=1000)
        np.testing.assert_array_equal(ys, ym)  # stored order: the same rows
        np.testing.assert_allclose(xs, xm, rtol=1e-7)
    full = _batches(st, "train", 16, epoch=3)
    for k in (1, 7, len(full)):
        _assert_same(_batches(st, "train", 16, epoch=3, skip_batches=k), full[k:])
    assert not np.array_equal(np.concatenate([y for _, y in full]), np.concatenate([y for _, y in _batches(st, "train", 16, epoch=4)]))
    std = CSVStream(path, name="t", source=path, normalize="standardize", chunk_rows=32)
    ref = ld.load(path, normalize="standardize")
    np.testing.assert_allclose(std.preprocessing["mean"], ref.preprocessing["mean"], rtol=1e-6)
    np.testing.assert_allclose(std.preprocessing["std"], ref.preprocessing["std"], rtol=1e-6)
    with pytest.raises(ld.DataError, match="arrays\\(\\) needs limit=N"):
        st.arrays("train")
    with pytest.raises(ld.DataError, match="augment: augmentations need images"):
        st.batches("train", 4, augment="crop")


def test_csv_stream_names_bad_cells_and_is_chosen_by_size(tmp_path, monkeypatch):
    path = _csv(tmp_path / "t.csv", n=40)
    assert not ld.load(path).streaming and ld.load(path, stream=True).streaming
    monkeypatch.setattr(streaming, "STREAM_THRESHOLD_BYTES", 100)
    assert ld.load(path).streaming
    lines = open(path).read().splitlines()
    lines[12] = "0.5,dog,x,1.0"
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ld.DataError, match=r"bad\.csv:13: column 'b': non-numeric value 'x'"):
        ld.load(str(tmp_path / "bad.csv"))
    lines[12] = "0.5,dog,1.0"
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ld.DataError, match=r"bad\.csv:13: expected 4 columns, found 3"):
        ld.load(str(tmp_path / "bad.csv"))
