"""``HistoryPlot``: ``run_dir/history.png`` (every logged curve, train vs validation) at the end."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

from lamina.train.callbacks.base import Callback

__all__ = ["HistoryPlot"]


class HistoryPlot(Callback):
    """Draws the history when training ends (also after early stopping or an interrupt).

    Args:
      path: the PNG (default ``run_dir/history.png``).
      monitor: the log whose best epoch is marked (``None``: no mark).
      mode: ``"max"`` or ``"min"`` for ``monitor``.
    """

    def __init__(self, path: Optional[str] = None, monitor: Optional[str] = None, mode: str = "max") -> None:
        super().__init__(name="history_plot")
        self._path = path
        self.monitor = monitor
        self.mode = mode

    def _draw(self) -> None:
        trainer = self.trainer
        if not trainer.is_chief or not trainer.history:
            return
        from lamina.train.plots import plot_history

        path = self._path or os.path.join(trainer.run_dir, "history.png")
        plot_history(trainer.history, path, monitor=self.monitor, mode=self.mode)

    def on_train_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
        """Writes the plot."""
        self._draw()

    def on_interrupt(self) -> Optional[str]:
        """Writes the plot of the epochs done so far."""
        self._draw()
        return None
