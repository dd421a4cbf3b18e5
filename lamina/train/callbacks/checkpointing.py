"""``Checkpointing``: resume at start, save every N steps, at every epoch end, at the end and on interrupt."""

from __future__ import annotations

from typing import Any, Dict, Optional

from lamina.train.callbacks.base import Callback

__all__ = ["Checkpointing"]


class Checkpointing(Callback):
    """Keeps the run resumable: the latest checkpoints of ``run_dir/checkpoints``.

    Each checkpoint holds the model, the optimizer(s), the step, the epoch and
    the position in it, the metric and log accumulators, the loss scale, the
    accumulated gradients, the weight average and every stateful callback, so
    that a run killed at any point and started again ends bit-identical to an
    uninterrupted one (with a data order that is a pure function of the epoch).

    Args:
      every_n_steps: also save every N steps (besides each epoch end).

    Raises:
      ValueError: for a non-positive ``every_n_steps``.
    """

    def __init__(self, every_n_steps: Optional[int] = None) -> None:
        super().__init__(name="checkpointing")
        if every_n_steps is not None and (isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1):
            raise ValueError(f"Checkpointing: every_n_steps must be an int >= 1, got {every_n_steps!r}")
        self.every_n_steps = every_n_steps
        self._saved_step: Optional[int] = None

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        """Restores the latest intact checkpoint, if any, and says so."""
        trainer = self.trainer
        path = trainer.resume()
        if path:
            self._saved_step = int(trainer.step.numpy())
            trainer.log(
                f"resuming from {path} (epoch {int(trainer.epoch.numpy()) + 1}, "
                f"step {int(trainer.step.numpy())}, {int(trainer.step_in_epoch.numpy())} steps into the epoch)"
            )

    def _save(self) -> Optional[str]:
        trainer = self.trainer
        trainer.check_finite()
        path = trainer.save()
        self._saved_step = int(trainer.step.numpy())
        return path

    def on_step_end(self, step: int, logs: Dict[str, Any]) -> None:
        """Saves every ``every_n_steps`` steps."""
        if self.every_n_steps and step % self.every_n_steps == 0:
            self._save()

    def on_epoch_end(self, epoch: int, logs: Dict[str, Any]) -> None:
        """Saves the state after the epoch (its counter already advanced)."""
        self._save()

    def on_train_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
        """Saves a position that no epoch end saved (a run cut short by ``max_steps``)."""
        if self._saved_step != int(self.trainer.step.numpy()):
            self._save()

    def on_interrupt(self) -> Optional[str]:
        """Saves the current state; the note names the checkpoint (or why none was written)."""
        from lamina.train.checkpoints import CheckpointError

        step = int(self.trainer.step.numpy())
        try:
            path = self.trainer.save()
        except CheckpointError as e:
            return f"no checkpoint saved: {e}"
        except KeyboardInterrupt:
            # Interrupted again: a save holds signals back until it is complete, so the
            # checkpoint is there if the second interrupt came during the save.
            path = self.trainer.manager("checkpoints").latest_checkpoint
            if not path or not path.endswith(f"-{step}"):
                return "no checkpoint saved: interrupted again before the save began"
        return f"checkpoint saved: {path}"  # the one message: KeyboardInterrupt carries it
