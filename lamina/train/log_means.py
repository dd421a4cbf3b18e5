"""``LogMeans``: the running, example-weighted means of whatever scalars a train step logs."""

from __future__ import annotations

import re
from typing import Dict, Iterable, List

import tensorflow as tf

__all__ = ["LogMeans"]


class _Keys:
    def __init__(self) -> None:
        self.order: List[str] = []
        self.add = None  # the compiled update (kept here: not a tracked attribute)


class LogMeans(tf.Module):
    """Per-name ``total`` and ``count`` variables, created the first time a name is logged.

    The compiled step returns each scalar's sum over the global batch (already
    reduced across replicas) and the number of examples; :meth:`update` adds
    them outside the step, so the step's graph creates no variable (a
    ``tf.function`` that creates variables is traced twice): the variables of
    new names are created eagerly, then one small ``tf.function`` adds (one
    call per step instead of three eager ops per name). The variables
    are plain host variables in the Trainer's checkpoint, so a run resumed
    mid-epoch reports the same epoch means as an uninterrupted one.

    Args:
      name: module name.
    """

    def __init__(self, name: str = "log_means") -> None:
        super().__init__(name=name)
        self.totals: Dict[str, tf.Variable] = {}
        self.counts: Dict[str, tf.Variable] = {}
        self._keys = _Keys()  # the names in first-logged order (not tracked)

    def _ensure(self, key: str) -> None:
        if key in self.totals:
            return
        with tf.init_scope():
            safe = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in key)
            self.totals[key] = tf.Variable(0.0, dtype=tf.float64, trainable=False, name=f"{safe}_total")
            self.counts[key] = tf.Variable(0.0, dtype=tf.float64, trainable=False, name=f"{safe}_count")
        self._keys.order.append(key)

    def ensure_saved(self, checkpoint_keys: Iterable[str], prefix: str) -> None:
        """Creates the variables a checkpoint holds for this module (saved as ``<prefix>/totals/<name>/...``).

        Called before a restore: a variable created afterwards would be restored
        later, from whatever the checkpoint's files hold by then (the number may
        have been saved again), or not at all before the epoch's means are read.
        Restored names keep their sorted order.

        Args:
          checkpoint_keys: the checkpoint's variable keys.
          prefix: this module's path in the checkpoint (``"train_logs"``).
        """
        pattern = re.compile(re.escape(prefix) + r"/totals/(.+)/\.ATTRIBUTES/VARIABLE_VALUE")
        names = []
        for key in checkpoint_keys:
            match = pattern.fullmatch(key)
            if match:  # undo TensorFlow's escaping of object names ("." -> "..", "/" -> ".S")
                names.append(re.sub(r"\.(.)", lambda m: "/" if m.group(1) == "S" else m.group(1), match.group(1)))
        for name in sorted(names):
            self._ensure(name)

    def update(self, sums: Dict[str, tf.Tensor], weight: tf.Tensor) -> None:
        """Adds a step: ``sums[k]`` is the weighted sum of ``k`` over the global batch of ``weight`` examples.

        Args:
          sums: per-name weighted sums (float32 scalars).
          weight: the number of examples (float32 scalar).
        """
        for key in sums:
            self._ensure(key)
        if self._keys.add is None:
            self._keys.add = tf.function(self._add, autograph=False)
        self._keys.add(dict(sums), weight)  # traced again only when the logged names change

    def _add(self, sums: Dict[str, tf.Tensor], weight: tf.Tensor) -> None:
        w = tf.cast(weight, tf.float64)
        for key, value in sums.items():
            self.totals[key].assign_add(tf.cast(value, tf.float64))
            self.counts[key].assign_add(w)

    def result(self) -> Dict[str, float]:
        """Returns ``{name: mean}`` as Python floats, in the order first logged."""
        out = {}
        for key in self._keys.order:
            count = float(self.counts[key].numpy())
            out[key] = float(self.totals[key].numpy()) / count if count else float("nan")
        return out

    def reset(self) -> None:
        """Zeroes every total and count."""
        for key in self._keys.order:
            self.totals[key].assign(0.0)
            self.counts[key].assign(0.0)
