"""``EarlyStopping``: stops when the monitored value has not improved for ``patience`` epochs."""

from __future__ import annotations

import math
from typing import Any, Dict

import tensorflow as tf

from lamina.train.callbacks.base import Callback
from lamina.train.callbacks.best_checkpoint import check_mode

__all__ = ["EarlyStopping"]


class EarlyStopping(Callback):
    """Sets ``trainer.stop_training`` after ``patience`` epochs without improvement.

    Args:
      monitor: the epoch log to watch.
      mode: ``"max"`` or ``"min"``.
      patience: epochs without a strict improvement before stopping (>= 1).

    Raises:
      ValueError: for a bad ``patience`` or ``mode``.
    """

    state_key = "early_stopping"

    def __init__(self, monitor: str = "val_accuracy", mode: str = "max", patience: int = 5) -> None:
        super().__init__(name="early_stopping")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"EarlyStopping: patience must be an int >= 1, got {patience!r}")
        self.monitor = monitor
        self.mode = check_mode(mode, "EarlyStopping")
        self.patience = patience
        with tf.init_scope():
            self.best = tf.Variable(-math.inf if mode == "max" else math.inf, dtype=tf.float64, trainable=False, name="best")
            self.bad_epochs = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_epochs")

    def on_epoch_end(self, epoch: int, logs: Dict[str, Any]) -> None:
        """Counts an epoch without improvement, and stops after ``patience`` of them."""
        value = logs.get(self.monitor)
        if value is None:
            raise ValueError(
                f"EarlyStopping: the epoch logs have no {self.monitor!r} (they have {sorted(logs)}); "
                "pass validation data or monitor another value"
            )
        best = float(self.best.numpy())
        if math.isfinite(value) and (value > best if self.mode == "max" else value < best):
            self.best.assign(value)
            self.bad_epochs.assign(0)
        else:
            self.bad_epochs.assign_add(1)
        if int(self.bad_epochs.numpy()) >= self.patience:
            self.trainer.log(f"early stopping: {self.monitor} did not improve for {self.patience} epochs")
            self.trainer.stop_training = True
