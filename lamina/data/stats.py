"""Per-channel statistics of 8-bit images from per-channel histograms, in one streaming pass.

An exact histogram (256 counts per channel) is all the mean and standard
deviation need, and it adds up batch by batch: the pass over a data set that
does not fit in memory keeps only ``256 * C`` integers.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import tensorflow as tf

__all__ = ["histogram_stats", "channel_histogram", "stats_record"]


def histogram_stats(counts: np.ndarray, scale: float) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per channel of ``value * scale`` from 8-bit histograms.

    Args:
      counts: ``[C, 256]`` counts of each value per channel.
      scale: multiplier applied to the values (``1/255`` for images).

    Returns:
      ``(mean [C], std [C])`` float64 (zeros for an empty histogram).
    """
    counts = np.asarray(counts, np.float64)
    total = counts.sum(axis=1)
    values = np.arange(256, dtype=np.float64) * float(scale)
    safe = np.maximum(total, 1.0)
    mean = counts @ values / safe
    var = np.sum(counts * np.square(values[None, :] - mean[:, None]), axis=1) / safe
    return mean, np.sqrt(var)


def channel_histogram(images: tf.data.Dataset, channels: int) -> np.ndarray:
    """Counts every 8-bit value per channel over a dataset of image batches, in one pass.

    Args:
      images: a ``tf.data.Dataset`` of uint8 batches ``[B, H, W, C]``.
      channels: ``C``.

    Returns:
      ``[C, 256]`` int64 counts.
    """
    size = 256 * int(channels)
    offsets = tf.range(int(channels), dtype=tf.int32) * 256

    def count(x: tf.Tensor) -> tf.Tensor:
        codes = tf.reshape(tf.cast(x, tf.int32), [-1, int(channels)]) + offsets
        return tf.math.bincount(codes, minlength=size, maxlength=size, dtype=tf.int64)

    total = images.map(count, num_parallel_calls=tf.data.AUTOTUNE).reduce(
        tf.zeros([size], tf.int64), lambda acc, c: acc + c
    )
    return total.numpy().reshape(int(channels), 256)


def stats_record(counts: np.ndarray, scale: float) -> dict:
    """The ``{"scale", "mean", "std"}`` record of ``normalize="standardize"`` from histograms.

    Args:
      counts: ``[C, 256]`` histograms.
      scale: raw-to-unit multiplier.

    Returns:
      A preprocessing record (a zero std becomes 1).
    """
    mean, std = histogram_stats(counts, scale)
    std = np.where(std < 1e-7, 1.0, std)
    return {"scale": float(scale), "mean": [float(m) for m in mean], "std": [float(s) for s in std]}
