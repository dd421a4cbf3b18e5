"""Isolated TensorFlow kernels: how fast can a training step of these networks be at all?

Times, one op per ``tf.function``, the three convolution kernels of a training
step (forward, input gradient, filter gradient) for the shapes of the seed CNN
(batch 128) and ResNet-18 (batch 64), in float32 and bfloat16, channels-last
and channels-first, next to a 4096x4096 float32 matmul. The sum of a network's
isolated conv kernels bounds its step from below (every framework here calls
the same oneDNN kernels), which is what the "% of the matmul peak" target of
``train_step.py`` has to be read against. Also: BatchNorm forward + backward,
composite (``tf.nn.moments`` + ``batch_normalization``) vs ``FusedBatchNormV3``.

Usage::

    python benchmarks/kernels.py            # ~2 min on 2 cores
    python benchmarks/kernels.py --smoke    # tiny shapes, one call each
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, List, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")  # one small tf.function per kernel and shape: retracing is the point

from common import format_table, machine_info, machine_line, time_window  # noqa: E402

# (name, batch, spatial size, in channels, out channels): stride-1 3x3 "same" convs.
CNN_CONVS = [("cnn conv 1->32 @28", 128, 28, 1, 32), ("cnn conv 32->32 @28", 128, 28, 32, 32),
             ("cnn conv 32->64 @14", 128, 14, 32, 64), ("cnn conv 64->64 @14", 128, 14, 64, 64)]
RESNET_CONVS = [("resnet 64 @32", 64, 32, 64, 64), ("resnet 128 @16", 64, 16, 128, 128),
                ("resnet 256 @8", 64, 8, 256, 256), ("resnet 512 @4", 64, 4, 512, 512)]


def best_ms(fn: Callable[..., Any], *args: Any, calls: int, repeats: int) -> float:
    """Best-of-``repeats`` mean milliseconds per call of ``fn(*args)`` (result read back once per window)."""
    fn(*args)
    return min(time_window(lambda: fn(*args), calls, lambda out: tf.nest.flatten(out)[0].numpy())
               for _ in range(repeats))


def conv_kernels(batch: int, size: int, cin: int, cout: int, dtype: tf.DType, fmt: str,
                 calls: int, repeats: int) -> Tuple[float, float, float]:
    """(forward, input gradient, filter gradient) ms of one 3x3 stride-1 SAME conv."""
    def shape(c: int) -> List[int]:
        return [batch, size, size, c] if fmt == "NHWC" else [batch, c, size, size]

    x = tf.cast(tf.random.normal(shape(cin)), dtype)
    dy = tf.cast(tf.random.normal(shape(cout)), dtype)
    w = tf.cast(tf.random.normal([3, 3, cin, cout]), dtype)
    ones = [1, 1, 1, 1]
    fwd = tf.function(lambda x, w: tf.nn.conv2d(x, w, 1, "SAME", data_format=fmt))
    bwd_in = tf.function(lambda dy, w: tf.raw_ops.Conv2DBackpropInput(
        input_sizes=tf.constant(shape(cin)), filter=w, out_backprop=dy, strides=ones, padding="SAME",
        data_format=fmt))
    bwd_w = tf.function(lambda x, dy: tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=tf.constant([3, 3, cin, cout]), out_backprop=dy, strides=ones, padding="SAME",
        data_format=fmt))
    return (best_ms(fwd, x, w, calls=calls, repeats=repeats), best_ms(bwd_in, dy, w, calls=calls, repeats=repeats),
            best_ms(bwd_w, x, dy, calls=calls, repeats=repeats))


def batchnorm_ms(shape: Sequence[int], dtype: tf.DType, calls: int, repeats: int) -> Tuple[float, float]:
    """(composite, fused) ms of BatchNorm training forward + ReLU + backward."""
    c = shape[-1]
    x = tf.cast(tf.random.normal(shape) * 2 + 1, dtype)
    up = tf.cast(tf.random.normal(shape), dtype)
    scale, offset = tf.Variable(tf.ones([c])), tf.Variable(tf.zeros([c]))

    def composite(x: tf.Tensor) -> List[tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            mean, var = tf.nn.moments(x, [0, 1, 2])
            y = tf.nn.batch_normalization(x, mean, var, tf.cast(offset, dtype), tf.cast(scale, dtype), 1e-5)
            loss = tf.reduce_sum(tf.cast(tf.nn.relu(y) * up, tf.float32))
        return tape.gradient(loss, [x, scale, offset])

    def fused(x: tf.Tensor) -> List[tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=scale, offset=offset, mean=tf.zeros([0]), variance=tf.zeros([0]), epsilon=1e-5,
                exponential_avg_factor=1.0, data_format="NHWC", is_training=True)[0]
            loss = tf.reduce_sum(tf.cast(tf.nn.relu(y) * up, tf.float32))
        return tape.gradient(loss, [x, scale, offset])

    return (best_ms(tf.function(composite), x, calls=calls, repeats=repeats),
            best_ms(tf.function(fused), x, calls=calls, repeats=repeats))


def _nchw_conv_runs() -> bool:
    """Whether TensorFlow runs a channels-first convolution on this CPU (only oneDNN has one)."""
    try:
        tf.nn.conv2d(tf.ones((1, 1, 3, 3)), tf.ones((1, 1, 1, 1)), 1, "SAME", data_format="NCHW").numpy()
    except tf.errors.OpError:
        return False
    return True


def main(argv: Sequence[str] = ()) -> int:
    """Prints the kernel tables.

    Args:
      argv: command-line arguments (see ``--help``).

    Returns:
      The exit status (0).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, one call each")
    parser.add_argument("--formats", default="NHWC,NCHW", help="data formats to time (default NHWC,NCHW)")
    args = parser.parse_args(list(argv))
    calls, repeats = (1, 1) if args.smoke else (20, 5)
    convs = CNN_CONVS + RESNET_CONVS
    if args.smoke:
        convs = [(name, 2, min(size, 4), cin, min(cout, 8)) for name, _, size, cin, cout in convs[:2]]
    info = machine_info()
    print(machine_line(info), flush=True)

    n = 256 if args.smoke else 4096
    a = tf.random.normal([n, n])
    peak = 2 * n ** 3 / best_ms(tf.function(lambda a: tf.matmul(a, a)), a, calls=max(calls // 4, 1),
                                repeats=repeats) / 1e6
    print(f"\n{n}^2 float32 matmul: {peak:.0f} GFLOP/s\n")

    formats = args.formats.split(",")
    if "NCHW" in formats and not _nchw_conv_runs():
        formats.remove("NCHW")
        print("NCHW skipped: this TensorFlow has no channels-first CPU convolution here (oneDNN is off)\n")
    rows = []
    sums = {}
    for name, batch, size, cin, cout in convs:
        flop = 2 * batch * size * size * 9 * cin * cout / 1e9
        for dtype in (tf.float32, tf.bfloat16):
            for fmt in formats:
                f, bi, bw = conv_kernels(batch, size, cin, cout, dtype, fmt, calls, repeats)
                key = (name.split()[0], dtype.name, fmt)
                sums[key] = sums.get(key, 0.0) + f + (bi if cin > 1 else 0.0) + bw
                rows.append([name, dtype.name, fmt, f"{f:.2f}", f"{bi:.2f}", f"{bw:.2f}",
                             f"{100 * flop / f * 1e3 / peak:.0f}", f"{100 * flop / bw * 1e3 / peak:.0f}"])
    print(format_table(["conv 3x3 (stride 1, SAME)", "dtype", "layout", "forward ms", "input grad ms",
                        "filter grad ms", "fwd % matmul", "filter grad % matmul"], rows))
    print("\nSum of a step's conv kernels, run one at a time (the first conv's input gradient is never needed):")
    for (net, dtype, fmt), total in sorted(sums.items()):
        print(f"- {net} {dtype} {fmt}: {total:.1f} ms")

    shape = [2, 4, 4, 8] if args.smoke else [64, 32, 32, 64]
    rows = []
    for dtype in (tf.float32, tf.bfloat16):
        comp, fused = batchnorm_ms(shape, dtype, calls, repeats)
        rows.append([f"BatchNorm {tuple(shape)}", dtype.name, f"{comp:.2f}", f"{fused:.2f}", f"{comp / fused:.2f}x"])
    print()
    print(format_table(["forward + ReLU + backward", "dtype", "composite ms", "FusedBatchNormV3 ms", "fused speed-up"],
                       rows))
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
