"""``TensorBoard``: epoch scalars as two runs (``train/``, ``validation/``), the step graph, weight histograms."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import tensorflow as tf

from lamina.train.callbacks.base import Callback

__all__ = ["TensorBoard"]

_SKIP = ("epoch", "step")


class TensorBoard(Callback):
    """Writes ``log_dir/train`` and ``log_dir/validation`` event files.

    The same tag in both runs (``loss``, ``accuracy``; ``val_loss`` is written
    as ``loss`` in ``validation/``) so TensorBoard overlays train and
    validation; the learning rate and timings go to ``train/``. The training
    step's graph is written once, after the first step. Summaries are written
    with :mod:`lamina.train.summaries` (TensorBoard's own summary ops); without
    the ``tensorboard`` package the callback says so once and writes nothing.

    Args:
      log_dir: the folder (default ``run_dir/tensorboard``).
      graph: write the training step's graph.
      histograms: also write a histogram of every model variable each epoch
        (``weights/<path>``).
    """

    def __init__(self, log_dir: Optional[str] = None, graph: bool = True, histograms: bool = False) -> None:
        super().__init__(name="tensorboard")
        self._log_dir = log_dir
        self.graph = graph
        self.histograms = histograms
        self._writers: Dict[str, Any] = {}
        self._graph_written = False
        self._enabled = True

    @property
    def log_dir(self) -> str:
        """The folder holding the runs."""
        return self._log_dir or os.path.join(self.trainer.run_dir, "tensorboard")

    def _writer(self, run: str) -> Any:
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self.log_dir, run))
        return self._writers[run]

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        """Checks that TensorBoard's summary ops are available (one note if not)."""
        from lamina.train.summaries import MISSING_MESSAGE

        try:
            import tensorboard.summary.v2  # noqa: F401
        except ImportError:
            self._enabled = False
            if self.trainer.is_chief:
                print(f"lamina: note: no TensorBoard logs: {MISSING_MESSAGE}", flush=True)

    def on_step_end(self, step: int, logs: Dict[str, Any]) -> None:
        """Writes the step graph after the run's first step (when it has been traced)."""
        if self._graph_written or not self.graph or not self._enabled or not self.trainer.is_chief:
            return
        self._graph_written = True
        graph = self.trainer.step_graph()
        if graph is not None:
            with self._writer("train").as_default():
                tf.summary.graph(graph)

    def on_epoch_end(self, epoch: int, logs: Dict[str, Any]) -> None:
        """Writes the epoch's scalars (and histograms) at x = the 1-based epoch."""
        if not self.trainer.is_chief or not self._enabled:
            return
        from lamina.train import summaries

        x = epoch + 1
        numbers = {k: v for k, v in logs.items() if k not in _SKIP and isinstance(v, (int, float))}
        train = {k: v for k, v in numbers.items() if not k.startswith("val_")}
        val = {k[4:]: v for k, v in numbers.items() if k.startswith("val_")}
        summaries.write_scalars(self._writer("train"), train, x)
        if self.histograms:
            summaries.write_histograms(self._writer("train"), self.trainer.model_variables(), x, prefix="weights/")
        if val:
            summaries.write_scalars(self._writer("validation"), val, x)
        for w in self._writers.values():
            w.flush()

    def on_train_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
        """Flushes and closes the event files."""
        for w in self._writers.values():
            w.close()
        self._writers = {}
