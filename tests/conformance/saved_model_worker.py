"""Loads SavedModels in a fresh process and runs their serving signature.

Run by ``test_conformance.py``: ``python saved_model_worker.py DIR``. ``DIR``
holds one SavedModel per sub-folder and ``inputs.npz`` (one input per
sub-folder name); writes ``DIR/outputs.npz`` (``<name>/<output key>``) and
``DIR/errors.json`` (``{name: error}`` for the ones that failed to load or run).
"""

import json
import os
import sys
import traceback

import numpy as np
import tensorflow as tf


def main():
    root = sys.argv[1]
    with np.load(os.path.join(root, "inputs.npz"), allow_pickle=False) as f:
        inputs = {k: f[k] for k in f.files}
    outputs, errors = {}, {}
    for name, x in inputs.items():
        try:
            loaded = tf.saved_model.load(os.path.join(root, name))
            result = loaded.signatures["serving_default"](x=tf.constant(x))
            for key, value in result.items():
                outputs[f"{name}/{key}"] = value.numpy()
        except Exception as e:  # noqa: BLE001 - reported per model
            errors[name] = f"{type(e).__name__}: {e}"[:2000] + "\n" + traceback.format_exc()[-2000:]
    np.savez(os.path.join(root, "outputs.npz"), **outputs)
    with open(os.path.join(root, "errors.json"), "w") as f:
        json.dump(errors, f)


if __name__ == "__main__":
    main()
