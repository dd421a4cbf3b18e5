"""lamina.data: image folders (PNG/JPEG/BMP) and their bad-input errors."""

import os
import struct

import numpy as np
import pytest
import tensorflow as tf

import lamina.data as ld


def write_png(path, pixels):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.asarray(pixels, np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    tf.io.write_file(str(path), tf.io.encode_png(pixels))


def write_bmp(path, rgb):
    """A 24-bit bottom-up BMP written byte by byte."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    h, w, _ = rgb.shape
    row = w * 3
    pad = (4 - row % 4) % 4
    body = b"".join(rgb[y, :, ::-1].astype(np.uint8).tobytes() + b"\0" * pad for y in range(h - 1, -1, -1))
    header = b"BM" + struct.pack("<IHHI", 54 + len(body), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(body), 2835, 2835, 0, 0)
    with open(path, "wb") as f:
        f.write(header + info + body)


def make_folder(root, n_per_class=5, size=(6, 5), channels=3, classes=("cat", "dog")):
    rng = np.random.default_rng(0)
    images = {}
    for c in classes:
        for i in range(n_per_class):
            img = rng.integers(0, 256, size + (channels,), dtype=np.uint8)
            path = os.path.join(root, c, f"img{i:02d}.png")
            write_png(path, img)
            images[path] = (img, c)
    return images


def _lookup(images):
    """Pixels -> class name of every image written."""
    return {img.tobytes(): name for img, name in images.values()}


def test_image_folder_values_and_split(tmp_path):
    images = make_folder(tmp_path / "pets")
    ds = ld.load(str(tmp_path / "pets"))
    assert ds.name == "pets" and ds.class_names == ["cat", "dog"] and ds.num_classes == 2
    assert ds.input_shape == (6, 5, 3) and ds.splits == {"train": 8, "test": 2}
    assert ds.preprocessing["scale"] == pytest.approx(1 / 255)
    table = _lookup(images)
    x_te, y_te = ds.arrays("test")
    assert sorted(y_te.tolist()) == [0, 1]  # stratified
    for split in ("train", "test"):
        x, y = ds.arrays(split)
        for img, label in zip(x, y):
            assert table[img.tobytes()] == ds.class_names[label]
    xb, yb = next(iter(ds.batches("test", 4)))
    np.testing.assert_allclose(xb.numpy(), x_te / 255.0, atol=1e-7)
    np.testing.assert_array_equal(yb.numpy(), y_te)
    again = ld.load(str(tmp_path / "pets"), seed=3)
    np.testing.assert_array_equal(again.arrays("test")[0], x_te)


def test_train_test_subfolders_and_validation(tmp_path):
    train = make_folder(tmp_path / "set" / "train", n_per_class=6, channels=1, classes=("a", "b", "c"))
    test = make_folder(tmp_path / "set" / "test", n_per_class=2, channels=1, classes=("a", "c"))
    ds = ld.load(str(tmp_path / "set"), validation_split=0.5, seed=1)
    assert ds.class_names == ["a", "b", "c"] and ds.input_shape == (6, 5, 1)
    assert ds.splits == {"train": 9, "validation": 9, "test": 4}
    np.testing.assert_array_equal(ds.arrays("test")[1], [0, 0, 2, 2])
    table = _lookup(test)
    for img, label in zip(*ds.arrays("test")):
        assert table[img.tobytes()] == ds.class_names[label]
    table = _lookup(train)
    for split in ("train", "validation"):
        for img, label in zip(*ds.arrays(split)):
            assert table[img.tobytes()] == ds.class_names[label]


def test_color_mode_and_resize(tmp_path):
    images = make_folder(tmp_path / "p", size=(4, 4))
    gray = ld.load(str(tmp_path / "p"), color_mode="grayscale")
    assert gray.input_shape == (4, 4, 1)
    table = {img.tobytes(): img for img, _ in images.values()}
    # grayscale = rounded ITU-R 601 luma of the RGB image
    x, _ = gray.arrays("train")
    rgb_imgs = list(table.values())
    lumas = {np.rint(i.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8).tobytes() for i in rgb_imgs}
    assert all(img[..., 0].tobytes() in lumas for img in x)
    big = ld.load(str(tmp_path / "p"), image_size=(8, 6))
    assert big.input_shape == (8, 6, 3) and big.arrays("train")[0].dtype == np.uint8
    # a constant image stays constant when resized
    write_png(tmp_path / "q" / "x" / "a.png", np.full((3, 3, 3), 77))
    write_png(tmp_path / "q" / "x" / "b.png", np.full((5, 2, 3), 77))
    write_png(tmp_path / "q" / "y" / "c.png", np.full((4, 4, 3), 77))
    q = ld.load(str(tmp_path / "q"), image_size=4)
    assert q.input_shape == (4, 4, 3)
    assert np.all(np.concatenate([q.arrays("train")[0], q.arrays("test")[0]]) == 77)


def test_rgb_from_grayscale_and_bmp_and_jpeg(tmp_path):
    root = tmp_path / "mix"
    g = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    write_png(root / "g" / "a.png", g)
    write_png(root / "g" / "b.png", g)
    rgb = np.stack([g, g + 1, g + 2], axis=-1)
    write_bmp(str(root / "b" / "a.bmp"), rgb)
    write_bmp(str(root / "b" / "b.bmp"), rgb)
    os.makedirs(root / "j")
    for name in ("a.jpg", "b.JPEG"):
        tf.io.write_file(str(root / "j" / name), tf.io.encode_jpeg(np.full((3, 4, 3), 128, np.uint8), quality=100))
    (root / "j" / "notes.txt").write_text("ignored")
    ds = ld.load(str(root), color_mode="rgb")
    assert ds.class_names == ["b", "g", "j"] and ds.input_shape == (3, 4, 3)
    x = np.concatenate([ds.arrays("train")[0], ds.arrays("test")[0]])
    y = np.concatenate([ds.arrays("train")[1], ds.arrays("test")[1]])
    for img, label in zip(x, y):
        if label == 0:
            np.testing.assert_array_equal(img, rgb)
        elif label == 1:
            np.testing.assert_array_equal(img, np.repeat(g[..., None], 3, axis=-1))
        else:
            assert np.abs(img.astype(int) - 128).max() <= 2


def test_mixed_sizes_without_resize_name_two_files(tmp_path):
    write_png(tmp_path / "m" / "a" / "one.png", np.zeros((4, 4)))
    write_png(tmp_path / "m" / "b" / "two.png", np.zeros((5, 3)))
    with pytest.raises(ld.DataError, match=r"two\.png: image is 5x3 but .*one\.png is 4x4; resize them all with --image-size H,W \(image_size=\(H, W\) in Python\)"):
        ld.load(str(tmp_path / "m"))


def test_corrupt_and_truncated_images(tmp_path):
    make_folder(tmp_path / "c")
    bad = tmp_path / "c" / "dog" / "img03.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    with pytest.raises(ld.DataError, match=r"dog/img03\.png: corrupt or unreadable image"):
        ld.load(str(tmp_path / "c"))
    good = tmp_path / "c" / "cat" / "img01.png"
    bad.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ld.DataError, match=r"img03\.png: corrupt or unreadable image"):
        ld.load(str(tmp_path / "c"))
    bad.write_bytes(b"")
    with pytest.raises(ld.DataError, match=r"img03\.png: corrupt image \(empty file\)"):
        ld.load(str(tmp_path / "c"))


def test_empty_folder_and_empty_class(tmp_path):
    os.makedirs(tmp_path / "e")
    with pytest.raises(ld.DataError, match=r"e: empty folder"):
        ld.load(str(tmp_path / "e"))
    make_folder(tmp_path / "f")
    os.makedirs(tmp_path / "f" / "zebra")
    (tmp_path / "f" / "zebra" / "readme.txt").write_text("no images here")
    with pytest.raises(ld.DataError, match=r"f/zebra: class folder has no images"):
        ld.load(str(tmp_path / "f"))
    write_png(tmp_path / "g" / "loose.png", np.zeros((2, 2)))
    with pytest.raises(ld.DataError, match=r"no class sub-folders found \(images must be in one sub-folder per class\)"):
        ld.load(str(tmp_path / "g"))


def test_unknown_class_in_test_folder(tmp_path):
    make_folder(tmp_path / "s" / "train", classes=("a", "b"))
    make_folder(tmp_path / "s" / "test", classes=("a", "z"))
    with pytest.raises(ld.DataError, match=r"test/z: class 'z' is not among the training classes"):
        ld.load(str(tmp_path / "s"))


def test_augment_on_image_folder_keeps_shape(tmp_path):
    make_folder(tmp_path / "a", size=(16, 16))
    ds = ld.load(str(tmp_path / "a"))
    xb, _ = next(iter(ds.batches("train", 8, augment="crop,flip,translate", epoch=1)))
    assert xb.shape == (8, 16, 16, 3)
    assert 0.0 <= float(tf.reduce_min(xb)) and float(tf.reduce_max(xb)) <= 1.0
