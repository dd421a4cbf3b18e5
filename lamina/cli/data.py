"""``lamina data convert`` and ``lamina data inspect`` (loaded by :mod:`lamina.cli`).

``lamina data convert SRC OUT [--image-size H,W] [--encoding png|jpeg] [--shard-mb 128]``
writes any source lamina reads as sharded TFRecords with an ``index.json``
(see :func:`lamina.data.convert`), with a progress bar on a terminal.

``lamina data inspect PATH [--grid FILE.png] [--verify] [--json]`` prints counts
per split and class, the input shape and the files, and writes a grid of
sample images (see :func:`lamina.data.inspect`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable, Dict

from lamina.cli.common import CLIError, Parser, choice, dims, fraction, nonneg_int, positive_float, positive_int

__all__ = ["add_parsers", "handlers"]


def add_parsers(sub: Any) -> None:
    """Adds ``data`` (with ``convert`` and ``inspect``) to the ``lamina`` sub-command parsers.

    Args:
      sub: the ``add_subparsers()`` object of :func:`lamina.cli.build_parser`.
    """
    p = sub.add_parser("data", help="convert data to sharded TFRecords, or inspect a data source",
                       description="Work with data sources: convert to sharded TFRecords, inspect.")
    actions = p.add_subparsers(dest="data_command", parser_class=Parser)
    c = actions.add_parser("convert", help="write a data source as sharded TFRecords with an index.json",
                           description="Write any source lamina reads (image folder, TFRecords, .npz, IDX, "
                                       "mnist, cifar10, tfds:NAME) as train-00000-of-00016.tfrecord shards "
                                       "plus index.json (counts, classes, shape, statistics, SHA-256).")
    c.add_argument("src", help="the data source")
    c.add_argument("out", help="the output folder (created; must be empty unless --overwrite)")
    c.add_argument("--image-size", type=dims("--image-size"), default=None, help="resize images to H,W")
    c.add_argument("--color-mode", type=choice("--color-mode", ("rgb", "grayscale")), default=None)
    c.add_argument("--val-split", type=fraction("--val-split"), default=0.0,
                   help="hold out this fraction of train as a validation split (default 0)")
    c.add_argument("--seed", type=nonneg_int("--seed"), default=0, help="seed of the example order")
    c.add_argument("--encoding", type=choice("--encoding", ("png", "jpeg")), default="png",
                   help="png (lossless, default) or jpeg")
    c.add_argument("--jpeg-quality", type=positive_int("--jpeg-quality"), default=95)
    c.add_argument("--shard-mb", type=positive_float("--shard-mb"), default=128.0, help="target shard size in MiB")
    c.add_argument("--num-shards", type=positive_int("--num-shards"), default=None, help="shards per split")
    c.add_argument("--on-bad-file", type=choice("--on-bad-file", ("skip", "fail")), default="skip",
                   help="skip (warn and leave out, default) or fail on unreadable source images")
    c.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty OUT")
    c.add_argument("--quiet", action="store_true", help="print only warnings")

    i = actions.add_parser("inspect", help="print counts, classes and shapes of a data source; write a sample grid",
                           description="Summarize a data source without loading it into memory.")
    i.add_argument("path", help="the data source")
    i.add_argument("--grid", default=None, help="write a PNG grid of sample training images here")
    i.add_argument("--samples", type=positive_int("--samples"), default=64, help="images in the grid (default 64)")
    i.add_argument("--verify", action="store_true", help="check every TFRecord shard's SHA-256")
    i.add_argument("--image-size", type=dims("--image-size"), default=None, help="resize images to H,W")
    i.add_argument("--seed", type=nonneg_int("--seed"), default=0, help="seed of the sample")
    i.add_argument("--json", action="store_true", help="print the report as JSON")


def handlers() -> Dict[str, Callable[[argparse.Namespace], int]]:
    """Returns ``{"data": fn}``; ``fn`` takes the parsed arguments and returns an exit code."""
    return {"data": _data}


def _size(value: Any, flag: str) -> Any:
    if value is None:
        return None
    if len(value) != 2:
        raise CLIError(f"{flag} must be H,W (two positive integers), got {','.join(map(str, value))}")
    return tuple(value)


def _data(args: argparse.Namespace) -> int:
    import lamina.data as ld

    if args.data_command == "convert":
        ld.convert(args.src, args.out, image_size=_size(args.image_size, "--image-size"), color_mode=args.color_mode,
                   validation_split=args.val_split, seed=args.seed, encoding=args.encoding,
                   jpeg_quality=args.jpeg_quality, shard_mb=args.shard_mb, num_shards=args.num_shards,
                   on_bad_file=args.on_bad_file, overwrite=args.overwrite, quiet=args.quiet)
        return 0
    if args.data_command == "inspect":
        report = ld.inspect(args.path, grid=args.grid, samples=args.samples, verify=args.verify,
                            image_size=_size(args.image_size, "--image-size"), seed=args.seed)
        print(json.dumps(report, indent=1) if args.json else ld.inspection.format_report(report), flush=True)
        return 0
    raise CLIError("lamina data: choose a command: convert or inspect (see lamina data --help)")
