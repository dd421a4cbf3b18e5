"""Shared helpers of the benchmark scripts: timing, round-robin windows, RSS, tables.

Nothing here imports a deep-learning framework at module import time, so a
script (or a per-variant child process) only pays for the frameworks it uses.
"""

from __future__ import annotations

import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

__all__ = [
    "Entry",
    "median",
    "peak_rss_mib",
    "current_rss_mib",
    "machine_info",
    "machine_line",
    "onednn_info",
    "matmul_entry",
    "time_window",
    "round_robin",
    "format_table",
    "fmt",
    "python_env",
]


def median(values: Sequence[float]) -> float:
    """Median of ``values`` (``nan`` for an empty sequence)."""
    return statistics.median(values) if values else float("nan")


def peak_rss_mib() -> float:
    """Peak resident set size of this process image so far, in MiB.

    Reads ``VmHWM`` from ``/proc/self/status`` where it exists: Linux's
    ``getrusage(RUSAGE_SELF).ru_maxrss`` survives ``fork`` + ``exec``, so a
    child started by a large process reports at least its parent's peak.
    Elsewhere falls back to ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0


def current_rss_mib() -> float:
    """Current resident set size of this process in MiB (``nan`` where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


# The ISA flags (``/proc/cpuinfo`` names) that decide which oneDNN kernels a step gets.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
             "amx_int8")
_ONEDNN_PROBE = (
    "import tensorflow as tf\n"
    "tf.nn.conv2d(tf.ones([1, 4, 4, 2]), tf.ones([3, 3, 2, 2]), 1, 'SAME').numpy()\n"
)


def onednn_info(timeout: float = 120.0) -> Dict[str, str]:
    """oneDNN's version and the ISA it dispatches to, from one conv in a child run with ``ONEDNN_VERBOSE=1``.

    Returns:
      ``{"onednn": "v3.7.3", "onednn_isa": "Intel AVX-512 with ..."}``; the
      values are ``"unknown"`` when the child prints nothing of the kind
      (TensorFlow built without oneDNN, or ``TF_ENABLE_ONEDNN_OPTS=0``).
    """
    out = {"onednn": "unknown", "onednn_isa": "unknown"}
    env = dict(os.environ, ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="3")
    try:
        proc = subprocess.run([sys.executable, "-c", _ONEDNN_PROBE], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except (OSError, subprocess.SubprocessError):
        return out
    for line in proc.stdout.splitlines():
        if ",info,oneDNN " in line:
            out["onednn"] = line.split(",info,oneDNN ", 1)[1].split()[0]
        elif ",info,cpu,isa:" in line:
            out["onednn_isa"] = line.split(",info,cpu,isa:", 1)[1].strip()
    return out


def machine_info(onednn: bool = True) -> Dict[str, Any]:
    """The machine a result was measured on: CPU model, cores, ISA flags, versions, load.

    Args:
      onednn: also ask a child process for oneDNN's version and dispatch ISA
        (:func:`onednn_info`, ~3 s).

    Returns:
      ``cpu`` (lscpu's model name), ``cores`` (logical), ``isa`` (the
      :data:`ISA_FLAGS` this CPU has, comma-separated), ``python``,
      ``tensorflow`` and ``tf_kernels`` (``"oneDNN"`` or ``"Eigen"``; when
      TensorFlow is importable), ``onednn``/``onednn_isa`` and
      ``load1`` (the 1-minute load average).
    """
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    flags = ",".join(f for f in ISA_FLAGS if f in have)
                    break
    except OSError:
        pass
    info: Dict[str, Any] = {
        "cpu": model,
        "cores": os.cpu_count(),
        "isa": flags or "none of " + ",".join(ISA_FLAGS),
        "python": platform.python_version(),
    }
    try:
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        from tensorflow.python.util import _pywrap_util_port

        # Which kernels this process's TensorFlow runs: oneDNN's, or Eigen's (TF_ENABLE_ONEDNN_OPTS, or the CPU).
        info["tf_kernels"] = "oneDNN" if _pywrap_util_port.IsMklEnabled() else "Eigen"
    except ImportError:
        pass
    if onednn:
        info.update(onednn_info())
    info["load1"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return info


def machine_line(info: Dict[str, Any]) -> str:
    """One line naming the machine of ``info`` (:func:`machine_info`), printed first by every script."""
    parts = [f"machine: {info['cpu']}, {info['cores']} cores", f"ISA {info['isa']}"]
    if "tensorflow" in info:
        kernels = f" on {info['tf_kernels']} kernels" if "tf_kernels" in info else ""
        parts.append(f"tensorflow {info['tensorflow']}{kernels}")
    if "onednn" in info:
        parts.append(f"oneDNN {info['onednn']} ({info['onednn_isa']})")
    parts.append(f"python {info['python']}")
    parts.append(f"load {info['load1']:.2f}")
    return "; ".join(parts)


def matmul_entry(n: int = 4096) -> "Entry":
    """A round-robin entry timing one ``n x n`` float32 ``tf.linalg.matmul`` per step.

    Its GFLOP/s (``2 n^3`` FLOPs per product / the median time) is this
    machine's float32 matmul peak as measured under the same conditions as
    the training steps it is interleaved with. ``entry.info["flops"]`` holds
    the FLOPs of one step.

    Args:
      n: matrix size.

    Returns:
      An :class:`Entry` (already warmed up) named ``matmul-<n>``.
    """
    import tensorflow as tf

    a = tf.random.uniform((n, n), dtype=tf.float32)
    b = tf.random.uniform((n, n), dtype=tf.float32)
    # Reading one element back is the sync; it costs nothing next to the product.
    mm = tf.function(lambda x, y: tf.linalg.matmul(x, y)[0, 0])
    mm(a, b).numpy()
    return Entry(f"matmul-{n}", step=lambda: mm(a, b), sync=lambda t: t.numpy(), steps=1,
                 info={"flops": 2.0 * n**3})


def time_window(step: Callable[[], Any], steps: int, sync: Callable[[Any], Any]) -> float:
    """Runs ``step`` ``steps`` times, syncs on the last result and returns ms per step."""
    t0 = time.perf_counter()
    out = None
    for _ in range(steps):
        out = step()
    sync(out)
    return (time.perf_counter() - t0) * 1000.0 / steps


@dataclass
class Entry:
    """One timed contestant of a round-robin benchmark.

    Attributes:
      name: the variant's label.
      step: runs one unit of work and returns something ``sync`` can wait on.
      sync: waits for a result (``lambda t: t.numpy()`` for TensorFlow).
      samples: ms per step of each timed window (filled by :func:`round_robin`).
      info: free-form results (warm-up time, first loss, errors, ...).
      steps: timed steps per window for this entry (``None``: the round's default).
    """

    name: str
    step: Callable[[], Any]
    sync: Callable[[Any], Any] = lambda out: out
    samples: List[float] = field(default_factory=list)
    info: Dict[str, Any] = field(default_factory=dict)
    steps: Optional[int] = None  # timed steps per window; None: the round's default

    @property
    def ms(self) -> float:
        """Median ms per step over the timed windows."""
        return median(self.samples)


def round_robin(
    entries: Sequence[Entry],
    windows: int,
    steps_per_window: int,
    settle: int = 1,
    rotate: bool = True,
    on_window: Optional[Callable[[int], None]] = None,
) -> None:
    """Times ``entries`` in alternating windows, so they share the machine's conditions.

    Round ``w`` runs, for each entry in turn, ``settle`` untimed steps, then
    one timed window of ``steps_per_window`` steps. Each window's ms/step is
    appended to ``entry.samples``. The order is shuffled every round (seeded
    by the round) so no entry always follows the same neighbour: a runtime
    whose worker threads keep spinning after its window (onnxruntime, OpenMP)
    slows whatever runs next, and with the starting entry merely rotated the
    same entry always ran next (lamina's SavedModel read 1.08x Keras's export
    at batch 1 that way; 1.01-1.03x shuffled, 0.97x timed alone).

    Args:
      entries: the contestants (already warmed up).
      windows: number of rounds.
      steps_per_window: timed steps per window.
      settle: untimed steps before each window (lets the previous framework's
        worker threads go idle and brings this one's buffers back into cache).
      rotate: shuffle the order every round (``False``: always the given order).
      on_window: called with the round index after each round.
    """
    for w in range(windows):
        order = list(entries)
        if rotate:
            random.Random(w).shuffle(order)
        for e in order:
            out = None
            for _ in range(settle):
                out = e.step()
            if out is not None:
                e.sync(out)
            e.samples.append(time_window(e.step, e.steps or steps_per_window, e.sync))
        if on_window is not None:
            on_window(w)


def fmt(value: Any, digits: int = 1) -> str:
    """Formats a number for a table (``-`` for ``None``/NaN)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Renders a GitHub-flavoured Markdown table (also readable as plain text)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def python_env() -> Dict[str, str]:
    """Environment for child processes: this one's, with TensorFlow's C++ log chatter off."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env
