"""``load(source)``: one entry point for every kind of data source."""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from lamina.data.base import DataSetBase, is_int
from lamina.data.csv import load_csv_arrays
from lamina.data.csv_stream import CSVStream
from lamina.data.dataset import NORMALIZE_MODES, DataSet, compute_preprocessing
from lamina.data.decode import check_on_bad_file
from lamina.data.digits import DIGITS_SCALE, load_digits_arrays
from lamina.data.errors import DataError
from lamina.data.folder_stream import ImageFolderStream, probe_images
from lamina.data.idx import is_idx_folder, load_idx_folder
from lamina.data.image_folder import list_image_folder
from lamina.data.images import apply_image_options, check_color_mode, check_image_size
from lamina.data.named import NAMED_SETS, load_named_arrays
from lamina.data.npz import load_npz_arrays, scale_for
from lamina.data.split import split_indices
from lamina.data import streaming as _streaming
from lamina.data.tfds import load_tfds_arrays, tfds_index
from lamina.data.tfrecord import TFRecordStream, is_tfrecord_folder, read_index
from lamina.data.segmentation import is_segmentation_folder, load_segmentation_folder
from lamina.data.text import load_text_file

__all__ = ["DEFAULT_SOURCE", "NAMED_SOURCES", "STREAMING_KINDS", "load", "source_kind", "split_source_options"]

DEFAULT_SOURCE = "digits"
NAMED_SOURCES: Tuple[str, ...] = tuple(NAMED_SETS)

Splits = Dict[str, Tuple[np.ndarray, np.ndarray]]

# Sources that can be streamed from disk (the others are read into memory).
STREAMING_KINDS: Tuple[str, ...] = ("image_folder", "tfrecord", "tfds", "csv")
_BAD_FILE_KINDS: Tuple[str, ...] = ("image_folder", "tfrecord", "tfds")  # sources with files to decode
_OPTIONS = ("stream", "on_bad_file", "tokens", "window")
_TEXT_OPTIONS = ("tokens", "window")  # only for .txt files
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def split_source_options(source: str) -> Tuple[str, Dict[str, str]]:
    """Splits ``"PATH?stream=1&on_bad_file=fail"`` into the path and its options.

    A ``?`` is an option separator only when the whole string is not an
    existing path.

    Args:
      source: the ``source`` string.

    Returns:
      ``(source without options, {name: value})``.

    Raises:
      DataError: for an unknown option or a malformed query.
    """
    text = str(source).strip()
    if "?" not in text or os.path.exists(os.path.expanduser(text)):
        return text, {}
    base, query = text.split("?", 1)
    options: Dict[str, str] = {}
    for part in query.split("&"):
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in _OPTIONS:
            raise DataError(f"{text}: unknown data option {part!r}; options are " + ", ".join(f"{o}=..." for o in _OPTIONS))
        options[key] = value.strip()
    return base, options


def _stream_option(value: str, text: str) -> Optional[bool]:
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    if low == "auto":
        return None
    raise DataError(f"{text}: stream must be 1, 0 or auto, got {value!r}")


def source_kind(source: Optional[str]) -> str:
    """Classifies a ``source`` string without loading it.

    Args:
      source: as for :func:`load`.

    Returns:
      ``"digits"``, ``"named"``, ``"tfds"``, ``"npz"``, ``"csv"``, ``"text"``, ``"idx"``, ``"tfrecord"``,
      ``"segmentation"`` or ``"image_folder"``.

    Raises:
      DataError: for a missing path or an unsupported file type.
    """
    if source is None or str(source).strip().lower() == DEFAULT_SOURCE:
        return "digits"
    text, _ = split_source_options(str(source))
    if text.lower() == DEFAULT_SOURCE:
        return "digits"
    if text.lower() in NAMED_SETS:
        return "named"
    if text.lower().startswith("tfds:"):
        return "tfds"
    path = os.path.expanduser(text)
    if not os.path.exists(path):
        raise DataError(
            f"{text}: no such file or folder (expected 'digits', one of {', '.join(NAMED_SETS)}, "
            "'tfds:NAME', or a path to an .npz, a .csv, an IDX folder, a TFRecord folder or an image folder)"
        )
    if os.path.isdir(path):
        if is_tfrecord_folder(path):
            return "tfrecord"
        if is_segmentation_folder(path):
            return "segmentation"
        return "idx" if is_idx_folder(path) else "image_folder"
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        return "npz"
    if ext == ".csv":
        return "csv"
    if ext == ".txt":
        return "text"
    raise DataError(f"{text}: unsupported file type {ext or '(no extension)'!r}; expected .npz, .csv or .txt, or a folder")


def _add_validation(splits: Splits, fraction: float, seed: int, what: str) -> Splits:
    """Carves a seeded, stratified validation split out of ``train`` (unless the source has one)."""
    if fraction <= 0 or "validation" in splits:
        return splits
    x, y = splits["train"]
    keep, held = split_indices(np.asarray(y).reshape(-1), fraction, seed, what=f"{what} (validation_split)")
    out = dict(splits)
    out["train"] = (x[keep], y[keep])
    out["validation"] = (x[held], y[held])
    return out


def _display_name(source: str, kind: str) -> str:
    if kind in ("digits", "named"):
        return source.lower()
    if kind == "tfds":
        return "tfds:" + source.split(":", 1)[1]
    path = os.path.abspath(os.path.expanduser(source)).rstrip(os.sep)
    base = os.path.basename(path)
    return base if kind in ("idx", "image_folder", "tfrecord", "segmentation") else os.path.splitext(base)[0]


def _wants_stream(stream: Optional[bool], decoded_bytes: int) -> bool:
    """``stream`` if given, else whether the decoded examples would exceed the threshold."""
    return bool(stream) if stream is not None else decoded_bytes > _streaming.STREAM_THRESHOLD_BYTES


def _stats_sample_in_memory(ds: DataSet, stats_sample: int, normalize: Optional[str]) -> DataSet:
    """Recomputes an in-memory set's statistics on a seeded sample of ``stats_sample`` training examples."""
    x, _ = ds.sample("train", stats_sample)
    ds.preprocessing = compute_preprocessing(x, ds.preprocessing["scale"], normalize)
    return ds


def load(
    source: Optional[str] = DEFAULT_SOURCE,
    *,
    image_size: Union[None, int, Sequence[int]] = None,
    color_mode: Optional[str] = None,
    validation_split: float = 0.0,
    seed: int = 0,
    label_column: Union[None, str, int] = None,
    normalize: Optional[str] = "scale",
    cache_dir: Optional[str] = None,
    base_url: Optional[str] = None,
    stream: Optional[bool] = None,
    on_bad_file: Optional[str] = None,
    stats_sample: Optional[int] = None,
    quiet: bool = False,
) -> DataSetBase:
    """Loads a classification data set, in memory or streamed from disk.

    Args:
      source: ``"digits"`` (default; bundled with scikit-learn), ``"mnist"``,
        ``"fashion_mnist"``, ``"cifar10"``, ``"cifar100"`` (downloaded once),
        ``"tfds:NAME"`` (prepared TensorFlow Datasets data), or a path to an
        ``.npz`` (``x_train``/``y_train``/``x_test``/``y_test``), a ``.csv``,
        a folder of IDX files, a folder of TFRecord shards (written by
        :func:`lamina.data.convert`, or ``train-*.tfrecord`` files), or an
        image folder (one sub-folder per class). Two more kinds give a
        :class:`~lamina.data.paired.PairedDataSet` with array targets: a
        ``.txt`` file (a language model's token windows;
        ``"FILE.txt?tokens=char&window=64"``, see :mod:`lamina.data.text`) and
        a segmentation folder (``images/`` + ``masks/``, see
        :mod:`lamina.data.segmentation`). A path may end in options:
        ``"PATH?stream=1"``, ``"PATH?on_bad_file=fail"`` (joined with ``&``).
      image_size: resize images to ``(height, width)`` (or one int).
      color_mode: ``"rgb"`` or ``"grayscale"`` (default: as stored).
      validation_split: fraction of ``train`` held out as ``"validation"``
        (seeded with ``seed``, stratified; per shard for TFRecords); ignored
        if the source has one.
      seed: seed for the validation split and the default shuffle seed.
      label_column: CSV label column (name or index).
      normalize: ``"scale"`` (raw * scale), ``"standardize"`` (then per-channel
        mean/std of the training split, in one streaming pass for streamed
        sets), or ``"none"``.
      cache_dir: download cache for named sets (default ``$LAMINA_DATA_DIR`` or
        ``~/.cache/lamina``); the tfds data folder for ``tfds:``.
      base_url: download mirror for named sets (default ``$LAMINA_DATA_URL``).
      stream: ``True`` reads image folders, TFRecord shards, tfds sets and
        CSV files from disk batch by batch (a
        :class:`~lamina.data.StreamingDataSet`, or a
        :class:`~lamina.data.csv_stream.CSVStream` in chunks of rows);
        ``False`` loads them into memory; ``None`` (default) streams when the
        decoded images (or the CSV file) would exceed
        :data:`~lamina.data.STREAM_THRESHOLD_BYTES` (256 MiB).
      on_bad_file: what to do with a file that cannot be read or decoded:
        ``"skip"`` (warn, naming it, and leave it out) or ``"fail"``
        (:class:`DataError`). Default: ``"skip"`` when streaming (never a
        crash hours into an epoch), ``"fail"`` when loading into memory (the
        error shows at once).
      stats_sample: with ``normalize="standardize"``: compute the statistics
        on this many training examples (a seeded sample) instead of all.
      quiet: print no notes (warnings about bad files are still printed).

    Returns:
      A :class:`~lamina.data.DataSet` (in memory) or a
      :class:`~lamina.data.StreamingDataSet`; both have ``splits``,
      ``input_shape``, ``num_classes``, ``class_names``, ``preprocessing``,
      ``num_batches``, ``batches``, ``arrays(split, limit=)`` and ``sample``.

    Raises:
      DataError: for every bad input (missing path, corrupt file, bad option),
        one line naming the file and the problem.
    """
    text, options = split_source_options(DEFAULT_SOURCE if source is None else str(source))
    if "stream" in options:
        from_query = _stream_option(options["stream"], str(source))
        if stream is not None and from_query is not None and bool(stream) != from_query:
            raise DataError(f"{source}: stream={options['stream']} in the source contradicts stream={stream!r}")
        stream = from_query if stream is None else stream
    if "on_bad_file" in options:
        if on_bad_file is not None and on_bad_file != options["on_bad_file"]:
            raise DataError(f"{source}: on_bad_file={options['on_bad_file']} in the source contradicts on_bad_file={on_bad_file!r}")
        on_bad_file = options["on_bad_file"]
    if on_bad_file is not None:
        check_on_bad_file(on_bad_file)
    if stream is not None and not isinstance(stream, (bool, np.bool_)):
        raise DataError(f"stream must be True, False or None, got {stream!r}")
    source = text
    kind = source_kind(source)
    size = check_image_size(image_size)
    mode = check_color_mode(color_mode)
    if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float, np.floating, np.integer)):
        raise DataError(f"validation_split must be a number in [0, 1), got {validation_split!r}")
    if not 0.0 <= float(validation_split) < 1.0:
        raise DataError(f"validation_split must be in [0, 1), got {validation_split!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    if normalize is not None and normalize not in NORMALIZE_MODES:
        raise DataError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, got {normalize!r}")
    if label_column is not None and kind != "csv":
        raise DataError(f"{source}: label_column applies only to .csv files")
    if stats_sample is not None and (not is_int(stats_sample) or stats_sample < 1 or normalize != "standardize"):
        raise DataError(
            f"stats_sample applies to normalize='standardize' and must be a positive integer, "
            f"got {stats_sample!r} with normalize={normalize!r}"
        )
    if stream and kind not in STREAMING_KINDS:
        raise DataError(
            f"{source}: stream=True applies to image folders, TFRecord folders, tfds: sets and .csv files; "
            f"a {kind} source is read into memory"
        )
    if on_bad_file is not None and kind not in _BAD_FILE_KINDS:
        raise DataError(f"{source}: on_bad_file applies to image folders, TFRecord folders and tfds: sets, "
                        f"not to a {kind} source")
    path = os.path.expanduser(source)
    name = _display_name(source, kind)
    common = dict(source=source, validation_split=float(validation_split), seed=int(seed))
    text_options = {k: options[k] for k in _TEXT_OPTIONS if k in options}
    if text_options and kind != "text":
        raise DataError(f"{source}: {', '.join(text_options)} apply to .txt files only")
    if kind == "text":
        if size is not None or mode is not None:
            raise DataError(f"{source}: image_size and color_mode apply to images, not to text")
        window = text_options.get("window")
        if window is not None and not window.isdigit():
            raise DataError(f"{source}: window must be a positive integer, got {window!r}")
        return load_text_file(path, tokens=text_options.get("tokens"), window=int(window) if window else None,
                              **common)
    if kind == "segmentation":
        if mode is not None:
            raise DataError(f"{source}: color_mode does not apply to segmentation folders (images are read as stored)")
        return load_segmentation_folder(path, image_size=size, **common)

    if kind == "image_folder":
        listing = list_image_folder(path)
        probe = probe_images(listing.root, listing.splits["train"][0], size, mode)
        h, w, c = probe[0]
        total = sum(len(p) for p, _ in listing.splits.values())
        streaming = _wants_stream(stream, total * h * w * c)
        policy = on_bad_file or ("skip" if streaming else "fail")
        folder = ImageFolderStream(
            listing, name=name, image_size=size, color_mode=mode, on_bad_file=policy, quiet=quiet, probe=probe,
            normalize=normalize if streaming else "none", stats_sample=stats_sample if streaming else None, **common,
        )
        if streaming:
            return folder
        result = folder.materialize(normalize)
        return _stats_sample_in_memory(result, stats_sample, normalize) if stats_sample else result
    index = None
    if kind == "tfds" and stream is not False:
        try:
            index = tfds_index(source.split(":", 1)[1].strip(), cache_dir=cache_dir)
        except DataError:
            if stream:
                raise
            index = None  # auto: the in-memory path reports its own errors
        if index is not None and min(index.image_shape[:2]) == 0 and size is None:
            raise DataError(f"{source}: images of varying size {tuple(d or None for d in index.image_shape)}; "
                            "resize them all with --image-size H,W (image_size=(H, W) in Python)")
    if kind == "tfrecord" or index is not None:
        if index is None:
            index = read_index(path, quiet=quiet)
        h, w = size or index.image_shape[:2]
        c = {"rgb": 3, "grayscale": 1}.get(mode or "", index.image_shape[-1])
        streaming = _wants_stream(stream, sum(index.count(s) for s in index.splits) * h * w * c)
        if kind == "tfds" and not streaming:
            index = None  # small: the tfds arrays below
    if index is not None:
        policy = on_bad_file or ("skip" if streaming else "fail")
        records = TFRecordStream(
            index, image_size=size, color_mode=mode, on_bad_file=policy,
            normalize=normalize if streaming else "none", stats_sample=stats_sample if streaming else None, **common,
        )
        if streaming:
            return records
        result = records.materialize(normalize)
        return _stats_sample_in_memory(result, stats_sample, normalize) if stats_sample else result

    class_names: Optional[List[str]] = None
    if kind == "digits":
        splits, class_names = load_digits_arrays()
        scale = DIGITS_SCALE
    elif kind == "named":
        splits, class_names = load_named_arrays(source.lower(), cache_dir=cache_dir, base_url=base_url)
        scale = 1.0 / 255.0
    elif kind == "tfds":
        splits, class_names = load_tfds_arrays(source.split(":", 1)[1].strip(), cache_dir=cache_dir)
        scale = scale_for(splits["train"][0])
    elif kind == "npz":
        splits, scale = load_npz_arrays(path)
    elif kind == "idx":
        splits = load_idx_folder(path)
        scale = scale_for(splits["train"][0])
    else:
        if size is not None or mode is not None:
            raise DataError(f"{source}: image_size and color_mode apply to images, not to .csv features")
        if _wants_stream(stream, os.path.getsize(path) if os.path.isfile(path) else 0):
            return CSVStream(path, name=name, source=source, label_column=label_column, normalize=normalize,
                             stats_sample=stats_sample, **{k: common[k] for k in ("validation_split", "seed")})
        splits, class_names, _ = load_csv_arrays(path, label_column)
        scale = 1.0

    if kind in ("digits", "named", "tfds", "npz", "idx"):
        splits = {s: (apply_image_options(x, size, mode, source), y) for s, (x, y) in splits.items()}
    splits = _add_validation(splits, float(validation_split), int(seed), source)
    result = DataSet(name, splits, class_names=class_names, scale=scale, normalize=normalize, seed=int(seed), source=source)
    return _stats_sample_in_memory(result, stats_sample, normalize) if stats_sample else result
