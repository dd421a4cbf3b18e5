"""Segmentation folders: images and their masks of class ids, for per-pixel classification.

Layout (``images/`` and ``masks/`` hold files of the same stem, e.g.
``images/a.png`` and ``masks/a.png``)::

    root/images/*.png|jpg|...       root/train/images/...  root/test/images/...  [root/validation/images/...]
    root/masks/*.png            or  root/train/masks/...   root/test/masks/...   [root/validation/masks/...]
    [root/classes.txt]              [root/classes.txt]

A mask is a single-channel (grayscale) image whose pixel values are class ids
``0 .. K-1`` (lossless: PNG or BMP). ``classes.txt`` (one name per line)
fixes ``K`` and the names; without it ``K`` is the largest id + 1. Without
``train/`` and ``test/`` sub-folders, a fixed 20 % of the pairs (seed 0) is the
``test`` split. ``load`` returns a :class:`~lamina.data.paired.PairedDataSet`
(task ``"segmentation"``): images ``(H, W, C)`` scaled like any image set,
masks ``(H, W)`` int32.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from lamina.data.errors import DataError
from lamina.data.image_folder import IMAGE_EXTENSIONS, SPLIT_SEED, TEST_FRACTION, decode_image_file
from lamina.data.paired import PairedDataSet

__all__ = ["is_segmentation_folder", "load_segmentation_folder", "MASK_EXTENSIONS"]

MASK_EXTENSIONS = (".png", ".bmp")
_SPLIT_DIRS = (("train", "train"), ("test", "test"), ("validation", "validation"), ("validation", "val"))


def is_segmentation_folder(path: str) -> bool:
    """Whether ``path`` has ``images/`` and ``masks/`` (directly or under ``train/``)."""
    for base in (path, os.path.join(path, "train")):
        if os.path.isdir(os.path.join(base, "images")) and os.path.isdir(os.path.join(base, "masks")):
            return True
    return False


def _pairs(folder: str) -> List[Tuple[str, str]]:
    """``(image, mask)`` paths of one split folder, matched by file stem, sorted."""
    images, masks = os.path.join(folder, "images"), os.path.join(folder, "masks")

    def stems(d: str, exts: Tuple[str, ...]) -> Dict[str, str]:
        try:
            names = sorted(os.listdir(d))
        except OSError as err:
            raise DataError(f"{d}: cannot list folder ({err.strerror or err})") from None
        return {os.path.splitext(n)[0]: os.path.join(d, n) for n in names
                if os.path.splitext(n)[1].lower() in exts and not n.startswith(".")}

    img, msk = stems(images, IMAGE_EXTENSIONS), stems(masks, MASK_EXTENSIONS)
    if not img:
        raise DataError(f"{images}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    missing = sorted(set(img) - set(msk))
    if missing:
        raise DataError(f"{masks}: no mask for image {missing[0]!r} ({len(missing)} missing; masks are "
                        f"{'/'.join(MASK_EXTENSIONS)} files of the image's name)")
    return [(img[s], msk[s]) for s in sorted(img)]


def _read(pairs: List[Tuple[str, str]], size: Optional[Tuple[int, int]]) -> Tuple[np.ndarray, np.ndarray]:
    import tensorflow as tf

    xs, ys = [], []
    for image_path, mask_path in pairs:
        x, m = decode_image_file(image_path), decode_image_file(mask_path)
        if m.shape[-1] != 1:
            raise DataError(f"{mask_path}: a mask must be a single-channel image of class ids, got {m.shape[-1]} channels")
        if x.shape[:2] != m.shape[:2]:
            raise DataError(f"{mask_path}: mask of size {m.shape[:2]} for an image of size {x.shape[:2]} ({image_path})")
        if size is not None and x.shape[:2] != tuple(size):
            x = tf.cast(tf.round(tf.image.resize(x, size, method="bilinear", antialias=True)), tf.uint8).numpy()
            m = tf.image.resize(m, size, method="nearest").numpy()  # ids are never blended
        if xs and (x.shape != xs[0].shape):
            raise DataError(f"{image_path}: image of shape {x.shape}, the first one has {xs[0].shape}; "
                            "pass image_size=(height, width) to resize them all")
        xs.append(x)
        ys.append(m[..., 0])
    return np.stack(xs), np.stack(ys).astype(np.int32)


def load_segmentation_folder(path: str, image_size: Optional[Tuple[int, int]] = None, validation_split: float = 0.0,
                             seed: int = 0, source: Optional[str] = None) -> PairedDataSet:
    """Loads a segmentation folder into memory.

    Args:
      path: the folder (see the module docstring for the layout).
      image_size: resize images (bilinear) and masks (nearest) to ``(height, width)``.
      validation_split: fraction of ``train`` held out as ``validation`` (seeded), unless the folder has one.
      seed: the validation split's and the batches' seed.
      source: the ``source`` string.

    Returns:
      A :class:`PairedDataSet` (task ``"segmentation"``).

    Raises:
      DataError: for a missing mask, mismatched sizes, a multi-channel mask or an id outside ``classes.txt``.
    """
    root = os.path.abspath(path)
    listed: Dict[str, List[Tuple[str, str]]] = {}
    if os.path.isdir(os.path.join(root, "train", "images")):
        for split, d in _SPLIT_DIRS:
            if split not in listed and os.path.isdir(os.path.join(root, d, "images")):
                listed[split] = _pairs(os.path.join(root, d))
    else:
        pairs = _pairs(root)
        order = np.random.default_rng(SPLIT_SEED).permutation(len(pairs))
        held = max(1, int(round(len(pairs) * TEST_FRACTION))) if len(pairs) > 1 else 0
        listed["train"] = [pairs[i] for i in sorted(order[held:])]
        if held:
            listed["test"] = [pairs[i] for i in sorted(order[:held])]
    if "validation" not in listed and validation_split > 0:
        train = listed["train"]
        order = np.random.default_rng(seed).permutation(len(train))
        held = max(1, int(round(len(train) * validation_split)))
        listed["validation"] = [train[i] for i in sorted(order[:held])]
        listed["train"] = [train[i] for i in sorted(order[held:])]
    splits = {s: _read(p, image_size) for s, p in listed.items() if p}
    top = max(int(y.max()) for _, y in splits.values())
    names_file = os.path.join(root, "classes.txt")
    if os.path.isfile(names_file):
        with open(names_file, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        if top >= len(names):
            raise DataError(f"{names_file}: {len(names)} classes, but a mask holds id {top}")
    else:
        names = [str(i) for i in range(top + 1)]
    shapes = {x.shape[1:] for x, _ in splits.values()}
    if len(shapes) > 1:
        raise DataError(f"{path}: images of different sizes across splits {sorted(shapes)}; pass image_size")
    name = os.path.basename(root.rstrip(os.sep))
    x_train = splits["train"][0]
    scale = 1.0 / 255.0 if x_train.dtype == np.uint8 else 1.0
    return PairedDataSet(name, splits, task="segmentation", num_classes=len(names), class_names=names, scale=scale,
                         seed=seed, source=source or path)
