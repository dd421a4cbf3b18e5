"""``BestCheckpoint``: keeps the checkpoint with the best monitored value in ``run_dir/best``."""

from __future__ import annotations

import math
from typing import Any, Dict

import tensorflow as tf

from lamina.train.callbacks.base import Callback

__all__ = ["BestCheckpoint", "check_mode"]


def check_mode(mode: str, owner: str) -> str:
    """Returns ``mode`` if it is ``"max"`` or ``"min"``.

    Args:
      mode: the direction of improvement.
      owner: who asks, for the error.

    Returns:
      ``mode``.

    Raises:
      ValueError: otherwise.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"{owner}: mode must be 'max' or 'min', got {mode!r}")
    return mode


class BestCheckpoint(Callback):
    """Saves ``run_dir/best`` whenever ``logs[monitor]`` improves (ties keep the earlier one).

    Args:
      monitor: the epoch log to watch (e.g. ``"val_accuracy"``).
      mode: ``"max"`` or ``"min"``.

    Attributes:
      best_value: the best value so far (float64 variable, checkpointed).
      best_epoch: its 1-based epoch (0 before any).
    """

    state_key = "best_checkpoint"

    def __init__(self, monitor: str = "val_accuracy", mode: str = "max") -> None:
        super().__init__(name="best_checkpoint")
        self.monitor = monitor
        self.mode = check_mode(mode, "BestCheckpoint")
        with tf.init_scope():
            self.best_value = tf.Variable(-math.inf if mode == "max" else math.inf, dtype=tf.float64,
                                          trainable=False, name="best_value")
            self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")

    def improved(self, value: float) -> bool:
        """Whether ``value`` beats the best so far (strictly)."""
        best = float(self.best_value.numpy())
        return value > best if self.mode == "max" else value < best

    def on_train_begin(self, logs: Any = None) -> None:
        """Finishes what an interrupted save of ``best/`` left (see ``SafeCheckpointManager.recover``)."""
        self.trainer.manager("best").recover()

    def on_epoch_end(self, epoch: int, logs: Dict[str, Any]) -> None:
        """Records and saves an improvement; saved before the latest checkpoint, so a crash loses no best model."""
        value = logs.get(self.monitor)
        if value is None or not math.isfinite(value) or not self.improved(value):
            return
        self.best_value.assign(value)
        self.best_epoch.assign(epoch + 1)
        trainer = self.trainer
        trainer.check_finite()
        trainer.manager("best").save(checkpoint_number=int(trainer.step.numpy()))
