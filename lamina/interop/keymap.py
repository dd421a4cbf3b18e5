"""The key map between a checkpoint's names and a lamina model's variable paths, with full accounting.

A :class:`Entry` says where one lamina variable comes from: a checkpoint key
(or the first present of several spellings), an optional equal split of that
tensor along axis 0 (fused ``qkv`` projections) and a layout change:

* ``"conv"``: PyTorch ``(out, in, kh, kw)`` -> lamina/TensorFlow ``(kh, kw, in, out)``;
* ``"linear"``: PyTorch ``(out, in)`` -> lamina ``(in, out)``;
* ``"squeeze"``: a leading batch axis of 1 dropped (``(1, N, D)`` -> ``(N, D)``);
* ``"bgr"``: a Keras ``(kh, kw, in, out)`` kernel whose input channels are BGR,
  flipped so the lamina model takes RGB;
* ``"same"``: as it is.

:func:`apply_map` checks every tensor: a variable whose key is missing, a key
that no entry uses (and that is neither tolerated nor ignored) and a shape
that differs after the layout change each fail, all of them in one line.
:func:`export_map` runs the map backwards (the round trip to PyTorch).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from lamina.deferred import describe_keys

__all__ = ["Entry", "MapResult", "apply_map", "export_map", "resample_positions", "LAYOUTS"]

LAYOUTS = ("same", "conv", "linear", "squeeze", "bgr", "positions")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One lamina variable and the checkpoint tensor it comes from.

    Attributes:
      target: the lamina variable path (``"stages/0/blocks/0/conv_0/weights"``).
      sources: the checkpoint key, or several spellings of it (the first present is used;
        the first is written by :func:`export_map`).
      layout: one of :data:`LAYOUTS`.
      part: ``(index, count)``: the ``index``-th of ``count`` equal chunks along axis 0.
      head: whether the variable belongs to the classifier head (dropped when replacing the head).

    Layout ``"positions"`` is ``"squeeze"`` for a ViT's position table, which is
    resampled to the model's patch grid when the checkpoint was trained at
    another image size (:func:`resample_positions`).
    """

    target: str
    sources: Tuple[str, ...]
    layout: str = "same"
    part: Tuple[int, int] = (0, 1)
    head: bool = False


def _to_lamina(array: np.ndarray, entry: Entry) -> np.ndarray:
    index, count = entry.part
    if count > 1:
        if array.shape[0] % count:
            return array  # the shape check reports it
        array = np.split(array, count, axis=0)[index]
    if entry.layout == "conv":
        return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array
    if entry.layout == "linear":
        return array.T if array.ndim == 2 else array
    if entry.layout in ("squeeze", "positions"):
        return array.reshape(array.shape[1:]) if array.ndim >= 1 and array.shape[0] == 1 else array
    if entry.layout == "bgr":
        return array[:, :, ::-1, :] if array.ndim == 4 else array
    return array


def _to_source(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "conv":
        return array.transpose(3, 2, 0, 1)
    if layout == "linear":
        return array.T
    if layout in ("squeeze", "positions"):
        return array[np.newaxis]
    if layout == "bgr":
        return array[:, :, ::-1, :]
    return array


@dataclasses.dataclass
class MapResult:
    """What :func:`apply_map` matched.

    Attributes:
      weights: ``{lamina path: array}`` ready for ``Module.set_weights``.
      used: the checkpoint keys read.
      tolerated: keys consumed without a lamina counterpart (``num_batches_tracked``).
      ignored: keys left out on purpose (``ignore`` patterns, a replaced head).
    """

    weights: Dict[str, np.ndarray]
    used: List[str]
    tolerated: List[str]
    ignored: List[str]


def apply_map(
    entries: Sequence[Entry],
    tensors: Mapping[str, np.ndarray],
    shapes: Mapping[str, Tuple[int, ...]],
    tolerate: Sequence[str] = (),
    ignore: Sequence[str] = (),
    where: str = "checkpoint",
) -> MapResult:
    """Maps checkpoint tensors onto lamina variable paths, accounting for every tensor.

    Args:
      entries: the key map (entries whose target is not in ``shapes`` are an error).
      tensors: the checkpoint ``{key: array}``.
      shapes: the model's ``{variable path: shape}`` that must all be filled,
        except the targets of entries left out of ``entries``.
      tolerate: ``fnmatch`` patterns of keys consumed without use.
      ignore: ``fnmatch`` patterns of keys deliberately not loaded.
      where: the start of the error message (file and source).

    Returns:
      A :class:`MapResult`.

    Raises:
      ValueError: one line naming the missing keys, unknown keys and
        misshapen tensors (up to 5 of each, with counts).
    """
    weights: Dict[str, np.ndarray] = {}
    used: List[str] = []
    missing: List[str] = []
    misshapen: List[str] = []
    ignored = [k for k in tensors if any(fnmatch.fnmatchcase(k, p) for p in ignore)]
    ignored_set = set(ignored)
    for entry in entries:
        key = next((s for s in entry.sources if s in tensors and s not in ignored_set), None)
        if key is None:
            if not any(s in ignored_set for s in entry.sources):
                missing.append(entry.sources[0])
            continue
        if key not in used:
            used.append(key)
        value = _to_lamina(np.asarray(tensors[key]), entry)
        want = tuple(shapes[entry.target])
        if entry.layout == "positions" and tuple(value.shape) != want:
            value = resample_positions(value, want)
        if tuple(value.shape) != want:
            misshapen.append(f"{key} {tuple(np.shape(tensors[key]))} -> {entry.target} expects {want}")
            continue
        weights[entry.target] = value
    used_set = set(used)
    tolerated = [k for k in tensors if k not in used_set and k not in ignored_set
                 and any(fnmatch.fnmatchcase(k, p) for p in tolerate)]
    unknown = sorted(set(tensors) - used_set - ignored_set - set(tolerated))
    unfilled = sorted(set(shapes) - {e.target for e in entries})
    if missing or unknown or misshapen or unfilled:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s) {describe_keys(missing)}")
        if unknown:
            parts.append(f"unknown {len(unknown)} key(s) {describe_keys(unknown)}")
        if misshapen:
            parts.append(f"misshapen {len(misshapen)}: {'; '.join(misshapen[:3])}{' ...' if len(misshapen) > 3 else ''}")
        if unfilled:
            parts.append(f"model variables without a source {describe_keys(unfilled)}")
        raise ValueError(f"{where}: " + "; ".join(parts))
    return MapResult(weights, used, tolerated, ignored)


def resample_positions(table: np.ndarray, shape: Tuple[int, ...], method: str = "bicubic") -> np.ndarray:
    """Resamples a ViT position table to another square patch grid (fine-tuning at another image size).

    ``table`` is ``(extra + g*g, dim)`` — ``extra`` (0 or 1) leading rows for the
    class token are kept as they are — and becomes ``(extra + G*G, dim)``: the
    ``g x g`` grid of position vectors is interpolated to ``G x G``
    (``tf.image.resize``, half-pixel centres, as ``torch.nn.functional.interpolate``
    with ``align_corners=False``; bicubic like timm's ``resample_abs_pos_embed``,
    whose cubic kernel differs slightly: a = -0.5 here, -0.75 in PyTorch).

    Args:
      table: the checkpoint's table, 2-D.
      shape: the model's ``(rows, dim)``.
      method: ``"bicubic"`` or ``"bilinear"``.

    Returns:
      The resampled table, or ``table`` unchanged when no square-grid reading fits
      (the shape check then reports it).
    """
    import math

    import tensorflow as tf

    if table.ndim != 2 or len(shape) != 2 or table.shape[1] != shape[1]:
        return table
    for extra in (1, 0):
        g, G = math.isqrt(table.shape[0] - extra), math.isqrt(shape[0] - extra)
        if g * g == table.shape[0] - extra and G * G == shape[0] - extra and g > 0 and G > 0:
            grid = table[extra:].reshape(1, g, g, -1).astype(np.float32)
            out = tf.image.resize(grid, (G, G), method=method).numpy().reshape(G * G, -1)
            return np.concatenate([table[:extra].astype(np.float32), out]).astype(table.dtype)
    return table


def export_map(entries: Sequence[Entry], weights: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Runs the key map backwards: lamina weights -> checkpoint ``{key: array}`` (first spelling of each key).

    Args:
      entries: the key map.
      weights: the model's ``{variable path: array}``.

    Returns:
      The checkpoint tensors; chunks of one key are concatenated in order.

    Raises:
      ValueError: if a target is missing from ``weights`` or a key's chunks are incomplete.
    """
    parts: Dict[str, Dict[int, np.ndarray]] = {}
    counts: Dict[str, int] = {}
    for entry in entries:
        if entry.target not in weights:
            raise ValueError(f"export: the model has no variable {entry.target!r}")
        key = entry.sources[0]
        parts.setdefault(key, {})[entry.part[0]] = _to_source(np.asarray(weights[entry.target]), entry.layout)
        counts[key] = entry.part[1]
    out: Dict[str, np.ndarray] = {}
    for key, chunks in parts.items():
        if sorted(chunks) != list(range(counts[key])):
            raise ValueError(f"export: key {key!r} needs {counts[key]} chunks, the map gives {sorted(chunks)}")
        value = chunks[0] if counts[key] == 1 else np.concatenate([chunks[i] for i in range(counts[key])], axis=0)
        out[key] = np.ascontiguousarray(value)
    return out


def head_keys(entries: Sequence[Entry]) -> List[str]:
    """All spellings of the checkpoint keys that feed the head."""
    return [s for e in entries if e.head for s in e.sources]


def select(entries: Sequence[Entry], head: bool) -> List[Entry]:
    """The entries without the head ones (``head=False``) or all of them."""
    return list(entries) if head else [e for e in entries if not e.head]


def find(entries: Sequence[Entry], target: str) -> Optional[Entry]:
    """The entry of a lamina path, or ``None``."""
    return next((e for e in entries if e.target == target), None)
