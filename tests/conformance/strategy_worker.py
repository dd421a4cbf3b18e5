"""Trains every descriptor with ``Trainer.fit`` on one device and under ``MirroredStrategy`` over 2 logical CPUs.

Run by ``test_conformance.py`` in a subprocess (logical devices must be set up
before TensorFlow initializes): ``python strategy_worker.py OUT.json [NAME ...]``.
Writes ``{descriptor name: {"diff", "moved", "steps", "error"}}``: the largest
weight difference between the two runs after ``EPOCHS`` epochs, how far the
single-device weights moved, and the error if a run failed.
"""

import json
import os
import sys
import time
import traceback

from lamina.train import distribute as dist

DEVICES = dist.configure_cpu_devices(2)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import lamina as lm  # noqa: E402
from lamina.testing import float_outputs  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from descriptors import DESCRIPTORS  # noqa: E402

EXAMPLES, BATCH, EPOCHS, LR = 16, 8, 3, 0.05


class TrainAdapter(lm.Module):
    """``model(x, training)`` -> one ``(batch, features)`` float tensor, for the Trainer and an MSE loss.

    A float input is first multiplied by a trainable per-feature ``scale``, so the
    gradient also flows through modules without variables (pools, activations).
    """

    # The Trainer calls models through call_with_training, so modules without a
    # ``training`` argument need no adapter for that any more; this one stays for
    # the flattening (MSE needs one tensor) and the input scale.

    def __init__(self, descriptor, module):
        super().__init__(name="adapter")
        self.descriptor = descriptor
        self.module = module

    def build(self, input_shape):
        if self.descriptor.dtype.is_floating:
            self.scale = tf.Variable(tf.ones(input_shape[-1:]), name="scale")

    def __call__(self, x, training=False):
        if self.descriptor.dtype.is_floating:
            x = x * tf.cast(self.scale, x.dtype)
        outs = float_outputs(self.descriptor.call(self.module, x, training=training))
        # Scalars (a batch statistic such as a vector quantizer's loss) are not per example: a replica's
        # differs from the global batch's, and squaring it in the MSE would not average over replicas.
        per_example = [t for t in outs if t.shape.rank != 0] or outs
        flat = [tf.reshape(t, [tf.shape(t)[0], -1]) for t in per_example]
        return tf.concat([tf.cast(t, flat[0].dtype) for t in flat], -1)


def make(d, strategy, x):
    with strategy.scope() if strategy is not None else tf.device("/cpu:0"):
        model = TrainAdapter(d, d.create())
        model(x[:2])
        optimizer = lm.optim.SGD(LR)
    return model, optimizer


def run(d, strategy):
    lm.set_seed(0)
    x = d.make_input(EXAMPLES, seed=3)
    single, opt1 = make(d, None, x)
    mirrored, opt2 = make(d, strategy, x)
    start = single.get_weights()
    mirrored.set_weights(start)
    y = tf.random.stateless_normal(single(x).shape, [4, 4])
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    histories = []
    for model, opt, strat in ((single, opt1, None), (mirrored, opt2, strategy)):
        trainer = lm.train.Trainer(model, opt, "mse", metrics=(), strategy=strat, quiet=True, tensorboard=False)
        histories.append(trainer.fit(data, epochs=EPOCHS))
    a, b = single.get_weights(), mirrored.get_weights()
    diff = max([float(np.abs(a[k] - b[k]).max()) for k in a if a[k].size], default=0.0)
    moved = max([float(np.abs(a[k] - start[k]).max()) for k in a if a[k].size and a[k].dtype.kind == "f"], default=0.0)
    losses = [[h["loss"] for h in hist] for hist in histories]
    return {"diff": diff, "moved": moved, "steps": int(opt1.iterations.numpy()), "losses": losses, "error": None}


def main():
    out_path, names = sys.argv[1], set(sys.argv[2:])
    strategy = dist.make_strategy("mirrored", DEVICES)
    assert strategy.num_replicas_in_sync == 2
    results = {}
    for d in DESCRIPTORS:
        if (names and d.name not in names) or not d.expensive:
            continue
        t0 = time.perf_counter()
        try:
            results[d.name] = run(d, strategy)
        except Exception as e:  # noqa: BLE001 - reported per descriptor
            results[d.name] = {"error": f"{type(e).__name__}: {e}"[:2000], "trace": traceback.format_exc()[-3000:]}
        results[d.name]["seconds"] = round(time.perf_counter() - t0, 2)
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
