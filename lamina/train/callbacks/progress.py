"""``ProgressBar``: a live bar per epoch on a terminal, and one line per epoch."""

from __future__ import annotations

from typing import Any, Dict, Optional

from lamina.train.callbacks.base import Callback
from lamina.train.progress import EpochProgress

__all__ = ["ProgressBar", "epoch_line"]

_BOOKKEEPING = ("epoch", "step", "time", "images_per_sec")


def epoch_line(logs: Dict[str, Any], epochs: int) -> str:
    """Formats ``epoch 3/20  loss 0.1234  accuracy 0.9876 ...  12,149 examples/s  0.1s``.

    Args:
      logs: an epoch's logs.
      epochs: the total number of epochs.

    Returns:
      The line.
    """
    parts = [f"epoch {logs['epoch']}/{epochs}"]
    for k, v in logs.items():
        if k in _BOOKKEEPING or k.startswith("learning_rate") or not isinstance(v, (int, float)):
            continue
        parts.append(f"{k} {v:.4f}")
    if "images_per_sec" in logs:
        parts.append(f"{logs['images_per_sec']:,.0f} examples/s")
    if "time" in logs:
        parts.append(f"{logs['time']:.1f}s")
    return "  ".join(parts)


class ProgressBar(Callback):
    """Shows the epoch's progress (``rich``, only on a terminal) and prints the epoch line.

    Args:
      log_every: refresh the shown loss/metrics every N steps (reading them
        waits for the step).
      bar: draw the live bar (a terminal is still required).
    """

    def __init__(self, log_every: int = 10, bar: bool = True) -> None:
        super().__init__(name="progress_bar")
        self.log_every = max(1, int(log_every))
        self.bar = bar
        self._progress: Optional[EpochProgress] = None
        self._steps = 0

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        """Starts the bar (advanced past the steps a resumed epoch already did)."""
        trainer = self.trainer
        self._progress = EpochProgress(epoch + 1, trainer.epochs, trainer.steps_per_epoch,
                                       enabled=self.bar and trainer.is_chief and not trainer.quiet)
        self._steps = int(trainer.step_in_epoch.numpy())
        if self._steps:
            self._progress.advance(self._steps, 0)

    def on_step_end(self, step: int, logs: Dict[str, Any]) -> None:
        """Advances the bar; every ``log_every`` steps shows the epoch's running means."""
        if self._progress is None:
            return
        self._steps += 1
        show = self._progress.enabled and self._steps % self.log_every == 0
        self._progress.advance(1, self.trainer.last_batch_size, self.trainer.epoch_logs() if show else None)

    def on_epoch_end(self, epoch: int, logs: Dict[str, Any]) -> None:
        """Closes the bar and prints the epoch line."""
        self._close()
        self.trainer.log(epoch_line(logs, self.trainer.epochs))

    def on_train_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
        """Closes a bar left open by a run cut short."""
        self._close()

    def on_interrupt(self) -> Optional[str]:
        """Removes the bar before the interruption message."""
        self._close()
        return None

    def _close(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
