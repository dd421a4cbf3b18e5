"""``BestCheckpoint``: keeps the checkpoint with the best monitored value in ``run_dir/best``."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import tensorflow as tf

from lamina.train.callbacks.base import Callback

__all__ = ["BestCheckpoint", "check_mode", "default_tie_break"]


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


def default_tie_break(monitor: str) -> Optional[str]:
    """The loss that breaks ties of an accuracy-like ``monitor`` (``val_accuracy`` -> ``val_loss``).

    A coarse metric on a small validation set ties often (144 examples: steps
    of 0.7 %); the lower loss then picks the better of the tied epochs.
    """
    if monitor.endswith("loss"):
        return None
    return "val_loss" if monitor.startswith("val_") else "loss"


class BestCheckpoint(Callback):
    """Saves ``run_dir/best`` whenever ``logs[monitor]`` improves, or ties and ``logs[tie_break]`` improves.

    Args:
      monitor: the epoch log to watch (e.g. ``"val_accuracy"``).
      mode: ``"max"`` or ``"min"``.
      tie_break: a log that decides between equal ``monitor`` values (lower is
        better), e.g. ``"val_loss"``; ``None``: a tie keeps the earlier epoch.

    Attributes:
      best_value: the best value so far (float64 variable, checkpointed).
      best_tie: the ``tie_break`` value of that epoch.
      best_epoch: its 1-based epoch (0 before any).
    """

    state_key = "best_checkpoint"

    def __init__(self, monitor: str = "val_accuracy", mode: str = "max", tie_break: Optional[str] = None) -> None:
        super().__init__(name="best_checkpoint")
        self.monitor = monitor
        self.mode = check_mode(mode, "BestCheckpoint")
        self.tie_break = tie_break
        with tf.init_scope():
            self.best_value = tf.Variable(-math.inf if mode == "max" else math.inf, dtype=tf.float64,
                                          trainable=False, name="best_value")
            self.best_tie = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_tie")
            self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")

    def improved(self, value: float, tie: Optional[float] = None) -> bool:
        """Whether ``value`` beats the best so far (strictly), or equals it with a strictly lower ``tie``."""
        best = float(self.best_value.numpy())
        if value == best:
            return tie is not None and math.isfinite(tie) and tie < float(self.best_tie.numpy())
        return value > best if self.mode == "max" else value < best

    def on_train_begin(self, logs: Any = None) -> None:
        """Finishes what an interrupted save of ``best/`` left (see ``SafeCheckpointManager.recover``)."""
        self.trainer.manager("best").recover()

    def on_epoch_end(self, epoch: int, logs: Dict[str, Any]) -> None:
        """Records and saves an improvement; saved before the latest checkpoint, so a crash loses no best model."""
        value = logs.get(self.monitor)
        tie = logs.get(self.tie_break) if self.tie_break else None
        if value is None or not math.isfinite(value) or not self.improved(value, tie):
            return
        self.best_value.assign(value)
        self.best_tie.assign(tie if tie is not None and math.isfinite(tie) else math.inf)
        self.best_epoch.assign(epoch + 1)
        trainer = self.trainer
        trainer.check_finite()
        trainer.manager("best").save(checkpoint_number=int(trainer.step.numpy()))
