"""Input pipelines on an image folder: lamina's streaming set vs PyTorch's DataLoader and a hand-tuned tf.data.

Usage::

    python benchmarks/data_pipeline.py                    # 10k-image folder: throughput, wait share (~5 min)
    python benchmarks/data_pipeline.py --rss 10000,50000  # also peak RSS of `lamina train` (one epoch each)
    python benchmarks/data_pipeline.py --smoke            # a 60-image folder, one batch of each

Workload (the same for every contestant, same folder, same run): read a PNG,
decode, resize to ``--image-size`` (bilinear, antialiased), random crop after
zero padding (``size // 8``) and random horizontal flip, scale to [0, 1],
batches of ``--batch`` in a shuffled order.

* ``lamina``: ``lamina.data.load(folder, stream=True, image_size=...).batches(
  "train", B, epoch=e, augment="crop,flip")`` (order and augmentation are a
  pure function of (seed, epoch); bad files are checked).
* ``lamina-tfrecord``: the same, read from the folder converted by
  ``lamina.data.convert`` (PNG records in 128 MiB shards).
* ``tf.data (hand-tuned)``: ``from_tensor_slices(paths).shuffle(n).map(read,
  decode_png, resize, crop, flip; num_parallel_calls=AUTOTUNE).batch(B)
  .map(scale).prefetch(AUTOTUNE)`` - what a TensorFlow user writes by hand.
* ``torch DataLoader``: a ``Dataset`` that opens each file with PIL, converts
  to RGB, resizes (``Image.BILINEAR``, antialiased), crops/flips in NumPy;
  ``DataLoader(batch_size=B, shuffle=True, num_workers=cores)``; it runs in
  its own process (so no TensorFlow threads are in it) that the main process
  drives window by window.

Timing: contestants take turns (the starting one rotates) in ``--rounds``
windows of ``--batches`` batches; every window starts a fresh iterator and
discards its first 2 batches (start-up of workers and tracing), so all of them
are measured in steady state under the same machine load. Reported: median
images/s, and each ratio lamina / peer as the median over rounds of the ratio
within a round.

The **wait share**: lamina's ``Trainer.train_step`` (a ConvNet) fed by the
lamina pipeline; the time spent in ``next(iterator)`` over the whole step time.

**Peak RSS** (``--rss``): ``lamina train --data FOLDER --image-size S,S
--epochs 1 --model mlp`` in a child process per folder size, as chosen
automatically (``auto``) and with ``?stream=1``; ``ru_maxrss`` of that child.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import format_table, machine_info, machine_line, median, python_env  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ the data
def make_folder(root: str, n: int, size: int, classes: int = 10, seed: int = 0) -> str:
    """Writes ``n`` PNGs of ``size x size`` RGB (smooth random patterns plus noise), ``classes`` sub-folders."""
    import numpy as np
    import tensorflow as tf

    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return root
    for c in range(classes):
        os.makedirs(os.path.join(root, f"class{c:02d}"), exist_ok=True)
    paths = [os.path.join(root, f"class{i % classes:02d}", f"{i:07d}.png") for i in range(n)]
    rng = np.random.default_rng(seed)
    coarse = tf.constant(rng.integers(0, 256, (min(n, 512), 6, 6, 3), dtype=np.uint8))

    def write(i: tf.Tensor, path: tf.Tensor) -> tf.Tensor:
        base = tf.image.resize(tf.cast(coarse[i % tf.shape(coarse, out_type=tf.int64)[0]], tf.float32), [size, size])
        noise = tf.random.stateless_uniform([size, size, 3], seed=tf.stack([i, 7]), maxval=24.0)
        img = tf.cast(tf.clip_by_value(base + noise, 0.0, 255.0), tf.uint8)
        tf.io.write_file(path, tf.io.encode_png(img))
        return i

    ds = tf.data.Dataset.from_tensor_slices((tf.range(n, dtype=tf.int64), paths))
    for _ in ds.map(write, num_parallel_calls=tf.data.AUTOTUNE).batch(1024):
        pass
    open(done, "w").close()
    return root


# -------------------------------------------------------------- contestants
def lamina_pipeline(source: str, size: int, batch: int):
    import lamina.data as ld

    ds = ld.load(source, stream=True, image_size=(size, size), quiet=True)

    def make(epoch: int):
        return iter(ds.batches("train", batch, epoch=epoch, augment="crop,flip"))

    return make, ds


def hand_pipeline(folder: str, size: int, batch: int):
    """What a TensorFlow user writes by hand for the same work."""
    import tensorflow as tf

    paths = sorted(tf.io.gfile.glob(os.path.join(folder, "*", "*.png")))
    names = sorted({p.split(os.sep)[-2] for p in paths})
    labels = [names.index(p.split(os.sep)[-2]) for p in paths]
    pad = max(1, size // 8)

    def load(path: tf.Tensor, label: tf.Tensor):
        img = tf.io.decode_png(tf.io.read_file(path), channels=3)
        img = tf.image.resize(tf.cast(img, tf.float32), [size, size], method="bilinear", antialias=True)
        img = tf.image.random_crop(tf.pad(img, [[pad, pad], [pad, pad], [0, 0]]), [size, size, 3])
        img = tf.image.random_flip_left_right(img)
        return img, label

    def make(epoch: int):
        ds = tf.data.Dataset.from_tensor_slices((paths, labels)).shuffle(len(paths), seed=epoch)
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
        ds = ds.map(lambda x, y: (x / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE)
        return iter(ds.prefetch(tf.data.AUTOTUNE))

    return make


class TorchChild:
    """A child process running the PyTorch DataLoader, driven window by window over a pipe."""

    def __init__(self, folder: str, size: int, batch: int) -> None:
        cmd = [sys.executable, os.path.abspath(__file__), "--torch-child", folder, "--image-size", str(size),
               "--batch", str(batch)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=python_env())
        ready = self.proc.stdout.readline()
        if not ready.startswith("READY"):
            raise RuntimeError(f"torch child did not start: {ready!r}")

    def window(self, batches: int, epoch: int) -> float:
        """Images/s over ``batches`` batches (after 2 untimed ones) of a fresh iterator."""
        self.proc.stdin.write(f"{batches} {epoch}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().split()
        return float(line[1])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


def torch_child(folder: str, size: int, batch: int) -> None:
    """The PyTorch side: reads ``batches epoch`` lines, answers ``DONE images_per_second``."""
    import numpy as np
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs if f.endswith(".png"))
    names = sorted({p.split(os.sep)[-2] for p in paths})
    labels = [names.index(p.split(os.sep)[-2]) for p in paths]
    pad = max(1, size // 8)

    class Images(Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int):
            img = Image.open(paths[i]).convert("RGB").resize((size, size), Image.BILINEAR)
            x = np.pad(np.asarray(img), ((pad, pad), (pad, pad), (0, 0)))
            dy, dx = np.random.randint(0, 2 * pad + 1, 2)
            x = x[dy : dy + size, dx : dx + size]
            if np.random.rand() < 0.5:
                x = x[:, ::-1]
            return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1).float().div_(255.0), labels[i]

    workers = os.cpu_count() or 1
    print("READY", flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            return
        batches, epoch = (int(v) for v in line.split())
        torch.manual_seed(epoch)
        loader = DataLoader(Images(), batch_size=batch, shuffle=True, num_workers=workers, drop_last=False)
        print("DONE", steady_rate(iter(loader), batches), flush=True)


def steady_rate(it: Any, batches: int) -> float:
    """Images/s over ``batches`` batches of a fresh iterator, after 2 untimed ones (workers, tracing)."""
    for _ in range(2):
        next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        x, _ = next(it)
        n += int(x.shape[0])
    return n / (time.perf_counter() - t0)


def tf_window(make, batches: int, epoch: int) -> float:
    return steady_rate(make(epoch), batches)


# ---------------------------------------------------------------- wait share
def wait_share(make, size: int, steps: int) -> Dict[str, float]:
    """Trains a ConvNet fed by ``make``; the share of step time spent waiting in ``next``."""
    import lamina as lm

    model = lm.models.ConvNet(10)
    trainer = lm.train.Trainer(model, lm.optim.Adam(1e-3), "cross_entropy", quiet=True)
    it = make(0)

    def step(x: Any, y: Any) -> None:
        for value in trainer.train_step(x, y).values():  # reading a value waits for the step
            value.numpy()
            break

    for _ in range(3):  # builds, traces
        step(*next(it))
    waited = total = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        x, y = next(it)
        t1 = time.perf_counter()
        step(x, y)
        t2 = time.perf_counter()
        waited += t1 - t0
        total += t2 - t0
    return {"wait_share": waited / total, "step_ms": 1000.0 * total / steps}


# ----------------------------------------------------------------- peak RSS
_RSS_CHILD = (
    "import resource, subprocess, sys, json\n"
    "proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "print(json.dumps({'rc': proc.returncode, 'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
    " 'err': proc.stderr[-400:], 'out': proc.stdout[-300:]}))\n"
)


def peak_rss(data: str, size: int, batch: int, workdir: str, max_steps: Optional[int]) -> Dict[str, Any]:
    """``lamina train`` on ``data`` for one epoch in a fresh process; its peak RSS (via a wrapper's RUSAGE_CHILDREN)."""
    run_dir = tempfile.mkdtemp(dir=workdir, prefix="run-")
    cmd = [sys.executable, "-m", "lamina", "train", "--data", data, "--image-size", f"{size},{size}", "--epochs", "1",
           "--model", "mlp", "--batch-size", str(batch), "--val-split", "0", "--run-dir", run_dir, "--quiet"]
    if max_steps:
        cmd += ["--max-steps", str(max_steps)]
    env = python_env()
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, *cmd], capture_output=True, text=True, env=env, cwd=workdir)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["seconds"] = time.perf_counter() - t0
    result["peak_rss_mib"] = result["maxrss_kib"] / 1024.0
    return result


# --------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=10000, help="images in the throughput folder (default 10000)")
    p.add_argument("--source-size", type=int, default=64, help="side of the generated PNGs (default 64)")
    p.add_argument("--image-size", type=int, default=56, help="side after resizing (default 56)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, default=40, help="timed batches per window")
    p.add_argument("--wait-steps", type=int, default=30, help="training steps for the wait share")
    p.add_argument("--rss", default="", help="comma-separated folder sizes for the peak-RSS runs, e.g. 10000,50000")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "lamina-data-bench"))
    p.add_argument("--frameworks", default="lamina,lamina-tfrecord,tf.data,torch")
    p.add_argument("--smoke", action="store_true", help="a 60-image folder, one batch of each, one streamed RSS run of 1 step")
    p.add_argument("--torch-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.torch_child:
        torch_child(args.torch_child, args.image_size, args.batch)
        return 0
    if args.smoke:
        args.files, args.rounds, args.batches, args.wait_steps, args.batch = 60, 1, 1, 1, 8
        args.rss = args.rss or "60"
        args.workdir = tempfile.mkdtemp(prefix="lamina-data-smoke-")
    info = machine_info()
    print("# data pipeline benchmark\n\n" + machine_line(info) + "\n", flush=True)
    os.makedirs(args.workdir, exist_ok=True)
    folder = make_folder(os.path.join(args.workdir, f"png-{args.files}-{args.source_size}"), args.files, args.source_size)
    wanted = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    size, batch = args.image_size, args.batch

    import lamina.data as ld

    entries: Dict[str, Any] = {}
    make_lamina, ds = lamina_pipeline(folder, size, batch)
    entries["lamina"] = lambda e: tf_window(make_lamina, args.batches, e)
    if "lamina-tfrecord" in wanted:
        shards = os.path.join(args.workdir, f"tfr-{args.files}-{args.source_size}")
        if not os.path.exists(os.path.join(shards, "index.json")):
            ld.convert(folder, shards, overwrite=True, quiet=True, progress=False)
        make_records, _ = lamina_pipeline(shards, size, batch)
        entries["lamina-tfrecord"] = lambda e: tf_window(make_records, args.batches, e)
    if "tf.data" in wanted:
        make_hand = hand_pipeline(folder, size, batch)
        entries["tf.data (hand-tuned)"] = lambda e: tf_window(make_hand, args.batches, e)
    child = None
    if "torch" in wanted:
        child = TorchChild(folder, size, batch)
        entries["torch DataLoader"] = lambda e: child.window(args.batches, e)
    samples: Dict[str, List[float]] = {k: [] for k in entries}
    names = list(entries)
    try:
        for r in range(args.rounds):
            for i in range(len(names)):
                name = names[(i + r) % len(names)]
                samples[name].append(entries[name](r))
    finally:
        if child is not None:
            child.close()
    rows = []
    for name in names:
        ratios = [a / b for a, b in zip(samples["lamina"], samples[name])]
        rows.append([name, f"{median(samples[name]):,.0f}", f"{median(ratios):.2f}" if name != "lamina" else "1.00"])
    print(f"## decode + resize {args.source_size}->{size} + crop/flip, batch {batch}, "
          f"{args.rounds} rounds x {args.batches} batches ({args.files} files)\n")
    print(format_table(["pipeline", "images/s (median)", "lamina / this (ratio of medians per round)"], rows))
    print("\nratio > 1: lamina is faster.", flush=True)

    share = wait_share(make_lamina, size, args.wait_steps)
    print(f"\n## training step fed by the lamina pipeline (ConvNet, {size}x{size}x3, batch {batch})\n")
    print(f"step {share['step_ms']:.1f} ms; share of step time waiting for input: {100 * share['wait_share']:.1f} %",
          flush=True)

    if args.rss:
        rows = []
        for count in (int(v) for v in args.rss.split(",") if v.strip()):
            root = make_folder(os.path.join(args.workdir, f"png-{count}-{args.source_size}"), count, args.source_size)
            modes = (("stream=1", root + "?stream=1"),) if args.smoke else (("auto", root), ("stream=1", root + "?stream=1"))
            for label, data in modes:
                mode = "streaming" if ld.load(data, image_size=(args.source_size,) * 2, quiet=True).streaming else "in memory"
                res = peak_rss(data, args.source_size, 64 if not args.smoke else 8, args.workdir,
                               1 if args.smoke else None)
                rows.append([count, label, mode, res["rc"], f"{res['peak_rss_mib']:,.0f}", f"{res['seconds']:.0f}"])
                if res["rc"] != 0:
                    print(f"lamina train failed: {res['err']}", file=sys.stderr)
        print("\n## peak RSS of `lamina train --data FOLDER --epochs 1 --model mlp` (one child process each)\n")
        print(format_table(["files", "--data", "chosen", "exit", "peak RSS MiB", "seconds"], rows))
    print("\ndone:", f"{time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
