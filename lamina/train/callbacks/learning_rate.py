"""``LearningRateLogger``: adds the learning rate(s) to each epoch's logs."""

from __future__ import annotations

import math
from typing import Any, Dict

from lamina.train.callbacks.base import Callback

__all__ = ["LearningRateLogger"]


def _lr(optimizer: Any) -> float:
    fn = getattr(optimizer, "current_learning_rate", None)
    if fn is None:
        return math.nan
    return float(fn())


class LearningRateLogger(Callback):
    """``logs["learning_rate"]`` (one optimizer) or ``logs["learning_rate/<name>"]`` (several).

    The value is the rate the next update will use.
    """

    def __init__(self) -> None:
        super().__init__(name="learning_rate_logger")

    def on_epoch_end(self, epoch: int, logs: Dict[str, Any]) -> None:
        """Adds the learning rate(s) to ``logs``."""
        optimizers = self.trainer.optimizers
        if len(optimizers) == 1:
            logs["learning_rate"] = _lr(next(iter(optimizers.values())))
        else:
            for name, opt in optimizers.items():
                logs[f"learning_rate/{name}"] = _lr(opt)
