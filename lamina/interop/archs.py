"""Which lamina constructor (with which options) each pretrained architecture needs, and each source's preprocessing.

``ARCHITECTURES`` maps an architecture name (torchvision's, with timm's and
Keras' names as aliases) to the lamina family and constructor arguments;
``SOURCE_OPTIONS`` holds what differs by source (BatchNorm / LayerNorm
epsilon, ResNet variant, convolution biases); ``PREPROCESSING`` the input
normalization and the resize / crop policy the checkpoints were trained with.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Optional

__all__ = ["ARCHITECTURES", "ALIASES", "SOURCES", "SOURCE_OPTIONS", "PREPROCESSING", "canonical_arch",
           "model_options", "create_model", "preprocessing_for"]

SOURCES = ("torchvision", "timm", "keras", "hf")

_RESNET_LAYERS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
                  "resnet50": ("bottleneck", (3, 4, 6, 3)), "resnet101": ("bottleneck", (3, 4, 23, 3)),
                  "resnet152": ("bottleneck", (3, 8, 36, 3))}

ARCHITECTURES: Dict[str, Dict[str, Any]] = {
    **{name: {"family": "resnet", "block": block, "layers": layers} for name, (block, layers) in _RESNET_LAYERS.items()},
    "vit_b_16": {"family": "vit", "patch_size": 16, "model_dim": 768, "num_heads": 12, "num_layers": 12, "mlp_dim": 3072, "image_size": 224},
    "vit_b_32": {"family": "vit", "patch_size": 32, "model_dim": 768, "num_heads": 12, "num_layers": 12, "mlp_dim": 3072, "image_size": 224},
    "vit_l_16": {"family": "vit", "patch_size": 16, "model_dim": 1024, "num_heads": 16, "num_layers": 24, "mlp_dim": 4096, "image_size": 224},
    "vit_l_32": {"family": "vit", "patch_size": 32, "model_dim": 1024, "num_heads": 16, "num_layers": 24, "mlp_dim": 4096, "image_size": 224},
    "vit_s_16": {"family": "vit", "patch_size": 16, "model_dim": 384, "num_heads": 6, "num_layers": 12, "mlp_dim": 1536, "image_size": 224},
    "vit_ti_16": {"family": "vit", "patch_size": 16, "model_dim": 192, "num_heads": 3, "num_layers": 12, "mlp_dim": 768, "image_size": 224},
}

ALIASES = {
    "vit_base_patch16_224": "vit_b_16", "vit_base_patch32_224": "vit_b_32", "vit_large_patch16_224": "vit_l_16",
    "vit_large_patch32_224": "vit_l_32", "vit_small_patch16_224": "vit_s_16", "vit_tiny_patch16_224": "vit_ti_16",
    "google/vit-base-patch16-224": "vit_b_16", "google/vit-base-patch32-224-in21k": "vit_b_32",
    "google/vit-large-patch16-224": "vit_l_16",
    "ResNet50": "resnet50", "ResNet101": "resnet101", "ResNet152": "resnet152",
}

SOURCE_OPTIONS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "torchvision": {"resnet": {"variant": "v1.5", "conv_bias": False, "bn_eps": 1e-5}, "vit": {"norm_eps": 1e-6}},
    "timm": {"resnet": {"variant": "v1.5", "conv_bias": False, "bn_eps": 1e-5}, "vit": {"norm_eps": 1e-6}},
    "keras": {"resnet": {"variant": "v1", "conv_bias": True, "bn_eps": 1.001e-5}},
    "hf": {"vit": {"norm_eps": 1e-12}},
}

_IMAGENET = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "raw_max": 255.0}
_HALF = {"scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "raw_max": 255.0}

# model_input = (pixel * scale - mean) / std on RGB pixels 0..255 (lamina's preprocessing record, see
# lamina.export.normalize_preprocessing), plus how images were resized and cropped for evaluation:
# "resize" (shorter side, pixels), "crop" (center crop, pixels; absent = resize straight to the input size) and
# "interpolation". timm's and torchvision's figures are those of their default ImageNet-1k weights.
PREPROCESSING: Dict[str, Dict[str, Dict[str, Any]]] = {
    "torchvision": {"resnet": {**_IMAGENET, "resize": 256, "crop": 224, "interpolation": "bilinear"},
                    "vit": {**_IMAGENET, "resize": 256, "crop": 224, "interpolation": "bilinear"}},
    "timm": {"resnet": {**_IMAGENET, "resize": 235, "crop": 224, "interpolation": "bicubic"},  # crop_pct 0.95
             "vit": {**_HALF, "resize": 248, "crop": 224, "interpolation": "bicubic"}},  # crop_pct 0.9
    # Keras' "caffe" mode subtracts the BGR means from BGR pixels; the importer flips the first convolution
    # to RGB, so the lamina model takes RGB pixels minus the same means in RGB order.
    "keras": {"resnet": {"scale": 1.0, "mean": [123.68, 116.779, 103.939], "std": [1.0, 1.0, 1.0], "raw_max": 255.0,
                         "resize": 224, "interpolation": "bilinear"}},
    "hf": {"vit": {**_HALF, "resize": 224, "interpolation": "bilinear"}},
}


def canonical_arch(arch: str) -> str:
    """The architecture's name in :data:`ARCHITECTURES` (``"vit_base_patch16_224"`` -> ``"vit_b_16"``).

    Raises:
      ValueError: for an unknown name.
    """
    name = ALIASES.get(arch, ALIASES.get(str(arch).lower(), str(arch).lower()))
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(sorted(ARCHITECTURES))} "
                         f"(or {', '.join(sorted(ALIASES))})")
    return name


def _check_source(source: str, family: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    if family not in SOURCE_OPTIONS[source]:
        have = sorted(SOURCE_OPTIONS[source])
        raise ValueError(f"source {source!r} has no {family} checkpoints lamina can import (it has: {', '.join(have)})")


def model_options(arch: str, source: str) -> Dict[str, Any]:
    """The lamina constructor arguments of ``arch`` for ``source`` checkpoints (without ``num_classes``).

    Args:
      arch: an architecture name or alias.
      source: one of :data:`SOURCES`.

    Returns:
      ``{"family": "resnet" | "vit", ...keyword arguments}``.

    Raises:
      ValueError: for an unknown architecture or source, or a source without that family.
    """
    spec = copy.deepcopy(ARCHITECTURES[canonical_arch(arch)])
    _check_source(source, spec["family"])
    spec.update(SOURCE_OPTIONS[source][spec["family"]])
    if spec["family"] == "resnet":
        spec["stem"] = "imagenet"
        spec["name"] = canonical_arch(arch)
    return spec


def create_model(arch: str, source: str = "torchvision", num_classes: int = 1000, **overrides: Any) -> Any:
    """Builds the lamina model that ``source``'s ``arch`` checkpoints load into.

    Args:
      arch: ``"resnet18"`` ... ``"resnet152"``, ``"vit_b_16"``, ``"vit_b_32"``,
        ``"vit_l_16"``, ... (or timm / Keras / Hugging Face names, see :data:`ALIASES`).
      source: ``"torchvision"``, ``"timm"``, ``"keras"`` or ``"hf"``.
      num_classes: logits of the head (1000 to keep an ImageNet head).
      **overrides: other constructor arguments (``data_format``, ``dropout``, ...).

    Returns:
      An unbuilt :class:`lamina.models.ResNet` or :class:`lamina.models.ViT`.

    Raises:
      ValueError: for an unknown architecture or source.
    """
    from lamina.models.resnet import ResNet
    from lamina.models.transformer import ViT

    spec = model_options(arch, source)
    family = spec.pop("family")
    spec.update(overrides)
    if family == "resnet":
        return ResNet(num_classes=num_classes, **spec)
    spec.setdefault("name", canonical_arch(arch))
    return ViT(num_classes, **spec)


def preprocessing_for(source: str, family: str) -> Optional[Dict[str, Any]]:
    """The preprocessing record of ``source``'s ``family`` checkpoints (a copy), or ``None`` if unknown."""
    record = PREPROCESSING.get(source, {}).get(family)
    return copy.deepcopy(record) if record is not None else None
