"""Optimizers, gradient clipping and learning-rate schedules.

``lm.optim.Adam(1e-3)``, ``lm.optim.SGD(schedules.cosine(0.1, 1000), momentum=0.9)``;
``opt.apply(grads, variables)`` inside or outside ``tf.function``.
"""

from lamina.optim import schedules
from lamina.optim.base import LearningRate, Optimizer
from lamina.optim.clipping import clip_by_global_norm, clip_by_norm, clip_by_value, global_norm
from lamina.optim.groups import ParamGroup
from lamina.optim.optimizers import SGD, Adam, AdamW, RMSProp, get

__all__ = [
    "Optimizer",
    "LearningRate",
    "SGD",
    "Adam",
    "AdamW",
    "RMSProp",
    "get",
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_by_value",
    "global_norm",
    "schedules",
    "ParamGroup",
]
