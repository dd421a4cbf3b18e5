"""Conformance checks: a module behaves the same in every mode lamina supports.

Describe a module once with a :class:`Descriptor` (how to create it, what one
example looks like) and run it through the checks::

    d = lm.testing.Descriptor("Scale", lambda: Scale(), shape=(8,))
    lm.testing.run_checks(d)            # raises AssertionError naming every failed check

Each check is also a plain function (``check_function(d)``, ...), listed in
:data:`CHECKS`. They compare, for the same input and the same weights:

* ``function``: eager == ``tf.function``;
* ``xla``: eager == ``tf.function(jit_compile=True)``;
* ``retracing``: one trace of a ``tf.function`` with an open batch dimension
  serves two batch sizes;
* ``mixed_bfloat16`` / ``mixed_float16``: the input cast to the Trainer's
  compute dtype gives an output of that dtype, finite and close to float32,
  and finite gradients close to float32's;
* ``checkpoint``: ``tf.train.Checkpoint`` save -> a new instance (built, and
  unbuilt: restored on its first call) -> the same outputs;
* ``weights``: ``get_weights`` -> ``set_weights`` on a new instance;
* ``deepcopy``: ``copy.deepcopy`` of a built module (same outputs, separate
  variables) and of an unbuilt one (builds the same variables, leaves the
  original unbuilt);
* ``channels_first``: the descriptor's channels-first twin, with the same
  weights, equals the channels-last module up to transposes.

Before comparing, every variable is moved away from its initial value, so that
a restore or copy that silently kept fresh weights (ones, zeros) cannot pass.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from lamina.module import Module, _accepts_training

__all__ = [
    "Descriptor",
    "CHECKS",
    "run_checks",
    "check_function",
    "check_xla",
    "check_retracing",
    "check_precision",
    "check_mixed_bfloat16",
    "check_mixed_float16",
    "check_checkpoint",
    "check_weights",
    "check_deepcopy",
    "check_channels_first",
    "perturb",
    "float_outputs",
]

BATCH = 3
# Relative L2 error allowed against float32, (outputs, gradients). bfloat16 keeps
# 8 significant bits (2^-9 = 0.2 % per rounding), float16 11 (0.05 %); a few
# dozen roundings in a row stay within the output tolerances. Gradients get
# more room: where rounding makes two inputs of a max-pool tie or swap, the
# whole gradient of that window moves to another position (measured up to
# 30 % relative L2 on the ResNet and ConvNet descriptors in bfloat16). A
# gradient much smaller than the largest one (e.g. the key bias's, exactly 0
# in exact arithmetic) is compared against 1 % of the largest gradient's norm.
PRECISION_TOLERANCE = {"mixed_bfloat16": (0.05, 0.35), "mixed_float16": (0.01, 0.1)}


@dataclasses.dataclass(frozen=True)
class Descriptor:
    """How to create and call one module for the conformance checks.

    Attributes:
      name: a label (usually the class name, plus the variant).
      create: returns a new, unbuilt module (called once per instance needed).
      shape: one example's input shape (no batch dimension).
      dtype: the input's dtype.
      maxval: for integer inputs, ids are drawn from ``[0, maxval)``.
      call_kwargs: extra keyword arguments of every call (e.g. ``{"causal": True}``).
      channels_first: returns the same module in ``channels_first`` (``None``: no such variant).
      expensive: ``False`` skips it in the costly checks (strategies, SavedModel, XLA)
        of a suite that honours it.
      xfail: ``{check name: reason}`` of known failures (a suite marks them
        as expected failures, with the reason).
      covers: the public classes this descriptor exercises (default: the created module's class).
    """

    name: str
    create: Callable[[], Module]
    shape: Tuple[int, ...]
    dtype: tf.DType = tf.float32
    maxval: int = 0
    call_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    channels_first: Optional[Callable[[], Module]] = None
    expensive: bool = True
    xfail: Mapping[str, str] = dataclasses.field(default_factory=dict)
    covers: Tuple[type, ...] = ()

    def make_input(self, batch_size: int = BATCH, seed: int = 0) -> tf.Tensor:
        """A deterministic input batch.

        Args:
          batch_size: the batch dimension.
          seed: selects the batch.

        Returns:
          ``(batch_size, *shape)`` of ``dtype``: standard normal floats, or ids in ``[0, maxval)``.
        """
        shape = [batch_size, *self.shape]
        if tf.as_dtype(self.dtype).is_integer:
            return tf.random.stateless_uniform(shape, [seed, 7], 0, self.maxval, dtype=self.dtype)
        return tf.random.stateless_normal(shape, [seed, 11], dtype=self.dtype)

    def call(self, module: Any, x: Any, training: bool = False) -> Any:
        """Calls ``module(x, **call_kwargs)``, with ``training`` if its ``__call__`` takes it.

        Args:
          module: an instance from ``create``.
          x: the input.
          training: the training flag (passed only to modules that take one).

        Returns:
          The module's output.
        """
        fn = type(module).__call__
        fn = getattr(fn, "__wrapped__", fn)
        if _accepts_training(fn):
            return module(x, training=training, **self.call_kwargs)
        return module(x, **self.call_kwargs)

    def build(self, batch_size: int = BATCH, seed: int = 0, perturbed: bool = True) -> Tuple[Module, tf.Tensor, Any]:
        """Creates a module, builds it on an input and (by default) perturbs its variables.

        Args:
          batch_size: the input's batch size.
          seed: selects the input and the perturbation.
          perturbed: move every variable away from its initial value (see :func:`perturb`).

        Returns:
          ``(module, x, module(x))``.
        """
        module = self.create()
        x = self.make_input(batch_size, seed)
        self.call(module, x)
        if perturbed:
            perturb(module, seed)
        return module, x, self.call(module, x)

    @property
    def classes(self) -> Tuple[type, ...]:
        """The classes this descriptor covers (``covers``, or the created module's class)."""
        return tuple(self.covers) or (type(self.create()),)


# ------------------------------------------------------------------ helpers
def float_outputs(out: Any) -> List[tf.Tensor]:
    """The floating-point tensors of a (nested) output, in ``tf.nest`` order."""
    return [t for t in tf.nest.flatten(out) if hasattr(t, "dtype") and tf.as_dtype(t.dtype).is_floating]


def perturb(module: Module, seed: int = 0) -> None:
    """Moves every floating variable of ``module`` away from its value (in place, deterministically).

    Variances (``*variance*``) are scaled by a factor in [0.5, 1.5) so they stay
    positive; every other float variable gets ``N(0, 0.1^2)`` noise added.
    Integer variables (random generator states, counters) are left alone.

    Args:
      module: a built module.
      seed: selects the noise.
    """
    for i, v in enumerate(module.variables):
        if not v.dtype.is_floating:
            continue
        s = [seed, 1000 + i]
        if "variance" in v.name:
            v.assign(v * tf.random.stateless_uniform(v.shape, s, 0.5, 1.5, dtype=v.dtype))
        else:
            v.assign(v + 0.1 * tf.random.stateless_normal(v.shape, s, dtype=v.dtype))


def _numpy(out: Any) -> List[np.ndarray]:
    return [np.asarray(tf.cast(t, tf.float32)) for t in float_outputs(out)]


def _assert_close(what: str, got: Any, want: Any, rtol: float = 1e-5) -> None:
    """Every floating output of ``got`` equals ``want``'s, to ``rtol`` of each tensor's scale."""
    a, b = _numpy(got), _numpy(want)
    assert len(a) == len(b), f"{what}: {len(a)} floating outputs, expected {len(b)}"
    assert b, f"{what}: no floating-point output to compare"
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.shape == y.shape, f"{what}: output {i} has shape {x.shape}, expected {y.shape}"
        scale = float(np.abs(y).max()) if y.size else 0.0
        err = float(np.abs(x - y).max()) if y.size else 0.0
        assert err <= rtol * max(scale, 1e-6), (
            f"{what}: output {i} differs by {err:.3g} (max |value| {scale:.3g}, allowed {rtol:g} of it)"
        )


def _cotangents(out: Any) -> List[tf.Tensor]:
    return [tf.random.stateless_normal(tf.shape(t), [5, i]) for i, t in enumerate(float_outputs(out))]


def _loss_and_grads(d: Descriptor, module: Module, x: tf.Tensor, cot: Sequence[tf.Tensor]) -> Tuple[Any, List]:
    """``(output, [d loss / d input (if floating), d loss / d each trainable variable])``."""
    variables = list(module.trainable_variables)
    floating = tf.as_dtype(x.dtype).is_floating
    with tf.GradientTape() as tape:
        if floating:
            tape.watch(x)
        out = d.call(module, x)
        loss = tf.add_n([tf.reduce_sum(tf.cast(t, tf.float32) * c) for t, c in zip(float_outputs(out), cot)])
    grads = tape.gradient(loss, ([x] if floating else []) + variables)
    return out, grads


# ------------------------------------------------------------------- checks
def check_function(d: Descriptor) -> None:
    """Eager == ``tf.function`` (same input, same weights).

    Raises:
      AssertionError: naming the output that differs.
    """
    module, x, eager = d.build()
    _assert_close(f"{d.name}: tf.function vs eager", tf.function(lambda t: d.call(module, t))(x), eager)


def check_xla(d: Descriptor) -> None:
    """Eager == ``tf.function(jit_compile=True)``.

    Raises:
      AssertionError: naming the output that differs.
    """
    module, x, eager = d.build()
    fn = tf.function(lambda t: d.call(module, t), jit_compile=True)
    _assert_close(f"{d.name}: XLA vs eager", fn(x), eager, rtol=1e-4)


def check_retracing(d: Descriptor) -> None:
    """A ``tf.function`` with an open batch dimension is traced once for batch sizes 3 and 5.

    Raises:
      AssertionError: on a second trace or an output that differs from eager.
    """
    module, x, eager = d.build()
    traces = []

    def fn(t: tf.Tensor) -> Any:
        traces.append(t.shape)
        return d.call(module, t)

    f = tf.function(fn, input_signature=[tf.TensorSpec([None, *d.shape], d.dtype)])
    _assert_close(f"{d.name}: traced (batch {BATCH}) vs eager", f(x), eager)
    x5 = d.make_input(5, seed=1)
    _assert_close(f"{d.name}: traced (batch 5) vs eager", f(x5), d.call(module, x5))
    assert len(traces) == 1, f"{d.name}: traced {len(traces)} times for an open batch dimension: {traces}"


def check_precision(d: Descriptor, precision: str) -> None:
    """Under a mixed precision policy, outputs and gradients are finite and close to float32's.

    The input is cast to the policy's compute dtype (as the Trainer does); the
    module must compute in it (its floating outputs have that dtype) unless the
    input is not floating (ids), which stays as it is.

    Args:
      d: the descriptor.
      precision: ``"mixed_bfloat16"`` or ``"mixed_float16"``.

    Raises:
      AssertionError: for an output of another dtype, a non-finite value, or an error above tolerance.
    """
    from lamina.train.precision import resolve_precision

    dtype = resolve_precision(precision).compute_dtype
    out_tol, grad_tol = PRECISION_TOLERANCE[precision]
    module, x, _ = d.build()
    ref_out = d.call(module, x)
    cot = _cotangents(ref_out)
    ref_out, ref_grads = _loss_and_grads(d, module, x, cot)
    xh = tf.cast(x, dtype) if x.dtype.is_floating else x
    out, grads = _loss_and_grads(d, module, xh, cot)
    for i, t in enumerate(float_outputs(out)):
        if x.dtype.is_floating:
            assert t.dtype == dtype, f"{d.name} ({precision}): output {i} is {t.dtype.name}, expected {dtype.name}"
    def arrays(pairs: Sequence[Tuple[str, Any, Any]]) -> List[Tuple[str, np.ndarray, np.ndarray]]:
        out = []
        for what, a, b in pairs:
            assert a is not None, f"{d.name} ({precision}): no {what}"
            out.append((what, np.asarray(tf.cast(tf.convert_to_tensor(a), tf.float32)),
                        np.asarray(tf.cast(tf.convert_to_tensor(b), tf.float32))))
        return out

    outputs = arrays([(f"output {i}", a, b) for i, (a, b) in enumerate(zip(float_outputs(out), float_outputs(ref_out)))])
    names = (["input"] if x.dtype.is_floating else []) + [v.name for v in module.trainable_variables]
    gradients = arrays([(f"gradient of {n}", g, r) for n, g, r in zip(names, grads, ref_grads) if r is not None])
    floor = 0.01 * max([float(np.linalg.norm(b)) for _, _, b in gradients], default=0.0)
    for group, tol, least in ((outputs, out_tol, 0.0), (gradients, grad_tol, floor)):
        for what, a, b in group:
            assert np.isfinite(a).all(), f"{d.name} ({precision}): {what} is not finite"
            norm = max(float(np.linalg.norm(b)), least)
            err = float(np.linalg.norm(a - b))
            assert err <= tol * norm + 1e-6, (
                f"{d.name} ({precision}): {what} has relative error {err / max(norm, 1e-30):.3g} (allowed {tol})"
            )


def check_mixed_bfloat16(d: Descriptor) -> None:
    """:func:`check_precision` with ``"mixed_bfloat16"``."""
    check_precision(d, "mixed_bfloat16")


def check_mixed_float16(d: Descriptor) -> None:
    """:func:`check_precision` with ``"mixed_float16"``."""
    check_precision(d, "mixed_float16")


def check_checkpoint(d: Descriptor) -> None:
    """``tf.train.Checkpoint`` save -> restore into a new built instance, and into an unbuilt one.

    Raises:
      AssertionError: when the restored instance's outputs differ, or a value was not restored.
    """
    module, x, want = d.build()
    with tempfile.TemporaryDirectory() as tmp:
        path = tf.train.Checkpoint(module=module).write(os.path.join(tmp, "ckpt"))
        built = d.create()
        d.call(built, x)
        tf.train.Checkpoint(module=built).read(path).assert_consumed()
        _assert_close(f"{d.name}: restored (built) vs saved", d.call(built, x), want)
        fresh = d.create()
        status = tf.train.Checkpoint(module=fresh).read(path)
        got = d.call(fresh, x)  # its variables are created now and restored on creation
        status.assert_consumed()
        _assert_close(f"{d.name}: restored (unbuilt, on first call) vs saved", got, want)


def check_weights(d: Descriptor) -> None:
    """``get_weights`` -> ``set_weights`` on a new (built) instance gives the same outputs.

    Raises:
      AssertionError: when the outputs differ.
    """
    module, x, want = d.build()
    other = d.create()
    d.call(other, x)
    other.set_weights(module.get_weights())
    _assert_close(f"{d.name}: set_weights(get_weights()) vs original", d.call(other, x), want)


def check_deepcopy(d: Descriptor) -> None:
    """``copy.deepcopy`` of a built module (equal, independent) and of an unbuilt one.

    Raises:
      AssertionError: when the copy differs, shares variables, or building the
        unbuilt copy built the original.
    """
    module, x, want = d.build()
    twin = copy.deepcopy(module)
    _assert_close(f"{d.name}: deepcopy vs original", d.call(twin, x), want)
    ours = {id(v) for v in module.variables}
    assert not any(id(v) in ours for v in twin.variables), f"{d.name}: the deep copy shares variables"
    for v in twin.variables:
        if v.dtype.is_floating:
            v.assign_add(tf.ones_like(v))
    if twin.variables and any(v.dtype.is_floating for v in twin.variables):
        _assert_close(f"{d.name}: original after changing its copy", d.call(module, x), want)
    unbuilt = d.create()
    copied = copy.deepcopy(unbuilt)
    d.call(copied, x)
    assert not unbuilt.built, f"{d.name}: building a deep copy built the original"
    assert sorted(copied.variable_paths()) == sorted(module.variable_paths()), (
        f"{d.name}: the copy of an unbuilt module built other variables"
    )


def _to_first(t: tf.Tensor) -> tf.Tensor:
    rank = t.shape.rank
    return tf.transpose(t, [0, rank - 1] + list(range(1, rank - 1)))


def _to_last(t: tf.Tensor) -> tf.Tensor:
    rank = t.shape.rank
    return tf.transpose(t, [0] + list(range(2, rank)) + [1])


def check_channels_first(d: Descriptor) -> None:
    """The ``channels_first`` twin with the same weights equals the module up to transposes.

    Outputs of the input's rank are compared after moving their channels last;
    others (logits, pooled vectors) directly.

    Raises:
      AssertionError: when the outputs differ; ValueError if the descriptor has no twin.
    """
    if d.channels_first is None:
        raise ValueError(f"{d.name}: the descriptor has no channels_first variant")
    module, x, want = d.build()
    twin = d.channels_first()
    xf = _to_first(x)
    d.call(twin, xf)
    twin.set_weights(module.get_weights())
    got = d.call(twin, xf)
    got = tf.nest.map_structure(lambda t: _to_last(t) if t.shape.rank == x.shape.rank else t, got)
    _assert_close(f"{d.name}: channels_first (transposed back) vs channels_last", got, want)


CHECKS: Dict[str, Callable[[Descriptor], None]] = {
    "function": check_function,
    "xla": check_xla,
    "retracing": check_retracing,
    "mixed_bfloat16": check_mixed_bfloat16,
    "mixed_float16": check_mixed_float16,
    "checkpoint": check_checkpoint,
    "weights": check_weights,
    "deepcopy": check_deepcopy,
    "channels_first": check_channels_first,
}


def run_checks(d: Descriptor, checks: Optional[Sequence[str]] = None) -> None:
    """Runs the checks on one descriptor and reports every failure at once.

    ``channels_first`` runs only for a descriptor that has the variant; checks
    listed in ``d.xfail`` are expected to fail (a pass is reported too).

    Args:
      d: the descriptor.
      checks: names from :data:`CHECKS` (default all).

    Raises:
      AssertionError: listing each failed check and its message.
      KeyError: for an unknown check name.
    """
    names = list(CHECKS) if checks is None else list(checks)
    problems = []
    for name in names:
        fn = CHECKS[name]
        if name == "channels_first" and d.channels_first is None:
            continue
        try:
            fn(d)
        except Exception as e:  # noqa: BLE001 - every check's failure is reported
            if name not in d.xfail:
                problems.append(f"{name}: {type(e).__name__}: {e}")
        else:
            if name in d.xfail:
                problems.append(f"{name}: passed, but is listed as a known failure ({d.xfail[name]})")
    if problems:
        raise AssertionError(f"{d.name}: " + "; ".join(problems))
