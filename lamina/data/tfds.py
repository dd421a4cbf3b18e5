"""``tfds:NAME`` sources: prepared TensorFlow Datasets data, read without downloading.

Small sets are loaded into memory (:func:`load_tfds_arrays`). A big one is
streamed: :func:`tfds_index` turns the builder's metadata (the TFRecord
files of each split and their record counts, the image and label features)
into a :class:`~lamina.data.tfrecord.TFRecordIndex`, and
:class:`~lamina.data.tfrecord.TFRecordStream` reads the files tfds prepared,
with the same epoch plan, exact resume and file sharding as lamina's own
shards; images are decoded by lamina's decoder, nothing goes through arrays.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from lamina.data.errors import DataError
from lamina.data.split import split_indices

__all__ = ["tfds_data_dir", "load_tfds_arrays", "tfds_index", "TFDS_TEST_FRACTION"]

TFDS_TEST_FRACTION = 0.2  # held out as "test" (seed 0) when a tfds set has no test split

_SPLIT_NAMES = {"train": "train", "test": "test", "validation": "validation", "valid": "validation", "val": "validation"}


def tfds_data_dir(cache_dir: Optional[str] = None) -> str:
    """Where prepared tfds data is read from: ``cache_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``.

    Args:
      cache_dir: explicit folder, or ``None``.

    Returns:
      An absolute path.
    """
    root = cache_dir or os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")
    return os.path.abspath(os.path.expanduser(str(root)))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


def _import_tfds(name: str, data_dir: str) -> Any:
    try:
        return importlib.import_module("tensorflow_datasets")
    except ImportError:
        raise DataError(
            f"tfds:{name}: tensorflow-datasets is not installed; pip install tensorflow-datasets "
            f"and place the prepared data in {data_dir} (e.g. `tfds build {name} --data_dir {data_dir}`)"
        ) from None


def tfds_index(name: str, cache_dir: Optional[str] = None) -> Any:
    """Describes a prepared tfds set's files for streaming (reads metadata only).

    Args:
      name: the tfds name (e.g. ``"imagenet2012"``, ``"cifar10:3.0.2"``).
      cache_dir: the tfds data folder (see :func:`tfds_data_dir`).

    Returns:
      A :class:`~lamina.data.tfrecord.TFRecordIndex` whose shards are the
      split's files (``test_fraction`` set when there is no test split).

    Raises:
      DataError: if tensorflow-datasets is missing, the data is not prepared,
        it is not stored as TFRecords, or it is not an (image, class label) set.
    """
    from lamina.data.tfrecord import Shard, TFRecordIndex

    data_dir = tfds_data_dir(cache_dir)
    if not name:
        raise DataError("tfds: give a data set name, e.g. tfds:mnist")
    tfds = _import_tfds(name, data_dir)
    try:
        info = tfds.builder(name, data_dir=data_dir).info
        splits = {str(k): v for k, v in dict(info.splits).items()}
    except Exception as err:  # tfds raises many types (DatasetNotFoundError, AssertionError, ...)
        raise DataError(
            f"tfds:{name}: cannot read prepared data in {data_dir} ({_first_line(err)}); "
            f"prepare it first with `tfds build {name} --data_dir {data_dir}`"
        ) from None
    file_format = str(getattr(info, "file_format", "tfrecord") or "tfrecord").lower()
    if "tfrecord" not in file_format:
        raise DataError(f"tfds:{name}: stored as {file_format}; streaming reads TFRecord files "
                        "(prepare it with file_format=tfrecord, or load it into memory with stream=False)")
    keys = getattr(info, "supervised_keys", None) or ("image", "label")
    image_key, label_key = str(keys[0]), str(keys[1])
    class_names = _class_names(info, name)
    try:
        shape = tuple(info.features[image_key].shape)
    except Exception as err:
        raise DataError(f"tfds:{name}: no image feature {image_key!r} ({_first_line(err)})") from None
    if len(shape) != 3:
        raise DataError(f"tfds:{name}: feature {image_key!r} has shape {shape}; streaming needs images (H, W, C)")
    index = TFRecordIndex(root=data_dir, name=f"tfds:{name}", class_names=class_names,
                          image_shape=tuple(int(d) if d is not None else 0 for d in shape),  # type: ignore[arg-type]
                          image_key=image_key, label_key=label_key, encoding="tfds")
    for split_name, split in splits.items():
        target = _SPLIT_NAMES.get(split_name)
        if target is None or target in index.splits:
            continue
        paths = [str(p) for p in split.filepaths]
        lengths = [int(n) for n in split.shard_lengths]
        if len(paths) != len(lengths):
            raise DataError(f"tfds:{name}: split {split_name} lists {len(paths)} files but {len(lengths)} shard lengths")
        shards = []
        for path, count in zip(paths, lengths):
            try:
                shards.append(Shard(path, count, os.path.getsize(path)))
            except OSError:
                raise DataError(f"{path}: file of tfds:{name} ({split_name}) is missing") from None
        index.splits[target] = shards
    if "train" not in index.splits:
        raise DataError(f"tfds:{name}: no 'train' split (found: {', '.join(splits)})")
    if "test" not in index.splits:
        index.test_fraction = TFDS_TEST_FRACTION
    return index


def load_tfds_arrays(
    name: str, cache_dir: Optional[str] = None
) -> Tuple[Dict[str, Tuple[np.ndarray, np.ndarray]], List[str]]:
    """Loads every split of a prepared tfds data set into memory (``download=False``).

    Splits named ``train``, ``test`` and ``validation`` are kept; without a
    ``test`` split, a fixed 20% of ``train`` (seed 0) becomes the test split.

    Args:
      name: the tfds name (e.g. ``"mnist"``, ``"cifar10:3.0.2"``).
      cache_dir: the tfds data folder (see :func:`tfds_data_dir`).

    Returns:
      ``(splits, class_names)``.

    Raises:
      DataError: if tensorflow-datasets is not installed, the data is not
        prepared, or the set is not an (image/features, class label) set.
    """
    data_dir = tfds_data_dir(cache_dir)
    if not name:
        raise DataError("tfds: give a data set name, e.g. tfds:mnist")
    tfds = _import_tfds(name, data_dir)
    try:
        loaded, info = tfds.load(
            name, data_dir=data_dir, download=False, as_supervised=True, batch_size=-1, with_info=True
        )
        loaded = tfds.as_numpy(loaded)
    except Exception as err:  # tfds raises many types (DatasetNotFoundError, AssertionError, ...)
        raise DataError(
            f"tfds:{name}: cannot load prepared data from {data_dir} ({_first_line(err)}); "
            f"prepare it first with `tfds build {name} --data_dir {data_dir}`"
        ) from None
    splits: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for split_name, pair in dict(loaded).items():
        target = _SPLIT_NAMES.get(str(split_name))
        if target is None or target in splits:
            continue
        x, y = (np.asarray(v) for v in pair)
        splits[target] = (x, y)
    if "train" not in splits:
        raise DataError(f"tfds:{name}: no 'train' split (found: {', '.join(map(str, dict(loaded)))})")
    if "test" not in splits:
        x, y = splits["train"]
        keep, held = split_indices(y.reshape(-1), 0.2, 0, what=f"tfds:{name}")
        splits["train"], splits["test"] = (x[keep], y[keep]), (x[held], y[held])
    return splits, _class_names(info, name)


def _class_names(info: Any, name: str) -> List[str]:
    """Class names from the tfds info's label feature."""
    try:
        keys = info.supervised_keys
        label_key = keys[1] if keys else "label"
        feature = info.features[label_key]
        names = list(getattr(feature, "names", None) or [])
        if not names:
            names = [str(i) for i in range(int(feature.num_classes))]
    except Exception as err:  # a non-classification data set
        raise DataError(f"tfds:{name}: not a classification data set with a class label ({_first_line(err)})") from None
    return [str(n) for n in names]
