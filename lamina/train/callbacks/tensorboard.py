"""``TensorBoard``: epoch scalars as two runs (``train/``, ``validation/``), the step graph, weight histograms."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import tensorflow as tf

from lamina.train.callbacks.base import Callback

__all__ = ["TensorBoard", "write_scalar"]

_SKIP = ("epoch", "step")


def write_scalar(tag: str, value: float, step: int) -> None:
    """Writes a scalar with TensorFlow's own summary op (works without the ``tensorboard`` package).

    Args:
      tag: the tag (``loss``).
      value: the value.
      step: the x coordinate (the epoch).
    """
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tf.summary.write(tag=tag, tensor=tf.constant(value, tf.float32), step=step, metadata=metadata)


class TensorBoard(Callback):
    """Writes ``log_dir/train`` and ``log_dir/validation`` event files.

    The same tag in both runs (``loss``, ``accuracy``; ``val_loss`` is written
    as ``loss`` in ``validation/``) so TensorBoard overlays train and
    validation; the learning rate and timings go to ``train/``. The step's
    graph is written once.

    Args:
      log_dir: the folder (default ``run_dir/tensorboard``).
      graph: write the training step's graph.
      histograms: also write a histogram of every model variable each epoch.
    """

    def __init__(self, log_dir: Optional[str] = None, graph: bool = True, histograms: bool = False) -> None:
        super().__init__(name="tensorboard")
        self._log_dir = log_dir
        self.graph = graph
        self.histograms = histograms
        self._writers: Dict[str, Any] = {}
        self._graph_written = False

    def _writer(self, run: str) -> Any:
        if run not in self._writers:
            log_dir = self._log_dir or os.path.join(self.trainer.run_dir, "tensorboard")
            self._writers[run] = tf.summary.create_file_writer(os.path.join(log_dir, run))
        return self._writers[run]

    def on_step_end(self, step: int, logs: Dict[str, Any]) -> None:
        """Writes the step graph after the first step of the run (when it has been traced)."""
        if self._graph_written or not self.graph or not self.trainer.is_chief:
            return
        self._graph_written = True
        graph = self.trainer.step_graph()
        if graph is not None:
            with self._writer("train").as_default():
                tf.summary.graph(graph)

    def on_epoch_end(self, epoch: int, logs: Dict[str, Any]) -> None:
        """Writes the epoch's scalars (and histograms) at x = the 1-based epoch."""
        if not self.trainer.is_chief:
            return
        x = epoch + 1
        for run, pick in (("train", lambda k: not k.startswith("val_")), ("validation", lambda k: k.startswith("val_"))):
            items = {k: v for k, v in logs.items() if k not in _SKIP and isinstance(v, (int, float)) and pick(k)}
            if not items:
                continue
            writer = self._writer(run)
            with writer.as_default():
                for k, v in items.items():
                    write_scalar(k[4:] if run == "validation" else k, float(v), x)
                if run == "train" and self.histograms:
                    for path, var in self.trainer.model_variables().items():
                        tf.summary.histogram(path, var, step=x)
            writer.flush()

    def on_train_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
        """Flushes and closes the event files."""
        for w in self._writers.values():
            w.close()
        self._writers = {}
