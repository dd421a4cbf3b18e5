"""Sharded TFRecord data: the ``index.json`` format and :class:`TFRecordStream`.

A lamina TFRecord folder (written by :func:`lamina.data.convert`) holds
``<split>-00000-of-00016.tfrecord`` shards of ``tf.train.Example`` records
(``image``: encoded PNG/JPEG bytes, ``label``: int64) and an ``index.json``::

    {"format": "lamina.tfrecord", "version": 1, "name": ..., "class_names": [...],
     "image_shape": [H, W, C], "scale": 1/255, "encoding": "png",
     "splits": {"train": {"count": N, "per_class": [...],
                          "shards": [{"file": ..., "count": n, "bytes": b, "sha256": ...}, ...]}, ...},
     "statistics": {"train": {"mean": [...], "std": [...]}}}

A folder of other TFRecord shards (``train*.tfrecord``, ``test*...``; keys
``image``/``image/encoded`` and ``label``/``image/class/label``) is read too,
after one pass that counts records and labels (no image is decoded).

**The epoch plan.** Records cannot be addressed one by one, so an epoch is
planned at the shard level: the shards are permuted by ``(seed, epoch)`` and
read in rounds of ``cycle`` shards, interleaved record by record; within a
round, records are shuffled in blocks of ``block`` with stateless seeds of
``(seed, epoch, round, block)``. Every round's record count is known from the
index, so ``skip_batches=k`` opens no shard of the rounds it skips and, in the
round it lands in, skips raw records (read, never decoded). The validation
split of ``validation_split`` is a seeded, per-shard hold-out: a pure function
of ``(seed, shard list, counts)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import time
import zlib
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from lamina.data.base import Plan, split_order
from lamina.data.decode import decode_image_bytes
from lamina.data.errors import DataError
from lamina.data.images import native_color_mode
from lamina.data.streaming import StreamingDataSet, replica_slices

__all__ = [
    "INDEX_NAME",
    "INDEX_FORMAT",
    "IMAGE_KEYS",
    "LABEL_KEYS",
    "Shard",
    "TFRecordIndex",
    "TFRecordStream",
    "is_tfrecord_folder",
    "read_index",
    "shard_name",
    "sha256_file",
    "verify_shards",
]

INDEX_NAME = "index.json"
INDEX_FORMAT = "lamina.tfrecord"
INDEX_VERSION = 1
IMAGE_KEYS: Tuple[str, ...] = ("image", "image/encoded", "image_raw", "encoded")
LABEL_KEYS: Tuple[str, ...] = ("label", "image/class/label", "class", "target")
_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec")
_SPLIT_PREFIXES = {"train": "train", "test": "test", "validation": "validation", "valid": "validation", "val": "validation"}
_CYCLE = 8
_BLOCK_BYTES = 32 * 2**20
_SALT = 0x54465245


def shard_name(split: str, index: int, count: int) -> str:
    """``train-00003-of-00016.tfrecord``."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Shard:
    """One shard file of a split.

    Attributes:
      path: absolute path.
      count: records in it.
      bytes: file size.
      sha256: hex digest (``None`` for shards without an index).
    """

    path: str
    count: int
    bytes: int
    sha256: Optional[str] = None


@dataclass
class TFRecordIndex:
    """What :func:`read_index` knows about a TFRecord folder.

    Attributes:
      root: the folder.
      name: the data set's name.
      class_names: one per class id.
      image_shape: ``(H, W, C)`` of the stored images.
      scale: raw-to-unit multiplier of the stored values.
      splits: ``{split: [Shard, ...]}`` in file-name order.
      per_class: ``{split: [count per class]}`` (when known).
      statistics: ``{split: {"mean": [...], "std": [...]}}`` of ``raw * scale`` (when known).
      image_key, label_key: the ``tf.train.Example`` feature names.
      encoding: ``"png"``, ``"jpeg"`` or ``"unknown"``.
      indexed: whether an ``index.json`` was read (else the folder was scanned).
      test_fraction: without a ``test`` split, hold out this fraction of
        ``train`` (seed 0, per shard) as ``test`` (used for tfds sets).
    """

    root: str
    name: str
    class_names: List[str]
    image_shape: Tuple[int, int, int]
    scale: float = 1.0 / 255.0
    splits: Dict[str, List[Shard]] = field(default_factory=dict)
    per_class: Dict[str, List[int]] = field(default_factory=dict)
    statistics: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)
    image_key: str = "image"
    label_key: str = "label"
    encoding: str = "png"
    indexed: bool = True
    test_fraction: float = 0.0

    def count(self, split: str) -> int:
        """Records in ``split``."""
        return sum(s.count for s in self.splits[split])


def _shard_files(folder: str) -> List[str]:
    names = []
    for name in sorted(os.listdir(folder)):
        base = name.lower()
        if name.startswith(".") or base.endswith(".partial"):
            continue
        if base.endswith(_SUFFIXES) or any(f"{s}-" in base for s in _SUFFIXES):
            names.append(os.path.join(folder, name))
    return names


def is_tfrecord_folder(folder: str) -> bool:
    """Whether ``folder`` holds an ``index.json`` or TFRecord shards (``*.tfrecord``, ``*.tfrec``)."""
    return os.path.isfile(os.path.join(folder, INDEX_NAME)) or bool(_shard_files(folder))


def read_index(folder: str, *, quiet: bool = False) -> TFRecordIndex:
    """Reads a TFRecord folder's ``index.json``, or scans its shards once.

    Args:
      folder: the folder.
      quiet: print no note about the scan.

    Returns:
      A :class:`TFRecordIndex`.

    Raises:
      DataError: for a malformed index, missing or resized shards, or shards
        that hold no usable image/label features.
    """
    root = os.path.abspath(folder)
    path = os.path.join(root, INDEX_NAME)
    if not os.path.isfile(path):
        return _scan_folder(root, quiet)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read the TFRecord index ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
        raise DataError(f"{path}: not a lamina TFRecord index (expected \"format\": \"{INDEX_FORMAT}\")")
    if int(doc.get("version", 0)) > INDEX_VERSION:
        raise DataError(f"{path}: index version {doc.get('version')} is newer than this lamina reads ({INDEX_VERSION})")
    try:
        index = TFRecordIndex(
            root=root, name=str(doc.get("name") or os.path.basename(root)),
            class_names=[str(c) for c in doc["class_names"]],
            image_shape=tuple(int(d) for d in doc["image_shape"]),  # type: ignore[arg-type]
            scale=float(doc.get("scale", 1.0 / 255.0)), encoding=str(doc.get("encoding", "png")),
            image_key=str(doc.get("image_key", "image")), label_key=str(doc.get("label_key", "label")),
        )
        for split, entry in doc["splits"].items():
            shards = []
            for s in entry["shards"]:
                shard = Shard(os.path.join(root, str(s["file"])), int(s["count"]), int(s["bytes"]), s.get("sha256"))
                shards.append(shard)
            index.splits[str(split)] = shards
            if "per_class" in entry:
                index.per_class[str(split)] = [int(c) for c in entry["per_class"]]
        for split, stats in (doc.get("statistics") or {}).items():
            index.statistics[str(split)] = {"mean": [float(v) for v in stats["mean"]], "std": [float(v) for v in stats["std"]]}
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: malformed TFRecord index ({type(err).__name__}: {err})") from None
    if len(index.image_shape) != 3:
        raise DataError(f"{path}: image_shape must be [height, width, channels], got {list(index.image_shape)}")
    for split, shards in index.splits.items():
        for shard in shards:
            try:
                size = os.path.getsize(shard.path)
            except OSError:
                raise DataError(f"{shard.path}: shard listed in {INDEX_NAME} is missing") from None
            if size != shard.bytes:
                raise DataError(
                    f"{shard.path}: shard is {size} bytes but {INDEX_NAME} says {shard.bytes}; "
                    "it is truncated or was rewritten (verify with `lamina data inspect --verify`)"
                )
    if "train" not in index.splits:
        raise DataError(f"{path}: no 'train' split (found: {', '.join(index.splits) or 'none'})")
    return index


def verify_shards(index: TFRecordIndex, splits: Optional[Sequence[str]] = None) -> List[str]:
    """Checks every shard's SHA-256 against the index.

    Args:
      index: a read index.
      splits: which splits (default all).

    Returns:
      One line per shard that does not match (empty when all are intact).
    """
    problems = []
    for split in splits or list(index.splits):
        for shard in index.splits[split]:
            if shard.sha256 is None:
                continue
            got = sha256_file(shard.path)
            if got != shard.sha256:
                problems.append(f"{shard.path}: SHA-256 mismatch (index {shard.sha256[:12]}..., file {got[:12]}...): the shard is corrupt")
    return problems


# ------------------------------------------------------------------ scanning
def _split_of(path: str) -> Optional[str]:
    base = os.path.basename(path).lower()
    for prefix, split in _SPLIT_PREFIXES.items():
        if re.match(rf"^{prefix}([-_.]|\d|$)", base):
            return split
    return None


def _feature_keys(record: bytes, path: str) -> Tuple[str, str]:
    example = tf.train.Example.FromString(record)
    features = example.features.feature
    image = next((k for k in IMAGE_KEYS if k in features and features[k].bytes_list.value), None)
    label = next((k for k in LABEL_KEYS if k in features and features[k].int64_list.value), None)
    if image is None or label is None:
        raise DataError(
            f"{path}: records need an encoded image ({' or '.join(IMAGE_KEYS)}) and an int64 label "
            f"({' or '.join(LABEL_KEYS)}); found features {', '.join(sorted(features)) or 'none'}"
        )
    return image, label


def _scan_folder(root: str, quiet: bool) -> TFRecordIndex:
    files = _shard_files(root)
    if not files:
        raise DataError(f"{root}: no {INDEX_NAME} and no TFRecord shards (*.tfrecord, *.tfrec)")
    by_split: Dict[str, List[str]] = {}
    for path in files:
        split = _split_of(path)
        if split is None:
            raise DataError(f"{path}: cannot tell the split of this shard; name shards train-*, test-* or validation-*")
        by_split.setdefault(split, []).append(path)
    if "train" not in by_split:
        raise DataError(f"{root}: no train-* shards (found: {', '.join(sorted(by_split))})")
    start = time.perf_counter()
    try:
        first = next(iter(tf.data.TFRecordDataset(by_split["train"][0]))).numpy()
    except StopIteration:
        raise DataError(f"{by_split['train'][0]}: empty shard") from None
    except tf.errors.OpError as err:
        raise DataError(f"{by_split['train'][0]}: cannot read TFRecord ({err.message.splitlines()[0]})") from None
    image_key, label_key = _feature_keys(first, by_split["train"][0])
    image = decode_image_bytes(tf.train.Example.FromString(first).features.feature[image_key].bytes_list.value[0],
                               f"{by_split['train'][0]} (first record)")
    spec = {label_key: tf.io.FixedLenFeature([], tf.int64)}
    index = TFRecordIndex(root=root, name=os.path.basename(root), class_names=[], image_shape=(0, 0, 0),
                          image_key=image_key, label_key=label_key, encoding="unknown", indexed=False)
    max_label = -1
    counts: Dict[str, np.ndarray] = {}
    for split in split_order(list(by_split)):
        shards = []
        hist = np.zeros(0, np.int64)
        for path in by_split[split]:
            labels = []
            try:
                for batch in tf.data.TFRecordDataset(path).batch(4096).map(lambda r: tf.io.parse_example(r, spec)[label_key]):
                    labels.append(batch.numpy())
            except tf.errors.OpError as err:
                raise DataError(f"{path}: cannot read TFRecord ({err.message.splitlines()[0]})") from None
            y = np.concatenate(labels) if labels else np.zeros(0, np.int64)
            if y.size and y.min() < 0:
                raise DataError(f"{path}: labels must be >= 0, found {int(y.min())}")
            if y.size:
                max_label = max(max_label, int(y.max()))
                grown = np.zeros(max(hist.size, int(y.max()) + 1), np.int64)
                grown[: hist.size] = hist
                hist = grown + np.bincount(y, minlength=grown.size)
            shards.append(Shard(path, int(y.size), os.path.getsize(path)))
        index.splits[split] = shards
        counts[split] = hist
    index.class_names = [str(i) for i in range(max_label + 1)]
    index.per_class = {s: np.pad(c, (0, max_label + 1 - c.size)).astype(int).tolist() for s, c in counts.items()}
    index.image_shape = (int(image.shape[0]), int(image.shape[1]), 1 if native_color_mode(image.shape[-1]) == "grayscale" else 3)
    if not quiet:
        total = sum(index.count(s) for s in index.splits)
        print(f"lamina: note: {root}: no {INDEX_NAME}; scanned {total} records in {len(files)} shards "
              f"({time.perf_counter() - start:.1f}s); `lamina data convert` writes shards with an index",
              file=sys.stderr, flush=True)
    return index


# ---------------------------------------------------------------- the stream
def _mix(*values: int) -> int:
    """A non-negative int63 from integers (the epoch/round part of a stateless seed)."""
    state = np.random.SeedSequence([int(v) for v in values] + [_SALT]).generate_state(1, np.uint64)[0]
    return int(state & np.uint64(0x7FFFFFFFFFFFFFFF))


@dataclass
class _Source:
    """A logical split: the stored split it reads and which of its records it keeps."""

    stored: str
    shards: List[Shard]
    base: np.ndarray  # first record id of each shard
    keep: Optional[np.ndarray] = None  # bool per record id, None: all

    def kept(self) -> np.ndarray:
        """Kept records per shard."""
        if self.keep is None:
            return np.asarray([s.count for s in self.shards], np.int64)
        return np.asarray([int(self.keep[b : b + s.count].sum()) for b, s in zip(self.base, self.shards)], np.int64)


class TFRecordStream(StreamingDataSet):
    """Sharded TFRecords streamed from disk (see the module docstring for the epoch plan)."""

    def __init__(
        self,
        index: TFRecordIndex,
        *,
        source: str,
        image_size: Optional[Tuple[int, int]] = None,
        color_mode: Optional[str] = None,
        validation_split: float = 0.0,
        seed: int = 0,
        on_bad_file: Optional[str] = "skip",
        normalize: Optional[str] = "scale",
        stats_sample: Optional[int] = None,
        cycle: int = _CYCLE,
        block: Optional[int] = None,
    ) -> None:
        """Plans the splits from an index; reads nothing yet.

        Args:
          index: from :func:`read_index`.
          source: the ``source`` string.
          image_size: resize to ``(height, width)`` (default: the stored size).
          color_mode: ``"rgb"`` or ``"grayscale"`` (default: as stored).
          validation_split: fraction of each train shard held out as ``"validation"``
            (seeded), unless the folder has validation shards.
          seed: seed of the hold-out and default shuffle seed.
          on_bad_file: ``"skip"`` or ``"fail"``.
          normalize: ``"scale"``, ``"standardize"`` (the index's statistics when
            they describe this training split, else one streaming pass) or ``"none"``.
          stats_sample: see :class:`StreamingDataSet`.
          cycle: shards read together (interleaved) when shuffling.
          block: records shuffled together (default: about 32 MiB of records).

        Raises:
          DataError: for bad arguments.
        """
        self._index = index
        self._sources: Dict[str, _Source] = {}
        for split, shards in index.splits.items():
            base = np.cumsum([0] + [s.count for s in shards[:-1]]).astype(np.int64)
            self._sources[split] = _Source(split, shards, base)
        if index.test_fraction and "test" not in index.splits:
            self._hold_out("test", index.test_fraction, 0, source)
        if validation_split > 0 and "validation" not in index.splits:
            self._hold_out("validation", float(validation_split), int(seed), source)
        with tf.device("/cpu:0"):
            self._keep_t = {s: tf.constant(src.keep) for s, src in self._sources.items() if src.keep is not None}
        stored = index.image_shape
        mode = color_mode or ("grayscale" if stored[-1] == 1 else "rgb")
        channels = 1 if mode == "grayscale" else 3
        size = tuple(image_size) if image_size is not None else stored[:2]
        self._cycle = max(1, int(cycle))
        avg = max(1.0, sum(s.bytes for s in index.splits["train"]) / max(1, index.count("train")))
        self._block = int(block) if block else int(max(64, min(8192, _BLOCK_BYTES // avg)))
        self._image_key, self._label_key = index.image_key, index.label_key
        self.raw_scale = index.scale
        preprocessing = None
        if (normalize == "standardize" and stats_sample is None and "train" in index.statistics
                and self._sources["train"].keep is None and tuple(size) == stored[:2] and channels == stored[-1]):
            # the statistics convert stored with the shards describe exactly this training split
            stats = index.statistics["train"]
            preprocessing = {"scale": index.scale, "mean": stats["mean"], "std": stats["std"]}
        super().__init__(
            index.name, source, class_names=index.class_names, input_shape=(size[0], size[1], channels),
            split_sizes={s: int(src.kept().sum()) for s, src in self._sources.items()}, seed=seed,
            on_bad_file=on_bad_file, resize=image_size is not None,
            fast_resize="no" if image_size is None or tuple(size) == stored[:2] else "always", normalize=normalize,
            preprocessing=preprocessing, stats_sample=stats_sample,
        )

    def _hold_out(self, split: str, fraction: float, seed: int, what: str) -> None:
        """Moves ``ceil(fraction * n)`` records of every train shard (one stays) into ``split``, seeded per shard."""
        train = self._sources["train"]
        total = sum(s.count for s in train.shards)
        keep = train.keep if train.keep is not None else np.ones(total, bool)
        held = np.zeros(total, bool)
        salt = zlib.crc32(split.encode())
        for i, (b, shard) in enumerate(zip(train.base, train.shards)):
            positions = np.nonzero(keep[b : b + shard.count])[0]
            n_held = min(int(math.ceil(fraction * positions.size - 1e-9)), max(0, positions.size - 1))
            perm = np.random.default_rng([int(seed), i, salt, _SALT]).permutation(positions.size)
            held[b + positions[perm[:n_held]]] = True
        if not held.any():
            raise DataError(f"{what}: cannot hold out {fraction:g} of {int(keep.sum())} record(s) as {split}")
        self._sources[split] = replace(train, keep=held)
        self._sources["train"] = replace(train, keep=keep & ~held)

    # ------------------------------------------------------------------ info
    @property
    def index(self) -> TFRecordIndex:
        """The folder's index."""
        return self._index

    def num_files(self, split: str) -> int:
        """Shards of the stored split ``split`` reads."""
        self._check_split(split)
        return len(self._sources[split].shards)

    def _index_space(self, split: str) -> int:
        return sum(s.count for s in self._sources[split].shards)

    def class_counts(self, split: str) -> List[int]:
        """Examples per class id: from the index, or (for a held-out split) one label-only pass."""
        self._check_split(split)
        src = self._sources[split]
        if src.keep is None and split in self._index.per_class:
            return list(self._index.per_class[split])
        counts = np.zeros(self.num_classes, np.int64)
        plan = self._plan(split, 4096, False, None, 0, False, 0)
        for _, y, _ in self._raw_plan(plan):
            y = y.numpy()
            y = y[(y >= 0) & (y < self.num_classes)]
            counts += np.bincount(y, minlength=self.num_classes)[: self.num_classes]
        return counts.astype(int).tolist()

    # ------------------------------------------------------------------ plan
    def _shard_order(self, split: str, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
        n = len(self._sources[split].shards)
        if not shuffle:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng([int(seed), int(epoch), _SALT]).permutation(n).astype(np.int64)

    def _records(self, split: str, shard_ids: np.ndarray, shuffle: bool, seed: int, epoch: int, skip: int) -> tf.data.Dataset:
        """The records ``(serialized, id)`` of ``shard_ids`` in plan order, from position ``skip``."""
        src = self._sources[split]
        cycle = self._cycle if shuffle else 1
        kept = src.kept()[shard_ids]
        rounds = [shard_ids[i : i + cycle] for i in range(0, len(shard_ids), cycle)]
        round_counts = np.asarray([kept[i : i + cycle].sum() for i in range(0, len(shard_ids), cycle)], np.int64)
        ends = np.cumsum(round_counts)
        first = int(np.searchsorted(ends, skip, side="right"))
        if first >= len(rounds):
            return tf.data.Dataset.from_tensors((tf.constant(""), tf.constant(0, tf.int64))).take(0)
        inside = int(skip - (ends[first - 1] if first else 0))
        files = np.full((len(rounds) - first, cycle), "", dtype=object)
        bases = np.zeros((len(rounds) - first, cycle), np.int64)
        counts = np.zeros((len(rounds) - first, cycle), np.int64)
        for r, ids in enumerate(rounds[first:]):
            files[r, : len(ids)] = [src.shards[i].path for i in ids]
            bases[r, : len(ids)] = src.base[ids]
            counts[r, : len(ids)] = [src.shards[i].count for i in ids]
        skips = np.zeros(len(rounds) - first, np.int64)
        skips[0] = inside
        numbers = np.arange(first, len(rounds), dtype=np.int64)
        keep = self._keep_t.get(split)
        block = self._block
        epoch_key = _mix(seed, epoch)

        log = self._log

        def report_short(path: tf.Tensor, read: tf.Tensor, count: tf.Tensor) -> np.int32:
            read, count = int(read.numpy()), int(count.numpy())
            log.report_named(f"{path.numpy().decode()} (records {read}-{count - 1})",
                             f"corrupt record (the shard cannot be read from record {read} on; "
                             f"{count - read} of its {count} records lost; `lamina data inspect --verify` checks shards)",
                             examples=count - read)
            return np.int32(0)

        def shard_records(path: tf.Tensor, base: tf.Tensor, count: tf.Tensor) -> tf.data.Dataset:
            # A corrupt record (CRC mismatch) ends its shard early instead of stopping the
            # epoch; an end marker after the shard's records compares how many were read with
            # the index's count, and reports the rest as bad examples naming the shard.
            ds = tf.data.TFRecordDataset(path, buffer_size=1 << 20).ignore_errors().enumerate()
            end = tf.data.Dataset.from_tensors((tf.constant(-1, tf.int64), tf.constant("")))

            def tally(read: tf.Tensor, item: Tuple[tf.Tensor, tf.Tensor]):
                j, rec = item
                return tf.where(j >= 0, j + 1, read), (j, rec, read)

            def check(j: tf.Tensor, rec: tf.Tensor, read: tf.Tensor):
                short = tf.logical_and(j < 0, read < count)
                done = tf.cond(short, lambda: tf.py_function(report_short, [path, read, count], tf.int32),
                               lambda: tf.constant(0, tf.int32))
                with tf.control_dependencies([done]):
                    return tf.identity(j), rec

            marked = ds.concatenate(end).scan(tf.constant(0, tf.int64), tally).map(check)
            return marked.filter(lambda j, rec: j >= 0).map(lambda j, rec: (rec, base + j))

        def one_round(number: tf.Tensor, paths: tf.Tensor, base: tf.Tensor, count: tf.Tensor,
                      skip_in: tf.Tensor) -> tf.data.Dataset:
            listed = tf.data.Dataset.from_tensor_slices((paths, base, count)).filter(
                lambda p, b, c: tf.strings.length(p) > 0)
            recs = listed.interleave(shard_records, cycle_length=cycle, block_length=1,
                                     num_parallel_calls=cycle, deterministic=True)
            if keep is not None:
                recs = recs.filter(lambda rec, i: tf.gather(keep, i))
            if not shuffle:
                return recs.skip(skip_in)
            whole = skip_in // block
            blocks = recs.skip(whole * block).batch(block).enumerate(start=whole)

            def mix(k: tf.Tensor, block_records: Tuple[tf.Tensor, tf.Tensor]):
                rec, ids = block_records
                key = tf.stack([tf.constant(epoch_key, tf.int64), number * (1 << 31) + k])
                order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(ids)[0]), seed=key, alg="philox")
                return tf.gather(rec, order), tf.gather(ids, order)

            return blocks.map(mix).unbatch().skip(skip_in - whole * block)

        table = tf.data.Dataset.from_tensor_slices((numbers, files.astype(str), bases, counts, skips))
        return table.flat_map(one_round)

    def _raw_plan(self, plan: Plan) -> tf.data.Dataset:
        size = plan.global_batch
        order = self._shard_order(plan.split, plan.shuffle, plan.seed, plan.epoch)
        worker = plan.worker
        # One parse per batch (vectorized): image bytes and labels. Missing features take
        # defaults that the decode step turns into named bad records (an empty image, label -1).
        spec = {
            self._image_key: tf.io.FixedLenFeature([], tf.string, default_value=b""),
            self._label_key: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        }

        def labels(rec: tf.Tensor, ids: tf.Tensor):
            parsed = tf.io.parse_example(rec, spec)
            return parsed[self._image_key], tf.cast(parsed[self._label_key], tf.int32), ids

        if worker is not None and self._file_sharding(plan):
            return self._file_shard_plan(plan, order).map(labels)
        skip = plan.skip_batches * size
        ds = self._records(plan.split, order, plan.shuffle, plan.seed, plan.epoch, skip)
        ds = ds.batch(size, drop_remainder=plan.drop_remainder)
        if worker is not None:
            ds = ds.flat_map(replica_slices(plan))
        return ds.map(labels)

    def file_shard_counts(self, split: str, workers: int, epoch: int = 0, seed: Optional[int] = None) -> List[int]:
        """Records each worker reads under file sharding in ``epoch`` (shards ``w::workers`` of the permuted list)."""
        seed = self.seed if seed is None else seed
        order = self._shard_order(split, split == "train", seed, epoch)
        kept = self._sources[split].kept()
        return [int(kept[order[w::workers]].sum()) for w in range(workers)]

    def _file_sharding(self, plan: Plan) -> bool:
        """Whether a worker plan reads only the worker's shards.

        Only for shuffled (training) epochs whose global batch splits evenly
        over the replicas, and when every worker gets records; evaluation
        epochs and the other cases cut the common global batches (``"data"``),
        which never repeats an example.
        """
        worker = plan.worker
        if worker is None or worker.mode != "file" or not plan.shuffle or plan.global_batch % worker.replicas:
            return False
        return min(self.file_shard_counts(plan.split, worker.count, plan.epoch, plan.seed)) > 0

    def _file_shard_plan(self, plan: Plan, order: np.ndarray) -> tf.data.Dataset:
        """Worker ``w`` reads shards ``order[w::W]``: full per-replica batches, the same count on every worker.

        Each worker yields ``steps * local_replicas`` batches of
        ``global_batch / replicas`` records, ``steps`` being the global number
        of batches; a worker with fewer records wraps around its own (same-order)
        records, one with more leaves its last ones for later epochs.
        """
        worker = plan.worker
        assert worker is not None
        b = plan.global_batch // worker.replicas
        steps = self.num_batches(plan.split, plan.global_batch, plan.drop_remainder)
        mine = order[worker.index :: worker.count]
        have = int(self._sources[plan.split].kept()[mine].sum())
        need = (steps - plan.skip_batches) * worker.local_replicas * b
        if need <= 0 or have == 0:
            return tf.data.Dataset.from_tensors((tf.zeros([0], tf.string), tf.zeros([0], tf.int64))).take(0)
        start = (plan.skip_batches * worker.local_replicas * b) % have
        first = self._records(plan.split, mine, plan.shuffle, plan.seed, plan.epoch, start)
        again = self._records(plan.split, mine, plan.shuffle, plan.seed, plan.epoch, 0).repeat()
        return first.concatenate(again).take(need).batch(b)

    def _element(self, payload: tf.Tensor, label: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        # the payload is the record's image bytes (parsed per batch in _raw_plan); the label must be a class id
        check = tf.debugging.assert_less(label, tf.constant(self.num_classes, label.dtype), message="label out of range")
        with tf.control_dependencies([check, tf.debugging.assert_non_negative(label)]):
            return tf.identity(payload), label

    def _fast_element(self, payload: tf.Tensor) -> tf.Tensor:
        return payload

    def locate(self, split: str, record_id: int) -> Tuple[str, int]:
        """``(shard path, record number in it)`` of a record id of ``split``."""
        src = self._sources[split]
        i = int(np.searchsorted(src.base, record_id, side="right")) - 1
        return src.shards[i].path, int(record_id - src.base[i])

    def _describe(self, split: str, index: int) -> Tuple[str, str]:
        path, number = self.locate(split, index)
        name = f"{path} (record {number})"
        try:
            record = next(iter(tf.data.TFRecordDataset(path).skip(number).take(1))).numpy()
            features = tf.train.Example.FromString(record).features.feature
            label = features[self._label_key].int64_list.value
            if not label or not 0 <= label[0] < self.num_classes:
                return name, f"label {list(label)} is outside [0, {self.num_classes})"
            decode_image_bytes(features[self._image_key].bytes_list.value[0], name)
        except DataError as err:
            text = str(err)
            return name, text[len(name) + 2 :] if text.startswith(name + ": ") else text
        except Exception as err:  # a record that does not parse
            return name, f"unreadable record ({type(err).__name__})"
        return name, "could not be decoded while streaming"
