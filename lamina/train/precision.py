"""Numeric precision policies for training: float32, mixed bfloat16, mixed float16.

Mixed precision in lamina is explicit and simple: variables stay float32; the
trainer casts the model input to the compute dtype, every layer casts its
variables to its input's dtype, and the logits are cast back to float32 for the
loss. ``mixed_float16`` adds dynamic loss scaling (:class:`lamina.train.loss_scale.LossScale`).
"""

from __future__ import annotations

import functools
import sys
from typing import Optional, TextIO

import tensorflow as tf

__all__ = ["PRECISIONS", "Precision", "resolve_precision", "auto_precision", "warn_if_slow", "LossScale"]

from lamina.onednn import cpu_flags  # noqa: E402  (one reader of /proc/cpuinfo)
from lamina.train.loss_scale import LossScale  # noqa: E402  (its own file; re-exported here)

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")


class Precision:
    """A resolved precision policy.

    Args:
      name: ``"float32"``, ``"mixed_bfloat16"`` or ``"mixed_float16"``.

    Attributes:
      compute_dtype: dtype the model computes in.
      loss_scaling: whether dynamic loss scaling is needed (float16).
    """

    def __init__(self, name: str) -> None:
        if name not in PRECISIONS[:3]:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
        self.name = name
        self.compute_dtype = {"float32": tf.float32, "mixed_bfloat16": tf.bfloat16, "mixed_float16": tf.float16}[name]
        self.loss_scaling = name == "mixed_float16"

    def __repr__(self) -> str:
        return f"Precision({self.name!r})"


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset:
    return cpu_flags()


def auto_precision() -> str:
    """Picks the fastest safe precision for this machine.

    GPUs of compute capability >= 8.0 and CPUs with native bfloat16 (AVX512_BF16
    or AMX) get ``mixed_bfloat16`` (no loss scaling needed, same exponent range
    as float32); older GPUs with tensor cores (>= 7.0) get ``mixed_float16``;
    anything else ``float32``.

    Returns:
      The precision name.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        try:
            cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        except Exception:  # pragma: no cover - device details unavailable
            cc = (0, 0)
        if cc >= (8, 0):
            return "mixed_bfloat16"
        if cc >= (7, 0):
            return "mixed_float16"
        return "float32"
    flags = _cpu_flags()
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return "mixed_bfloat16"
    return "float32"


def resolve_precision(name: Optional[str]) -> Precision:
    """Resolves a precision name (``"auto"`` included) to a :class:`Precision`.

    Args:
      name: one of :data:`PRECISIONS` or ``None`` (float32).

    Returns:
      The policy.

    Raises:
      ValueError: for an unknown name.
    """
    if name is None:
        name = "float32"
    if not isinstance(name, str) or name.lower() not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    name = name.lower()
    return Precision(auto_precision() if name == "auto" else name)


_WARNED = set()


def warn_if_slow(precision: Precision, out: Optional[TextIO] = None) -> bool:
    """Prints one warning per process when ``precision`` is much slower than float32 here.

    ``mixed_float16`` without a GPU: TensorFlow 2.21's CPU float16 gradient
    kernels are slow everywhere (Eigen's emulated half arithmetic, or oneDNN's
    float16 filter gradients on AVX512_FP16 CPUs: the default ``ConvNet`` on the
    digits trained in 330 s instead of 6 s on an Intel Xeon with AMX). The run
    still goes ahead: the user asked for it, and the numbers are right.

    Args:
      precision: the resolved policy.
      out: where to print (default ``sys.stderr``).

    Returns:
      Whether it warned (``False`` also when it already had in this process).
    """
    if precision.name != "mixed_float16" or "mixed_float16" in _WARNED:
        return False
    if tf.config.list_physical_devices("GPU"):
        return False
    _WARNED.add("mixed_float16")
    print("lamina: warning: mixed_float16 on a CPU is slow (TensorFlow's CPU float16 gradient kernels: the default "
          "ConvNet trains ~50x slower than in float32 on an Intel Xeon with AVX512_FP16); mixed_bfloat16 (CPUs with "
          "AVX512_BF16 or AMX, see --precision auto) or float32 train faster", file=out or sys.stderr, flush=True)
    return True
