"""The ``Optimizer`` base class: step counter, learning rate, clipping, lazy slots.

A subclass declares its slot names (per-variable state such as Adam's ``m`` and
``v``) and implements ``_update(var, grad, slots, lr, step)`` for one variable.
The base class:

* keeps an int64 ``iterations`` counter (alias ``step``), incremented by every
  :meth:`Optimizer.apply`;
* evaluates the learning rate (a float, stored in a variable so it can be
  changed without retracing, or a schedule ``step -> lr``) at the current
  ``iterations``, i.e. *before* the increment: the first update uses
  ``schedule(0)``;
* averages the gradients across replicas when called inside ``strategy.run``
  of a multi-replica ``tf.distribute`` strategy, then clips them;
* creates the slots lazily, on the first ``apply`` that sees a variable, under
  ``tf.init_scope()`` (so that first ``apply`` may be inside a ``tf.function``,
  even one compiled with ``jit_compile=True``). Under a ``tf.distribute``
  strategy they are created in cross-replica context (``merge_call``) and
  colocated with their variable, so they are mirrored like it;
* stores each slot kind in a tracked list attribute (``self.m``, ``self.v``,
  ... in the order the variables were first seen), so
  ``tf.train.Checkpoint(optimizer=opt)`` saves and restores them; a fresh
  optimizer restored from a checkpoint gets its slot values as the slots are
  created (TensorFlow's deferred restoration), provided the variables are
  passed in the same order.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from lamina.optim import clipping
from lamina.optim.groups import ParamGroup, no_decay_rule

__all__ = ["Optimizer", "LearningRate", "NoDecay"]

LearningRate = Union[float, Callable[[tf.Tensor], tf.Tensor]]
NoDecay = Union[None, str, Callable[[tf.Variable], bool]]


def check_float(
    value: Any,
    what: str,
    owner: str,
    low: float = 0.0,
    high: float = math.inf,
    high_inclusive: bool = True,
    low_inclusive: bool = True,
) -> float:
    """Checks that ``value`` is a real number in the given interval.

    Args:
      value: the value to check.
      what: the argument's name, for the message.
      owner: the object's description, for the message.
      low: the lower bound.
      high: the upper bound.
      high_inclusive: whether ``high`` itself is allowed.
      low_inclusive: whether ``low`` itself is allowed.

    Returns:
      ``float(value)``.

    Raises:
      TypeError: if ``value`` is not a number.
      ValueError: if it is out of range or not finite.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {what} must be a float, got {value!r}")
    value = float(value)
    ok = math.isfinite(value)
    ok = ok and (value >= low if low_inclusive else value > low)
    ok = ok and (value <= high if high_inclusive else value < high)
    if not ok:
        interval = f"{'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
        raise ValueError(f"{owner}: {what} must be in {interval}, got {value}")
    return value


class _VarIndex:
    """Maps variables (by reference) to their slot position. Not tracked."""

    def __init__(self) -> None:
        self.positions: Dict[Any, int] = {}


def _base_name(var: tf.Variable) -> str:
    name = getattr(var, "name", None) or "variable"
    return name.split(":")[0].replace("/", "_")


class Optimizer(tf.Module):
    """Base class of lamina's optimizers.

    Args:
      learning_rate: a float >= 0 or a callable ``step -> lr`` (e.g. a
        :mod:`lamina.optim.schedules` schedule) evaluated at ``iterations``.
      slots: the names of the per-variable slot kinds (set by subclasses).
      global_clipnorm: clip all gradients together to this global L2 norm.
      clipnorm: clip each gradient to this L2 norm.
      clipvalue: clip each gradient element to ``[-clipvalue, clipvalue]``.
      groups: :class:`~lamina.optim.ParamGroup` s giving some variables their
        own learning-rate multiplier and/or weight decay (first match wins).
      no_weight_decay: ``"bias_and_norm"`` (no decay on variables of rank <= 1:
        biases, norm scales and offsets) or a predicate ``var -> bool``.
      name: module name (defaults to the snake-cased class name).

    At most one of ``global_clipnorm``, ``clipnorm`` and ``clipvalue`` may be set.

    Raises:
      ValueError / TypeError: for a negative or non-numeric learning rate, a bad
        clipping value or more than one clipping option.
    """

    def __init__(
        self,
        learning_rate: LearningRate,
        *,
        slots: Sequence[str] = (),
        global_clipnorm: Optional[float] = None,
        clipnorm: Optional[float] = None,
        clipvalue: Optional[float] = None,
        groups: Sequence[ParamGroup] = (),
        no_weight_decay: NoDecay = None,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name=name)
        owner = self.describe()
        groups = tuple(groups)
        for group in groups:
            if not isinstance(group, ParamGroup):
                raise TypeError(f"{owner}: groups must be lamina.optim.ParamGroup objects, got {group!r}")
        self._groups = groups
        self._no_decay = no_decay_rule(no_weight_decay, owner)
        self._group_cache: Dict[Any, Optional[ParamGroup]] = {}
        clips = {"global_clipnorm": global_clipnorm, "clipnorm": clipnorm, "clipvalue": clipvalue}
        given = [k for k, v in clips.items() if v is not None]
        if len(given) > 1:
            raise ValueError(f"{owner}: set at most one of {list(clips)}, got {given}")
        for key in given:
            clips[key] = check_float(clips[key], key, owner, low=0.0, low_inclusive=False, high_inclusive=False)
        self.global_clipnorm: Optional[float] = clips["global_clipnorm"]
        self.clipnorm: Optional[float] = clips["clipnorm"]
        self.clipvalue: Optional[float] = clips["clipvalue"]

        self._schedule: Optional[Callable[[tf.Tensor], tf.Tensor]] = None
        self._learning_rate: Optional[tf.Variable] = None
        with tf.init_scope(), self.name_scope:
            self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
            if callable(learning_rate):
                self._schedule = learning_rate
            else:
                lr = check_float(learning_rate, "learning_rate", owner, high_inclusive=False)
                self._learning_rate = tf.Variable(lr, dtype=tf.float32, trainable=False, name="learning_rate")
        self._slot_names: Tuple[str, ...] = tuple(slots)
        for slot in self._slot_names:
            setattr(self, slot, [])
        self._index = _VarIndex()

    # ------------------------------------------------------------- properties
    def describe(self) -> str:
        """Returns ``"Type 'name'"``, the prefix of this optimizer's errors."""
        return f"{type(self).__name__} '{self.name}'"

    @property
    def step(self) -> tf.Variable:
        """The number of updates applied so far (int64 variable; same as ``iterations``)."""
        return self.iterations

    @property
    def learning_rate(self) -> Union[tf.Variable, Callable[[tf.Tensor], tf.Tensor]]:
        """The schedule, or the float32 variable holding a constant learning rate.

        Assigning a float updates that variable (no retracing needed); assigning
        a callable replaces the schedule (functions already traced keep the old
        one until retraced).
        """
        return self._schedule if self._schedule is not None else self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: LearningRate) -> None:
        if callable(value) and not isinstance(value, tf.Variable):
            self._schedule = value
            return
        if isinstance(value, tf.Variable):
            value = float(value.numpy())
        lr = check_float(value, "learning_rate", self.describe(), high_inclusive=False)
        if self._learning_rate is None:
            with tf.init_scope(), self.name_scope:
                self._learning_rate = tf.Variable(lr, dtype=tf.float32, trainable=False, name="learning_rate")
        else:
            self._learning_rate.assign(lr)
        self._schedule = None

    def current_learning_rate(self) -> tf.Tensor:
        """Returns the learning rate the next :meth:`apply` will use (float32 scalar)."""
        if self._schedule is not None:
            return tf.cast(self._schedule(self.iterations.read_value()), tf.float32)
        return tf.convert_to_tensor(self._learning_rate)

    def config(self) -> Dict[str, Any]:
        """Returns the hyper-parameters as a dict (learning rate as given or its current value)."""
        lr: Any = self._schedule if self._schedule is not None else float(self._learning_rate.numpy())
        out: Dict[str, Any] = {"learning_rate": lr}
        out.update(self._hyper())
        for key in ("global_clipnorm", "clipnorm", "clipvalue"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    def _hyper(self) -> Dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        try:
            args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        except Exception:  # pragma: no cover - e.g. inside a graph
            args = "..."
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ slots
    def slots_for(self, var: tf.Variable) -> Dict[str, tf.Variable]:
        """Returns ``{slot name: slot variable}`` for ``var``.

        Args:
          var: a variable this optimizer has updated.

        Returns:
          The slot variables.

        Raises:
          KeyError: if ``var`` has no slots yet.
        """
        pos = self._index.positions.get(var.ref())
        if pos is None:
            raise KeyError(f"{self.describe()}: no slots for variable {getattr(var, 'name', var)!r}")
        return {slot: getattr(self, slot)[pos] for slot in self._slot_names}

    @staticmethod
    def compute_dtype(var: tf.Variable) -> tf.DType:
        """Returns the dtype of ``var``'s slots and update math.

        Args:
          var: a variable.

        Returns:
          ``float32`` for half-precision (float16 / bfloat16) variables, else
          ``var.dtype``.
        """
        return tf.float32 if var.dtype in (tf.float16, tf.bfloat16) else var.dtype

    def read(self, var: tf.Variable) -> tf.Tensor:
        """Returns ``var``'s value in :meth:`compute_dtype`.

        Args:
          var: a variable.

        Returns:
          A tensor.
        """
        return tf.cast(tf.convert_to_tensor(var), self.compute_dtype(var))

    def _create_slots(self, variables: Sequence[tf.Variable]) -> None:
        """Creates zero slots for the variables not seen before (eagerly)."""
        strategy = tf.distribute.get_strategy()
        with tf.init_scope(), self.name_scope:
            for var in variables:
                if var.ref() in self._index.positions:
                    continue
                pos = len(self._index.positions)
                with strategy.extended.colocate_vars_with(var):
                    for slot in self._slot_names:
                        slot_var = tf.Variable(
                            tf.zeros(var.shape, self.compute_dtype(var)),
                            trainable=False,
                            name=f"{slot}/{pos}_{_base_name(var)}",
                        )
                        getattr(self, slot).append(slot_var)
                self._index.positions[var.ref()] = pos

    def _ensure_slots(self, variables: Sequence[tf.Variable]) -> None:
        missing = []
        seen = set()
        for v in variables:
            if v.ref() not in self._index.positions and v.ref() not in seen:
                seen.add(v.ref())
                missing.append(v)
        if not missing:
            return
        if not self._slot_names:
            for v in missing:
                self._index.positions[v.ref()] = len(self._index.positions)
            return
        ctx = tf.distribute.get_replica_context()
        if tf.distribute.has_strategy() and ctx is not None:
            # In a replica of a distribution strategy: create the slots once, in
            # cross-replica context, so they are mirrored like their variables.
            ctx.merge_call(lambda _strategy: self._create_slots(missing))
        else:
            self._create_slots(missing)

    # ----------------------------------------------------- per-variable values
    def _group_of(self, var: tf.Variable) -> Optional[ParamGroup]:
        key = var.ref()
        if key not in self._group_cache:
            self._group_cache[key] = next((g for g in self._groups if g.contains(var)), None)
        return self._group_cache[key]

    def lr_scale_for(self, var: tf.Variable) -> float:
        """Returns the learning-rate multiplier of ``var`` (its group's, else 1).

        Args:
          var: a variable.

        Returns:
          A float >= 0.
        """
        group = self._group_of(var)
        return group.lr_scale if group is not None else 1.0

    def weight_decay_for(self, var: tf.Variable) -> float:
        """Returns the weight decay applied to ``var``.

        Its group's decay if it sets one, else 0 when ``no_weight_decay``
        matches it, else the optimizer's ``weight_decay`` (0 if it has none).

        Args:
          var: a variable.

        Returns:
          A float >= 0.
        """
        group = self._group_of(var)
        if group is not None and group.weight_decay is not None:
            return group.weight_decay
        if self._no_decay is not None and self._no_decay(var):
            return 0.0
        return float(getattr(self, "weight_decay", 0.0) or 0.0)

    # ------------------------------------------------------------ aggregation
    def build(self, variables: Sequence[tf.Variable]) -> None:
        """Creates the slots of the variables not seen before (a no-op for known ones).

        Called by :meth:`apply`; call it yourself to create every slot before
        the first step (the Trainer does), or inside a step outside any
        ``tf.cond`` branch (under a strategy it makes a ``merge_call``).

        Args:
          variables: the variables this optimizer will update.
        """
        self._ensure_slots(list(variables))

    @staticmethod
    def aggregate_gradients(grads: Sequence[Optional[tf.Tensor]], reduction: str = "mean") -> List[Optional[tf.Tensor]]:
        """All-reduces gradients across the replicas of the current strategy.

        The one implementation of cross-replica aggregation in lamina: the
        Trainer's step and :meth:`apply` both use it. Outside a multi-replica
        replica context the gradients are returned unchanged.

        Args:
          grads: gradients (``None`` entries pass through; ``IndexedSlices`` are made dense).
          reduction: ``"mean"`` (per-replica losses that are batch means) or
            ``"sum"`` (losses already scaled by ``1 / global batch``).

        Returns:
          The aggregated gradients.

        Raises:
          ValueError: for another ``reduction``.
        """
        if reduction not in ("mean", "sum"):
            raise ValueError(f"aggregate_gradients: reduction must be 'mean' or 'sum', got {reduction!r}")
        grads = list(grads)
        ctx = tf.distribute.get_replica_context()
        strategy = tf.distribute.get_strategy()
        if ctx is None or strategy.num_replicas_in_sync <= 1:
            return grads
        present = [i for i, g in enumerate(grads) if g is not None]
        if not present:
            return grads
        op = tf.distribute.ReduceOp.MEAN if reduction == "mean" else tf.distribute.ReduceOp.SUM
        reduced = ctx.all_reduce(op, [tf.convert_to_tensor(grads[i]) for i in present])
        for i, g in zip(present, reduced):
            grads[i] = g
        return grads

    # ------------------------------------------------------------------ apply
    def _check_strategy(self) -> tf.distribute.Strategy:
        strategy = tf.distribute.get_strategy()
        if strategy.num_replicas_in_sync > 1 and not strategy.extended.variable_created_in_scope(self.iterations):
            raise ValueError(
                f"{self.describe()}: used under {type(strategy).__name__} but created outside its scope; "
                "create the optimizer inside `strategy.scope()`"
            )
        return strategy

    def _clip(self, grads: List[tf.Tensor]) -> List[tf.Tensor]:
        if self.global_clipnorm is not None:
            grads, _ = clipping.clip_by_global_norm(grads, self.global_clipnorm)
        elif self.clipnorm is not None:
            grads = clipping.clip_by_norm(grads, self.clipnorm)
        elif self.clipvalue is not None:
            grads = clipping.clip_by_value(grads, self.clipvalue)
        return list(grads)

    def apply(
        self,
        grads: Sequence[Optional[Union[tf.Tensor, tf.IndexedSlices]]],
        variables: Sequence[tf.Variable],
        *,
        aggregate: Optional[str] = "mean",
    ) -> None:
        """Applies one update: ``variables[i]`` moves along ``-grads[i]``.

        Pairs whose gradient is ``None`` are skipped (their slots are still
        created). ``IndexedSlices`` gradients are made dense. Gradients are cast
        to their variable's dtype (float32 for half-precision variables, whose
        update is computed in float32).

        Args:
          grads: one gradient (or ``None``) per variable.
          variables: the variables to update (``tf.Variable`` s, mirrored ones
            under ``tf.distribute``), in the same order at every call.
          aggregate: inside ``strategy.run`` of a multi-replica strategy, how
            the replicas' gradients are combined before the update: ``"mean"``
            (default: right for per-replica losses that are batch means),
            ``"sum"`` (for losses scaled by ``1 / global_batch``) or ``None``
            (the gradients are already all-reduced). Ignored otherwise.

        Raises:
          ValueError: for mismatched lengths, no variables, no gradient at all,
            a non-floating variable, a bad ``aggregate``, or use under a
            strategy the optimizer was not created in.
        """
        owner = self.describe()
        grads = list(grads)
        variables = list(variables)
        if len(grads) != len(variables):
            raise ValueError(f"{owner}: got {len(grads)} gradients for {len(variables)} variables")
        if not variables:
            raise ValueError(f"{owner}: apply() got no variables")
        if aggregate not in ("mean", "sum", None):
            raise ValueError(f"{owner}: aggregate must be 'mean', 'sum' or None, got {aggregate!r}")
        for v in variables:
            if not hasattr(v, "assign_sub") or not v.dtype.is_floating:
                raise ValueError(f"{owner}: can only update floating-point tf.Variables, got {v!r}")
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        if not pairs:
            names = [getattr(v, "name", "?") for v in variables[:5]]
            raise ValueError(
                f"{owner}: no gradient for any of the {len(variables)} variables ({names}...); "
                "is the loss connected to them?"
            )
        self._check_strategy()
        grads = [tf.convert_to_tensor(g) for g, _ in pairs]
        targets = [v for _, v in pairs]
        if aggregate is not None:
            grads = self.aggregate_gradients(grads, aggregate)
        grads = self._clip(grads)
        self._ensure_slots(variables)
        lr = self.current_learning_rate()
        t = self.iterations.read_value() + 1
        for g, v in zip(grads, targets):
            slots = self.slots_for(v)
            scale = self.lr_scale_for(v)
            lr_v = lr if scale == 1.0 else lr * scale
            self._update(v, tf.cast(g, self.compute_dtype(v)), slots, lr_v, tf.cast(t, tf.float32))
        self.iterations.assign_add(1)

    def _update(
        self,
        var: tf.Variable,
        grad: tf.Tensor,
        slots: Dict[str, tf.Variable],
        lr: tf.Tensor,
        step: tf.Tensor,
    ) -> None:
        """Updates one variable in place (implemented by subclasses).

        Args:
          var: the variable.
          grad: its gradient, in :meth:`compute_dtype` ``(var)``.
          slots: its slot variables by name.
          lr: the learning rate (float32 scalar; cast it to ``var.dtype``).
          step: the 1-based index of this update (float32 scalar).
        """
        raise NotImplementedError
