"""``convert``: write any lamina data source as sharded TFRecords with an ``index.json``.

Examples are written in a seeded shuffled order, round-robin over shards of
equal record counts (so file sharding gives every worker the same share),
each shard about ``shard_mb`` MiB. The index records counts per split and
class, class names, the image shape, the per-channel statistics of the
training split (from the same pass) and the SHA-256 of every shard.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from lamina.data.base import DataSetBase, check_seed, is_int
from lamina.data.errors import DataError
from lamina.data.stats import histogram_stats
from lamina.data.tfrecord import INDEX_FORMAT, INDEX_NAME, INDEX_VERSION, sha256_file, shard_name

__all__ = ["ENCODINGS", "convert"]

ENCODINGS = ("png", "jpeg")
_BATCH = 256


class _Progress:
    """A rich progress bar on a terminal (standard error), nothing otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task("converting", total=total)

    def describe(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=text)

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _example(image: bytes, label: int) -> bytes:
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _encoded_batches(ds: DataSetBase, split: str, seed: int, encoding: str, quality: int, channels: int) -> tf.data.Dataset:
    """``(encoded [B] string, y [B], histogram [C * 256])`` batches in the seeded shuffled order."""
    offsets = tf.range(channels, dtype=tf.int32) * 256
    size = 256 * channels

    def encode_one(image: tf.Tensor) -> tf.Tensor:
        if encoding == "png":
            return tf.io.encode_png(image)
        return tf.io.encode_jpeg(image, quality=quality)

    def encode(x: tf.Tensor, y: tf.Tensor, i: tf.Tensor):
        x = tf.cast(x, tf.uint8)
        data = tf.map_fn(encode_one, x, fn_output_signature=tf.string)
        codes = tf.reshape(tf.cast(x, tf.int32), [-1, channels]) + offsets
        hist = tf.math.bincount(codes, minlength=size, maxlength=size, dtype=tf.int64)
        return data, y, hist

    raw = ds.raw_batches(split, _BATCH, shuffle=True, seed=seed, epoch=0)
    return raw.map(encode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)


def convert(
    src: Union[str, DataSetBase],
    out: str,
    *,
    image_size: Union[None, int, Sequence[int]] = None,
    color_mode: Optional[str] = None,
    validation_split: float = 0.0,
    seed: int = 0,
    encoding: str = "png",
    jpeg_quality: int = 95,
    shard_mb: float = 128.0,
    num_shards: Optional[int] = None,
    on_bad_file: Optional[str] = "skip",
    overwrite: bool = False,
    progress: bool = True,
    quiet: bool = False,
) -> Dict[str, Any]:
    """Writes a data source as sharded TFRecords plus ``index.json`` in ``out``.

    Args:
      src: a ``source`` string for :func:`lamina.data.load` (image folder,
        TFRecords, ``.npz``, IDX, named sets, ``tfds:``), or a loaded data set.
      out: the output folder (created; must be empty unless ``overwrite``).
      image_size: resize to ``(height, width)`` while converting.
      color_mode: ``"rgb"`` or ``"grayscale"``.
      validation_split: hold out this fraction of ``train`` as a
        ``validation`` split in the output (see :func:`~lamina.data.load`).
      seed: seed of the example order (and of ``validation_split``).
      encoding: ``"png"`` (lossless, default) or ``"jpeg"``.
      jpeg_quality: 1..100 for ``encoding="jpeg"``.
      shard_mb: target shard size in MiB (the number of shards per split is
        estimated from the first encoded batch).
      num_shards: shards per split instead of ``shard_mb``.
      on_bad_file: ``"skip"`` (bad source files are left out, with a warning)
        or ``"fail"``.
      overwrite: replace the contents of an existing non-empty ``out``.
      progress: draw a progress bar on a terminal.
      quiet: print nothing but warnings.

    Returns:
      The index written (also in ``out/index.json``).

    Raises:
      DataError: for a non-image source, a non-empty ``out``, bad arguments,
        or a bad file under ``on_bad_file="fail"``.
    """
    from lamina.data.load import load

    if encoding not in ENCODINGS:
        raise DataError(f"convert: encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    if not is_int(jpeg_quality) or not 1 <= jpeg_quality <= 100:
        raise DataError(f"convert: jpeg_quality must be an integer in 1..100, got {jpeg_quality!r}")
    if num_shards is not None and (not is_int(num_shards) or num_shards < 1):
        raise DataError(f"convert: num_shards must be a positive integer, got {num_shards!r}")
    if isinstance(shard_mb, bool) or not isinstance(shard_mb, (int, float)) or not shard_mb > 0:
        raise DataError(f"convert: shard_mb must be a positive number, got {shard_mb!r}")
    seed = check_seed(seed)
    out = os.path.abspath(os.path.expanduser(out))
    if os.path.exists(out) and not os.path.isdir(out):
        raise DataError(f"{out}: exists and is not a folder")
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise DataError(f"{out}: folder is not empty (pass overwrite=True / --overwrite to replace its contents)")
        shutil.rmtree(out)
    if isinstance(src, DataSetBase):
        if image_size is not None or color_mode is not None or validation_split:
            raise DataError("convert: image_size, color_mode and validation_split apply to a source string, "
                            "not to a loaded data set")
        ds = src
    else:
        ds = load(src, image_size=image_size, color_mode=color_mode, validation_split=validation_split,
                  seed=seed, normalize="scale", quiet=quiet,
                  on_bad_file=on_bad_file if _streamable(src) else None)
    if len(ds.input_shape) != 3 or ds.input_shape[-1] not in (1, 3):
        raise DataError(f"convert: {ds.name} has examples of shape {tuple(ds.input_shape)}; "
                        "TFRecord shards hold images (H, W, 1 or 3)")
    scale = _raw_scale(ds)
    channels = int(ds.input_shape[-1])
    os.makedirs(out, exist_ok=True)
    bar = _Progress(sum(ds.splits.values()), progress and not quiet)
    index: Dict[str, Any] = {
        "format": INDEX_FORMAT, "version": INDEX_VERSION, "name": ds.name, "source": str(ds.source),
        "class_names": list(ds.class_names), "image_shape": [int(d) for d in ds.input_shape],
        "scale": scale, "encoding": encoding, "image_key": "image", "label_key": "label", "seed": seed,
        "splits": {}, "statistics": {},
    }
    try:
        for split in ds.splits:
            bar.describe(f"converting {split}")
            entry, hist = _write_split(ds, split, out, seed, encoding, int(jpeg_quality), channels,
                                       float(shard_mb) * 2**20, num_shards, bar)
            index["splits"][split] = entry
            if split == "train" and entry["count"]:
                mean, std = histogram_stats(hist.reshape(channels, 256), scale)
                index["statistics"]["train"] = {"mean": [float(m) for m in mean],
                                                "std": [float(s) if s >= 1e-7 else 1.0 for s in std]}
    except tf.errors.OpError as err:
        from lamina.data.decode import pipeline_error

        raise (pipeline_error(err) or err) from None
    finally:
        bar.close()
    tmp = os.path.join(out, INDEX_NAME + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=1)
    os.replace(tmp, os.path.join(out, INDEX_NAME))
    if not quiet:
        total = sum(e["count"] for e in index["splits"].values())
        shards = sum(len(e["shards"]) for e in index["splits"].values())
        size = sum(s["bytes"] for e in index["splits"].values() for s in e["shards"])
        print(f"wrote {total} examples of {ds.name} in {shards} shards ({size / 2**20:.1f} MiB) to {out}", flush=True)
    return index


def _streamable(src: str) -> bool:
    from lamina.data.load import STREAMING_KINDS, source_kind

    try:
        return source_kind(src) in STREAMING_KINDS
    except DataError:
        return True  # load() reports the problem


def _raw_scale(ds: DataSetBase) -> float:
    """The stored values' raw-to-unit multiplier (``1/255`` for images, ``1/16`` for the digits)."""
    if not ds.streaming:
        x, _ = ds.arrays("train", limit=1)
        if x.dtype != np.uint8:
            raise DataError(f"convert: {ds.name} holds {x.dtype} values; TFRecord shards store 8-bit images")
    return float(ds.preprocessing["scale"])


def _write_split(
    ds: DataSetBase, split: str, out: str, seed: int, encoding: str, quality: int, channels: int,
    shard_bytes: float, num_shards: Optional[int], bar: _Progress,
) -> tuple:
    """Writes one split round-robin into its shards; returns ``(index entry, histogram)``."""
    total = ds.splits[split]
    hist = np.zeros(256 * channels, np.int64)
    per_class = np.zeros(ds.num_classes, np.int64)
    writers: List[tf.io.TFRecordWriter] = []
    paths: List[str] = []
    counts: List[int] = []
    written = 0
    try:
        for data, y, h in _encoded_batches(ds, split, seed, encoding, quality, channels):
            records = [_example(b, int(label)) for b, label in zip(data.numpy(), y.numpy())]
            if not writers:
                n = num_shards or max(1, round(total * np.mean([len(r) for r in records]) / shard_bytes))
                n = int(min(n, max(1, total)))
                paths = [os.path.join(out, f"{split}-{i:05d}.tfrecord.partial") for i in range(n)]
                writers = [tf.io.TFRecordWriter(p) for p in paths]
                counts = [0] * n
            for record in records:
                k = written % len(writers)
                writers[k].write(record)
                counts[k] += 1
                written += 1
            hist += h.numpy()
            per_class += np.bincount(y.numpy(), minlength=ds.num_classes)[: ds.num_classes]
            bar.advance(len(records))
    finally:
        for w in writers:
            w.close()
    shards = []
    for i, (path, count) in enumerate(zip(paths, counts)):
        final = os.path.join(out, shard_name(split, i, len(paths)))
        os.replace(path, final)
        shards.append({"file": os.path.basename(final), "count": int(count), "bytes": os.path.getsize(final),
                       "sha256": sha256_file(final)})
    entry = {"count": int(written), "per_class": per_class.astype(int).tolist(), "shards": shards}
    return entry, hist
