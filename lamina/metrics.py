"""Streaming metrics: ``update(...)`` per batch, ``result()`` at the end, ``reset()``.

Each metric keeps its state in non-trainable ``tf.Variable`` s created in the
constructor with ``synchronization=ON_READ`` and ``aggregation=SUM``. So:

* ``update`` is pure TensorFlow (no host round trip) and can run eagerly, in a
  ``tf.function`` or under XLA;
* under a ``tf.distribute`` strategy (create the metric inside
  ``strategy.scope()``), each replica accumulates its own totals inside
  ``strategy.run`` and ``result()``, called in cross-replica context, reads the
  sums over replicas, e.g. the global accuracy ``sum(correct) / sum(count)``.

Metrics are ``tf.Module`` s, so ``tf.train.Checkpoint(metric=m)`` saves their
state.
"""

from __future__ import annotations

import numbers
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

__all__ = ["Metric", "Mean", "Accuracy", "TopKAccuracy", "ConfusionMatrix", "classification_report",
           "iou_from_confusion"]


def _positive_int(value: Any, what: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {what} must be a positive int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{owner}: {what} must be > 0, got {value}")
    return int(value)


def _broadcast_weight(weight: Any, like: tf.Tensor, owner: str) -> tf.Tensor:
    """Casts ``weight`` to ``like``'s dtype and broadcasts it to ``like``'s shape.

    A weight of lower rank is aligned on the leading axes (``(N,)`` weights
    apply to every element of an ``(N, D)`` tensor); trailing size-1 axes are
    dropped first, so ``(N, 1)`` weights work for ``(N,)`` values.
    """
    w = tf.cast(tf.convert_to_tensor(weight), like.dtype)
    while w.shape.rank is not None and like.shape.rank is not None and w.shape.rank > like.shape.rank:
        if w.shape[-1] not in (1, None):
            raise ValueError(f"{owner}: sample_weight of shape {w.shape} does not fit values of shape {like.shape}")
        w = tf.squeeze(w, -1)
    while w.shape.rank is not None and like.shape.rank is not None and 0 < w.shape.rank < like.shape.rank:
        w = tf.expand_dims(w, -1)
    if w.shape.rank is not None and like.shape.rank is not None:
        try:
            tf.broadcast_static_shape(w.shape, like.shape)
        except ValueError:
            raise ValueError(
                f"{owner}: sample_weight of shape {w.shape} does not fit values of shape {like.shape}"
            ) from None
    return tf.broadcast_to(w, tf.shape(like))


def _class_ids(y: tf.Tensor) -> tf.Tensor:
    """Returns int64 class ids: argmax over the last axis of scores / one-hot."""
    return tf.argmax(y, axis=-1, output_type=tf.int64)


def _squeeze_last_one(x: tf.Tensor) -> tf.Tensor:
    if x.shape.rank is not None and x.shape.rank >= 2 and x.shape[-1] == 1:
        return tf.squeeze(x, -1)
    return x


def _true_and_pred_ids(y_true: Any, y_pred: Any, threshold: float, owner: str) -> Tuple[tf.Tensor, tf.Tensor]:
    """Turns ``(y_true, y_pred)`` into two int64 id tensors of the same shape.

    ``y_pred``: a floating ``(N, 1)`` is one binary score (``> threshold``); an
    integer tensor is ids; a floating tensor one rank above the ids is scores
    (argmax); a floating tensor of the same shape as a floating ``y_true`` of
    ``C > 1`` columns is scores against one-hot labels; otherwise ids.
    ``y_true``: one rank above the predicted ids means one-hot (argmax),
    otherwise ids (a trailing axis of 1 is dropped).
    """
    y_true = tf.convert_to_tensor(y_true)
    y_pred = tf.convert_to_tensor(y_pred)
    if y_true.shape.rank is None or y_pred.shape.rank is None:
        raise ValueError(f"{owner}: y_true and y_pred need a known rank, got {y_true.shape} and {y_pred.shape}")
    if y_pred.shape.rank == 0 or y_true.shape.rank == 0:
        raise ValueError(f"{owner}: y_true and y_pred must have a batch axis, got {y_true.shape} and {y_pred.shape}")
    t = _squeeze_last_one(y_true)
    if y_pred.dtype.is_floating and y_pred.shape.rank >= 2 and y_pred.shape[-1] == 1:
        pred = tf.cast(tf.squeeze(y_pred, -1) > tf.cast(threshold, y_pred.dtype), tf.int64)
    elif not y_pred.dtype.is_floating:
        pred = tf.cast(_squeeze_last_one(y_pred), tf.int64)
    elif y_pred.shape.rank == t.shape.rank + 1:
        pred = _class_ids(y_pred)
    elif (y_pred.shape.rank == t.shape.rank >= 2 and t.dtype.is_floating
          and t.shape[-1] == y_pred.shape[-1]):
        pred = _class_ids(y_pred)
    else:
        pred = tf.cast(y_pred, tf.int64)
    if t.shape.rank == pred.shape.rank + 1:
        true = _class_ids(t)
    else:
        true = tf.cast(t, tf.int64)
    if not true.shape.is_compatible_with(pred.shape):
        raise ValueError(
            f"{owner}: y_true of shape {y_true.shape} does not match y_pred of shape {y_pred.shape} "
            "(expected ids (N,) / (N, 1) or one-hot (N, C) labels, and ids (N,), scores (N, C) "
            "or a binary score (N, 1) predictions)"
        )
    return true, pred


class Metric(tf.Module):
    """Base class: state variables, ``update`` / ``result`` / ``reset``.

    Subclasses create their state with :meth:`add_state` in ``__init__`` and
    implement :meth:`update` and :meth:`result`.

    Args:
      name: the metric's name (defaults to the snake-cased class name).
    """

    def __init__(self, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self._state: List[tf.Variable] = []

    def describe(self) -> str:
        """Returns ``"Type 'name'"``, the prefix of this metric's errors."""
        return f"{type(self).__name__} '{self.name}'"

    def add_state(self, name: str, shape: Sequence[int] = (), dtype: tf.DType = tf.float32) -> tf.Variable:
        """Creates a zero-initialized, replica-summed state variable.

        Args:
          name: the variable's name.
          shape: its shape.
          dtype: its dtype.

        Returns:
          The ``tf.Variable`` (``trainable=False``, ``ON_READ``, ``SUM``).
        """
        with tf.init_scope(), self.name_scope:
            var = tf.Variable(
                tf.zeros(shape, dtype),
                trainable=False,
                name=name,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
            )
        self._state.append(var)
        return var

    def _check_strategy(self) -> None:
        """Fails clearly if used under a strategy it was not created under."""
        if tf.distribute.has_strategy() and self._state:
            strategy = tf.distribute.get_strategy()
            if strategy.num_replicas_in_sync > 1 and not strategy.extended.variable_created_in_scope(self._state[0]):
                raise ValueError(
                    f"{self.describe()}: updated under {type(strategy).__name__} but created outside its scope; "
                    "create the metric inside `strategy.scope()`"
                )

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Accumulates a batch into the state (implemented by subclasses)."""
        raise NotImplementedError

    def result(self) -> tf.Tensor:
        """Returns the metric over everything accumulated since the last reset."""
        raise NotImplementedError

    def reset(self) -> None:
        """Zeroes the state."""
        for var in self._state:
            var.assign(tf.zeros(var.shape, var.dtype))

    def __repr__(self) -> str:
        return f"<{self.describe()}>"


class Mean(Metric):
    """The (weighted) mean of every value passed to :meth:`update`.

    Args:
      name: defaults to ``"mean"``.
    """

    def __init__(self, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self.total = self.add_state("total")
        self.count = self.add_state("count")

    def update(self, values: Any, sample_weight: Any = None) -> None:
        """Adds ``sum(w * values)`` to the total and ``sum(w)`` to the count.

        Args:
          values: a tensor of any shape (every element counts).
          sample_weight: optional weights broadcastable to ``values`` (aligned
            on the leading axes: ``(N,)`` weights for ``(N, D)`` values).

        Raises:
          ValueError: if the weights do not fit the values.
        """
        self._check_strategy()
        values = tf.cast(tf.convert_to_tensor(values), tf.float32)
        if sample_weight is None:
            self.total.assign_add(tf.reduce_sum(values))
            self.count.assign_add(tf.cast(tf.size(values), tf.float32))
        else:
            w = _broadcast_weight(sample_weight, values, self.describe())
            self.total.assign_add(tf.reduce_sum(values * w))
            self.count.assign_add(tf.reduce_sum(w))

    def result(self) -> tf.Tensor:
        """Returns ``total / count`` as a float32 scalar (0 before any update)."""
        return tf.math.divide_no_nan(tf.convert_to_tensor(self.total), tf.convert_to_tensor(self.count))


class Accuracy(Metric):
    """Fraction of correct predictions (weighted by ``sample_weight``).

    ``y_true``: class ids ``(N,)`` / ``(N, 1)`` or one-hot ``(N, C)``.
    ``y_pred``: scores (logits or probabilities) ``(N, C)``, compared by argmax;
    ids ``(N,)``; or one binary score ``(N, 1)``, thresholded (``> threshold``).

    Args:
      threshold: the binary decision threshold (0.5 for probabilities; use
        0.0 for logits).
      name: defaults to ``"accuracy"``.
    """

    def __init__(self, threshold: float = 0.5, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
            raise TypeError(f"{self.describe()}: threshold must be a float, got {threshold!r}")
        self.threshold = float(threshold)
        self.total = self.add_state("total")
        self.count = self.add_state("count")

    def update(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Accumulates the (weighted) number of correct predictions.

        Args:
          y_true: labels (ids or one-hot).
          y_pred: predictions (scores or ids).
          sample_weight: optional per-sample weights ``(N,)``.

        Raises:
          ValueError: if the shapes do not fit.
        """
        self._check_strategy()
        true, pred = _true_and_pred_ids(y_true, y_pred, self.threshold, self.describe())
        correct = tf.cast(tf.equal(true, pred), tf.float32)
        if sample_weight is None:
            self.total.assign_add(tf.reduce_sum(correct))
            self.count.assign_add(tf.cast(tf.size(correct), tf.float32))
        else:
            w = _broadcast_weight(sample_weight, correct, self.describe())
            self.total.assign_add(tf.reduce_sum(correct * w))
            self.count.assign_add(tf.reduce_sum(w))

    def result(self) -> tf.Tensor:
        """Returns the accuracy in ``[0, 1]`` (0 before any update)."""
        return tf.math.divide_no_nan(tf.convert_to_tensor(self.total), tf.convert_to_tensor(self.count))


class TopKAccuracy(Metric):
    """Fraction of samples whose true class is among the ``k`` highest scores.

    Ties with the ``k``-th score count as hits (``tf.math.in_top_k``).

    Args:
      k: how many top classes count (> 0).
      name: defaults to ``"top_k_accuracy"``.

    Raises:
      ValueError / TypeError: for a bad ``k``.
    """

    def __init__(self, k: int = 5, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self.k = _positive_int(k, "k", self.describe())
        self.total = self.add_state("total")
        self.count = self.add_state("count")

    def update(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Accumulates the (weighted) number of top-k hits.

        Args:
          y_true: class ids ``(N,)`` / ``(N, 1)`` or one-hot ``(N, C)``.
          y_pred: scores ``(N, C)``.
          sample_weight: optional per-sample weights ``(N,)``.

        Raises:
          ValueError: if the shapes do not fit.
        """
        self._check_strategy()
        owner = self.describe()
        y_pred = tf.convert_to_tensor(y_pred)
        y_true = tf.convert_to_tensor(y_true)
        if y_pred.shape.rank != 2:
            raise ValueError(f"{owner}: y_pred must be scores of shape (N, C), got {y_pred.shape}")
        if y_true.shape.rank == 2 and y_true.shape[-1] != 1:
            true = _class_ids(y_true)
        else:
            true = tf.reshape(tf.cast(y_true, tf.int64), [-1])
        if not true.shape.is_compatible_with(y_pred.shape[:1]):
            raise ValueError(f"{owner}: y_true of shape {y_true.shape} does not match y_pred of shape {y_pred.shape}")
        hits = tf.cast(tf.math.in_top_k(true, tf.cast(y_pred, tf.float32), self.k), tf.float32)
        if sample_weight is None:
            self.total.assign_add(tf.reduce_sum(hits))
            self.count.assign_add(tf.cast(tf.size(hits), tf.float32))
        else:
            w = _broadcast_weight(sample_weight, hits, owner)
            self.total.assign_add(tf.reduce_sum(hits * w))
            self.count.assign_add(tf.reduce_sum(w))

    def result(self) -> tf.Tensor:
        """Returns the top-k accuracy in ``[0, 1]`` (0 before any update)."""
        return tf.math.divide_no_nan(tf.convert_to_tensor(self.total), tf.convert_to_tensor(self.count))


class ConfusionMatrix(Metric):
    """Counts of (true class, predicted class) pairs: a ``(C, C)`` matrix.

    Row ``i``, column ``j`` counts samples of true class ``i`` predicted as
    ``j`` (``sklearn.metrics.confusion_matrix``'s layout). Pairs with an id
    outside ``[0, C)`` are ignored.

    Args:
      num_classes: ``C`` (> 0).
      dtype: the counts' dtype (int64 by default; sample weights are cast to it,
        so use a float dtype for fractional weights).
      name: defaults to ``"confusion_matrix"``.

    Raises:
      ValueError / TypeError: for a bad ``num_classes``.
    """

    def __init__(self, num_classes: int, dtype: tf.DType = tf.int64, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self.num_classes = _positive_int(num_classes, "num_classes", self.describe())
        self._dtype = tf.as_dtype(dtype)
        self.matrix = self.add_state("matrix", (self.num_classes, self.num_classes), self._dtype)

    def update(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Adds the batch's (weighted) pair counts.

        Args:
          y_true: class ids ``(N,)`` / ``(N, 1)`` or one-hot ``(N, C)``.
          y_pred: ids ``(N,)`` or scores ``(N, C)`` (argmax).
          sample_weight: optional per-sample weights ``(N,)``.

        Raises:
          ValueError: if the shapes do not fit.
        """
        self._check_strategy()
        c = self.num_classes
        true, pred = _true_and_pred_ids(y_true, y_pred, 0.5, self.describe())
        true, pred = tf.reshape(true, [-1]), tf.reshape(pred, [-1])
        if sample_weight is None:
            w = tf.ones_like(true, dtype=self._dtype)
        else:
            w = tf.reshape(_broadcast_weight(sample_weight, tf.zeros(tf.shape(true), self._dtype), self.describe()), [-1])
        valid = (true >= 0) & (true < c) & (pred >= 0) & (pred < c)
        cell = tf.where(valid, true * c + pred, tf.cast(c * c, tf.int64))
        counts = tf.math.unsorted_segment_sum(w, cell, c * c + 1)[: c * c]
        self.matrix.assign_add(tf.reshape(counts, (c, c)))

    def result(self) -> tf.Tensor:
        """Returns the ``(C, C)`` count matrix (rows: true, columns: predicted)."""
        return tf.convert_to_tensor(self.matrix)


def iou_from_confusion(confusion_matrix: Any) -> Tuple[List[Optional[float]], float]:
    """Per-class intersection over union and their mean (mIoU) from a ``(C, C)`` confusion matrix.

    ``IoU_c = M[c, c] / (sum of row c + sum of column c - M[c, c])``: true
    positives over the pixels (or examples) that are ``c`` in the truth or the
    prediction. A class that appears in neither has no IoU (``None``) and is
    left out of the mean.

    Args:
      confusion_matrix: counts, rows true, columns predicted (:class:`ConfusionMatrix`).

    Returns:
      ``(per-class IoU or None, mean IoU over the classes that have one)``.
    """
    import numpy as np

    m = np.asarray(confusion_matrix, np.float64)
    tp = np.diag(m)
    union = m.sum(0) + m.sum(1) - tp
    per_class = [float(t / u) if u > 0 else None for t, u in zip(tp, union)]
    present = [v for v in per_class if v is not None]
    return per_class, float(np.mean(present)) if present else 0.0


def classification_report(
    confusion_matrix: Any,
    class_names: Optional[Sequence[Any]] = None,
    *,
    digits: int = 3,
    output_dict: bool = False,
) -> Union[str, Dict[str, Any]]:
    """Per-class precision, recall, F1 and support of a confusion matrix (scikit-learn's report).

    The matrix is handed to ``sklearn.metrics.classification_report`` as
    ``(true, predicted)`` pairs, one per counted example (fractional counts:
    one pair per cell, weighted by the count), so the numbers are exactly
    scikit-learn's; a class never predicted (or absent) gets 0, not a warning.

    Args:
      confusion_matrix: ``(C, C)`` counts, rows true class, columns predicted
        (what :class:`ConfusionMatrix` returns; a tensor or an array).
      class_names: one name per class (default ``"0"``, ``"1"``, ...).
      digits: decimals in the text report.
      output_dict: return scikit-learn's dict (``{name: {"precision",
        "recall", "f1-score", "support"}, "accuracy", "macro avg",
        "weighted avg"}``) instead of the text.

    Returns:
      The text report (one row per class, then accuracy, macro and weighted
      averages) or the dict.

    Raises:
      ValueError: for a matrix that is not square, has negative or non-finite
        counts, or a wrong number of class names.
    """
    import numpy as np
    from sklearn import metrics as skm

    matrix = np.asarray(confusion_matrix.numpy() if hasattr(confusion_matrix, "numpy") else confusion_matrix, np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 1:
        raise ValueError(f"classification_report: expected a square (C, C) confusion matrix, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0):
        raise ValueError("classification_report: the confusion matrix must hold finite, non-negative counts")
    c = matrix.shape[0]
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"classification_report: {len(names)} class names for a {c}x{c} confusion matrix")
    true, pred = np.divmod(np.arange(c * c), c)
    weights = matrix.ravel()
    if not weights.sum():
        raise ValueError("classification_report: the confusion matrix is empty (no examples)")
    if np.all(weights == np.round(weights)):  # counts: one pair per example, so supports stay integers
        counts = weights.astype(np.int64)
        true, pred, weights = np.repeat(true, counts), np.repeat(pred, counts), None
    return skm.classification_report(true, pred, labels=list(range(c)), target_names=names, sample_weight=weights,
                                     digits=int(digits), output_dict=output_dict, zero_division=0)
