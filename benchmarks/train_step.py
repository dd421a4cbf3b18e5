"""Training-step speed of lamina against Keras 3, Sonnet 2 and PyTorch, side by side.

Usage::

    python benchmarks/train_step.py                       # everything (~30 min on 2 cores)
    python benchmarks/train_step.py --nets cnn --frameworks 'lamina*,keras*,sonnet,torch'
    python benchmarks/train_step.py --smoke               # one step of each, tiny batches

For each network (the seed CNN on 28x28x1, batch 128; ResNet-18 with the CIFAR
stem on 32x32x3, batch 64; an MLP 784-512-512-10, batch 256) every framework
variant is built from the same lamina model's initial weights (see
``benchmarks/nets.py``) and trains on the same synthetic data (``--batches``
random batches, made device tensors before timing, cycled through: one batch
repeated is memorized within a few dozen steps and its vanishing gradients turn
into slow denormal arithmetic), warmed up, and then timed in round-robin
windows: each round runs one untimed settle step then ``--steps-per-window`` timed steps of
every variant in turn (the order shuffled every round), plus one 4096^2 float32
``tf.linalg.matmul``, so all of them share the machine's conditions. Reported
per variant: the median ms/step over the windows, images/s, the build + first
step ("warm-up") time, the first step's loss (a same-network check), FLOPs and
GFLOP/s as a share of the best matmul window (the machine's float32 peak under
the run's conditions), peak RSS, and the speed ratios ``peer ms / lamina ms``
(> 1: lamina is faster), each the median over rounds of the ratio *within* a
round, which cancels most of the load drifting between rounds.

FLOPs per step are approximated as 3x the forward FLOPs from ``lm.summary``
(backward = 2x forward: the input and the weight gradients), counting a
multiply-add as 2 FLOPs; pooling, normalization and the optimizer are ignored.

Peak RSS is per process, so ``--rss subprocess`` (the default for a full run)
runs every (net, variant) once more in its own fresh process that imports only
its framework and reports its peak RSS (``VmHWM``; ``ru_maxrss`` where /proc is
missing) after 3 steps, and its growth over the same process's peak right after
the imports. ``--rss inprocess``
(the ``--smoke`` default) reports the growth of the *current* RSS of the shared
process across the variant's build and warm-up; ``--rss off`` skips it.

Nothing here gates on absolute time: the exit status is 0 whenever the run
completes, whatever the ratios.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    Entry,
    current_rss_mib,
    fmt,
    format_table,
    machine_info,
    machine_line,
    matmul_entry,
    median,
    peak_rss_mib,
    python_env,
    round_robin,
)
from nets import (  # noqa: E402
    BETA1,
    BETA2,
    EPS,
    LR,
    NETS,
    copy_lamina,
    keras_model,
    lamina_model,
    sonnet_model,
    synthetic_batch,
    torch_model,
)

# variant -> (framework, options)
VARIANTS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "lamina": ("lamina", {"jit": False, "precision": "float32"}),
    "lamina-xla": ("lamina", {"jit": True, "precision": "float32"}),
    "lamina-bf16": ("lamina", {"jit": False, "precision": "mixed_bfloat16"}),
    "lamina-bf16-xla": ("lamina", {"jit": True, "precision": "mixed_bfloat16"}),
    # No Trainer: a hand-written tf.function step on the same model and optimizer
    # (what the Trainer's bookkeeping costs).
    "lamina-raw": ("lamina", {"jit": False, "precision": "float32", "raw": True}),
    "keras": ("keras", {"jit": False, "policy": "float32"}),
    "keras-xla": ("keras", {"jit": True, "policy": "float32"}),
    "keras-bf16": ("keras", {"jit": False, "policy": "mixed_bfloat16"}),
    "keras-bf16-xla": ("keras", {"jit": True, "policy": "mixed_bfloat16"}),
    "sonnet": ("sonnet", {"jit": False}),
    "sonnet-xla": ("sonnet", {"jit": True}),
    "torch": ("torch", {"compile": False, "bf16": False}),
    "torch-compile": ("torch", {"compile": True, "bf16": False}),
    "torch-bf16": ("torch", {"compile": False, "bf16": True}),
}
DEFAULT_VARIANTS = [
    "lamina", "lamina-xla", "lamina-bf16", "keras", "keras-xla", "keras-bf16",
    "sonnet", "torch", "torch-compile", "torch-bf16",
]
SMOKE_VARIANTS = ["lamina", "lamina-xla", "lamina-bf16", "keras", "keras-bf16", "sonnet", "torch"]
# Timed steps per window when --steps-per-window is not given: windows of roughly 0.2-2 s.
STEPS_PER_WINDOW = {"cnn": 5, "resnet18": 2, "mlp": 20}
BF16 = {"lamina-bf16", "lamina-bf16-xla", "keras-bf16", "keras-bf16-xla", "torch-bf16"}


def add_base_variants() -> None:
    """Adds ``<v>@base`` for every lamina variant ``v``: the same, with lamina at ``--base REV``."""
    for name, (fw, opts) in list(VARIANTS.items()):
        if fw == "lamina" and "@" not in name:
            VARIANTS[f"{name}@base"] = (fw, {**opts, "package": "lamina_base"})


def parse_variants(text: str) -> List[str]:
    """Expands ``a,b,fam*`` into variant names (``fam*``: every variant of a framework)."""
    out: List[str] = []
    for token in [t.strip() for t in text.split(",") if t.strip()]:
        if token in ("all", "*"):
            names = list(VARIANTS)
        elif token.endswith("*"):
            names = [v for v in VARIANTS if VARIANTS[v][0] == token[:-1]]
        else:
            names = [token] if token in VARIANTS else []
        if not names:
            raise SystemExit(f"train_step.py: unknown framework variant {token!r}; known: {', '.join(VARIANTS)}")
        out += [n for n in names if n not in out]
    return out


# ------------------------------------------------------------------ builders
def _tf_sync(t: Any) -> float:
    return float(t.numpy())


def _tf_batches(x: np.ndarray, y: np.ndarray) -> Iterator[Tuple[Any, Any]]:
    """Cycles over the ``K`` batches ``x[k], y[k]``, made device tensors (``tf.constant``) once."""
    import tensorflow as tf

    return itertools.cycle([(tf.constant(x[i]), tf.constant(y[i])) for i in range(len(x))])


def synthetic_data(net: str, batch: int, count: int) -> Tuple[np.ndarray, np.ndarray]:
    """``count`` random batches stacked: ``x (count, batch, ...)``, ``y (count, batch)``.

    Steps cycle through them. One batch repeated would be memorized within a few
    dozen steps, its gradients would vanish towards denormal values, and that
    measures denormal arithmetic rather than training.
    """
    pairs = [synthetic_batch(NETS[net], batch, seed=i) for i in range(count)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def build_lamina(net: str, x: np.ndarray, y: np.ndarray, ref: Any, jit: bool, precision: str,
                 raw: bool = False, package: str = "lamina") -> Tuple[Callable, Callable]:
    """``Trainer.train_step`` on a copy of ``ref`` (lamina Adam, softmax cross-entropy, no metric).

    ``raw``: no Trainer, a plain ``tf.function`` step (float32) on the same model and optimizer.
    ``package``: ``lamina_base`` for the ``@base`` variants (lamina at ``--base REV``).
    """
    import importlib

    import tensorflow as tf

    lm = importlib.import_module(package)
    model = lamina_model(net, package=package)
    if ref is not None:
        copy_lamina(model, ref)
    optimizer = lm.optim.Adam(LR, BETA1, BETA2, EPS)
    data = _tf_batches(x, y)
    if raw:
        loss_fn = lm.losses.SoftmaxCrossEntropy()
        optimizer._ensure_slots(model.trainable_variables)

        def step(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                loss = loss_fn(b, model(a, training=True))
            variables = model.trainable_variables
            optimizer.apply(tape.gradient(loss, variables), variables)
            return loss

        fn = tf.function(step, jit_compile=jit, autograph=False)
        return (lambda: fn(*next(data))), _tf_sync
    trainer = lm.Trainer(
        model, optimizer, loss=lm.losses.SoftmaxCrossEntropy(), metrics=(),
        precision=precision, jit_compile=jit, quiet=True, tensorboard=False,
    )
    def step() -> Any:
        out = trainer.train_step(*next(data))
        return out["loss"] if isinstance(out, dict) else out  # revisions before f865df1's successor: the loss

    return step, _tf_sync


def build_keras(net: str, x: np.ndarray, y: np.ndarray, ref: Any, jit: bool, policy: str) -> Tuple[Callable, Callable]:
    """Keras's own ``Model.train_step`` in a ``tf.function`` (what ``fit`` compiles per step)."""
    import keras
    import tensorflow as tf

    model = keras_model(net, ref, policy)
    opt = keras.optimizers.Adam(LR, beta_1=BETA1, beta_2=BETA2, epsilon=EPS)
    model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
    opt.build(model.trainable_variables)
    fn = tf.function(lambda a, b: model.train_step((a, b))["loss"], jit_compile=jit, autograph=False,
                     reduce_retracing=True)
    data = _tf_batches(x, y)
    return (lambda: fn(*next(data))), _tf_sync


def build_sonnet(net: str, x: np.ndarray, y: np.ndarray, ref: Any, jit: bool) -> Tuple[Callable, Callable]:
    """A Sonnet 2 module + ``snt.optimizers.Adam`` in a ``tf.function``."""
    import sonnet as snt
    import tensorflow as tf

    model = sonnet_model(net, ref)
    opt = snt.optimizers.Adam(LR, BETA1, BETA2, EPS)

    def step(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = model(a, is_training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(b, logits))
        variables = model.trainable_variables
        opt.apply(tape.gradient(loss, variables), variables)
        return loss

    fn = tf.function(step, jit_compile=jit, autograph=False)
    data = _tf_batches(x, y)
    return (lambda: fn(*next(data))), _tf_sync


def build_torch(net: str, x: np.ndarray, y: np.ndarray, ref: Any, compile: bool, bf16: bool,
                threads: int) -> Tuple[Callable, Callable]:
    """PyTorch eager (or ``torch.compile``d) step: NCHW, ``torch.optim.Adam`` defaults but the shared hypers.

    Denormals are flushed to zero, as TensorFlow does.
    """
    import contextlib

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    # TensorFlow runs its kernels with denormals flushed to zero; PyTorch does not by
    # default. Training on one fixed batch drives gradients (and Adam's v) towards
    # denormal values within a few dozen steps, which made PyTorch 20-40x slower.
    torch.set_flush_denormal(True)
    model = torch_model(net, ref)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=(BETA1, BETA2), eps=EPS)
    fwd = torch.compile(model) if compile else model
    xn = x.transpose(0, 1, 4, 2, 3) if x.ndim == 5 else x  # (K, N, H, W, C) -> (K, N, C, H, W)
    data = itertools.cycle([(torch.from_numpy(np.ascontiguousarray(xn[i])), torch.from_numpy(y[i].astype(np.int64)))
                            for i in range(len(x))])

    def step() -> Any:
        xt, yt = next(data)
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            logits = fwd(xt)
        loss = F.cross_entropy(logits.float(), yt)
        loss.backward()
        opt.step()
        return loss.detach()

    return step, lambda t: float(t.item())


def build(variant: str, net: str, x: np.ndarray, y: np.ndarray, ref: Any, torch_threads: int) -> Tuple[Callable, Callable]:
    """The (step, sync) pair of ``variant`` on ``net``."""
    fw, opts = VARIANTS[variant]
    if fw == "lamina":
        return build_lamina(net, x, y, ref, **opts)
    if fw == "keras":
        return build_keras(net, x, y, ref, **opts)
    if fw == "sonnet":
        return build_sonnet(net, x, y, ref, **opts)
    return build_torch(net, x, y, ref, threads=torch_threads, **opts)


def forward_flops(net: str, ref: Any, batch: int) -> float:
    """Forward FLOPs of one batch from ``lm.summary`` (multiply-add = 2)."""
    import lamina as lm

    return float(lm.summary(ref, NETS[net].input_shape, batch_size=batch, print_fn=None).flops)


# ----------------------------------------------------------------- RSS child
def rss_child(net: str, variant: str, batch: int, steps: int, torch_threads: int) -> Dict[str, float]:
    """Builds one variant in this (fresh) process; returns its RSS figures in MiB."""
    fw = VARIANTS[variant][0]
    x, y = synthetic_data(net, batch, 8)
    if fw in ("lamina", "keras", "sonnet"):
        import tensorflow as tf  # noqa: F401
    if fw == "lamina":
        import lamina  # noqa: F401
    elif fw == "keras":
        import keras  # noqa: F401
    elif fw == "sonnet":
        import sonnet  # noqa: F401
    else:
        import torch  # noqa: F401
    base = peak_rss_mib()
    step, sync = build(variant, net, x, y, None, torch_threads)
    for _ in range(steps):
        sync(step())
    peak = peak_rss_mib()
    return {"baseline_mib": base, "peak_mib": peak, "growth_mib": peak - base}


def rss_subprocess(net: str, variant: str, batch: int, torch_threads: int, timeout: float,
                   base: Optional[str] = None) -> Dict[str, Any]:
    """Runs :func:`rss_child` in a fresh interpreter; returns its figures or an ``error``."""
    cmd = [sys.executable, os.path.abspath(__file__), "--rss-child", "--nets", net, "--frameworks", variant,
           "--batch", str(batch), "--torch-threads", str(torch_threads)] + (["--base", base] if base else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=python_env())
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RSS "):
            return json.loads(line[4:])
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}


# ---------------------------------------------------------------------- main
def run_net(net: str, variants: Sequence[str], args: argparse.Namespace) -> Dict[str, Any]:
    """Builds, warms up and times every variant on ``net``; returns the results record."""
    spec = NETS[net]
    batch = args.batch or (4 if args.smoke else spec.batch)
    x, y = synthetic_data(net, batch, args.batches)
    ref = lamina_model(net)
    fwd = forward_flops(net, ref, batch)
    step_flops = 3.0 * fwd
    entries: List[Entry] = []
    skipped: Dict[str, str] = {}
    for v in variants:
        rss0 = current_rss_mib()
        t0 = time.perf_counter()
        try:
            step, sync = build(v, net, x, y, ref, args.torch_threads)
            loss0 = sync(step())
        except Exception as e:  # report and go on: one framework failing must not hide the others
            skipped[v] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            print(f"  [{net}] {v}: skipped ({skipped[v]})", flush=True)
            continue
        warm = time.perf_counter() - t0
        for _ in range(args.warmup):
            sync(step())
        e = Entry(v, step=step, sync=sync, info={"warmup_s": warm, "loss0": loss0})
        if args.rss == "inprocess":
            e.info["rss_growth_mib"] = current_rss_mib() - rss0
        entries.append(e)
        print(f"  [{net}] {v}: built + first step {warm:.1f} s, loss {loss0:.4f}", flush=True)
    mm = matmul_entry(args.matmul_size)
    steps = args.steps_per_window or (1 if args.smoke else STEPS_PER_WINDOW[net])
    print(f"  [{net}] timing {len(entries)} variants: {args.windows} windows x {steps} steps", flush=True)
    loads: List[float] = []

    def on_window(w: int) -> None:
        loads.append(os.getloadavg()[0])
        print(f"    window {w + 1}/{args.windows} done (load {loads[-1]:.2f})", flush=True)

    round_robin(entries + [mm], args.windows, steps, settle=args.settle, on_window=on_window)
    peak = mm.info["flops"] / (mm.ms / 1000.0) / 1e9
    peak_max = mm.info["flops"] / (min(mm.samples) / 1000.0) / 1e9
    if args.rss == "subprocess":
        for e in entries:
            e.info.update(rss_subprocess(net, e.name, batch, args.torch_threads, args.rss_timeout, args.base))
            print(f"  [{net}] {e.name}: RSS {e.info.get('peak_mib', e.info.get('error'))}", flush=True)
    rows = {}
    for e in entries:
        ms = e.ms
        rows[e.name] = {
            "ms": ms,
            "ms_min": min(e.samples),
            "ms_max": max(e.samples),
            "images_per_s": batch / (ms / 1000.0),
            "gflops": step_flops / (ms / 1000.0) / 1e9,
            "peak_share": step_flops / (ms / 1000.0) / 1e9 / peak_max,
            "samples": e.samples,
            **e.info,
        }
    return {"net": net, "batch": batch, "steps_per_window": steps, "windows": args.windows, "matmul_size": args.matmul_size, "forward_flops": fwd, "step_flops": step_flops, "matmul_gflops": peak,
            "matmul_gflops_max": peak_max, "variants": rows, "skipped": skipped, "load_per_window": loads}


def paired_ratios(rows: Dict[str, Any], peer: str, lam: str) -> List[float]:
    """``peer ms / lamina ms`` of every round, each within the same round."""
    return [p / l for p, l in zip(rows[peer]["samples"], rows[lam]["samples"])]


def paired_ratio(rows: Dict[str, Any], peer: str, lam: str) -> float:
    """Median over rounds of ``peer ms / lamina ms`` within the same round (robust to drifting load)."""
    return median(paired_ratios(rows, peer, lam))


def ratio_text(rows: Dict[str, Any], peer: str, lam: str) -> str:
    """``1.05x (1.01-1.08)``: the median paired ratio and its spread over the rounds."""
    r = paired_ratios(rows, peer, lam)
    return f"{median(r):.2f}x ({min(r):.2f}-{max(r):.2f})"


def _is_lamina(v: str) -> bool:
    """A lamina variant of the working tree (``@base`` variants are compared like peers)."""
    return v.startswith("lamina") and "@" not in v


def ratio_table(rec: Dict[str, Any]) -> str:
    """Speed ratios ``peer ms / lamina ms`` (paired per round) for every lamina variant (column) and peer (row)."""
    rows = rec["variants"]
    lams = [v for v in rows if _is_lamina(v)]
    peers = [v for v in rows if not _is_lamina(v)]
    if not lams or not peers:
        return "(no lamina/peer pair to compare)"
    table = [[p] + [ratio_text(rows, p, l) for l in lams] for p in peers]
    return format_table(["speed ratio: peer ms / lamina ms (median, min-max over rounds)"] + lams, table)


def targets(rec: Dict[str, Any]) -> List[str]:
    """The issue's targets for this net, each with its measured (paired) value."""
    rows, net, out = rec["variants"], rec["net"], []
    peers = [v for v in rows if not _is_lamina(v) and "@" not in v]
    fp32_peers = [v for v in peers if v not in BF16]
    fp32_lam = [v for v in ("lamina", "lamina-xla") if v in rows]
    if fp32_lam and fp32_peers:
        best_l = min(fp32_lam, key=lambda v: rows[v]["ms"])
        best_p = min(fp32_peers, key=lambda v: rows[v]["ms"])
        r = paired_ratio(rows, best_p, best_l)
        want = 1.05 if net == "cnn" else 1.0  # the seed CNN's lead; ResNet-18: parity with every peer (below)
        out.append(f"float32: {best_l} vs the fastest peer ({best_p}): {r:.2f}x (target >= {want:.2f}x)"
                   f" -> {'met' if r >= want else 'BELOW'}")
        share = rows[best_l]["peak_share"]
        out.append(f"float32: {best_l} at {100 * share:.0f}% of the float32 matmul rate (for reference: the "
                   f"target is each CPU's conv-kernel ceiling, benchmarks/kernels.py)")
        if net == "resnet18":
            for p in fp32_peers:
                r = paired_ratio(rows, p, best_l)
                out.append(f"resnet18: {best_l} vs {p}: {r:.2f}x (target >= 1.00x) -> {'met' if r >= 1.0 else 'BELOW'}")
    lb = "lamina-bf16"
    if net == "resnet18" and lb in rows:
        for p in [v for v in peers if v in BF16 and v != "keras-bf16"]:
            r = paired_ratio(rows, p, lb)
            out.append(f"resnet18: {lb} vs {p}: {r:.2f}x (for reference) -> {'ahead' if r >= 1.0 else 'behind'}")
    if lb in rows and "keras-bf16" in rows:
        r = paired_ratio(rows, "keras-bf16", lb)
        out.append(f"mixed_bfloat16: {lb} vs keras-bf16: {r:.2f}x (target >= 1.10x) -> {'met' if r >= 1.10 else 'BELOW'}")
    return out


def report(rec: Dict[str, Any], rss_mode: str) -> str:
    """The per-net results as Markdown tables."""
    rows = rec["variants"]
    head = ["variant", "ms/step", "min-max", "img/s", "warm-up s", "loss0", "GFLOP/s", "% matmul"]
    if rss_mode == "subprocess":
        head += ["peak RSS MiB", "RSS growth MiB"]
    elif rss_mode == "inprocess":
        head += ["RSS growth MiB"]
    table = []
    for v, r in rows.items():
        line = [v, fmt(r["ms"]), f"{fmt(r['ms_min'])}-{fmt(r['ms_max'])}", fmt(r["images_per_s"], 0),
                fmt(r["warmup_s"]), fmt(r["loss0"], 4), fmt(r["gflops"]), fmt(100 * r["peak_share"], 0)]
        if rss_mode == "subprocess":
            line += [fmt(r.get("peak_mib"), 0) if "error" not in r else r["error"][:40], fmt(r.get("growth_mib"), 0)]
        elif rss_mode == "inprocess":
            line += [fmt(r.get("rss_growth_mib"), 0)]
        table.append(line)
    out = [
        f"### {rec['net']} (batch {rec['batch']}): {rec['step_flops'] / 1e9:.2f} GFLOP/step "
        f"(3 x {rec['forward_flops'] / 1e9:.2f} forward); {rec['matmul_size']}^2 float32 matmul: "
        f"{rec['matmul_gflops']:.0f} GFLOP/s median, {rec['matmul_gflops_max']:.0f} best (the peak used for % matmul)"
        + (f"; load {min(rec['load_per_window']):.2f}-{max(rec['load_per_window']):.2f} over the windows"
           if rec.get("load_per_window") else ""),
        "",
        format_table(head, table),
        "",
        ratio_table(rec),
    ]
    for v, why in rec["skipped"].items():
        out.append(f"- skipped {v}: {why}")
    t = targets(rec)
    if t:
        out += [""] + [f"- {line}" for line in t]
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", default=None, help="comma-separated: cnn,resnet18,mlp (default all; --smoke: cnn,mlp)")
    p.add_argument("--frameworks", default=None,
                   help="comma-separated variants, or 'fw*' for all of a framework: " + ", ".join(VARIANTS))
    p.add_argument("--windows", type=int, default=None, help="timed round-robin windows (default 7; smoke 1)")
    p.add_argument("--steps-per-window", type=int, default=None,
                   help="timed steps per window (default cnn 5, resnet18 2, mlp 20; smoke 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps after the first (default 3; smoke 0)")
    p.add_argument("--settle", type=int, default=1, help="untimed steps before each window (default 1)")
    p.add_argument("--batch", type=int, default=None, help="override every net's batch size")
    p.add_argument("--batches", type=int, default=8, help="distinct random batches the steps cycle through (default 8)")
    p.add_argument("--matmul-size", type=int, default=None, help="size of the peak matmul (default 4096; smoke 256)")
    p.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads (default: cores)")
    p.add_argument("--tf-inter-op", type=int, default=None,
                   help="tf.config.threading inter-op threads (default: TensorFlow's choice, one per core)")
    p.add_argument("--tf-intra-op", type=int, default=None,
                   help="tf.config.threading intra-op threads (default: TensorFlow's choice, one per core)")
    p.add_argument("--rss", choices=("subprocess", "inprocess", "off"), default=None,
                   help="RSS measurement (default subprocess; smoke inprocess)")
    p.add_argument("--rss-timeout", type=float, default=600.0, help="seconds per RSS child process")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    p.add_argument("--smoke", action="store_true", help="one step of each variant at tiny batch sizes (tests)")
    p.add_argument("--base", default=None, metavar="REV",
                   help="also time lamina as it is at git revision REV: variants '<lamina variant>@base' "
                        "(e.g. --base main --frameworks lamina,lamina@base), same process, same windows")
    p.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    smoke = args.smoke
    if args.base:
        from base_tree import load_base

        add_base_variants()
        load_base(args.base, os.path.dirname(os.path.abspath(__file__)))
    nets = [n.strip() for n in (args.nets or ("cnn,mlp" if smoke else "cnn,resnet18,mlp")).split(",") if n.strip()]
    for n in nets:
        if n not in NETS:
            raise SystemExit(f"train_step.py: unknown net {n!r}; known: {', '.join(NETS)}")
    variants = parse_variants(args.frameworks) if args.frameworks else (SMOKE_VARIANTS if smoke else DEFAULT_VARIANTS)
    if args.rss_child:
        res = rss_child(nets[0], variants[0], args.batch or NETS[nets[0]].batch, 3, args.torch_threads)
        print("RSS " + json.dumps(res), flush=True)
        return 0
    args.windows = args.windows or (1 if smoke else 7)
    args.warmup = args.warmup if args.warmup is not None else (0 if smoke else 3)
    args.matmul_size = args.matmul_size or (256 if smoke else 4096)
    args.rss = args.rss or ("inprocess" if smoke else "subprocess")

    info = machine_info()
    if args.base:
        info["base"] = args.base
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one Trainer per variant: TF's retracing warning is expected
    if args.tf_inter_op is not None:
        tf.config.threading.set_inter_op_parallelism_threads(args.tf_inter_op)
    if args.tf_intra_op is not None:
        tf.config.threading.set_intra_op_parallelism_threads(args.tf_intra_op)

    versions = {"tensorflow": tf.__version__}
    for mod in ("keras", "sonnet", "torch"):
        if any(VARIANTS[v][0] == mod for v in variants):
            try:
                versions[mod] = __import__(mod).__version__
            except Exception as e:  # noqa: BLE001 - reported, then that framework's variants skip
                versions[mod] = f"unavailable ({type(e).__name__}: {e})"
    print(machine_line(info) + "; " + ", ".join(f"{k} {v}" for k, v in versions.items())
          + (f"; @base = lamina at {args.base}" if args.base else ""), flush=True)
    cmd = "python benchmarks/train_step.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results = []
    for net in nets:
        rec = run_net(net, variants, args)
        results.append(rec)
        print("\n" + report(rec, args.rss) + "\n", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": cmd, "machine": info, "versions": versions, "results": results,
                       "load_end": os.getloadavg()[0]}, f, indent=1)
    print(f"done: {cmd.strip()} (load {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
