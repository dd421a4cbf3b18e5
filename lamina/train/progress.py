"""A progress bar for training epochs (rich), quiet when not on a terminal."""

from __future__ import annotations

import sys
import time
from typing import Dict, Optional

__all__ = ["EpochProgress"]


def _format_metrics(values: Dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in values.items())


class EpochProgress:
    """Shows one epoch's progress: steps, loss and metrics, images/s and ETA.

    On a terminal it draws a ``rich`` progress bar; otherwise (a pipe, CI) it
    prints nothing per step, and the trainer prints one line per epoch.

    Args:
      epoch: the epoch number (1-based, for display).
      epochs: total number of epochs.
      total_steps: steps in the epoch, or ``None`` if unknown.
      enabled: draw the bar (``False`` when quiet or not a TTY).
    """

    def __init__(self, epoch: int, epochs: int, total_steps: Optional[int], enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.perf_counter()
        self.examples = 0
        self._progress = None
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn(f"epoch {epoch}/{epochs}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("train", total=total_steps, info="")

    @property
    def throughput(self) -> float:
        """Examples per second so far in this epoch."""
        elapsed = time.perf_counter() - self.start
        return self.examples / elapsed if elapsed > 0 else 0.0

    def advance(self, steps: int, examples: int, values: Optional[Dict[str, float]] = None) -> None:
        """Records ``steps`` finished steps covering ``examples`` examples.

        Args:
          steps: steps done since the last call.
          examples: examples processed in those steps.
          values: current loss/metric values to show (fetching them is a host
            sync, so the trainer passes them only every few steps).
        """
        self.examples += examples
        if self._progress is not None:
            fields = {}
            if values is not None:
                fields["info"] = f"{_format_metrics(values)}  {self.throughput:,.0f} examples/s"
            self._progress.update(self._task, advance=steps, **fields)

    def close(self) -> None:
        """Removes the bar."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
