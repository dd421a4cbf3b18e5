"""Pretrained weights in and out: ``load_pretrained``, ``convert`` and the round trip ``save_state_dict``.

:func:`load_pretrained` reads a torchvision / timm / Keras / Hugging Face
checkpoint (or a file written by :func:`convert`), maps its names onto the
lamina model's variables (:mod:`lamina.interop.resnet_keys`,
:mod:`lamina.interop.vit_keys`), checks every tensor and the model's options
that the weights cannot show (ResNet variant, normalization epsilon, ViT
heads), and loads. Nothing is loaded partially by accident: a missing,
unknown or misshapen tensor fails in one line; the classifier head is the
only part that may be left out, on request or when its size differs (then
``report.notes`` says so).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from lamina.interop import resnet_keys, vit_keys
from lamina.interop.archs import (
    ARCHITECTURES,
    SOURCE_OPTIONS,
    SOURCES,
    canonical_arch,
    create_model,
    model_options,
    preprocessing_for,
)
from lamina.interop.checkpoint import read_checkpoint
from lamina.interop.keymap import Entry, apply_map, export_map, head_keys, select

__all__ = ["LoadReport", "HEAD_MODES", "EXPORT_NAMINGS", "detect_source", "load_pretrained", "convert",
           "init_from", "export_state_dict", "save_state_dict"]

HEAD_MODES = ("auto", "load", "drop")
EXPORT_NAMINGS = ("torchvision", "timm", "hf")

_HEAD_NAMES = {("torchvision", "resnet"): "fc", ("timm", "resnet"): "fc", ("keras", "resnet"): "predictions",
               ("torchvision", "vit"): "heads.head", ("timm", "vit"): "head", ("hf", "vit"): "classifier",
               ("lamina", "resnet"): "classifier", ("lamina", "vit"): "head"}


@dataclasses.dataclass
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
      path: the checkpoint file.
      source: ``"torchvision"``, ``"timm"``, ``"keras"``, ``"hf"`` or ``"lamina"`` (a converted file).
      family: ``"resnet"`` or ``"vit"``.
      arch: the architecture the checkpoint matches (``"resnet50"``), or ``None`` for a custom one.
      loaded: the lamina variable paths that were assigned.
      dropped: checkpoint keys left out on purpose (a replaced head, ``ignore`` patterns).
      skipped: checkpoint keys with no lamina counterpart that carry no weights (``num_batches_tracked``).
      head_loaded: whether the checkpoint's classifier head was loaded.
      notes: one-line remarks for the user (``"dropped the checkpoint's head fc (1000 classes); the new head has 10"``).
      preprocessing: the input preprocessing the weights expect (see :data:`lamina.interop.PREPROCESSING`), or ``None``.
      built_for: with :func:`init_from`, the source whose constructor options built the model
        (``lm.interop.create_model(arch, built_for)`` rebuilds it).
    """

    path: str
    source: str
    family: str
    arch: Optional[str]
    loaded: List[str]
    dropped: List[str]
    skipped: List[str]
    head_loaded: bool
    notes: List[str]
    preprocessing: Optional[Dict[str, Any]]
    built_for: Optional[str] = None  # set by init_from: the source whose options built the model

    def summary(self) -> str:
        """One line: what was loaded from where, and what was left out."""
        what = f"{self.source} {self.arch or self.family}"
        text = f"loaded {len(self.loaded)} tensors from {self.path} ({what})"
        if self.skipped:
            text += f"; skipped {len(self.skipped)} without weights (num_batches_tracked)"
        if self.dropped:
            text += f"; left out {len(self.dropped)} ({', '.join(self.dropped[:4])}{' ...' if len(self.dropped) > 4 else ''})"
        return text


def _family(model: Any) -> str:
    from lamina.models.resnet import ResNet
    from lamina.models.transformer import ViT

    if isinstance(model, ResNet):
        return "resnet"
    if isinstance(model, ViT):
        return "vit"
    raise TypeError(f"load_pretrained: expected a lamina ResNet or ViT, got {type(model).__name__} "
                    "(use lm.load_weights for lamina's own files)")


def detect_source(tensors: Mapping[str, Any], metadata: Optional[Mapping[str, str]] = None, path: str = "") -> str:
    """Which library's naming a checkpoint uses.

    Args:
      tensors: the checkpoint's ``{key: array}`` (only the keys are read).
      metadata: its safetensors metadata (``format: lamina`` marks a converted file).
      path: the file, for the message.

    Returns:
      ``"lamina"``, ``"keras"``, ``"hf"``, ``"timm"`` or ``"torchvision"``
      (ResNets: timm's names are torchvision's, reported as ``"torchvision"``).

    Raises:
      ValueError: when the names match none of them.
    """
    keys = set(tensors)
    if (metadata or {}).get("format") == "lamina":
        return "lamina"
    if "conv1_conv/kernel" in keys or any(k.startswith("conv2_block1_") for k in keys):
        return "keras"
    if any(".embeddings.patch_embeddings." in f".{k}" for k in keys):
        return "hf"
    if "cls_token" in keys or "patch_embed.proj.weight" in keys:
        return "timm"
    if "conv1.weight" in keys or "class_token" in keys or "conv_proj.weight" in keys:
        return "torchvision"
    raise ValueError(f"{path}: cannot tell which library wrote this checkpoint (keys {sorted(keys)[:4]} ...); "
                     f"pass source= one of {', '.join(SOURCES)}")


def _entries(model: Any, family: str, source: str, tensors: Mapping[str, Any]) -> List[Entry]:
    if source == "lamina":
        head = "classifier/" if family == "resnet" else "head/"
        return [Entry(p, (p,), head=p.startswith(head)) for p in model.variable_paths()]
    if family == "resnet":
        if source == "keras":
            return resnet_keys.applications_entries(model)
        if source in ("torchvision", "timm"):
            return resnet_keys.torch_entries(model)
    if family == "vit":
        if source == "torchvision":
            return vit_keys.torchvision_entries(model)
        if source == "timm":
            return vit_keys.timm_entries(model)
        if source == "hf":
            prefix = "vit." if any(k.startswith("vit.") for k in tensors) else ""
            return vit_keys.hf_entries(model, prefix)
    raise ValueError(f"load_pretrained: lamina cannot import {source} {family} checkpoints "
                     f"(supported: {', '.join(f'{s} {sorted(f)}' for s, f in SOURCE_OPTIONS.items())})")


def _infer_arch(family: str, model: Any) -> Optional[str]:
    """The :data:`ARCHITECTURES` name whose structure ``model`` has (after a successful map), or ``None``."""
    if family == "resnet":
        layers = tuple(len(s.blocks) for s in model.stages)
        block = model.block_type
        for name, spec in ARCHITECTURES.items():
            if spec["family"] == "resnet" and spec["block"] == block and tuple(spec["layers"]) == layers:
                return name
        return None
    for name, spec in ARCHITECTURES.items():
        if spec["family"] == "vit" and (spec["patch_size"], spec["model_dim"], spec["num_layers"], spec["mlp_dim"]) == (
                model.patch_size, model.model_dim, model.num_layers, model.mlp_dim):
            return name
    return None


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=0.01)


def _check_options(model: Any, family: str, source: str, arch: Optional[str], norm_eps: Optional[float],
                   metadata: Mapping[str, str]) -> None:
    """Fails on model options that change the outputs but not the weights' shapes."""
    owner = model.describe()
    if source == "lamina":
        expected = json.loads(metadata.get("model_options", "{}"))
    else:
        expected = dict(SOURCE_OPTIONS[source][family])
        if norm_eps is not None:
            expected["norm_eps"] = float(norm_eps)
    if family == "resnet":
        if model.stem_type != "imagenet":
            raise ValueError(f"{owner}: pretrained ResNets have the imagenet stem (7x7/2 + max-pool), the model has stem={model.stem_type!r}")
        if model.block_type == "bottleneck" and "variant" in expected and model.variant != expected["variant"]:
            raise ValueError(f"{owner}: {source} ResNet checkpoints are variant {expected['variant']!r} "
                             f"(stride on the {'first 1x1' if expected['variant'] == 'v1' else '3x3'} convolution), "
                             f"the model has variant={model.variant!r}")
        if "conv_bias" in expected and model.conv_bias != expected["conv_bias"]:
            raise ValueError(f"{owner}: {source} ResNet convolutions {'have' if expected['conv_bias'] else 'have no'} biases, "
                             f"the model has conv_bias={model.conv_bias}")
        if "bn_eps" in expected and not _close(model.bn_eps, expected["bn_eps"]):
            raise ValueError(f"{owner}: {source} ResNet checkpoints use BatchNorm eps {expected['bn_eps']}, the model has bn_eps={model.bn_eps}")
    else:
        if "norm_eps" in expected and not _close(model.norm_eps, expected["norm_eps"]):
            hint = " (pass norm_eps= to load_pretrained if this checkpoint's config says otherwise)" if source == "hf" else ""
            raise ValueError(f"{owner}: {source} ViT checkpoints use LayerNorm eps {expected['norm_eps']:g}, "
                             f"the model has norm_eps={model.norm_eps:g}; build it with norm_eps={expected['norm_eps']:g}{hint}")
        if model.pooling != "cls":
            raise ValueError(f"{owner}: the checkpoint's ViT reads a class token; build the model with pooling='cls'")
        if arch is not None and ARCHITECTURES[arch]["num_heads"] != model.num_heads:
            raise ValueError(f"{owner}: {arch} has {ARCHITECTURES[arch]['num_heads']} attention heads, the model has "
                             f"num_heads={model.num_heads} (the weights' shapes cannot show it)")
        if "num_heads" in expected and expected["num_heads"] != model.num_heads:
            raise ValueError(f"{owner}: the converted model had num_heads={expected['num_heads']}, this one has {model.num_heads}")


def _build(model: Any, family: str, tensors: Mapping[str, np.ndarray], entries: Sequence[Entry]) -> None:
    """Calls an unbuilt model once on zeros (ViT: at the image size the checkpoint's positions give)."""
    if model.built and model.variable_paths():
        return
    if family == "resnet":
        size = (32, 32)
    elif model.image_size is not None:
        size = model.image_size
    else:
        pos = next((np.shape(tensors[s]) for e in entries if e.target == "positions/embeddings"
                    for s in e.sources if s in tensors), None)
        grid = int(round(math.sqrt(pos[-2] - (1 if model.pooling == "cls" else 0)))) if pos is not None else 0
        if grid < 1:
            raise ValueError(f"{model.describe()}: give image_size (the checkpoint's positions do not show it)")
        size = (grid * model.patch_size, grid * model.patch_size)
    shape = [1, *size, 3] if model.data_format == "channels_last" else [1, 3, *size]
    model(tf.zeros(shape), training=False)


def _head_classes(tensors: Mapping[str, np.ndarray], entries: Sequence[Entry]) -> Optional[int]:
    for e in entries:
        if e.head and e.target.endswith("bias"):
            for s in e.sources:
                if s in tensors:
                    return int(np.shape(tensors[s])[0])
    return None


def load_pretrained(
    model: Any,
    path: str,
    source: Optional[str] = None,
    head: str = "auto",
    ignore: Sequence[str] = (),
    arch: Optional[str] = None,
    norm_eps: Optional[float] = None,
) -> LoadReport:
    """Loads a pretrained checkpoint into a lamina ResNet or ViT.

    Args:
      model: a :class:`lamina.models.ResNet` or :class:`lamina.models.ViT`
        built (or not: it is then called once on zeros) with the options the
        checkpoint needs; :func:`lamina.interop.create_model` builds one.
      path: ``.safetensors``, ``.pt`` / ``.pth`` / ``.bin`` (PyTorch, needs torch) or
        ``.h5`` (Keras) file, or a file written by :func:`convert`.
      source: ``"torchvision"``, ``"timm"``, ``"keras"``, ``"hf"``; ``None`` detects it.
      head: ``"auto"`` loads the checkpoint's classifier head when its size is
        the model's and leaves it out otherwise (fine-tuning with a new number
        of classes, said in ``notes``); ``"load"`` requires it; ``"drop"`` never loads it.
      ignore: ``fnmatch`` patterns of further checkpoint keys to leave out.
      arch: the checkpoint's architecture (``"vit_b_16"``), checked against the
        model (ViT heads); ``None`` infers it from the structure.
      norm_eps: the checkpoint's LayerNorm epsilon where it is not the source's
        default (Hugging Face: ``layer_norm_eps`` of its ``config.json``).

    Returns:
      A :class:`LoadReport`.

    Raises:
      FileNotFoundError: if the file is missing.
      ValueError: one line for an unreadable file, missing / unknown /
        misshapen tensors, or model options that do not match the source.
      TypeError: for a model that is neither a ResNet nor a ViT.
    """
    if head not in HEAD_MODES:
        raise ValueError(f"load_pretrained: head must be one of {list(HEAD_MODES)}, got {head!r}")
    family = _family(model)
    tensors, metadata, notes = read_checkpoint(path)
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
        notes.append("removed the 'module.' prefix (a DistributedDataParallel checkpoint)")
    detected = detect_source(tensors, metadata, path)
    if source is None:
        source = detected
    elif source not in SOURCES:
        raise ValueError(f"load_pretrained: source must be one of {', '.join(SOURCES)} (or None to detect), got {source!r}")
    elif detected == "lamina":
        raise ValueError(f"{path} is a lamina file (from lamina convert or lm.save_weights); load it with source=None")
    elif detected != source and not (family == "resnet" and {source, detected} == {"torchvision", "timm"}):
        raise ValueError(f"{path}: the names are {detected}'s, not {source}'s (keys {sorted(tensors)[:3]} ...)")
    original = metadata.get("source", "lamina") if source == "lamina" else source
    if arch is not None:
        arch = canonical_arch(arch)
    elif source == "lamina" and metadata.get("arch"):
        arch = metadata["arch"]
    entries = _entries(model, family, source, tensors)
    _build(model, family, tensors, entries)
    if source == "lamina":
        entries = _entries(model, family, source, tensors)
    shapes = {k: tuple(v.shape) for k, v in model.variable_paths().items()}
    head_name = _HEAD_NAMES.get((source, family), "head")
    theirs = _head_classes(tensors, entries)
    ours = int(model.num_classes)
    load_head = head == "load" or (head == "auto" and theirs == ours)
    if head == "auto" and not load_head:
        named = "head" if head_name == "head" else f"head {head_name}"
        notes.append(f"dropped the checkpoint's {named} ({theirs} classes); the new head has {ours}"
                     if theirs is not None else
                     f"the checkpoint has no classifier head; the model's head ({ours} classes) keeps its initialization")
    patterns = list(ignore)
    if not load_head:
        patterns += head_keys(entries)
        if family == "vit" and source == "hf":
            patterns += list(vit_keys.HF_HEAD_EXTRA)
            if any(k in tensors for k in vit_keys.HF_HEAD_EXTRA):
                notes.append("dropped the checkpoint's pooler.dense (Hugging Face ViTModel); lamina's ViT has no pooler")
        heads = {e.target for e in entries if e.head}
        shapes = {k: v for k, v in shapes.items() if k not in heads}
    if arch is None:
        arch = _infer_arch(family, model)
    _check_options(model, family, source, arch, norm_eps, metadata)
    where = f"{path}: {source} checkpoint does not fit {model.describe()}"
    try:
        result = apply_map(select(entries, load_head), tensors, shapes, tolerate=resnet_keys.TORCH_TOLERATE,
                           ignore=patterns, where=where)
    except ValueError as e:
        guess = _guess(family, source, tensors)
        raise ValueError(f"{e}{f' (the checkpoint looks like {guess})' if guess else ''}") from None
    if family == "vit" and arch is None and source != "lamina":
        notes.append(f"custom ViT: num_heads={model.num_heads} cannot be checked from the weights")
    model.set_weights(result.weights, strict=load_head)
    if source == "lamina":
        preprocessing = json.loads(metadata["preprocessing"]) if metadata.get("preprocessing") else None
    else:
        preprocessing = preprocessing_for(source, family)
    dropped = [k for k in result.ignored]
    return LoadReport(path=path, source=original if source == "lamina" else source, family=family, arch=arch,
                      loaded=sorted(result.weights), dropped=dropped, skipped=result.tolerated,
                      head_loaded=load_head, notes=notes, preprocessing=preprocessing)


def _guess(family: str, source: str, tensors: Mapping[str, Any]) -> Optional[str]:
    """A human description of a checkpoint's structure, for mismatch errors."""
    keys = list(tensors)
    if family == "resnet" and source in ("torchvision", "timm"):
        blocks = [len({m.group(1) for k in keys for m in [re.match(rf"layer{i}\.(\d+)\.", k)] if m}) for i in range(1, 5)]
        bottleneck = any(k.endswith(".conv3.weight") for k in keys)
    elif family == "resnet" and source == "keras":
        blocks = [len({m.group(1) for k in keys for m in [re.match(rf"conv{i}_block(\d+)_", k)] if m}) for i in range(2, 6)]
        bottleneck = any("_3_conv/" in k for k in keys)
    else:
        return None
    for name, spec in ARCHITECTURES.items():
        if spec["family"] == "resnet" and list(spec["layers"]) == blocks and (spec["block"] == "bottleneck") == bottleneck:
            return f"{name} ({spec['block']} blocks {tuple(blocks)})"
    return f"a ResNet with {'bottleneck' if bottleneck else 'basic'} blocks {tuple(blocks)}"


def convert(
    src: str,
    dst: str,
    arch: str,
    source: Optional[str] = None,
    num_classes: Optional[int] = None,
    head: str = "load",
    **options: Any,
) -> LoadReport:
    """Converts a pretrained checkpoint into a lamina safetensors file (what ``lamina convert`` runs).

    The file holds the lamina variable paths and, in its metadata, ``arch``,
    ``source``, ``model_options`` (JSON: the constructor arguments) and
    ``preprocessing`` (JSON), so :func:`load_pretrained` and the run
    configuration get them back.

    Args:
      src: the checkpoint (see :func:`load_pretrained`).
      dst: the output ``.safetensors`` file.
      arch: ``"resnet50"``, ``"vit_b_16"``, ... (see :data:`lamina.interop.ARCHITECTURES`).
      source: ``"torchvision"``, ``"timm"``, ``"keras"`` or ``"hf"``; ``None`` detects it.
      num_classes: the head's size; ``None`` takes the checkpoint's.
      head: as for :func:`load_pretrained` (default ``"load"``: the checkpoint's head is kept).
      **options: other constructor arguments (e.g. ``data_format``).

    Returns:
      The :class:`LoadReport` of the conversion.

    Raises:
      ValueError: as :func:`load_pretrained`, or for an unknown architecture.
    """
    from lamina.export.safetensors import save_weights

    arch = canonical_arch(arch)
    tensors, metadata, _ = read_checkpoint(src)
    if source is None:
        source = detect_source(tensors, metadata, src)
        if source == "lamina":
            raise ValueError(f"{src} is already a lamina file")
    family = model_options(arch, source)["family"]
    if num_classes is None:
        probe = create_model(arch, source, num_classes=1, **options)
        num_classes = _head_classes(tensors, _entries(probe, family, source, tensors)) or 1000
    model = create_model(arch, source, num_classes=num_classes, **options)
    report = load_pretrained(model, src, source=source, head=head, arch=arch)
    recorded = {k: v for k, v in model_options(arch, source).items() if k not in ("family", "name")}
    meta = {"arch": arch, "source": source, "converted_from": os.path.basename(src),
            "model_options": json.dumps(recorded, sort_keys=True),
            "num_classes": str(num_classes)}
    if report.preprocessing is not None:
        meta["preprocessing"] = json.dumps(report.preprocessing, sort_keys=True)
    save_weights(model, dst, meta)
    return report


def export_state_dict(model: Any, naming: str = "torchvision") -> Dict[str, np.ndarray]:
    """The model's weights under another library's names (the round trip back to PyTorch).

    Args:
      model: a built lamina ResNet (v1.5, no conv biases) or ViT.
      naming: ``"torchvision"``, ``"timm"`` or ``"hf"`` (ViT only).

    Returns:
      ``{key: array}`` in that library's layout; ResNets include
      ``num_batches_tracked`` (0) so ``load_state_dict(strict=True)`` accepts it.

    Raises:
      ValueError: for an unbuilt model, an unknown naming, or a model the
        naming cannot express (a Keras-style ResNet under torchvision names).
    """
    family = _family(model)
    if naming not in EXPORT_NAMINGS:
        raise ValueError(f"export_state_dict: naming must be one of {', '.join(EXPORT_NAMINGS)}, got {naming!r}")
    if not model.variable_paths():
        raise ValueError(f"export_state_dict: {model.describe()} has no variables yet; call it once on an input to build it")
    if family == "resnet" and (model.conv_bias or (model.block_type == "bottleneck" and model.variant != "v1.5")):
        raise ValueError(f"export_state_dict: {model.describe()} (variant={model.variant!r}, conv_bias={model.conv_bias}) "
                         f"has no {naming} equivalent; {naming} ResNets are v1.5 without convolution biases")
    entries = vit_keys.hf_entries(model, "vit.") if naming == "hf" else _entries(model, family, naming, {})
    out = export_map(entries, model.get_weights())
    if family == "resnet":
        for key in [k for k in out if k.endswith(".running_var")]:
            out[key[: -len("running_var")] + "num_batches_tracked"] = np.array(0, np.int64)
    return out


def save_state_dict(model: Any, path: str, naming: str = "torchvision") -> str:
    """Writes :func:`export_state_dict` to a safetensors file (``safetensors.torch.load_file`` reads it).

    Args:
      model: a built lamina ResNet or ViT.
      path: the output ``.safetensors`` file.
      naming: ``"torchvision"``, ``"timm"`` or ``"hf"``.

    Returns:
      ``path``.

    Raises:
      ValueError: as :func:`export_state_dict`.
    """
    from lamina.export.safetensors import save_file

    return save_file(export_state_dict(model, naming), path, {"format": "pt", "naming": naming})


def init_from(path: str, arch: Optional[str] = None, num_classes: int = 1000, source: Optional[str] = None,
              **options: Any) -> Tuple[Any, LoadReport]:
    """Builds the lamina model a checkpoint needs and loads it, with a new head of ``num_classes`` if it differs.

    What ``lamina train --init-from FILE --model ARCH`` needs: the source is
    detected from the file, the model gets that source's options (a Keras
    ResNet50 is ``variant="v1"`` with conv biases), the backbone is loaded and
    the checkpoint's head is dropped when its size is not ``num_classes``
    (``report.notes`` says so).

    Args:
      path: the checkpoint, or a file written by :func:`convert` (whose
        metadata gives ``arch`` and the original source).
      arch: ``"resnet50"``, ``"vit_b_16"``, ...; ``None`` only for converted files.
      num_classes: the new head's size.
      source: as for :func:`load_pretrained`; ``None`` detects it.
      **options: other constructor arguments (``data_format``, ``dropout``, ...).

    Returns:
      ``(model, report)``; ``report.preprocessing`` is the input normalization the
      weights expect (for the run's ``config.json``).

    Raises:
      ValueError: for an unknown architecture, a file that does not fit it, or
        no ``arch`` for a file that does not record one.
    """
    tensors, metadata, _ = read_checkpoint(path)
    detected = source or detect_source(tensors, metadata, path)
    if detected == "lamina":
        built_for = metadata.get("source")
        arch = arch or metadata.get("arch")
        if built_for not in SOURCES or not arch:
            raise ValueError(f"{path}: a lamina file without 'source' / 'arch' metadata; pass arch= and build the model yourself")
        recorded = json.loads(metadata.get("model_options", "{}"))
        options = {**{k: v for k, v in recorded.items() if k in ("variant", "conv_bias", "bn_eps", "norm_eps")}, **options}
        detected, load_source = built_for, None
    else:
        load_source = source
    if arch is None:
        raise ValueError(f"{path}: give the architecture (arch=, e.g. 'resnet50' or 'vit_b_16')")
    model = create_model(arch, detected, num_classes=num_classes, **options)
    report = load_pretrained(model, path, source=load_source, head="auto", arch=arch)
    report.built_for = detected
    return model, report
