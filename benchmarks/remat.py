"""Rematerialization (``lm.remat``): the peak memory it saves on a deep model, and what it costs in time.

Usage::

    python benchmarks/remat.py                 # depth 32, width 256, batch 8192 (~1-2 min)
    python benchmarks/remat.py --smoke         # tiny, one step of each

Each variant trains the same deep residual MLP (``depth`` blocks of
``x + Linear(tanh(Linear(LayerNorm(x))))``, width ``width``) with the Trainer
(Adam, mean-squared error) in a fresh child process, so the peak resident set
size (``VmHWM``) of each child is its own: ``plain`` keeps every activation for
the backward pass, ``remat`` wraps every block in ``lm.remat`` and keeps only
the blocks' inputs. The two children run alternately ``--repeats`` times;
reported are the median ms per step and the peak RSS above the same model
before its first step (the activations' share), with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import format_table, machine_info, machine_line, median  # noqa: E402

_CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, {bench!r})
from common import current_rss_mib, peak_rss_mib
import numpy as np
import tensorflow as tf
import lamina as lm

variant, depth, width, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])


class Block(lm.Module):
    def __init__(self, width, name=None):
        super().__init__(name=name)
        self.norm = lm.LayerNorm(name="norm")
        self.fc1 = lm.Linear(width, name="fc1")
        self.fc2 = lm.Linear(width, name="fc2")

    def __call__(self, x):
        return x + self.fc2(tf.tanh(self.fc1(self.norm(x))))


lm.set_seed(0)
blocks = [Block(width, name=f"block_{{i}}") for i in range(depth)]
if variant == "remat":
    blocks = [lm.remat(b) for b in blocks]
model = lm.Sequential(blocks + [lm.Linear(1, name="head")])
x = tf.random.stateless_normal([batch, width], seed=[0, 1])
y = tf.random.stateless_normal([batch, 1], seed=[0, 2])
trainer = lm.train.Trainer(model, lm.optim.Adam(1e-4), loss="mse", metrics=(), quiet=True)
trainer.build(x)
before = current_rss_mib()
trainer.train_step(x, y)["loss"].numpy()  # trace + first step
times = []
for _ in range(steps):
    t0 = time.perf_counter()
    trainer.train_step(x, y)["loss"].numpy()
    times.append((time.perf_counter() - t0) * 1000)
print("RESULT " + json.dumps({{"ms": sorted(times)[len(times) // 2], "peak": peak_rss_mib(), "before": before}}))
"""


def _run(variant: str, args: argparse.Namespace) -> Dict[str, float]:
    code = _CHILD.format(bench=os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code, variant, str(args.depth), str(args.width), str(args.batch),
                           str(args.steps)], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"remat.py: the {variant} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.split("RESULT ", 1)[1])


def main(argv: List[str] = None) -> Dict[str, Any]:
    """Runs both variants alternately and prints the table.

    Args:
      argv: command-line arguments.

    Returns:
      ``{"machine", "plain", "remat", "memory_ratio", "time_ratio"}``.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=32)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--batch", type=int, default=8192)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one step, one repeat")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.smoke:
        args.depth, args.width, args.batch, args.steps, args.repeats = 3, 16, 8, 1, 1
    info = machine_info()
    print(machine_line(info), flush=True)
    runs: Dict[str, List[Dict[str, float]]] = {"plain": [], "remat": []}
    for _ in range(args.repeats):
        for variant in runs:
            runs[variant].append(_run(variant, args))
    summary = {}
    for variant, results in runs.items():
        summary[variant] = {
            "ms": median([r["ms"] for r in results]),
            "peak_mib": median([r["peak"] for r in results]),
            "activations_mib": median([r["peak"] - r["before"] for r in results]),
        }
    plain, remat = summary["plain"], summary["remat"]
    memory_ratio = remat["activations_mib"] / plain["activations_mib"] if plain["activations_mib"] > 0 else float("nan")
    time_ratio = remat["ms"] / plain["ms"]
    rows = [[name, f"{s['ms']:.1f}", f"{s['peak_mib']:.0f}", f"{s['activations_mib']:.0f}"] for name, s in summary.items()]
    print(f"deep residual MLP: depth {args.depth}, width {args.width}, batch {args.batch}; "
          f"median of {args.repeats} alternating runs")
    print(format_table(["variant", "ms/step", "peak RSS MiB", "peak above the built model MiB"], rows))
    print(f"remat / plain: memory for the step {memory_ratio:.2f}x, time {time_ratio:.2f}x")
    out = {"machine": info, **summary, "memory_ratio": memory_ratio, "time_ratio": time_ratio}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
