"""``NonFiniteCheck``: stops training at the first non-finite loss, naming the step."""

from __future__ import annotations

from typing import Any, Dict

from lamina.train.callbacks.base import Callback

__all__ = ["NonFiniteCheck"]


class NonFiniteCheck(Callback):
    """Raises :class:`~lamina.train.TrainingError` once a step's loss was not finite.

    The step itself never applies a non-finite gradient, so the weights stay
    those of the last finite step; this callback (and every checkpoint save)
    checks the trainer's record of the first non-finite step after every
    ``every_n_steps`` steps and at each epoch end, so a diverged run stops
    instead of training on — and saving — nonsense. Looking after every step
    (the default) names the module from the very batch that failed.

    Args:
      every_n_steps: how often to look (reading the flag waits for the step).
    """

    def __init__(self, every_n_steps: int = 1) -> None:
        super().__init__(name="non_finite_check")
        self.every_n_steps = max(1, int(every_n_steps))

    def on_step_end(self, step: int, logs: Dict[str, Any]) -> None:
        """Checks every ``every_n_steps`` steps."""
        if step % self.every_n_steps == 0:
            self.trainer.check_finite()

    def on_epoch_end(self, epoch: int, logs: Dict[str, Any]) -> None:
        """Checks before anything is saved for the epoch."""
        self.trainer.check_finite()
