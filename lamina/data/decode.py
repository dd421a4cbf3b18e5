"""Decoding images inside ``tf.data`` pipelines, and the log of bad files met while streaming.

:func:`decode_image_tensor` is the one decoder of image files for every
source (image folders, TFRecord shards, tfds): decode (PNG/JPEG/BMP/GIF/WebP,
first frame of an animation), drop alpha, convert to the data set's channel
count, resize (bilinear, antialiased, rounded back to uint8). Loading a small
folder into memory and streaming a big one run the same function, so both
give the same pixels.

:class:`BadFileLog` counts the files that cannot be read or decoded while a
pipeline runs and either skips them with a ``lamina: warning`` naming the file
(``on_bad_file="skip"``) or stops with a :class:`DataError`
(``on_bad_file="fail"``).
"""

from __future__ import annotations

import re
import sys
import threading
from typing import Callable, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from lamina.data.errors import DataError

__all__ = [
    "ON_BAD_FILE",
    "RESIZE_MODES",
    "BadFileLog",
    "check_on_bad_file",
    "clean_tf_message",
    "decode_image_bytes",
    "decode_image_tensor",
    "pipeline_error",
]

ON_BAD_FILE: Tuple[str, ...] = ("skip", "fail")
_NAMED_WARNINGS = 100  # bad files named one by one; after that only counted
_lock = threading.Lock()
_failures: List[DataError] = []


def check_on_bad_file(value: Optional[str]) -> str:
    """Validates ``on_bad_file``: ``"skip"`` (default for ``None``) or ``"fail"``.

    Raises:
      DataError: for any other value.
    """
    if value is None:
        return "skip"
    if value not in ON_BAD_FILE:
        raise DataError(f"on_bad_file must be 'skip' or 'fail', got {value!r}")
    return str(value)


def clean_tf_message(text: str) -> str:
    """Drops TensorFlow's ``{{function_node ...}}`` prefix and ``[Op:...]`` suffix; keeps the first line."""
    text = re.sub(r"\{\{[^}]*\}\}", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\]", "", text)
    lines = text.strip().splitlines()
    return (lines[0].strip() if lines else "decode failed")[:200]


def decode_image_bytes(data: bytes, what: str) -> np.ndarray:
    """Decodes one encoded image (eagerly) to ``[H, W, C]`` uint8 with its own channel count.

    Args:
      data: the file's bytes.
      what: names the file in error messages.

    Returns:
      The pixels.

    Raises:
      DataError: if the bytes are empty or cannot be decoded.
    """
    if not data:
        raise DataError(f"{what}: corrupt image (empty file)")
    try:
        image = tf.io.decode_image(data, channels=0, dtype=tf.uint8, expand_animations=False).numpy()
    except (tf.errors.OpError, ValueError) as err:
        reason = clean_tf_message(getattr(err, "message", None) or str(err))
        raise DataError(f"{what}: corrupt or unreadable image ({reason})") from None
    if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise DataError(f"{what}: corrupt image (decoded shape {image.shape})")
    return image


def _luma(image: tf.Tensor) -> tf.Tensor:
    """``[H, W, 3]`` uint8 -> ``[H, W, 1]``: ITU-R 601 luma, rounded.

    The same three products and two sums in float32 as
    :func:`lamina.data.images.convert_channels`, so both give the same pixels
    (a gray image replicated to RGB comes back unchanged).
    """
    f = tf.cast(image, tf.float32)
    value = f[:, :, 0:1] * 0.299 + f[:, :, 1:2] * 0.587 + f[:, :, 2:3] * 0.114
    return tf.cast(tf.clip_by_value(tf.round(value), 0.0, 255.0), tf.uint8)


RESIZE_MODES: Tuple[str, ...] = ("no", "cond", "always")


def decode_image_tensor(data: tf.Tensor, channels: int, size: Tuple[int, int], resize: str = "cond") -> tf.Tensor:
    """Decodes one encoded image inside a pipeline to ``[H, W, channels]`` uint8.

    The decoder itself drops alpha and replicates gray to RGB (as
    :func:`lamina.data.images.convert_channels` does); grayscale output is
    the luma of the RGB decode.

    Args:
      data: a scalar string tensor (the file's bytes).
      channels: 1 or 3.
      size: the data set's ``(height, width)``.
      resize: ``"no"`` (an image of another size is an error), ``"cond"``
        (resize when the size differs) or ``"always"`` (resize without a
        branch: for sources whose images mostly need it). Resizing is
        bilinear, antialiased and rounded back to uint8; an image that
        already has ``size`` comes out unchanged either way.

    Returns:
      The image; every failure (corrupt data, empty image, wrong size) raises
      an op error, which the streaming pipeline counts as a bad file.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"decode_image_tensor: resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    if channels == 1:
        image = _luma(image)
    if resize != "no":

        def resized() -> tf.Tensor:
            out = tf.image.resize(tf.cast(image, tf.float32), list(size), method="bilinear", antialias=True)
            return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)

        if resize == "always":
            image = resized()
        else:
            # an empty image fails in the resize
            same = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.constant(list(size), tf.int32)))
            image = tf.cond(same, lambda: image, resized)
    return tf.ensure_shape(image, [size[0], size[1], channels])


class BadFileLog:
    """Counts the unreadable examples a streaming pipeline met, and warns or stops.

    Args:
      what: names the data set in messages.
      policy: ``"skip"`` or ``"fail"``.
      describe: ``describe(split, index) -> (name, reason)`` for one bad
        example (the file and why it could not be used).
      stream: where warnings go (default standard error).
    """

    def __init__(
        self, what: str, policy: str, describe: Callable[[str, int], Tuple[str, str]], stream=None
    ) -> None:
        self.what = what
        self.policy = check_on_bad_file(policy)
        self.describe = describe
        self.stream = stream
        self.count = 0
        self.names: List[str] = []

    def report(self, split: str, indices: np.ndarray) -> None:
        """Records the bad examples ``indices`` of ``split``.

        Raises:
          DataError: under ``on_bad_file="fail"`` (inside a pipeline it stops the
            iteration; :func:`pipeline_error` recovers this error).
        """
        for index in np.asarray(indices).reshape(-1).tolist():
            self.report_named(*self.describe(split, int(index)))

    def report_named(self, name: str, reason: str, examples: int = 1) -> None:
        """Records ``examples`` unreadable examples under one ``name`` (a file, or a shard's records).

        Raises:
          DataError: under ``on_bad_file="fail"``.
        """
        out = self.stream or sys.stderr
        with _lock:
            before = self.count
            self.count += int(examples)
            count = self.count
            named = len(self.names) < _NAMED_WARNINGS
            if named:
                self.names.append(name)
        if self.policy == "fail":
            error = DataError(f"{name}: {reason} (stopped by on_bad_file='fail'; 'skip' skips bad files)")
            with _lock:
                _failures.append(error)
                del _failures[:-8]
            raise error
        if named:
            tail = "" if len(self.names) < _NAMED_WARNINGS else "; further bad files are counted, not named"
            print(f"lamina: warning: {name}: {reason}; skipped ({count} bad file{'s' if count > 1 else ''} "
                  f"in {self.what} so far{tail})", file=out, flush=True)
        elif count // 1000 > before // 1000:
            print(f"lamina: warning: {count} bad files skipped in {self.what} so far", file=out, flush=True)


def pipeline_error(error: BaseException) -> Optional[DataError]:
    """The :class:`DataError` behind a ``tf.errors`` error raised by a streaming pipeline.

    With ``on_bad_file="fail"`` the pipeline stops at the first bad file; the
    training loop then sees a TensorFlow error wrapping it. A command line can
    turn that back into its one-line message.

    Args:
      error: an exception caught around the iteration.

    Returns:
      The recorded :class:`DataError`, or ``None`` if ``error`` is not one of them.
    """
    if isinstance(error, DataError):
        return error
    if not isinstance(error, tf.errors.OpError):
        return None
    text = str(error)
    with _lock:
        for failure in reversed(_failures):
            if str(failure) in text:
                return failure
    return None
