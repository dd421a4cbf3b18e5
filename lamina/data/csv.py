"""CSV tables of numeric features with one label column."""

from __future__ import annotations

import csv as _csv
import io
import math
import os
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from lamina.data.checks import MAX_LABEL, check_num_classes, open_regular
from lamina.data.errors import DataError
from lamina.data.split import split_indices

__all__ = ["LABEL_COLUMN_NAMES", "TEST_FRACTION", "SPLIT_SEED", "is_number", "label_index", "feature_value", "check_label", "load_csv_arrays"]

LABEL_COLUMN_NAMES: Tuple[str, ...] = ("label", "target", "class")
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def is_number(cell: str) -> bool:
    """Whether ``cell`` parses as a float."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def feature_value(cell: str, path: str, line: int, column: str) -> float:
    """Parses one feature cell.

    Raises:
      DataError: ``file:line: column 'x': non-numeric value ...`` (or non-finite).
    """
    cell = cell.strip()
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{path}:{line}: column {column!r}: non-numeric value {cell!r}") from None
    if not math.isfinite(value):
        raise DataError(f"{path}:{line}: column {column!r}: non-finite value {cell!r}")
    return value


def check_label(label: str, path: str, line: int, numeric: bool) -> None:
    """Checks one (stripped) label cell: not empty; with ``numeric`` labels, a non-negative integer.

    Raises:
      DataError: naming ``file:line``.
    """
    if not label:
        raise DataError(f"{path}:{line}: empty label")
    if not numeric:
        return
    try:
        value = float(label)
    except ValueError:
        raise DataError(f"{path}:{line}: label {label!r} is not a number (earlier labels are numeric)") from None
    if not math.isfinite(value) or value != int(value):
        raise DataError(f"{path}:{line}: label {label!r} is not an integer class id")
    if value < 0:
        raise DataError(f"{path}:{line}: label {label!r} is negative; class ids start at 0")
    if value > MAX_LABEL:
        raise DataError(f"{path}:{line}: label {label!r} is out of range [0, 2**31) for a class id")


def label_index(
    path: str, header: Optional[List[str]], width: int, label_column: Union[None, str, int]
) -> int:
    """Resolves ``label_column`` to a column index (a name, an index, else label/target/class, else the last).

    Raises:
      DataError: for an unknown name or an index out of range.
    """
    if label_column is None:
        if header is not None:
            lowered = [h.strip().lower() for h in header]
            for name in LABEL_COLUMN_NAMES:
                if name in lowered:
                    return lowered.index(name)
        return width - 1
    if isinstance(label_column, (int, np.integer)) and not isinstance(label_column, bool):
        index = int(label_column)
        if not -width <= index < width:
            raise DataError(f"{path}: label_column {index} is out of range for {width} columns")
        return index % width
    if header is None:
        raise DataError(f"{path}: label_column {label_column!r} given, but the file has no header row")
    names = [h.strip() for h in header]
    if str(label_column) not in names:
        raise DataError(f"{path}: no column named {label_column!r}; columns: {', '.join(names)}")
    return names.index(str(label_column))


def load_csv_arrays(
    path: str, label_column: Union[None, str, int] = None
) -> Tuple[Dict[str, Tuple[np.ndarray, np.ndarray]], List[str], List[str]]:
    """Loads a CSV of numeric features and a label column.

    A first row whose cells are all non-numeric is a header. The label column
    is ``label_column`` (a header name or an index), else a column named
    ``label``/``target``/``class``, else the last one. Labels are integer ids
    (``num_classes = max + 1``) or, if the first label is not a number,
    strings mapped to ids in sorted order. A fixed, stratified 80/20
    train/test split (seed 0) is made.

    Args:
      path: the ``.csv`` file.
      label_column: which column holds the labels.

    Returns:
      ``(splits, class_names, feature_names)`` with features float32 ``[N, F]``.

    Raises:
      DataError: naming ``file:line`` for non-numeric features, ragged rows,
        bad labels; or for a missing/empty file.
    """
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    try:
        with io.TextIOWrapper(open_regular(path), newline="", encoding="utf-8-sig") as f:
            reader = _csv.reader(f)
            rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, _csv.Error) as err:
        raise DataError(f"{path}: cannot read CSV ({err})") from None
    if not rows:
        raise DataError(f"{path}: empty CSV file")
    header: Optional[List[str]] = None
    if not any(is_number(c.strip()) for c in rows[0][1]):
        header = [c.strip() for c in rows[0][1]]
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path}: CSV file has a header but no data rows")
    width = len(header) if header is not None else len(rows[0][1])
    if width < 2:
        raise DataError(f"{path}: need at least one feature column and a label column, found {width} column(s)")
    label_at = label_index(path, header, width, label_column)
    names = header if header is not None else [f"column {i + 1}" for i in range(width)]
    feature_cols = [i for i in range(width) if i != label_at]

    features = np.empty((len(rows), len(feature_cols)), np.float32)
    raw_labels: List[str] = []
    numeric_labels: Optional[bool] = None
    for r, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(f"{path}:{line}: expected {width} columns, found {len(row)}")
        for j, col in enumerate(feature_cols):
            features[r, j] = feature_value(row[col], path, line, names[col])
        label = row[label_at].strip()
        if numeric_labels is None:
            numeric_labels = is_number(label)
        check_label(label, path, line, numeric_labels)
        raw_labels.append(label)

    if numeric_labels:
        y = np.asarray([int(float(v)) for v in raw_labels], np.int64)
        check_num_classes(int(y.max()), path)
        class_names = [str(i) for i in range(int(y.max()) + 1)]
    else:
        class_names = sorted(set(raw_labels))
        ids = {name: i for i, name in enumerate(class_names)}
        y = np.asarray([ids[v] for v in raw_labels], np.int64)
    train, test = split_indices(y, TEST_FRACTION, SPLIT_SEED, what=path)
    splits = {"train": (features[train], y[train]), "test": (features[test], y[test])}
    return splits, class_names, [names[i] for i in feature_cols]
