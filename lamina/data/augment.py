"""Seeded image augmentations on ``tf.data`` batches: crop, flip, translate.

Each example's random draw is a pure function of ``(seed, epoch, index)``
(``index`` = the example's position in its split), so an epoch's augmented
batches are the same whether it is run from the start or resumed part way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from lamina.data.errors import DataError

__all__ = ["AUGMENTATIONS", "Augmenter", "parse_augment"]

AUGMENTATIONS: Tuple[str, ...] = ("crop", "flip", "translate")

AugmentArg = Union[bool, None, str, Sequence[str], Mapping[str, Any]]


def _default_pad(size: int) -> int:
    """Crop padding for one image side: 4 px for 32, ``max(1, size // 8)`` in general."""
    return max(1, int(size) // 8)


def _default_shift(size: int) -> int:
    """Largest translation for one image side: ``max(1, size // 10)`` pixels."""
    return max(1, int(size) // 10)


@dataclass(frozen=True)
class Augmenter:
    """A parsed augmentation recipe for images of one shape.

    Attributes:
      height, width: image size.
      crop: ``(pad_h, pad_w)`` for random crop after zero padding, or ``None``.
      flip: random horizontal flip (off by default: it changes digits' meaning).
      translate: ``(max_dy, max_dx)`` for a random shift with edge-mirrored
        fill, or ``None``.
    """

    height: int
    width: int
    crop: Optional[Tuple[int, int]] = None
    flip: bool = False
    translate: Optional[Tuple[int, int]] = None

    def tables(self, n: int, seed: int, epoch: int) -> Dict[str, tf.Tensor]:
        """Draws every example's random parameters for one epoch.

        Args:
          n: number of examples in the split.
          seed: non-negative integer.
          epoch: non-negative integer.

        Returns:
          ``{"crop": [n, 2], "flip": [n], "translate": [n, 2]}`` int32 tensors
          (offsets into the padded image; flip as 0/1), and ``"packed"``
          ``[n, 5]``: the same per example in one row (for :meth:`apply_one`).
        """
        rng = np.random.default_rng([int(seed), int(epoch), 0x41554721])
        ph, pw = self.crop or (0, 0)
        th, tw = self.translate or (0, 0)
        crop = np.stack([rng.integers(0, 2 * ph + 1, n), rng.integers(0, 2 * pw + 1, n)], axis=1)
        flip = rng.integers(0, 2, n)
        shift = np.stack([rng.integers(0, 2 * th + 1, n), rng.integers(0, 2 * tw + 1, n)], axis=1)
        packed = np.concatenate([crop, shift, flip[:, None]], axis=1).astype(np.int32)
        with tf.device("/cpu:0"):
            return {
                "crop": tf.constant(crop.astype(np.int32)),
                "flip": tf.constant(flip.astype(np.int32)),
                "translate": tf.constant(shift.astype(np.int32)),
                "packed": tf.constant(packed),
            }

    def apply(self, images: tf.Tensor, index: tf.Tensor, tables: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """Augments one batch.

        Args:
          images: ``[B, H, W, C]`` raw images (any dtype: only pixels move,
            padding is zero).
          index: ``[B]`` int indices of the examples in their split.
          tables: the output of :meth:`tables`.

        Returns:
          ``[B, H, W, C]`` augmented images of the same dtype.
        """
        if self.crop is not None:
            off = tf.gather(tables["crop"], index)
            images = _shift(images, off, self.crop, self.height, self.width, "CONSTANT")
        if self.translate is not None:
            off = tf.gather(tables["translate"], index)
            images = _shift(images, off, self.translate, self.height, self.width, "SYMMETRIC")
        if self.flip:
            f = tf.gather(tables["flip"], index) > 0
            images = tf.where(f[:, None, None, None], tf.reverse(images, axis=[2]), images)
        return images


    def apply_one(self, image: tf.Tensor, index: tf.Tensor, tables: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """Augments one image exactly as :meth:`apply` does inside a batch.

        Streaming pipelines augment each image as it is decoded: one gather of
        the example's parameters, slices of one small image with constant
        sizes and a branch for the flip (a ``where`` over the image costs more).

        Args:
          image: ``[H, W, C]`` raw image (any dtype).
          index: the example's index in its split (scalar).
          tables: the output of :meth:`tables`.

        Returns:
          ``[H, W, C]`` augmented image of the same dtype.
        """
        channels = image.shape[2] if image.shape.rank == 3 and image.shape[2] is not None else tf.shape(image)[2]
        row = tf.gather(tables["packed"], index)  # crop dy, dx, translate dy, dx, flip
        size = [self.height, self.width, channels]
        if self.crop is not None:
            ph, pw = self.crop
            padded = tf.pad(image, [[ph, ph], [pw, pw], [0, 0]])
            image = tf.slice(padded, tf.stack([row[0], row[1], 0]), size)
        if self.translate is not None:
            th, tw = self.translate
            padded = tf.pad(image, [[th, th], [tw, tw], [0, 0]], mode="SYMMETRIC")
            image = tf.slice(padded, tf.stack([row[2], row[3], 0]), size)
        if self.flip:
            flipped = image
            image = tf.cond(row[4] > 0, lambda: tf.reverse(flipped, axis=[1]), lambda: flipped)
        return image


def _shift(
    images: tf.Tensor, offsets: tf.Tensor, pad: Tuple[int, int], height: int, width: int, mode: str
) -> tf.Tensor:
    """Pads each image by ``pad`` and crops an ``height x width`` window at ``offsets``."""
    ph, pw = pad
    padded = tf.pad(images, [[0, 0], [ph, ph], [pw, pw], [0, 0]], mode=mode)
    rows = offsets[:, 0:1] + tf.range(height, dtype=tf.int32)[None, :]
    cols = offsets[:, 1:2] + tf.range(width, dtype=tf.int32)[None, :]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(out, cols, axis=2, batch_dims=1)


def _side_amount(value: Any, default: Tuple[int, int], name: str) -> Optional[Tuple[int, int]]:
    """Turns a dict value (True, an int, a pair) into a per-side amount or None."""
    if value is False or value is None or value == 0:
        return None
    if value is True:
        return default
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0:
        return (int(value), int(value))
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (int, np.integer)) and v >= 0 for v in value):
        return (int(value[0]), int(value[1]))
    raise DataError(f"augment: {name} must be true/false, a positive pixel count or a (h, w) pair, got {value!r}")


def parse_augment(augment: AugmentArg, input_shape: Sequence[int]) -> Optional[Augmenter]:
    """Parses the ``augment`` argument of :meth:`DataSet.batches`.

    Args:
      augment: ``False``/``None`` (none), ``True`` (crop only), a string like
        ``"crop,flip,translate"`` or ``"none"``, a list of names, or a dict
        ``{"crop": True | pixels, "flip": bool, "translate": True | pixels}``.
      input_shape: per-example shape; must be ``(H, W, C)``.

    Returns:
      An :class:`Augmenter`, or ``None`` when nothing is enabled.

    Raises:
      DataError: for unknown names, bad values, or non-image data.
    """
    if augment is None or augment is False:
        return None
    if augment is True:
        wanted: Dict[str, Any] = {"crop": True}
    elif isinstance(augment, str):
        names = [s for s in augment.replace(",", " ").replace("+", " ").split() if s]
        if not names or names == ["none"]:
            return None
        wanted = {name: True for name in names}
    elif isinstance(augment, Mapping):
        wanted = dict(augment)
    elif isinstance(augment, (list, tuple, set, frozenset)):
        wanted = {str(name): True for name in augment}
    else:
        raise DataError(f"augment: expected a bool, a string, a list or a dict, got {type(augment).__name__}")
    unknown = sorted(set(wanted) - set(AUGMENTATIONS))
    if unknown:
        raise DataError(f"augment: unknown augmentation(s) {', '.join(unknown)}; choose from {', '.join(AUGMENTATIONS)}")
    if not any(v not in (False, None, 0) for v in wanted.values()):
        return None
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3:
        raise DataError(f"augment: augmentations need images of shape (H, W, C); this data set has input shape {shape}")
    h, w = shape[0], shape[1]
    flip = wanted.get("flip", False)
    if not isinstance(flip, (bool, np.bool_)):
        raise DataError(f"augment: flip must be true or false, got {flip!r}")
    translate = _side_amount(wanted.get("translate", False), (_default_shift(h), _default_shift(w)), "translate")
    if translate is not None and (translate[0] >= h or translate[1] >= w):
        raise DataError(f"augment: translate {translate} must be smaller than the image size {(h, w)}")
    return Augmenter(
        height=h,
        width=w,
        crop=_side_amount(wanted.get("crop", False), (_default_pad(h), _default_pad(w)), "crop"),
        flip=bool(flip),
        translate=translate,
    )
