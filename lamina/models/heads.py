"""``head_of(model)``: the module that produces a model's outputs (replaced when fine-tuning)."""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["head_of", "HEAD_ATTRIBUTES"]

# Where lamina's models keep their output layer, in the order looked up.
HEAD_ATTRIBUTES = ("classifier", "head", "fc", "output")


def head_of(model: Any) -> Optional[Any]:
    """Returns the model's head: its ``classifier`` / ``head`` / ``fc`` / ``output``, or a container's last layer.

    Args:
      model: a lamina model (``ConvNet``, ``ResNet``, ``ViT``, ``MLP``, ``Sequential`` ...).

    Returns:
      The head module, or ``None`` if none is found.
    """
    for name in HEAD_ATTRIBUTES:
        head = getattr(model, name, None)
        if head is not None and hasattr(head, "variables"):
            return head
    layers = getattr(model, "layers", None)
    if isinstance(layers, (list, tuple)):
        for layer in reversed(layers):
            if hasattr(layer, "variables") and layer.variables:
                return layer
    return None
