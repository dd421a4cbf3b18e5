"""Deferred restoration: weights given to an unbuilt module land in its variables as they are created.

lamina layers create their variables at their first call, so a freshly
constructed model has nothing to load weights into. Like
``tf.train.Checkpoint``'s deferred restoration, :func:`defer_weights` records
the arrays on the model; every time a module finishes ``build`` (anywhere),
the model's variables that now exist and have a pending value are assigned
right away, eagerly, before the module computes anything. So the very first
forward pass (eager or traced by ``tf.function``) already uses the loaded
values. When the model's first call returns, the restore is checked: in
strict mode every variable must have been given and every array must have
named a variable; in any mode at least one array must have been used.
"""

from __future__ import annotations

import weakref
from typing import Any, Dict, Mapping, Set

import numpy as np

__all__ = ["defer_weights", "is_pending", "active", "restore_created", "finish", "describe_keys"]

_PENDING: "weakref.WeakKeyDictionary[Any, _Pending]" = weakref.WeakKeyDictionary()


def describe_keys(keys: Any, limit: int = 5) -> str:
    """``['a', 'b', ...]`` with at most ``limit`` names and the total when cut.

    Args:
      keys: names.
      limit: how many to show.

    Returns:
      The text.
    """
    keys = sorted(keys)
    more = f" ... ({len(keys)} in all)" if len(keys) > limit else ""
    return f"{keys[:limit]}{more}"


class _Pending:
    """Arrays waiting for a model's variables (private)."""

    def __init__(self, weights: Mapping[str, Any], strict: bool, source: str) -> None:
        self.weights: Dict[str, np.ndarray] = {k: np.asarray(v) for k, v in weights.items()}
        self.strict = bool(strict)
        self.source = source
        self.assigned: Set[str] = set()


def active() -> bool:
    """Whether any model has a restore pending (a cheap check for the call path)."""
    return bool(_PENDING)


def is_pending(module: Any) -> bool:
    """Whether ``module`` has a deferred restore that its first call has not completed yet."""
    return module in _PENDING


def _assign(module: Any, pending: _Pending) -> None:
    for key, var in module.variable_paths().items():
        if key in pending.assigned or key not in pending.weights:
            continue
        value = pending.weights[key]
        if tuple(value.shape) != tuple(var.shape):
            del _PENDING[module]
            raise ValueError(
                f"{pending.source}: deferred restore into {module.describe()}: '{key}' expected shape "
                f"{tuple(var.shape)}, got {tuple(value.shape)}"
            )
        var.assign(value.astype(var.dtype.as_numpy_dtype))
        pending.assigned.add(key)


def defer_weights(module: Any, weights: Mapping[str, Any], strict: bool, source: str) -> None:
    """Assigns ``weights`` to ``module``'s variables as they are created (see the module docstring).

    Variables that already exist are assigned now.

    Args:
      module: a :class:`lamina.Module`, typically not built yet.
      weights: ``{variable path: array}`` (paths as in ``Module.get_weights``).
      strict: at the end of the first call, require an exact match of names.
      source: what the arrays came from, for error messages (a file path).

    Raises:
      ValueError: for an empty ``weights`` or a shape mismatch with an existing variable.
    """
    if not weights:
        raise ValueError(f"{source}: no tensors to load into {module.describe()}")
    pending = _Pending(weights, strict, source)
    _PENDING[module] = pending
    _assign(module, pending)


def restore_created() -> None:
    """Assigns pending values to the variables created since the last call (runs right after a ``build``).

    Raises:
      ValueError: for a shape mismatch (the restore is then abandoned).
    """
    for module, pending in list(_PENDING.items()):
        _assign(module, pending)


def finish(module: Any) -> None:
    """Checks and ends ``module``'s deferred restore after its first call (no-op if none is pending).

    Raises:
      ValueError: in strict mode for variables left without a value or arrays
        that named no variable; in any mode if no array named a variable.
    """
    pending = _PENDING.pop(module, None)
    if pending is None:
        return
    variables = module.variable_paths()
    missing = set(variables) - set(pending.weights)
    unknown = set(pending.weights) - pending.assigned
    where = f"{pending.source}: deferred restore into {module.describe()} at its first call"
    if not pending.assigned:
        raise ValueError(
            f"{where}: none of the file's {len(pending.weights)} tensors names one of the model's "
            f"{len(variables)} variables (file has {describe_keys(pending.weights, 3)}, "
            f"model expects {describe_keys(variables, 3)})"
        )
    if pending.strict and (missing or unknown):
        parts = []
        if missing:
            parts.append(f"missing {describe_keys(missing)}")
        if unknown:
            parts.append(f"unknown {describe_keys(unknown)}")
        raise ValueError(f"{where}: " + "; ".join(parts))
