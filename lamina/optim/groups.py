"""Parameter groups: a different learning rate or weight decay for some variables.

``ParamGroup(members, lr_scale=0.1)`` multiplies the learning rate of its
variables (a fine-tuned backbone, say) and ``weight_decay=0.0`` overrides the
optimizer's decay for them. ``no_weight_decay="bias_and_norm"`` is the usual
rule in one argument: no decay on variables of rank <= 1 (biases, norm scales
and offsets, positional and class tokens are rank >= 2 and keep it).

    opt = lm.optim.AdamW(1e-3, weight_decay=0.05, no_weight_decay="bias_and_norm",
                         groups=[lm.optim.ParamGroup(model.blocks, lr_scale=0.1)])

The first group that contains a variable decides for it; variables in no
group use the optimizer's own values.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable, Optional, Sequence, Set, Union

import tensorflow as tf

__all__ = ["ParamGroup", "NO_DECAY_RULES", "no_decay_rule"]

Members = Union[tf.Module, Sequence[Any], Callable[[tf.Variable], bool]]

NO_DECAY_RULES = ("bias_and_norm",)


def _is_low_rank(var: tf.Variable) -> bool:
    return var.shape.rank is not None and var.shape.rank <= 1


def no_decay_rule(rule: Union[None, str, Callable[[tf.Variable], bool]], owner: str) -> Optional[Callable[[tf.Variable], bool]]:
    """Resolves a ``no_weight_decay`` argument to a predicate ``var -> bool``.

    Args:
      rule: ``None``, ``"bias_and_norm"`` (variables of rank <= 1) or a predicate.
      owner: the optimizer's description, for errors.

    Returns:
      The predicate, or ``None``.

    Raises:
      ValueError: for an unknown rule name.
      TypeError: for anything else.
    """
    if rule is None:
        return None
    if isinstance(rule, str):
        if rule not in NO_DECAY_RULES:
            raise ValueError(f"{owner}: no_weight_decay must be one of {list(NO_DECAY_RULES)} or a function, got {rule!r}")
        return _is_low_rank
    if callable(rule):
        return rule
    raise TypeError(f"{owner}: no_weight_decay must be a rule name or a function var -> bool, got {rule!r}")


class ParamGroup:
    """A set of variables with their own learning-rate multiplier and/or weight decay.

    Args:
      members: a module (its variables, also those it creates later), a list of
        variables and/or modules, or a predicate ``var -> bool``.
      lr_scale: multiplies the learning rate for these variables (>= 0).
      weight_decay: replaces the optimizer's weight decay for them (``None``: keep it).
      name: a label for error messages.

    Raises:
      ValueError / TypeError: for a negative or non-numeric ``lr_scale`` /
        ``weight_decay`` or unusable ``members``.
    """

    def __init__(
        self,
        members: Members,
        lr_scale: float = 1.0,
        weight_decay: Optional[float] = None,
        name: Optional[str] = None,
    ) -> None:
        self.name = name or "group"
        owner = f"ParamGroup '{self.name}'"
        for what, value in (("lr_scale", lr_scale), ("weight_decay", weight_decay)):
            if value is None and what == "weight_decay":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{owner}: {what} must be a finite number >= 0, got {value!r}")
        if lr_scale == 1.0 and weight_decay is None:
            raise ValueError(f"{owner}: sets neither lr_scale nor weight_decay, so it would change nothing")
        if not (isinstance(members, tf.Module) or callable(members) or isinstance(members, (list, tuple))):
            raise TypeError(f"{owner}: members must be a module, a list of variables/modules or a predicate, got {members!r}")
        self.members = members
        self.lr_scale = float(lr_scale)
        self.weight_decay = None if weight_decay is None else float(weight_decay)

    def _refs(self) -> Set[Any]:
        items: Iterable[Any] = [self.members] if isinstance(self.members, tf.Module) else self.members
        refs: Set[Any] = set()
        for item in items:
            if isinstance(item, tf.Module):
                refs.update(v.ref() for v in item.variables)
            elif isinstance(item, tf.Variable) or hasattr(item, "ref"):
                refs.add(item.ref())
            else:
                raise TypeError(f"ParamGroup '{self.name}': members must be variables or modules, got {item!r}")
        return refs

    def contains(self, var: tf.Variable) -> bool:
        """Whether ``var`` belongs to this group (modules are looked up now, so later-built variables count)."""
        if callable(self.members) and not isinstance(self.members, tf.Module):
            return bool(self.members(var))
        return var.ref() in self._refs()

    def __repr__(self) -> str:
        parts = [f"lr_scale={self.lr_scale}"] if self.lr_scale != 1.0 else []
        if self.weight_decay is not None:
            parts.append(f"weight_decay={self.weight_decay}")
        return f"ParamGroup({self.name!r}, {', '.join(parts)})"
