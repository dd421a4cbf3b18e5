"""Data sets for lamina, served as seeded ``tf.data`` pipelines.

``lamina.data.load(source)`` reads the bundled 8x8 digits (default), a named
public set (``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``;
downloaded once, verified), ``tfds:NAME``, an ``.npz``, a ``.csv``, a folder
of IDX files, a folder of TFRecord shards or an image folder (or, for language
models and segmentation, a ``.txt`` file or an images + masks folder: a
:class:`PairedDataSet`), and returns a
:class:`DataSet` (in memory) or, for image and TFRecord folders too big for
memory, a :class:`StreamingDataSet` read from disk batch by batch; both serve
the same seeded, exactly resumable ``batches()``. ``convert`` writes sharded
TFRecords from any source, ``inspect`` summarizes one. Every bad input raises
:class:`DataError`, one line naming the file and the problem.
"""

from lamina.data.augment import AUGMENTATIONS, parse_augment
from lamina.data.base import DataSetBase
from lamina.data.convert import ENCODINGS, convert
from lamina.data.csv_stream import CSVStream
from lamina.data.dataset import NORMALIZE_MODES, DataSet
from lamina.data.decode import ON_BAD_FILE, pipeline_error
from lamina.data.errors import DataError
from lamina.data.idx import read_idx
from lamina.data.inspection import inspect
from lamina.data.load import DEFAULT_SOURCE, NAMED_SOURCES, STREAMING_KINDS, load, source_kind
from lamina.data.named import cache_root, dataset_folder
from lamina.data.streaming import STREAM_THRESHOLD_BYTES, StreamingDataSet
from lamina.data.paired import PairedDataSet
from lamina.data.text import TextCodec

__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_SOURCE",
    "NAMED_SOURCES",
    "NORMALIZE_MODES",
    "ON_BAD_FILE",
    "STREAMING_KINDS",
    "STREAM_THRESHOLD_BYTES",
    "ENCODINGS",
    "CSVStream",
    "DataError",
    "DataSet",
    "DataSetBase",
    "PairedDataSet",
    "TextCodec",
    "StreamingDataSet",
    "cache_root",
    "convert",
    "dataset_folder",
    "inspect",
    "load",
    "parse_augment",
    "pipeline_error",
    "read_idx",
    "source_kind",
]
