"""Pretrained weights from other libraries (``lm.interop``): torchvision, timm, Keras and Hugging Face.

``create_model(arch, source)`` builds the lamina model a checkpoint needs,
``load_pretrained(model, path)`` loads it with every tensor accounted for,
``convert(src, dst, arch=...)`` writes a lamina safetensors file (what
``lamina convert`` runs) and ``save_state_dict(model, path)`` exports lamina
weights back under torchvision's (or timm's, Hugging Face's) names. See
``docs/pretrained.md``.
"""

from lamina.interop.archs import (
    ALIASES,
    ARCHITECTURES,
    PREPROCESSING,
    SOURCES,
    canonical_arch,
    create_model,
    model_options,
    preprocessing_for,
)
from lamina.interop.checkpoint import CHECKPOINT_EXTENSIONS, read_checkpoint
from lamina.interop.pretrained import (
    EXPORT_NAMINGS,
    HEAD_MODES,
    LoadReport,
    convert,
    detect_source,
    export_state_dict,
    init_from,
    load_pretrained,
    save_state_dict,
)

__all__ = [
    "ALIASES",
    "ARCHITECTURES",
    "CHECKPOINT_EXTENSIONS",
    "EXPORT_NAMINGS",
    "HEAD_MODES",
    "LoadReport",
    "PREPROCESSING",
    "SOURCES",
    "canonical_arch",
    "convert",
    "create_model",
    "detect_source",
    "export_state_dict",
    "init_from",
    "load_pretrained",
    "model_options",
    "preprocessing_for",
    "read_checkpoint",
    "save_state_dict",
]
