"""Classify the 8x8 scikit-learn digits with an LSTM that reads each image row by row.

Each image is a sequence of 8 time steps of 8 features (one pixel row per step).
An ``lm.RNN(lm.LSTM(...), return_sequences=False)`` reads the rows and a
``Linear`` head classifies its last output. Training uses ``lm.train.Trainer``
(compiled steps, Adam, softmax cross-entropy, accuracy).

Run::

    python3 examples/sequence_digits.py            # ~96-98% test accuracy in well under a minute on 2 CPU cores
    python3 examples/sequence_digits.py --epochs 2 --max-steps 5   # smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, Optional, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import lamina as lm  # noqa: E402
from lamina import losses, metrics, optim  # noqa: E402
from lamina.layers.recurrent import LSTM, RNN  # noqa: E402
from lamina.train import Trainer  # noqa: E402

__all__ = ["load_digit_sequences", "build_model", "main"]


def load_digit_sequences(test_fraction: float = 0.2, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Loads the digits as ``(N, 8, 8)`` float32 sequences in ``[0, 1]`` and splits them.

    Args:
      test_fraction: the held-out share (stratified by class).
      seed: the split's random seed.

    Returns:
      ``(x_train, y_train, x_test, y_test)``; labels are int32 in ``[0, 10)``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)  # (N, 8 rows = steps, 8 columns = features)
    y = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return x_train, y_train, x_test, y_test


def build_model(hidden_size: int = 64, num_classes: int = 10) -> lm.Sequential:
    """An LSTM over the rows followed by a linear classifier.

    Args:
      hidden_size: the LSTM's hidden size.
      num_classes: number of classes.

    Returns:
      ``Sequential([RNN(LSTM(hidden_size), return_sequences=False), Linear(num_classes)])``.
    """
    return lm.Sequential([RNN(LSTM(hidden_size), return_sequences=False), lm.Linear(num_classes)], name="row_lstm")


def main(
    epochs: int = 20,
    batch_size: int = 64,
    hidden_size: int = 64,
    learning_rate: float = 1e-2,
    max_steps: Optional[int] = None,
    seed: int = 0,
    quiet: bool = False,
) -> Dict[str, float]:
    """Trains and evaluates the row-by-row LSTM.

    Args:
      epochs: training epochs.
      batch_size: examples per step.
      hidden_size: LSTM hidden size.
      learning_rate: Adam's learning rate.
      max_steps: stop after this many steps in total (for smoke tests).
      seed: seed for weights, shuffling and the split.
      quiet: print nothing.

    Returns:
      The test-set metrics, e.g. ``{"loss": ..., "accuracy": ...}``.
    """
    lm.set_seed(seed)
    x_train, y_train, x_test, y_test = load_digit_sequences(seed=seed)
    # Validation comes out of the training split (the last 10 %); the test split is only used once, at the end.
    cut = int(len(x_train) * 0.9)
    x_train, y_train, x_val, y_val = x_train[:cut], y_train[:cut], x_train[cut:], y_train[cut:]
    test = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(256)
    model = build_model(hidden_size)
    trainer = Trainer(
        model,
        optim.Adam(learning_rate),
        loss=losses.SoftmaxCrossEntropy(),
        metrics=[metrics.Accuracy()],
        quiet=quiet,
        tensorboard=False,
        seed=seed,
    )
    start = time.perf_counter()
    trainer.fit((x_train, y_train), batch_size=batch_size, validation=(x_val, y_val), epochs=epochs,
                max_steps=max_steps)
    results = trainer.evaluate(test)
    if not quiet:
        print(f"test accuracy {results['accuracy']:.4f}  (trained in {time.perf_counter() - start:.1f}s)")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.epochs, args.batch_size, args.hidden_size, args.learning_rate, args.max_steps, args.seed)
