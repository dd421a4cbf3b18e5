""":class:`CSVStream`: a CSV table too big for memory, read in chunks of rows.

One pass at load reads the file in chunks of ``chunk_rows`` rows: it records
where each chunk starts (a byte offset), each row's label and checks every
cell (features parsed by ``tf.io.decode_csv``, a chunk that fails is re-read
row by row for a ``file:line`` message). The train/test and validation splits
are the in-memory path's (stratified, seeded), made from the labels.

An epoch reads the chunks in an order of ``(seed, epoch)`` and the rows of a
chunk in an order of ``(seed, epoch, chunk)``: the whole plan is known before
reading, so ``skip_batches`` starts at the right chunk and row.
"""

from __future__ import annotations

import csv as _csv
import os
from dataclasses import replace
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from lamina.data.augment import AugmentArg
from lamina.data.base import DataSetBase, Plan, check_seed, split_order
from lamina.data.csv import SPLIT_SEED, TEST_FRACTION, check_label, feature_value, is_number, label_index
from lamina.data.errors import DataError
from lamina.data.sharding import WorkerShard, register_worker_builder
from lamina.data.split import split_indices
from lamina.data.streaming import replica_slices

__all__ = ["CHUNK_ROWS", "CSVStream"]

CHUNK_ROWS = 4096
_SALT = 0x43535653


class CSVStream(DataSetBase):
    """A CSV of numeric features and a label column, streamed in chunks (see the module docstring)."""

    streaming = True

    def __init__(
        self,
        path: str,
        *,
        name: str,
        source: str,
        label_column: Union[None, str, int] = None,
        validation_split: float = 0.0,
        seed: int = 0,
        normalize: Optional[str] = "scale",
        stats_sample: Optional[int] = None,
        chunk_rows: int = CHUNK_ROWS,
    ) -> None:
        """Indexes the file in one pass (offsets, labels, checked cells).

        Args:
          path: the ``.csv`` file.
          name: short name.
          source: the ``source`` string.
          label_column: the label column (name or index; default as in memory).
          validation_split: fraction of ``train`` held out (stratified, seeded).
          seed: seed of the validation split and default shuffle seed.
          normalize: ``"scale"``/``"none"`` (features as they are) or
            ``"standardize"`` (per-feature mean/std of train, one pass).
          stats_sample: with ``"standardize"``: on this many training rows only.
          chunk_rows: rows per chunk.

        Raises:
          DataError: naming ``file:line`` for bad cells or ragged rows.
        """
        self.name, self.source, self.seed = str(name), str(source), check_seed(seed)
        self._path = path
        self._chunk = int(chunk_rows)
        self._scan(label_column)
        splits = self._make_splits(float(validation_split), int(seed))
        self._rows = {s: splits[s] for s in split_order(list(splits))}
        self.input_shape = (len(self._features),)
        self.preprocessing = self._preprocessing(normalize, stats_sample)

    # ------------------------------------------------------------------ scan
    def _scan(self, label_column: Union[None, str, int]) -> None:
        path = self._path
        if not os.path.isfile(path):
            raise DataError(f"{path}: no such file")
        offsets: List[int] = []
        labels: List[str] = []
        header: Optional[List[str]] = None
        width = label_at = -1
        features: List[int] = []
        with open(path, "rb") as f:
            pending: List[Tuple[int, int, bytes]] = []
            line_no = 0
            offset = 0
            for raw in f:
                line_no += 1
                start, offset = offset, offset + len(raw)
                if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw, start = raw[3:], start + 3
                if not raw.strip():
                    continue
                if width < 0:
                    cells = self._row(raw, path, line_no)
                    if not any(is_number(c.strip()) for c in cells):
                        header = [c.strip() for c in cells]
                        width = len(header)
                        continue
                    width = len(cells)
                if label_at < 0:
                    if width < 2:
                        raise DataError(f"{path}: need at least one feature column and a label column, found {width} column(s)")
                    label_at = label_index(path, header, width, label_column)
                    features = [i for i in range(width) if i != label_at]
                pending.append((start, line_no, raw))
                if len(pending) == self._chunk:
                    self._check_chunk(pending, width, label_at, features, header, offsets, labels)
                    pending = []
            if pending:
                self._check_chunk(pending, width, label_at, features, header, offsets, labels)
        if width < 0:
            raise DataError(f"{path}: empty CSV file")
        if not labels:
            raise DataError(f"{path}: CSV file has a header but no data rows")
        self._names = header if header is not None else [f"column {i + 1}" for i in range(width)]
        self._width, self._label_at, self._features = width, label_at, features
        self._offsets = np.asarray(offsets, np.int64)
        numeric = is_number(labels[0])
        if numeric:
            values = np.asarray([float(v) for v in labels])
            y = values.astype(np.int64)
            self.class_names = [str(i) for i in range(int(y.max()) + 1)]
        else:
            self.class_names = sorted(set(labels))
            ids = {n: i for i, n in enumerate(self.class_names)}
            y = np.asarray([ids[v] for v in labels], np.int64)
        self.num_classes = len(self.class_names)
        self._labels = y.astype(np.int32)

    @staticmethod
    def _row(raw: bytes, path: str, line: int) -> List[str]:
        try:
            return next(_csv.reader([raw.decode("utf-8")]))
        except (UnicodeDecodeError, _csv.Error) as err:
            raise DataError(f"{path}:{line}: cannot read CSV ({err})") from None

    def _check_chunk(
        self, pending: List[Tuple[int, int, bytes]], width: int, label_at: int, features: List[int],
        header: Optional[List[str]], offsets: List[int], labels: List[str],
    ) -> None:
        """Checks one chunk (labels in Python, features with ``decode_csv``) and records its rows."""
        path = self._path
        offsets.append(pending[0][0])
        texts = []
        for _, line, raw in pending:
            cells = self._row(raw, path, line)
            if len(cells) != width:
                raise DataError(f"{path}:{line}: expected {width} columns, found {len(cells)}")
            label = cells[label_at].strip()
            check_label(label, path, line, is_number(labels[0]) if labels else is_number(label))
            labels.append(label)
            texts.append(raw.decode("utf-8").rstrip("\r\n"))
        try:
            values = tf.io.decode_csv(texts, [[0.0]] * len(features), select_cols=features)
            finite = bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in values]))
        except tf.errors.OpError:
            finite = False
        if not finite:  # name the first bad cell exactly, as the in-memory reader does
            names = header if header is not None else [f"column {i + 1}" for i in range(width)]
            for _, line, raw in pending:
                cells = self._row(raw, path, line)
                for col in features:
                    feature_value(cells[col], path, line, names[col])
            raise DataError(f"{path}: lines {pending[0][1]}..{pending[-1][1]} cannot be parsed as numbers")

    # ---------------------------------------------------------------- splits
    def _make_splits(self, validation_split: float, seed: int) -> Dict[str, np.ndarray]:
        """Row ids per split: the in-memory path's stratified splits, from the labels alone."""
        train, test = split_indices(self._labels, TEST_FRACTION, SPLIT_SEED, what=self._path)
        out = {"train": train, "test": test}
        if validation_split > 0:
            keep, held = split_indices(self._labels[train], validation_split, seed, what=f"{self.source} (validation_split)")
            out["train"], out["validation"] = train[keep], train[held]
        return out

    @property
    def splits(self) -> Dict[str, int]:
        """Rows per split."""
        return {s: int(r.size) for s, r in self._rows.items()}

    def num_files(self, split: str) -> int:
        """One file."""
        self._check_split(split)
        return 1

    def class_counts(self, split: str) -> List[int]:
        """Rows per class id in ``split`` (from the labels read at load)."""
        self._check_split(split)
        return np.bincount(self._labels[self._rows[split]], minlength=self.num_classes).astype(int).tolist()

    def info(self) -> Dict[str, Any]:
        """The summary of :meth:`DataSetBase.info`, plus ``files`` and ``chunks``."""
        out = super().info()
        out["files"] = {s: 1 for s in self._rows}
        out["chunks"] = int(self._offsets.size)
        return out

    # ------------------------------------------------------------------ plan
    def _order(self, split: str, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
        """The epoch's rows of ``split``: chunks in an order of (seed, epoch), rows shuffled within each chunk."""
        rows = np.sort(self._rows[split])
        if not shuffle:
            return rows
        chunks = rows // self._chunk
        starts = np.flatnonzero(np.r_[True, chunks[1:] != chunks[:-1]])
        groups = np.split(rows, starts[1:])
        perm = np.random.default_rng([int(seed), int(epoch), _SALT]).permutation(len(groups))
        out = []
        for g in perm:
            rng = np.random.default_rng([int(seed), int(epoch), int(chunks[starts[g]]), _SALT])
            out.append(rng.permutation(groups[g]))
        return np.concatenate(out) if out else rows

    def _read(self, order: np.ndarray) -> Iterator[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yields ``(lines, labels, row ids)`` for runs of ``order`` in one chunk, reading each chunk once."""
        if order.size == 0:
            return
        chunks = order // self._chunk
        starts = np.flatnonzero(np.r_[True, chunks[1:] != chunks[:-1]])
        ends = np.r_[starts[1:], order.size]
        with open(self._path, "rb") as f:
            for a, b in zip(starts, ends):
                c = int(chunks[a])
                f.seek(int(self._offsets[c]))
                lines: List[bytes] = []
                count = min(self._chunk, self._labels.size - c * self._chunk)
                while len(lines) < count:
                    raw = f.readline()
                    if not raw:
                        raise DataError(f"{self._path}: the file changed since it was loaded (it is shorter)")
                    if raw.strip():
                        lines.append(raw.rstrip(b"\r\n"))
                ids = order[a:b]
                picked = [lines[i - c * self._chunk] for i in ids]
                yield np.asarray(picked, dtype=object), self._labels[ids], ids.astype(np.int64)

    def _raw(self, plan: Plan) -> tf.data.Dataset:
        """Batches of ``(features float32 [b, F], labels int32 [b], ids int64 [b])`` of one epoch."""
        size = plan.global_batch
        order = self._order(plan.split, plan.shuffle, plan.seed, plan.epoch)[plan.skip_batches * size :]
        if plan.drop_remainder:
            order = order[: (order.size // size) * size]
        signature = (tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int64))
        ds = tf.data.Dataset.from_generator(lambda: self._read(order), output_signature=signature)
        ds = ds.unbatch().batch(size)
        if plan.worker is not None:
            ds = ds.flat_map(replica_slices(plan))
        features = self._features

        def parse(lines: tf.Tensor, y: tf.Tensor, ids: tf.Tensor):
            values = tf.io.decode_csv(lines, [[0.0]] * len(features), select_cols=features)
            return tf.stack(values, axis=1), y, ids

        return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def raw_batches(self, split: str, batch_size: int, *, shuffle: bool = False, seed: Optional[int] = None,
                    epoch: int = 0) -> tf.data.Dataset:
        """Unnormalized ``(x float32 [B, F], y int32 [B], row id int64 [B])`` batches."""
        return self._raw(self._plan(split, batch_size, shuffle, seed, epoch, False, 0))

    def _epoch(self, plan: Plan, augment: AugmentArg, one_hot: bool) -> tf.data.Dataset:
        # a CSV has no image axes: batches() already refused any augmentation
        finish = self._finisher(None, None, one_hot)

        def build(worker: Optional[WorkerShard]) -> tf.data.Dataset:
            ds = self._raw(replace(plan, worker=worker))
            return ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)

        ds = build(None)
        register_worker_builder(ds, build, 1)
        return ds

    def _preprocessing(self, normalize: Optional[str], stats_sample: Optional[int]) -> Dict[str, Any]:
        from lamina.data.dataset import NORMALIZE_MODES

        mode = "none" if normalize is None else str(normalize)
        if mode not in NORMALIZE_MODES:
            raise DataError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, got {normalize!r}")
        width = len(self._features)
        if mode != "standardize":
            return {"scale": 1.0, "mean": [0.0] * width, "std": [1.0] * width}
        ds = self.raw_batches("train", 4096, shuffle=stats_sample is not None)
        total = np.zeros(width, np.float64)
        total_sq = np.zeros(width, np.float64)
        count = 0
        for x, _, _ in ds:
            x = x.numpy().astype(np.float64)
            if stats_sample is not None:
                x = x[: max(0, stats_sample - count)]
            total += x.sum(0)
            total_sq += np.square(x).sum(0)
            count += x.shape[0]
            if stats_sample is not None and count >= stats_sample:
                break
        mean = total / max(1, count)
        std = np.sqrt(np.maximum(total_sq / max(1, count) - np.square(mean), 0.0))
        std = np.where(std < 1e-7, 1.0, std)
        return {"scale": 1.0, "mean": [float(m) for m in mean], "std": [float(s) for s in std]}
