"""Whether the ``lamina`` command turns on TensorFlow's oneDNN CPU kernels (x86 CPUs where TensorFlow leaves them off).

TensorFlow 2.21's x86 Linux wheels carry two sets of CPU kernels: Eigen's and
oneDNN's. TensorFlow turns oneDNN on by itself only for CPUs with AVX-512 VNNI,
AVX-VNNI, AVX512_BF16 or AMX; on an AVX2-only CPU (AMD Zen 2/3, Intel before Ice
Lake) it runs Eigen, whose convolutions and matmuls measured 1.4x and 2x slower
than oneDNN's on the same CPU (``benchmarks/README.md``). The ``lamina`` command
(not the library: an environment variable read once, when TensorFlow loads, is a
process-wide choice that belongs to whoever starts the process) sets
``TF_ENABLE_ONEDNN_OPTS=1`` before TensorFlow loads on such a CPU, by the CPU's
flags, never its vendor. A value the user set is left as it is
(``TF_ENABLE_ONEDNN_OPTS=0`` keeps Eigen), and so is a process that already
imported TensorFlow.

This file imports nothing heavy: it runs before TensorFlow loads.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import AbstractSet, FrozenSet, Mapping, MutableMapping, Optional

__all__ = ["ENV", "TENSORFLOW_ONEDNN_FLAGS", "cpu_flags", "should_enable", "enable_for_command", "enabled_by_lamina"]

ENV = "TF_ENABLE_ONEDNN_OPTS"
# The CPU flags (``/proc/cpuinfo`` names) with which TensorFlow 2.21 turns oneDNN on by itself.
TENSORFLOW_ONEDNN_FLAGS = ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
_X86 = ("x86_64", "amd64", "x64")

_enabled_by_lamina = False


def cpu_flags(path: str = "/proc/cpuinfo") -> FrozenSet[str]:
    """The CPU's feature flags as Linux names them.

    Args:
      path: the cpuinfo file.

    Returns:
      The flags of the first CPU listed (empty where the file is missing or has none).
    """
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def should_enable(flags: AbstractSet[str], machine: str, system: str, environ: Mapping[str, str]) -> bool:
    """Whether to turn oneDNN on: an x86-64 Linux CPU with AVX2 + FMA that TensorFlow leaves on Eigen.

    Args:
      flags: the CPU's flags (:func:`cpu_flags`).
      machine: ``platform.machine()``.
      system: ``platform.system()``.
      environ: the environment (a ``TF_ENABLE_ONEDNN_OPTS`` already there wins).

    Returns:
      ``True`` where setting ``TF_ENABLE_ONEDNN_OPTS=1`` changes TensorFlow's kernels to oneDNN's.
    """
    if ENV in environ or system != "Linux" or machine.lower() not in _X86:
        return False
    if not {"avx2", "fma"} <= set(flags):
        return False
    return not any(f in flags for f in TENSORFLOW_ONEDNN_FLAGS)  # TensorFlow turns it on there itself


def enable_for_command(environ: Optional[MutableMapping[str, str]] = None) -> bool:
    """Sets ``TF_ENABLE_ONEDNN_OPTS=1`` when :func:`should_enable` and TensorFlow is not loaded yet.

    Called by ``lamina/__init__.py`` for the ``lamina`` command only.

    Args:
      environ: the environment to change (default ``os.environ``).

    Returns:
      Whether it set the variable.
    """
    global _enabled_by_lamina
    environ = os.environ if environ is None else environ
    if "tensorflow" in sys.modules:
        return False
    if should_enable(cpu_flags(), platform.machine(), platform.system(), environ):
        environ[ENV] = "1"
        _enabled_by_lamina = True
    return _enabled_by_lamina


def enabled_by_lamina() -> bool:
    """Whether this process's oneDNN kernels were turned on by the ``lamina`` command (for its run header)."""
    return _enabled_by_lamina
