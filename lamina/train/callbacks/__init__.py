"""Training callbacks: one concern each, called by ``Trainer.fit`` (see :mod:`lamina.train.callbacks.base`)."""

from lamina.train.callbacks.base import Callback, CallbackList
from lamina.train.callbacks.best_checkpoint import BestCheckpoint
from lamina.train.callbacks.checkpointing import Checkpointing
from lamina.train.callbacks.early_stopping import EarlyStopping
from lamina.train.callbacks.learning_rate import LearningRateLogger
from lamina.train.callbacks.metrics_log import MetricsLog, read_metrics
from lamina.train.callbacks.mlflow import MLflowLogger
from lamina.train.callbacks.non_finite import NonFiniteCheck
from lamina.train.callbacks.plots import HistoryPlot
from lamina.train.callbacks.progress import ProgressBar, epoch_line
from lamina.train.callbacks.tensorboard import TensorBoard

__all__ = [
    "Callback",
    "CallbackList",
    "BestCheckpoint",
    "Checkpointing",
    "EarlyStopping",
    "LearningRateLogger",
    "MetricsLog",
    "read_metrics",
    "MLflowLogger",
    "NonFiniteCheck",
    "HistoryPlot",
    "ProgressBar",
    "epoch_line",
    "TensorBoard",
]
