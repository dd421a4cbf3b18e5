"""Image folders: one sub-folder per class, optionally under ``train/`` and ``test/``."""

from __future__ import annotations

import os
import re
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from lamina.data.checks import open_regular
from lamina.data.errors import DataError
from lamina.data.images import convert_channels, native_color_mode, resize_images
from lamina.data.split import split_indices

__all__ = ["IMAGE_EXTENSIONS", "TEST_FRACTION", "SPLIT_SEED", "list_class_images", "decode_image_file", "load_image_folder"]

IMAGE_EXTENSIONS: Tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
TEST_FRACTION = 0.2
SPLIT_SEED = 0
_VALIDATION_DIRS = ("validation", "val", "valid")


def _escapes(path: str, root: str, warn: bool) -> bool:
    """Whether ``path`` is a symbolic link resolving outside ``root`` (then skipped, with a warning)."""
    if not os.path.islink(path):
        return False
    target, base = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([target, base]) == base:
        return False
    if warn:
        print(f"lamina: warning: {path}: symbolic link to {target} points outside the data folder {root}; skipped",
              file=sys.stderr, flush=True)
    return True


def _subdirs(folder: str, root: Optional[str] = None, warn: bool = True) -> List[str]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        raise DataError(f"{folder}: cannot list folder ({err.strerror or err})") from None
    root = folder if root is None else root
    return [
        e.name for e in entries
        if e.is_dir() and not e.name.startswith(".") and not _escapes(e.path, root, warn)
    ]


def _images_under(folder: str, root: Optional[str] = None, warn: bool = True) -> List[str]:
    """Image files under ``folder`` (recursively), in sorted path order.

    Symbolic links resolving outside ``root`` (default ``folder``) are skipped
    with a ``lamina: warning`` line; linked sub-folders are not descended into.
    """
    root = folder if root is None else root
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                path = os.path.join(top, name)
                if not _escapes(path, root, warn):
                    found.append(path)
    return found


def list_class_images(
    folder: str, class_names: Optional[List[str]] = None, root: Optional[str] = None
) -> Tuple[List[str], List[int], List[str]]:
    """Lists the images of a folder with one sub-folder per class.

    Symbolic links (class folders or files) that resolve outside ``root`` are
    skipped with a ``lamina: warning: ...`` line on standard error.

    Args:
      folder: the folder holding class sub-folders.
      class_names: the classes to expect (for a ``test/`` folder: those of
        ``train/``); ``None`` takes the sorted sub-folder names.
      root: the data root that links may point into (default ``folder``).

    Returns:
      ``(paths, labels, class_names)``.

    Raises:
      DataError: for no class folders, a class folder without images, or an
        unknown class in a ``test/`` folder.
    """
    root = folder if root is None else root
    subdirs = _subdirs(folder, root)
    if not subdirs:
        loose = _images_under(folder, root, warn=False)
        hint = " (images must be in one sub-folder per class)" if loose else ""
        raise DataError(f"{folder}: no class sub-folders found{hint}")
    if class_names is None:
        class_names = subdirs
    else:
        unknown = [d for d in subdirs if d not in class_names]
        if unknown:
            raise DataError(f"{os.path.join(folder, unknown[0])}: class {unknown[0]!r} is not among the training classes")
    paths: List[str] = []
    labels: List[int] = []
    for name in subdirs:
        files = _images_under(os.path.join(folder, name), root)
        if not files:
            raise DataError(
                f"{os.path.join(folder, name)}: class folder has no images ({', '.join(IMAGE_EXTENSIONS)})"
            )
        paths.extend(files)
        labels.extend([class_names.index(name)] * len(files))
    return paths, labels, list(class_names)


def _clean_tf_message(text: str) -> str:
    """Drops TensorFlow's ``{{function_node ...}}`` prefix and ``[Op:...]`` suffix."""
    text = re.sub(r"\{\{[^}]*\}\}", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\]", "", text)
    lines = text.strip().splitlines()
    return (lines[0].strip() if lines else "decode failed")[:200]


def decode_image_file(path: str) -> np.ndarray:
    """Decodes one PNG/JPEG/BMP/GIF file (first frame of a GIF) to ``[H, W, C]`` uint8.

    Args:
      path: the image file.

    Returns:
      The pixels, with the file's own channel count.

    Raises:
      DataError: if the file cannot be read or decoded.
    """
    try:
        with open_regular(path) as f:  # a FIFO or device named like an image would block or never end
            data = f.read()
    except OSError as err:
        raise DataError(f"{path}: cannot read image ({err.strerror or err})") from None
    if not data:
        raise DataError(f"{path}: corrupt image (empty file)")
    try:
        image = tf.io.decode_image(data, channels=0, dtype=tf.uint8, expand_animations=False)
        image = image.numpy()
    except (tf.errors.OpError, ValueError) as err:
        reason = _clean_tf_message(getattr(err, "message", None) or str(err))
        raise DataError(f"{path}: corrupt or unreadable image ({reason})") from None
    if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise DataError(f"{path}: corrupt image (decoded shape {image.shape})")
    return image


def _decode_all(
    paths: List[str], image_size: Optional[Tuple[int, int]], color_mode: Optional[str], reference: Dict[str, object]
) -> np.ndarray:
    """Decodes, converts and (if asked) resizes images; checks sizes agree."""
    out = []
    for path in paths:
        image = decode_image_file(path)
        if reference.get("mode") is None:
            reference["mode"] = color_mode or native_color_mode(image.shape[-1])
        image = convert_channels(image, str(reference["mode"]))
        if image_size is not None:
            image = resize_images(image[None], image_size)[0]
        elif reference.get("shape") is None:
            reference["shape"] = image.shape[:2]
            reference["first"] = path
        elif image.shape[:2] != reference["shape"]:
            h0, w0 = reference["shape"]  # type: ignore[misc]
            raise DataError(
                f"{path}: image is {image.shape[0]}x{image.shape[1]} but {reference['first']} is {h0}x{w0}; "
                "pass image_size=(height, width) to resize them all"
            )
        out.append(image)
    return np.stack(out, axis=0)


def load_image_folder(
    folder: str, image_size: Optional[Tuple[int, int]] = None, color_mode: Optional[str] = None
) -> Tuple[Dict[str, Tuple[np.ndarray, np.ndarray]], List[str]]:
    """Loads an image folder into memory.

    Layouts: ``folder/<class>/*.png`` (a fixed, stratified 80/20 train/test
    split with seed 0), or ``folder/train/<class>/...`` and
    ``folder/test/<class>/...`` (and optionally ``validation/`` or ``val/``)
    used as the splits. Classes are the sorted sub-folder names. Symbolic links
    that resolve outside ``folder`` are skipped with a warning naming them.

    Args:
      folder: the root folder.
      image_size: resize every image to ``(height, width)``; without it all
        images must have the same size.
      color_mode: ``"rgb"`` or ``"grayscale"``; default: that of the first image.

    Returns:
      ``({"train": (x uint8 [N, H, W, C], y), "test": ...}, class_names)``.

    Raises:
      DataError: for an empty folder, a class without images, a corrupt
        image, or mixed sizes without ``image_size``.
    """
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such folder")
    subdirs = _subdirs(folder, warn=False)
    reference: Dict[str, object] = {}
    splits: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    if "train" in subdirs and "test" in subdirs:
        paths, labels, class_names = list_class_images(os.path.join(folder, "train"), root=folder)
        splits["train"] = (_decode_all(paths, image_size, color_mode, reference), np.asarray(labels, np.int64))
        extra = [("test", "test")] + [("validation", d) for d in _VALIDATION_DIRS if d in subdirs][:1]
        for split, name in extra:
            paths, labels, _ = list_class_images(os.path.join(folder, name), class_names, root=folder)
            splits[split] = (_decode_all(paths, image_size, color_mode, reference), np.asarray(labels, np.int64))
        return splits, class_names
    if not subdirs and not _images_under(folder, warn=False):
        raise DataError(f"{folder}: empty folder (expected one sub-folder of images per class)")
    paths, labels, class_names = list_class_images(folder)
    x = _decode_all(paths, image_size, color_mode, reference)
    y = np.asarray(labels, np.int64)
    train, test = split_indices(y, TEST_FRACTION, SPLIT_SEED, what=folder)
    return {"train": (x[train], y[train]), "test": (x[test], y[test])}, class_names
