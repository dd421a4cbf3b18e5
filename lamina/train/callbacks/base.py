"""``Callback``: the hooks of the training loop, and ``CallbackList``, which calls them in order.

``Trainer.fit`` is a short loop; everything it does besides running steps and
validation lives in callbacks, each one concern: checkpointing, the best
checkpoint, early stopping, ``metrics.jsonl``, TensorBoard, the progress bar
and epoch line, plots, the non-finite check, the learning rate. Users add
their own::

    class PrintGradNorm(lm.train.Callback):
        def on_epoch_end(self, epoch, logs):
            print(epoch, logs["loss"])

    trainer.fit(data, epochs=5, callbacks=[PrintGradNorm()])

A callback that must survive a restart keeps its state in ``tf.Variable`` s
(callbacks are ``tf.Module`` s) and names itself with ``state_key``; the
Trainer's checkpoint then holds it (``callbacks/<state_key>``), so a resumed
run continues exactly (early stopping's patience counter, the best score).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import tensorflow as tf

__all__ = ["Callback", "CallbackList"]

Logs = Dict[str, Any]


class _Attached:
    """Holds the trainer outside TensorFlow's object tracking."""

    trainer: Any = None


class Callback(tf.Module):
    """Base class of training callbacks; every hook is a no-op by default.

    Attributes:
      trainer: the :class:`~lamina.train.Trainer` running ``fit`` (set before
        ``on_train_begin``).
      state_key: a stable name if the callback has variables to checkpoint,
        else ``None``.
    """

    state_key: Optional[str] = None

    def __init__(self, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self._attached = _Attached()  # a plain holder: the trainer is not a checkpoint dependency

    @property
    def trainer(self) -> Any:
        """The Trainer this callback is attached to."""
        if self._attached.trainer is None:
            raise RuntimeError(f"{type(self).__name__}: not attached to a Trainer yet")
        return self._attached.trainer

    def set_trainer(self, trainer: Any) -> None:
        """Attaches the callback to ``trainer`` (called by ``fit``).

        Args:
          trainer: the Trainer.
        """
        self._attached.trainer = trainer

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        """Called once before the first step (after a resume, if any)."""

    def on_train_end(self, logs: Optional[Logs] = None) -> None:
        """Called once after the last epoch, early stopping or ``max_steps``."""

    def on_epoch_begin(self, epoch: int, logs: Optional[Logs] = None) -> None:
        """Called before an epoch's first step (``epoch`` is 0-based; also for a resumed, partial epoch)."""

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        """Called after an epoch and its validation.

        Args:
          epoch: the 0-based epoch just finished.
          logs: ``epoch``, ``step``, the epoch means of every scalar the step
            logged, metrics, ``val_*``, ``time``, ``images_per_sec``; callbacks
            earlier in the list may have added entries (``learning_rate``).
        """

    def on_step_end(self, step: int, logs: Logs) -> None:
        """Called after every training step.

        Args:
          step: the number of steps done so far (1-based).
          logs: this step's scalars as tensors (global-batch means); reading
            one (``float(logs["loss"])``) waits for the step to finish.
        """

    def on_interrupt(self) -> Optional[str]:
        """Called on ``KeyboardInterrupt`` (SIGINT; SIGTERM under the CLI).

        Returns:
          A short note for the interruption message (e.g. the checkpoint saved), or ``None``.
        """
        return None


class CallbackList:
    """Calls a list of callbacks in order.

    Args:
      callbacks: the callbacks.
      trainer: the Trainer they are attached to.

    Raises:
      TypeError: if an entry is not a :class:`Callback`.
      ValueError: if two callbacks share a ``state_key``.
    """

    def __init__(self, callbacks: Sequence[Callback], trainer: Any) -> None:
        self.callbacks = list(callbacks)
        keys = set()
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"Trainer.fit: callbacks must be lamina.train.Callback instances, got {cb!r}")
            if cb.state_key is not None:
                if cb.state_key in keys:
                    raise ValueError(f"Trainer.fit: two callbacks keep their state under {cb.state_key!r}")
                keys.add(cb.state_key)
            cb.set_trainer(trainer)

    def stateful(self) -> Dict[str, Callback]:
        """Returns ``{state_key: callback}`` of the callbacks with checkpointed state."""
        return {cb.state_key: cb for cb in self.callbacks if cb.state_key is not None}

    def find(self, kind: type) -> Optional[Callback]:
        """Returns the first callback of type ``kind``, or ``None``."""
        return next((cb for cb in self.callbacks if isinstance(cb, kind)), None)

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        """Calls every callback's ``on_train_begin``."""
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs: Optional[Logs] = None) -> None:
        """Calls every callback's ``on_train_end``."""
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: Optional[Logs] = None) -> None:
        """Calls every callback's ``on_epoch_begin``."""
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        """Calls every callback's ``on_epoch_end`` (each sees what earlier ones added to ``logs``)."""
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_step_end(self, step: int, logs: Logs) -> None:
        """Calls every callback's ``on_step_end``."""
        for cb in self.callbacks:
            cb.on_step_end(step, logs)

    def on_interrupt(self) -> List[str]:
        """Calls every callback's ``on_interrupt``; returns their notes."""
        notes = []
        for cb in self.callbacks:
            note = cb.on_interrupt()
            if note:
                notes.append(note)
        return notes
