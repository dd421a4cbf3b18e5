"""``inspect``: what a data source holds (counts, classes, shapes, files) and a grid of samples.

Nothing is decoded up front: image folders and TFRecord folders are opened as
streaming sets, counts come from the file list or the TFRecord index, and
only the sampled images are decoded for the grid.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from lamina.data.base import DataSetBase, is_int
from lamina.data.errors import DataError

__all__ = ["inspect", "format_report", "save_grid"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_grid(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: str, columns: int = 8) -> str:
    """Draws raw images in a grid, each titled with its class, to a PNG.

    Args:
      images: ``[n, H, W, C]`` raw images (C 1 or 3).
      labels: ``[n]`` class ids.
      class_names: names per class id.
      path: the PNG to write (atomically).
      columns: images per row.

    Returns:
      ``path``.
    """
    plt = _pyplot()
    n = max(1, len(images))
    cols = min(columns, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.55 * rows), squeeze=False)
    top = float(images.max()) if images.size else 1.0
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= len(images):
            continue
        img = images[k].astype(np.float32) / (255.0 if images.dtype == np.uint8 and top > 16 else max(top, 1.0))
        if img.shape[-1] == 1:
            ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(np.clip(img, 0.0, 1.0), interpolation="nearest")
        ax.set_title(str(class_names[int(labels[k])])[:14], fontsize=7)
    fig.tight_layout()
    tmp = path + ".part.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def inspect(
    source: Union[str, DataSetBase],
    *,
    grid: Optional[str] = None,
    samples: int = 64,
    verify: bool = False,
    image_size: Union[None, int, Sequence[int]] = None,
    color_mode: Optional[str] = None,
    seed: int = 0,
) -> Dict[str, Any]:
    """Summarizes a data source without loading it into memory.

    Args:
      source: a ``source`` string for :func:`lamina.data.load`, or a loaded set.
      grid: write a PNG grid of ``samples`` seeded random training images here.
      samples: how many images the grid shows.
      verify: for TFRecord folders, check every shard's SHA-256 against the
        index (reads every byte once).
      image_size: as for :func:`lamina.data.load`.
      color_mode: as for :func:`lamina.data.load`.
      seed: seed of the sample.

    Returns:
      ``{"name", "source", "streaming", "input_shape", "num_classes",
      "class_names", "splits", "class_counts", "files", "preprocessing",
      "index"?, "verified"?, "grid"?, "bad_files"}``.

    Raises:
      DataError: if the source cannot be read, or (with ``verify``) a shard
        does not match its checksum.
    """
    from lamina.data.load import STREAMING_KINDS, load, source_kind
    from lamina.data.tfrecord import TFRecordStream, verify_shards

    if not is_int(samples) or samples < 1:
        raise DataError(f"inspect: samples must be a positive integer, got {samples!r}")
    if isinstance(source, DataSetBase):
        ds = source
    else:
        streamable = source_kind(source) in STREAMING_KINDS
        ds = load(source, image_size=image_size, color_mode=color_mode, seed=seed,
                  stream=True if streamable else None, on_bad_file="skip" if streamable else None)
    report: Dict[str, Any] = {
        "name": ds.name,
        "source": ds.source,
        "streaming": bool(ds.streaming),
        "input_shape": list(ds.input_shape),
        "num_classes": ds.num_classes,
        "class_names": list(ds.class_names),
        "splits": ds.splits,
        "class_counts": {s: ds.class_counts(s) for s in ds.splits},
        "files": {s: ds.num_files(s) for s in ds.splits} if ds.streaming else None,
        "preprocessing": ds.preprocessing,
    }
    if isinstance(ds, TFRecordStream):
        index = ds.index
        report["index"] = {
            "indexed": index.indexed,
            "encoding": index.encoding,
            "stored_shape": list(index.image_shape),
            "shards": {s: len(v) for s, v in index.splits.items()},
            "bytes": sum(sh.bytes for v in index.splits.values() for sh in v),
            "statistics": index.statistics,
        }
        if verify:
            problems = verify_shards(index)
            if problems:
                raise DataError(f"{problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
            report["verified"] = sum(1 for v in index.splits.values() for sh in v if sh.sha256)
    elif verify:
        raise DataError(f"inspect: verify applies to TFRecord folders (with SHA-256 in {ds.name}'s index)")
    if grid is not None:
        x, y = ds.sample("train", int(samples), seed=seed)
        if len(ds.input_shape) != 3:
            raise DataError(f"inspect: {ds.name} holds features of shape {tuple(ds.input_shape)}, not images; no grid")
        report["grid"] = save_grid(x, y, ds.class_names, grid)
    report["bad_files"] = int(getattr(ds, "bad_files", 0))
    return report


def format_report(report: Dict[str, Any]) -> str:
    """The text ``lamina data inspect`` prints for a report of :func:`inspect`."""
    lines = [f"{report['name']}  ({report['source']})",
             f"  {'streamed from disk' if report['streaming'] else 'in memory'}; input shape "
             f"{tuple(report['input_shape'])}; {report['num_classes']} classes"]
    width = max(len(s) for s in report["splits"]) if report["splits"] else 5
    for split, count in report["splits"].items():
        files = report["files"][split] if report.get("files") else None
        extra = f" in {files} files" if files is not None and files != count else ""
        lines.append(f"  {split:<{width}} {count:>9} examples{extra}")
    names = report["class_names"]
    lines.append("  classes (" + ", ".join(f"{s}" for s in report["class_counts"]) + "):")
    shown = names[:40]
    for i, name in enumerate(shown):
        counts = "  ".join(f"{report['class_counts'][s][i]:>7}" for s in report["class_counts"])
        lines.append(f"    {i:>4} {name[:24]:<24} {counts}")
    if len(names) > len(shown):
        lines.append(f"    ... {len(names) - len(shown)} more classes")
    index = report.get("index")
    if index:
        lines.append("  TFRecord shards: " + ", ".join(f"{s} {n}" for s, n in index["shards"].items())
                     + f" ({index['bytes'] / 2**20:.1f} MiB, {index['encoding']}, stored {tuple(index['stored_shape'])})"
                     + ("" if index["indexed"] else "; no index.json"))
        if index.get("statistics", {}).get("train"):
            st = index["statistics"]["train"]
            lines.append(f"  train statistics: mean {[round(v, 4) for v in st['mean']]}, std {[round(v, 4) for v in st['std']]}")
    if "verified" in report:
        lines.append(f"  SHA-256 verified: {report['verified']} shards intact")
    if report.get("grid"):
        lines.append(f"  sample grid: {report['grid']}")
    if report.get("bad_files"):
        lines.append(f"  bad files met while sampling: {report['bad_files']}")
    return "\n".join(lines)
