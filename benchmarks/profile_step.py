"""Where does a TensorFlow training step spend its time? A per-op breakdown from the TF profiler.

Usage::

    python benchmarks/profile_step.py --net cnn --variants lamina,keras,sonnet
    python benchmarks/profile_step.py --net cnn --variants lamina-bf16,keras-bf16

Builds each variant as ``train_step.py`` does (same weights, same data),
warms it up, records ``--steps`` steps with ``tf.profiler.experimental`` and
reads the trace (``*.xplane.pb``) directly: every executed kernel appears as an
event named ``<node name>:<kernel>`` (e.g.
``convnet/block_0/conv_1/Relu:_MklNativeFusedConv2D`` — conv + bias + ReLU
fused and run by oneDNN). It prints the wall time per step, the busiest
kernels (ms per step, summed over threads) and the time per kernel type, which
shows fusions, stray casts/transposes and slow fallback kernels at a glance.
TensorFlow variants only (PyTorch has its own profiler).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import format_table  # noqa: E402
from nets import NETS, lamina_model  # noqa: E402

# Profiler bookkeeping events, not kernels.
_NOT_KERNELS = ("ThreadpoolListener", "ExecutorState", "Memory", "Eager", "TFE_", "KernelAndDevice", "FunctionRun",
                "ExecutorDoneCallback", "ValidateInput", "_train_step_graph", "__inference")


def kernel_times(logdir: str) -> Tuple[Dict[str, float], Dict[str, int]]:
    """Sums the duration (ms) and count of every kernel event in the trace under ``logdir``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    if not files:
        raise RuntimeError(f"no *.xplane.pb trace under {logdir}")
    space = xplane_pb2.XSpace()
    with open(files[0], "rb") as f:
        space.ParseFromString(f.read())
    total: Dict[str, float] = collections.Counter()
    count: Dict[str, int] = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            for ev in line.events:
                name = plane.event_metadata[ev.metadata_id].name
                if ":" not in name or name.startswith(_NOT_KERNELS) or "EagerLocalExecute" in name:
                    continue
                total[name] += ev.duration_ps / 1e9
                count[name] += 1
    return total, count


def profile(step, sync, steps: int) -> Tuple[float, Dict[str, float], Dict[str, int]]:
    """Profiles ``steps`` steps; returns (wall ms/step, kernel ms totals, kernel counts)."""
    import tensorflow as tf

    logdir = tempfile.mkdtemp(prefix="lamina_profile_")
    try:
        tf.profiler.experimental.start(logdir)
        t0 = time.perf_counter()
        for _ in range(steps):
            out = step()
        sync(out)
        wall = (time.perf_counter() - t0) * 1000.0 / steps
        tf.profiler.experimental.stop()
        total, count = kernel_times(logdir)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    return wall, total, count


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point."""
    import train_step as ts

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--net", default="cnn", choices=sorted(NETS))
    p.add_argument("--variants", default="lamina,keras,sonnet",
                   help="TensorFlow variants of train_step.py")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--top", type=int, default=15, help="kernels listed per variant")
    p.add_argument("--batch", type=int, default=None)
    args = p.parse_args(argv)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    spec = NETS[args.net]
    batch = args.batch or spec.batch
    x, y = ts.synthetic_data(args.net, batch, 8)  # the steps cycle through 8 random batches, as in train_step.py
    ref = lamina_model(args.net)
    for v in ts.parse_variants(args.variants):
        if ts.VARIANTS[v][0] == "torch":
            print(f"{v}: skipped (TensorFlow variants only)")
            continue
        step, sync = ts.build(v, args.net, x, y, ref, os.cpu_count() or 1)
        for _ in range(3):
            sync(step())
        wall, total, count = profile(step, sync, args.steps)
        busy = sum(total.values()) / args.steps
        rows = [[f"{t / args.steps:.2f}", count[k] // args.steps, k[:110]] for k, t in
                sorted(total.items(), key=lambda kv: -kv[1])[: args.top]]
        by_kind: Dict[str, float] = collections.Counter()
        n_kind: Dict[str, int] = collections.Counter()
        for k, t in total.items():
            kind = k.rsplit(":", 1)[1]
            by_kind[kind] += t / args.steps
            n_kind[kind] += count[k] // args.steps
        kinds = [[f"{t:.2f}", n_kind[k], k] for k, t in sorted(by_kind.items(), key=lambda kv: -kv[1])[: args.top]]
        print(f"\n## {v} on {args.net} (batch {batch}): {wall:.1f} ms/step wall, {busy:.1f} ms/step of kernels "
              f"(summed over threads), {sum(count.values()) // args.steps} kernels/step\n")
        print(format_table(["ms/step", "runs/step", "kernel (node:op)"], rows))
        print()
        print(format_table(["ms/step", "runs/step", "op"], kinds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
