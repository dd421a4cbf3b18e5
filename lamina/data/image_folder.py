"""Image folders: one sub-folder per class, optionally under ``train/`` and ``test/``."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from lamina.data.checks import open_regular
from lamina.data.decode import decode_image_bytes
from lamina.data.errors import DataError
from lamina.data.split import split_indices

__all__ = [
    "IMAGE_EXTENSIONS",
    "TEST_FRACTION",
    "SPLIT_SEED",
    "FolderListing",
    "list_class_images",
    "list_image_folder",
    "decode_image_file",
]

IMAGE_EXTENSIONS: Tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
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


def _images_under(folder: str, root: Optional[str] = None, warn: bool = True, special: Optional[List[str]] = None) -> List[str]:
    """Image files under ``folder`` (recursively), in sorted path order.

    One ``os.scandir`` per folder and no extra system call per plain file.
    Symbolic links resolving outside ``root`` (default ``folder``) are skipped
    with a ``lamina: warning`` line; linked sub-folders are not descended into.
    Names with an image extension that are not regular files (FIFOs, sockets,
    devices, broken links: reading a FIFO would block) are skipped and appended to ``special``.
    """
    root = folder if root is None else root
    found: List[str] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        raise DataError(f"{folder}: cannot list folder ({err.strerror or err})") from None
    folders = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            continue
        if is_dir:
            folders.append(entry.path)
            continue
        if os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
            continue
        if entry.is_symlink() and _escapes(entry.path, root, warn):
            continue
        try:
            regular = entry.is_file()  # from the directory entry's type: no system call for plain files
        except OSError:
            regular = False
        if not regular:
            if special is not None:
                special.append(entry.path)
            continue
        found.append(entry.path)
    for sub in folders:  # a folder's own files first, then its sub-folders (as os.walk)
        found.extend(_images_under(sub, root, warn, special))
    return found


def list_class_images(
    folder: str, class_names: Optional[List[str]] = None, root: Optional[str] = None,
    special: Optional[List[str]] = None,
) -> Tuple[List[str], List[int], List[str]]:
    """Lists the images of a folder with one sub-folder per class.

    Symbolic links (class folders or files) that resolve outside ``root`` are
    skipped with a ``lamina: warning: ...`` line on standard error.

    Args:
      folder: the folder holding class sub-folders.
      class_names: the classes to expect (for a ``test/`` folder: those of
        ``train/``); ``None`` takes the sorted sub-folder names.
      root: the data root that links may point into (default ``folder``).
      special: collects skipped non-regular files (FIFOs, devices, sockets).

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
        files = _images_under(os.path.join(folder, name), root, special=special)
        if not files:
            raise DataError(
                f"{os.path.join(folder, name)}: class folder has no images ({', '.join(IMAGE_EXTENSIONS)})"
            )
        paths.extend(files)
        labels.extend([class_names.index(name)] * len(files))
    return paths, labels, list(class_names)


def decode_image_file(path: str) -> np.ndarray:
    """Decodes one PNG/JPEG/BMP/GIF/WebP file (first frame of an animation) to ``[H, W, C]`` uint8.

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
    return decode_image_bytes(data, path)


@dataclass
class FolderListing:
    """The files of an image folder, listed once: relative paths and labels per split.

    Attributes:
      root: the folder (absolute).
      class_names: sorted class sub-folder names.
      splits: ``{split: (relative paths, labels int64)}``.
      own_validation: whether the folder has its own ``validation/`` (or ``val/``) split.
      special: non-regular files that were skipped (FIFOs, devices, sockets).
    """

    root: str
    class_names: List[str]
    splits: Dict[str, Tuple[List[str], np.ndarray]] = field(default_factory=dict)
    own_validation: bool = False
    special: List[str] = field(default_factory=list)


def list_image_folder(folder: str) -> FolderListing:
    """Lists an image folder once (nothing is decoded).

    Layouts: ``folder/<class>/*.png`` (a fixed, stratified 80/20 train/test
    split with seed 0, made from the file list), or ``folder/train/<class>/...``
    and ``folder/test/<class>/...`` (and optionally ``validation/`` or
    ``val/``) used as the splits. Classes are the sorted sub-folder names.
    Symbolic links that resolve outside ``folder`` are skipped with a warning
    naming them; FIFOs, sockets and devices are skipped with one warning.

    Args:
      folder: the root folder.

    Returns:
      A :class:`FolderListing`.

    Raises:
      DataError: for a missing or empty folder, a class without images, or an
        unknown class in ``test/``.
    """
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such folder")
    root = os.path.abspath(folder)
    subdirs = _subdirs(root, warn=False)
    special: List[str] = []
    cut = len(root) + 1

    def rel(paths: List[str]) -> List[str]:
        return [p[cut:] for p in paths]

    if "train" in subdirs and "test" in subdirs:
        paths, labels, class_names = list_class_images(os.path.join(root, "train"), root=root, special=special)
        listing = FolderListing(root, class_names, special=special)
        listing.splits["train"] = (rel(paths), np.asarray(labels, np.int64))
        extra = [("test", "test")] + [("validation", d) for d in _VALIDATION_DIRS if d in subdirs][:1]
        for split, name in extra:
            paths, labels, _ = list_class_images(os.path.join(root, name), class_names, root=root, special=special)
            listing.splits[split] = (rel(paths), np.asarray(labels, np.int64))
        listing.own_validation = "validation" in listing.splits
    else:
        if not subdirs and not _images_under(root, warn=False):
            raise DataError(f"{folder}: empty folder (expected one sub-folder of images per class)")
        paths, labels, class_names = list_class_images(root, special=special)
        y = np.asarray(labels, np.int64)
        train, test = split_indices(y, TEST_FRACTION, SPLIT_SEED, what=folder)
        names = rel(paths)
        del paths
        listing = FolderListing(root, class_names, special=special)
        listing.splits["train"] = ([names[i] for i in train], y[train])
        listing.splits["test"] = ([names[i] for i in test], y[test])
    if special:
        print(f"lamina: warning: {folder}: skipped {len(special)} file(s) that are not regular files "
              f"(FIFO, socket, device or broken link), e.g. {special[0]}", file=sys.stderr, flush=True)
    return listing
