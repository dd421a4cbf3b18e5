""":class:`ImageFolderStream`: an image folder read lazily, one file per example.

The folder is listed once (relative paths and labels, see
:func:`~lamina.data.image_folder.list_image_folder`); the validation split
is a stratified, seeded function of that list. Each epoch's order is a
permutation of ``(seed, epoch)``, so the files of the k-th batch are known
before anything is read.
"""

from __future__ import annotations

import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from lamina.data.errors import DataError
from lamina.data.image_folder import FolderListing, decode_image_file
from lamina.data.images import native_color_mode
from lamina.data.split import epoch_permutation, split_indices
from lamina.data.base import Plan
from lamina.data.streaming import StreamingDataSet, position_batches

__all__ = ["ImageFolderStream", "probe_images"]

_PROBES = 8
_CHANNELS = {"grayscale": 1, "rgb": 3}
_MODE_NAMES = {1: "grayscale", 2: "grayscale+alpha", 3: "RGB", 4: "RGBA"}


def probe_images(
    root: str, paths: Sequence[str], image_size: Optional[Tuple[int, int]], color_mode: Optional[str]
) -> Tuple[Tuple[int, int, int], str, List[str], bool]:
    """Decodes a few files (evenly spread over ``paths``) to fix the data set's image shape.

    Args:
      root: the folder.
      paths: relative paths of the training files.
      image_size: the requested ``(height, width)`` or ``None`` (then: the
        first image's size, and every probed image must have it).
      color_mode: ``"rgb"``, ``"grayscale"`` or ``None`` (then: the first image's).

    Returns:
      ``((height, width, channels), first file, notes, uniform)``; ``uniform``:
      every probed image already has the data set's size.

    Raises:
      DataError: if no probed file decodes, or probed sizes differ without ``image_size``.
    """
    n = len(paths)
    picks = sorted({int(i) for i in np.linspace(0, n - 1, num=min(_PROBES, n))}) if n else []
    decoded = []
    errors = []
    for i in picks:
        path = f"{root}/{paths[i]}"
        try:
            decoded.append((path, decode_image_file(path)))
        except DataError as err:
            errors.append(str(err))
    if not decoded:
        raise DataError(f"{root}: none of the {len(picks)} image(s) probed could be decoded (e.g. {errors[0]})")
    first, image = decoded[0]
    if image_size is None:
        for path, other in decoded[1:]:
            if other.shape[:2] != image.shape[:2]:
                raise DataError(
                    f"{path}: image is {other.shape[0]}x{other.shape[1]} but {first} is "
                    f"{image.shape[0]}x{image.shape[1]}; resize them all with --image-size H,W (image_size=(H, W) in Python)"
                )
        size = (int(image.shape[0]), int(image.shape[1]))
    else:
        size = (int(image_size[0]), int(image_size[1]))
    uniform = all(img.shape[:2] == size for _, img in decoded)
    mode = color_mode or native_color_mode(image.shape[-1])
    channels = _CHANNELS[mode]
    seen = sorted({int(img.shape[-1]) for _, img in decoded})
    notes = []
    if any(c != channels for c in seen):
        kinds = ", ".join(_MODE_NAMES.get(c, str(c)) for c in seen)
        notes.append(f"{root}: images are {kinds}; all are read as {mode} ({channels} channel{'s' if channels > 1 else ''})")
    return (size[0], size[1], channels), first, notes, uniform


class ImageFolderStream(StreamingDataSet):
    """An image folder streamed from disk (one sub-folder per class).

    Built by :func:`lamina.data.load` for folders whose decoded images would
    exceed :data:`~lamina.data.streaming.STREAM_THRESHOLD_BYTES`, or with
    ``stream=True``; smaller folders are decoded into memory through the same
    decoder (:meth:`materialize`).
    """

    def __init__(
        self,
        listing: FolderListing,
        *,
        name: str,
        source: str,
        image_size: Optional[Tuple[int, int]] = None,
        color_mode: Optional[str] = None,
        validation_split: float = 0.0,
        seed: int = 0,
        on_bad_file: Optional[str] = "skip",
        normalize: Optional[str] = "scale",
        stats_sample: Optional[int] = None,
        quiet: bool = False,
        probe: Optional[Tuple[Tuple[int, int, int], str, List[str], bool]] = None,
    ) -> None:
        """Sets up the splits from a listing; decodes only a few probe files.

        Args:
          listing: the folder's files.
          name: short name.
          source: the ``source`` string.
          image_size: resize to ``(height, width)``; without it all images
            must have the first one's size (others are bad files).
          color_mode: ``"rgb"`` or ``"grayscale"`` (default: the first image's).
          validation_split: fraction of ``train`` held out (stratified, seeded),
            unless the folder has a ``validation/`` split.
          seed: seed of the validation split and default shuffle seed.
          on_bad_file: ``"skip"`` or ``"fail"``.
          normalize: ``"scale"``, ``"standardize"`` or ``"none"``.
          stats_sample: see :class:`StreamingDataSet`.
          quiet: print no notes.
          probe: the result of :func:`probe_images` if already made.

        Raises:
          DataError: for bad arguments or undecodable probes.
        """
        splits: Dict[str, Tuple[List[str], np.ndarray]] = dict(listing.splits)
        if validation_split > 0 and "validation" not in splits:
            names, y = splits["train"]
            keep, held = split_indices(y, float(validation_split), int(seed), what=f"{source} (validation_split)")
            splits["train"] = ([names[i] for i in keep], y[keep])
            splits["validation"] = ([names[i] for i in held], y[held])
        self._root = listing.root
        shape, first, notes, uniform = probe or probe_images(listing.root, splits["train"][0], image_size, color_mode)
        self._first = first
        self._explicit_size = image_size is not None
        if not quiet:
            for note in notes:
                print(f"lamina: note: {note}", file=sys.stderr, flush=True)
        self._labels: Dict[str, np.ndarray] = {}
        with tf.device("/cpu:0"):
            self._paths = {s: tf.constant(p, tf.string) for s, (p, _) in splits.items()}
            self._label_t = {}
            for s, (_, y) in splits.items():
                self._labels[s] = np.asarray(y, np.int32)
                self._label_t[s] = tf.constant(self._labels[s])
            self._prefix = tf.constant(listing.root.rstrip("/") + "/")
        super().__init__(
            name, source, class_names=listing.class_names, input_shape=shape,
            split_sizes={s: len(p) for s, (p, _) in splits.items()}, seed=seed, on_bad_file=on_bad_file,
            resize=image_size is not None, fast_resize="no" if uniform else "always",
            normalize=normalize, stats_sample=stats_sample,
        )

    @property
    def root(self) -> str:
        """The folder."""
        return self._root

    def num_files(self, split: str) -> int:
        """One file per example."""
        self._check_split(split)
        return self._sizes[split]

    def class_counts(self, split: str) -> List[int]:
        """Examples per class id in ``split`` (from the file list)."""
        self._check_split(split)
        return np.bincount(self._labels[split], minlength=self.num_classes).astype(int).tolist()

    def files(self, split: str, positions: Sequence[int]) -> List[str]:
        """The paths of the examples at ``positions`` of ``split``.

        Args:
          split: which split.
          positions: positions in the split's stored order.

        Returns:
          Absolute paths.
        """
        self._check_split(split)
        picked = tf.gather(self._paths[split], np.asarray(positions, np.int64)).numpy()
        return [f"{self._root}/{p.decode()}" for p in picked]

    def _raw_plan(self, plan: Plan) -> tf.data.Dataset:
        n = self._sizes[plan.split]
        order = epoch_permutation(n, plan.seed, plan.epoch) if plan.shuffle else np.arange(n, dtype=np.int64)
        paths, labels = self._paths[plan.split], self._label_t[plan.split]
        return position_batches(order, plan).map(lambda p: (tf.gather(paths, p), tf.gather(labels, p), p))

    def _element(self, payload: tf.Tensor, label: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        return tf.io.read_file(tf.strings.join([self._prefix, payload])), label

    def _fast_element(self, payload: tf.Tensor) -> tf.Tensor:
        return tf.io.read_file(tf.strings.join([self._prefix, payload]))

    def _describe(self, split: str, index: int) -> Tuple[str, str]:
        path = self.files(split, [index])[0]
        try:
            image = decode_image_file(path)
        except DataError as err:
            text = str(err)
            return path, text[len(path) + 2 :] if text.startswith(path + ": ") else text
        h, w = self.input_shape[:2]
        if not self._explicit_size and image.shape[:2] != (h, w):
            return path, (f"image is {image.shape[0]}x{image.shape[1]} but {self._first} is {h}x{w}; "
                          "resize them all with --image-size H,W (image_size=(H, W) in Python)")
        return path, "could not be read or decoded while streaming"
