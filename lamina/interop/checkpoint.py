"""Reading other frameworks' checkpoint files into ``{key: NumPy array}``, without running their code.

* ``.safetensors`` — with the ``safetensors`` package (no PyTorch needed).
* ``.pt`` / ``.pth`` / ``.bin`` — a PyTorch ``state_dict``, read with
  ``torch.load(weights_only=True)`` (PyTorch's restricted unpickler: tensors and
  plain containers only, no code), when PyTorch is installed.
* ``.h5`` (Keras 3 ``.weights.h5`` or the legacy Keras 2 weights layout that
  ``keras.applications`` downloads) — with ``h5py``, no Keras at run time.
  Keras keys become ``"<layer name>/<weight>"``: ``"conv1_conv/kernel"``,
  ``"conv1_bn/gamma"``, ``"conv1_bn/moving_mean"``, ``"predictions/bias"``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

import numpy as np

__all__ = ["read_checkpoint", "CHECKPOINT_EXTENSIONS"]

CHECKPOINT_EXTENSIONS = (".safetensors", ".pt", ".pth", ".bin", ".h5")

# Keras layers' variables in the order Keras 3 stores them (``vars/0``, ``vars/1``, ...).
_H5_LAYER_VARS = {
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "conv2d": ("kernel", "bias"),
    "dense": ("kernel", "bias"),
}


def _read_torch(path: str) -> Tuple[Dict[str, np.ndarray], List[str]]:
    try:
        import torch
    except ImportError:
        raise ValueError(
            f"{path}: reading a PyTorch .pt/.pth/.bin file needs PyTorch (pip install torch); or convert it to "
            "safetensors first, e.g. in Python with torch: safetensors.torch.save_file(torch.load(FILE, "
            "weights_only=True), 'model.safetensors')"
        ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for foreign or unsafe files
        raise ValueError(f"{path}: cannot read it with torch.load(weights_only=True): {' '.join(str(e).split())[:300]}") from None
    notes: List[str] = []
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "model_state_dict", "module"):
            if isinstance(obj.get(key), dict):
                notes.append(f"read the state dict under the file's {key!r} entry")
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path}: expected a state_dict (a dict of tensors), got {type(obj).__name__}")
    out: Dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: entry {key!r} is a {type(value).__name__}, expected a tensor (not a state_dict?)")
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            out[str(key)] = value.float().numpy()
        else:
            out[str(key)] = value.numpy().copy()
    return out, notes


def _h5_var_names(group_path: str, count: int, where: str) -> Tuple[str, ...]:
    kind = group_path.rstrip("/").split("/")[-1].rstrip("0123456789").rstrip("_")
    names = _H5_LAYER_VARS.get(kind)
    if names is None or count > len(names):
        raise ValueError(f"{where}: layer {group_path!r} ({count} variables) is not a Conv2D, Dense or BatchNormalization layer")
    if kind == "batch_normalization" and count != 4:
        raise ValueError(f"{where}: BatchNormalization {group_path!r} has {count} variables, expected 4 (gamma, beta, moving_mean, moving_variance)")
    return names[:count]


def _read_h5(path: str) -> Tuple[Dict[str, np.ndarray], List[str]]:
    try:
        import h5py
    except ImportError:
        raise ValueError(f"{path}: reading Keras .h5 weights needs h5py: pip install 'lamina[keras-weights]'") from None
    out: Dict[str, np.ndarray] = {}
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({' '.join(str(e).split())})") from None
    with f:
        if "layer_names" in f.attrs:  # legacy Keras 2 layout: attrs layer_names / weight_names
            for layer in f.attrs["layer_names"]:
                layer = layer.decode() if isinstance(layer, bytes) else str(layer)
                group = f[layer]
                for wname in group.attrs.get("weight_names", []):
                    wname = wname.decode() if isinstance(wname, bytes) else str(wname)
                    short = wname.split("/")[-1].split(":")[0]
                    out[f"{layer}/{short}"] = np.asarray(group[wname])
        elif "layers" in f:  # Keras 3 .weights.h5: layers/<path>/vars/<i>, the layer's name in vars.attrs["name"]
            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Group) and name.endswith("/vars") and len(obj):
                    layer = obj.attrs.get("name", name[: -len("/vars")])
                    layer = layer.decode() if isinstance(layer, bytes) else str(layer)
                    names = _h5_var_names(name[: -len("/vars")], len(obj), path)
                    for i, short in enumerate(names):
                        out[f"{layer}/{short}"] = np.asarray(obj[str(i)])

            f["layers"].visititems(visit)
        else:
            raise ValueError(f"{path}: HDF5 file without Keras weights (expected a 'layers' group or a 'layer_names' attribute)")
    if not out:
        raise ValueError(f"{path}: the Keras weights file holds no weights")
    return out, []


def read_checkpoint(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str], List[str]]:
    """Reads a checkpoint file into NumPy arrays.

    Args:
      path: a ``.safetensors``, ``.pt`` / ``.pth`` / ``.bin`` (PyTorch) or ``.h5`` (Keras) file.

    Returns:
      ``(tensors, metadata, notes)``: ``{key: array}`` (bfloat16 becomes float32),
      the safetensors ``__metadata__`` (empty for other formats), and remarks
      made while reading (e.g. a nested ``state_dict`` entry).

    Raises:
      FileNotFoundError: if the file is missing.
      ValueError: for an unknown extension, an unreadable file, a missing
        optional package (one line saying what to install), or a file that is
        not a state dict.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    lower = path.lower()
    if lower.endswith(".safetensors"):
        from lamina.export.safetensors import load_file, read_metadata

        tensors = {k: (v.astype(np.float32) if v.dtype.name == "bfloat16" else v) for k, v in load_file(path).items()}
        return tensors, read_metadata(path), []
    if lower.endswith((".pt", ".pth", ".bin")):
        tensors, notes = _read_torch(path)
        return tensors, {}, notes
    if lower.endswith(".h5"):
        tensors, notes = _read_h5(path)
        return tensors, {}, notes
    raise ValueError(f"{path}: unknown checkpoint type; expected one of {', '.join(CHECKPOINT_EXTENSIONS)}")
