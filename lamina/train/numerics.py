"""Finding where a forward pass first stops being finite.

:func:`first_non_finite` re-runs a batch eagerly with an observer on every
lamina module call (:func:`lamina.module.observe_calls`, the hook in the call
wrapper every ``Module`` has, so no class is patched) and names the first
module, innermost first, whose output holds a NaN or an infinity.

Why not ``tf.debugging.enable_check_numerics()``: it stops at the first *op*
with a non-finite output and names that op (``Conv2D``, ``BiasAdd``) and, in a
graph, its name scope. Name scopes are uniquified per trace (``conv_0_1``) and
eagerly there are none, so the op cannot be mapped back to the module a user
wrote; it also changes global state for the whole process. The module hook
names the module directly (``Conv2D 'conv_0'``) and is gone after the call.
"""

from __future__ import annotations

from typing import Any, List, Optional

import numpy as np
import tensorflow as tf

from lamina.module import Module, call_with_training, observe_calls

__all__ = ["first_non_finite", "non_finite_summary"]


def non_finite_summary(value: Any) -> Optional[str]:
    """Describes the NaN and infinite entries of a tensor or a nest of tensors.

    Args:
      value: a tensor, array or nest (non-floating entries are skipped).

    Returns:
      ``None`` when every floating entry is finite, else e.g. ``"3 NaN, 1 inf
      of 64 values (first at index (2, 1))"`` for the first non-finite one.
    """
    for t in tf.nest.flatten(value):
        if not hasattr(t, "dtype"):
            continue
        dtype = tf.as_dtype(t.dtype)
        if not (dtype.is_floating or dtype.is_complex):
            continue
        array = np.asarray(t.numpy() if hasattr(t, "numpy") else t)
        bad = ~np.isfinite(array)
        if bad.any():
            nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            kinds = ", ".join(f"{n} {k}" for n, k in ((nan, "NaN"), (inf, "inf")) if n)
            return f"{kinds} of {array.size} values (first at index {where})"
    return None


def first_non_finite(model: Any, x: Any, training: bool = True) -> Optional[str]:
    """Names the first module whose output is not finite when ``x`` runs through ``model`` eagerly.

    Args:
      model: a lamina ``Module`` (its lamina submodules are observed; other
        callables inside it are not).
      x: the batch, as the model takes it (a tensor, array or nest).
      training: the ``training`` flag to call the model with (the trainer's
        forward pass uses ``True``; dropout draws new masks).

    Returns:
      ``None`` if the whole forward pass is finite (a non-finite loss or
      gradient then comes from the loss or the backward pass). Otherwise
      ``module.describe()`` of the innermost module that returned a non-finite
      output first, e.g. ``"Conv2D 'conv_0'"``; ``"the input batch itself
      (...)"`` when ``x`` already holds NaN/inf; or, if the re-run itself
      raises, what the error was.

    Raises:
      RuntimeError: when called inside a ``tf.function`` (values are needed).
    """
    if tf.inside_function():
        raise RuntimeError("first_non_finite runs the model eagerly; call it outside tf.function")
    bad_input = non_finite_summary(x)
    if bad_input is not None:
        return f"the input batch itself ({bad_input})"
    found: List[str] = []

    def observe(module: Module, args: Any, kwargs: Any, out: Any) -> None:
        if not found and non_finite_summary(out) is not None:
            found.append(module.describe())

    with observe_calls(observe):
        try:
            call_with_training(model, x, training)
        except Exception as e:  # noqa: BLE001 - reported to the caller, which is already handling a failure
            if not found:
                return f"none found: re-running the batch eagerly raised {type(e).__name__}: {' '.join(str(e).split())[:200]}"
    return found[0] if found else None
