"""The lamina ``Module``: a ``tf.Module`` that builds its variables lazily.

A subclass creates its variables in ``build(input_shape)`` and computes in
``__call__``. The base class wraps every subclass's ``__call__`` (no decorator
needed) so that, on the first call, ``build`` runs exactly once, eagerly
(``tf.init_scope``) and inside the module's name scope, even when that first
call happens while a ``tf.function`` is being traced. Later calls are checked
against the :class:`InputSpec` the module fixed at build time, so a wrong input
fails with a message naming the module and saying what was expected.

Modules constructed inside another module's constructor are created under the
parent's name scope, so variables get hierarchical names such as
``convnet/block_0/conv/weights:0``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import sys
import threading
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from lamina import deferred

__all__ = [
    "Module", "InputSpec", "call_with_training", "accepts_training", "observe_calls", "builds_first", "freeze", "unfreeze",
]

_ctor = threading.local()
_observers = threading.local()

CallObserver = Callable[["Module", Tuple[Any, ...], Dict[str, Any], Any], None]


@contextlib.contextmanager
def observe_calls(observer: CallObserver) -> Iterator[None]:
    """Calls ``observer(module, args, kwargs, output)`` after every lamina module call in this thread.

    The hook lives in the call wrapper every :class:`Module` subclass already
    has, so nothing is patched. Calls complete innermost first: a layer is
    observed before the block that called it. Observers nest; each sees every
    call made while its ``with`` block is open (eager calls, or the Python
    trace of a ``tf.function``).

    Args:
      observer: the function called after each call, with the module, its
        positional and keyword arguments and what it returned.

    Yields:
      Nothing; the observer is removed on exit.
    """
    stack = getattr(_observers, "stack", None)
    if stack is None:
        stack = _observers.stack = []
    stack.append(observer)
    try:
        yield
    finally:
        stack.remove(observer)


@dataclasses.dataclass
class InputSpec:
    """What a built module requires of its (first) input.

    Attributes:
      rank: exact rank required, or ``None`` for any.
      min_rank: minimum rank, or ``None``.
      axes: ``{axis: (size, description)}`` dimensions fixed at the first call,
        e.g. ``{-1: (3, "input channels")}``.
      floating: whether the input must be a floating-point tensor.
    """

    rank: Optional[int] = None
    min_rank: Optional[int] = None
    axes: Dict[int, Tuple[int, str]] = dataclasses.field(default_factory=dict)
    floating: bool = True


def _is_tensor_like(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _to_tensor(x: Any) -> Any:
    """Converts NumPy arrays and Python numbers to tensors; leaves the rest."""
    if isinstance(x, np.ndarray):
        if x.dtype == np.float64:
            x = x.astype(np.float32)
        return tf.convert_to_tensor(x)
    if isinstance(x, (float, int)) and not isinstance(x, bool):
        return tf.convert_to_tensor(x, dtype=tf.float32)
    return x


# Top-level packages of Keras (3 and the legacy tf-keras). lamina never imports
# them: objects are recognized by their type's module name.
_SYMBOLIC_PACKAGES = ("keras", "tf_keras")


# Argument types already seen not to be Keras ones (tf.Tensor, ndarray, bool, ...): one set lookup per argument.
_NOT_SYMBOLIC: set = set()


def _package_of(obj: Any) -> str:
    return (getattr(type(obj), "__module__", "") or "").split(".", 1)[0]


def _check_not_symbolic(module: "Module", args: Tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Rejects Keras symbolic tensors (``keras.Input``) among the call's arguments (one level deep).

    Raises:
      TypeError: naming the module and the argument.
    """
    if all(type(v) in _NOT_SYMBOLIC for v in args) and all(type(v) in _NOT_SYMBOLIC for v in kwargs.values()):
        return  # the common case: tensors, arrays, bools, None
    for where, value in list(enumerate(args)) + list(kwargs.items()):
        items = value if isinstance(value, (list, tuple)) else (value.values() if isinstance(value, dict) else (value,))
        for item in items:
            if _package_of(item) in _SYMBOLIC_PACKAGES:
                what = f"argument {where}" if isinstance(where, int) else f"argument {where!r}"
                raise TypeError(
                    module.error(
                        f"symbolic Keras tensors (keras.Input) are not supported; got a {type(item).__name__} as "
                        f"{what}. lamina modules take tf.Tensors / NumPy arrays: call the module on data "
                        "(eagerly or inside a tf.function); lamina does not build Keras models"
                    )
                )
            if not isinstance(item, (list, tuple, dict)):
                _NOT_SYMBOLIC.add(type(item))


def _enclosing_foreign_layer(max_depth: int = 64) -> Optional[Any]:
    """The Keras layer whose call is on the Python stack, if any (checked once per module, at build)."""
    frame = sys._getframe(2)
    depth = 0
    while frame is not None and depth < max_depth:
        owner = frame.f_locals.get("self")
        if owner is not None and _package_of(owner) not in ("lamina",):
            for cls in type(owner).__mro__:
                if cls.__name__ == "Layer" and (cls.__module__ or "").split(".", 1)[0] in _SYMBOLIC_PACKAGES:
                    return owner
        frame = frame.f_back
        depth += 1
    return None


def _shape_structure(x: Any) -> Any:
    if _is_tensor_like(x):
        return tf.TensorShape(x.shape)
    return tf.nest.map_structure(
        lambda t: tf.TensorShape(t.shape) if _is_tensor_like(t) else t, x
    )


def _wrap_call(fn: Callable) -> Callable:
    """Wraps a subclass ``__call__`` with build-once, input checks and name scope."""

    @functools.wraps(fn)
    def wrapped(self: "Module", *args: Any, **kwargs: Any) -> Any:
        if "_lamina_built" not in self.__dict__:
            raise TypeError(
                f"{type(self).__name__}: lamina.Module.__init__ was never called; start "
                f"{type(self).__name__}.__init__ with super().__init__() (or super().__init__(name=name))"
            )
        _check_not_symbolic(self, args, kwargs)
        if args:
            args = (_to_tensor(args[0]),) + args[1:]
        first = args[0] if args else None
        if not self._lamina_built:
            layer = _enclosing_foreign_layer()
            if layer is not None:
                raise TypeError(
                    self.error(
                        f"called inside the Keras layer {getattr(layer, 'name', '?')!r} ({type(layer).__name__}); "
                        "Keras does not track lamina variables, so they would be neither trained nor saved by it. "
                        "Train lamina modules with lm.train.Trainer or tf.GradientTape, and use Keras layers inside Keras"
                    )
                )
            self._lamina_check(first, building=True)
            with tf.init_scope():
                with self.name_scope:
                    # ``build`` runs eagerly: keep AutoGraph from converting it
                    # (converting a docstring-only ``build`` fails with a warning).
                    build = tf.autograph.experimental.do_not_convert(self.build)
                    build(_shape_structure(first) if first is not None else None)
                if deferred.active():  # load_weights into an unbuilt model: fill what now exists
                    deferred.restore_created()
            self._lamina_built = True
            if not self._lamina_trainable:
                self._set_trainable(False)  # children created by ``build`` are frozen too
        self._lamina_check(first, building=False)
        with self.name_scope:
            out = fn(self, *args, **kwargs)
        if deferred.active() and deferred.is_pending(self):
            deferred.finish(self)
        observers = getattr(_observers, "stack", None)
        if observers:
            for observer in tuple(observers):
                observer(self, args, kwargs, out)
        return out

    wrapped._lamina_wrapped = True  # type: ignore[attr-defined]
    return wrapped


def builds_first(fn: Callable) -> Callable:
    """Gives a module method other than ``__call__`` (e.g. ``features(x)``) what ``__call__`` gets.

    The method's first argument is the input: an unbuilt module runs ``build``
    on it first, the input is checked against the ``InputSpec``, and the body
    runs in the module's name scope.

    Args:
      fn: the method.

    Returns:
      The wrapped method.
    """
    return _wrap_call(fn)


def _wrap_init(fn: Callable) -> Callable:
    """Wraps a subclass ``__init__`` so children are created in its name scope."""

    @functools.wraps(fn)
    def wrapped(self: "Module", *args: Any, **kwargs: Any) -> None:
        stack = getattr(_ctor, "stack", None)
        if stack is None:
            stack = _ctor.stack = []
        stack.append(self)
        try:
            fn(self, *args, **kwargs)
        finally:
            stack.pop()
            if getattr(self, "_lamina_ctor_scope", None) is not None and not any(
                m is self for m in stack
            ):
                scope = self._lamina_ctor_scope
                self._lamina_ctor_scope = None
                scope.__exit__(None, None, None)

    wrapped._lamina_wrapped = True  # type: ignore[attr-defined]
    return wrapped


class Module(tf.Module):
    """Base class of every lamina layer and model.

    Subclasses override ``build(input_shape)`` to create variables and
    ``__call__`` to compute. ``build`` runs exactly once, before the first call.

    Args:
      name: the module's name; defaults to the snake-cased class name. It is the
        prefix of every variable the module creates (``name/weights:0``).

    Example:
      >>> class Scale(lm.Module):
      ...     def build(self, input_shape):
      ...         self.scale = tf.Variable(tf.ones(input_shape[-1:]), name="scale")
      ...     def __call__(self, x):
      ...         return x * self.scale
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        call = cls.__dict__.get("__call__")
        if call is not None and not getattr(call, "_lamina_wrapped", False):
            cls.__call__ = _wrap_call(call)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_lamina_wrapped", False):
            cls.__init__ = _wrap_init(init)

    def __init__(self, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self._lamina_built = False
        self._lamina_trainable = True
        self.input_spec: Optional[InputSpec] = None
        # Enter our name scope for the rest of the subclass constructor, so that
        # child modules created there are named ``parent/child``.
        self._lamina_ctor_scope = None
        stack = getattr(_ctor, "stack", None)
        if stack and any(m is self for m in stack):
            scope = self.name_scope
            scope.__enter__()
            self._lamina_ctor_scope = scope

    # ------------------------------------------------------------------ build
    @property
    def built(self) -> bool:
        """Whether ``build`` has run (i.e. the module has been called once)."""
        return self._lamina_built

    def build(self, input_shape: Any) -> None:
        """Creates the module's variables from the first input's shape.

        Args:
          input_shape: ``tf.TensorShape`` of the first positional argument (or a
            nest of shapes when that argument is a structure).
        """
        del input_shape  # modules without variables need no build

    def describe(self) -> str:
        """Returns ``"Type 'name'"``, the prefix of every error this module raises."""
        return f"{type(self).__name__} '{self.name}'"

    def error(self, message: str) -> str:
        """Formats ``message`` prefixed by :meth:`describe`."""
        return f"{self.describe()}: {message}"

    def _lamina_check(self, x: Any, building: bool) -> None:
        spec = self.input_spec
        if spec is None or x is None or not _is_tensor_like(x):
            return
        dtype = tf.as_dtype(x.dtype)
        if spec.floating and not dtype.is_floating:
            raise TypeError(self.error(f"expected a floating-point input, got dtype {dtype.name}"))
        shape = tf.TensorShape(x.shape)
        if shape.rank is None:
            return
        if spec.rank is not None and shape.rank != spec.rank:
            raise ValueError(
                self.error(f"expected an input of rank {spec.rank}, got rank {shape.rank} (shape {shape})")
            )
        if spec.min_rank is not None and shape.rank < spec.min_rank:
            raise ValueError(
                self.error(f"expected an input of rank >= {spec.min_rank}, got rank {shape.rank} (shape {shape})")
            )
        for axis, (size, what) in spec.axes.items():
            got = shape[axis]
            if got is not None and size is not None and got != size:
                raise ValueError(self.error(f"expected {size} {what} (fixed at first call), got {got}"))

    # --------------------------------------------------------------- freezing
    @property
    def trainable(self) -> bool:
        """Whether this module is trained (``False`` once frozen).

        Setting it sets it on the module and on every lamina module inside it
        (also those its build creates later), as Keras' ``layer.trainable`` does.
        A frozen module's variables are left out of ``trainable_variables`` of
        the module and of every module that contains it (the ``Trainer`` hence
        leaves them alone); unfreezing a module inside a frozen one does not
        make it trainable from the outside. A frozen ``BatchNorm`` also runs in
        inference mode. Checkpoints and ``get_weights`` still hold every variable.

        Raises:
          TypeError: when set to anything but a bool.
        """
        return self._lamina_trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._set_trainable(value)

    def __setattr__(self, name: str, value: Any) -> None:
        # tf.Module skips ``self.x = v`` when ``self.x is v`` already: ``trainable = True``
        # must still reach the frozen modules inside.
        if name == "trainable":
            self._set_trainable(value)
        else:
            super().__setattr__(name, value)

    def _set_trainable(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(self.error(f"trainable must be True or False, got {value!r}"))
        for m in [self, *self.submodules]:
            if isinstance(m, Module):
                m._lamina_trainable = bool(value)

    def _frozen_variable_ids(self) -> set:
        """``id`` of every variable held by a frozen module inside this one."""
        frozen = set()
        for m in self.submodules:
            if isinstance(m, Module) and not m._lamina_trainable:
                frozen.update(id(v) for v in m.variables)
        return frozen

    @property
    def trainable_variables(self) -> Tuple[tf.Variable, ...]:
        """The trainable variables of this module and its sub-modules, without those of frozen modules.

        Returns:
          A tuple of variables (those created ``trainable=True`` and not held by
          a frozen module; empty when this module is frozen).
        """
        if not self._lamina_trainable:
            return ()
        variables = super().trainable_variables
        frozen = self._frozen_variable_ids()
        return tuple(v for v in variables if id(v) not in frozen) if frozen else variables

    # ------------------------------------------------------- weights as numpy
    def variable_paths(self, trainable_only: bool = False) -> Dict[str, tf.Variable]:
        """Maps each variable's attribute path (``"blocks/0/conv/weights"``) to it.

        Args:
          trainable_only: keep only the variables in :attr:`trainable_variables`
            (frozen modules' variables are left out).

        Returns:
          An ordered dict from path to ``tf.Variable``.
        """
        pred = lambda v: isinstance(v, tf.Variable)  # noqa: E731
        keep = {id(v) for v in self.trainable_variables} if trainable_only else None
        out: Dict[str, tf.Variable] = {}
        seen = set()
        for path, var in self._flatten(predicate=pred, with_path=True):
            if keep is not None and id(var) not in keep:
                continue
            if id(var) in seen:
                continue
            seen.add(id(var))
            out["/".join(str(p) for p in path)] = var
        return dict(sorted(out.items()))

    def get_weights(self) -> Dict[str, np.ndarray]:
        """Returns ``{variable path: NumPy array}`` for every variable.

        Returns:
          A dict keyed like :meth:`variable_paths`.
        """
        return {k: v.numpy() for k, v in self.variable_paths().items()}

    def set_weights(self, weights: Mapping[str, Any], strict: bool = True) -> None:
        """Assigns variables from ``{variable path: array}``.

        Args:
          weights: arrays keyed like :meth:`get_weights`.
          strict: if true, every variable must be given and no unknown key may
            appear; if false, the matching names are assigned (at least one must match).

        Raises:
          ValueError: on a missing, unknown or misshapen entry, no matching name
            at all, or an unbuilt module (``lm.load_weights`` defers instead; a built
            module without variables, e.g. ``Flatten``, takes ``{}``).
        """
        variables = self.variable_paths()
        if not variables and not self.built:
            raise ValueError(self.error("has no variables yet; call it once on an input to build it"))
        missing = sorted(set(variables) - set(weights))
        unknown = sorted(set(weights) - set(variables))
        if strict and (missing or unknown):
            parts = []
            if missing:
                parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
            if unknown:
                parts.append(f"unknown {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
            raise ValueError(self.error("set_weights: " + "; ".join(parts)))
        if variables and not set(variables) & set(weights):
            raise ValueError(self.error(
                f"set_weights: none of the {len(weights)} given names is one of the {len(variables)} variables "
                f"(given {deferred.describe_keys(weights, 3)}, expected {deferred.describe_keys(variables, 3)})"
            ))
        # Every value is checked and converted before the first assignment: a bad one changes nothing.
        values = {}
        for key, var in variables.items():
            if key not in weights:
                continue
            value = np.asarray(weights[key])
            if tuple(value.shape) != tuple(var.shape):
                raise ValueError(
                    self.error(f"set_weights: '{key}' expected shape {tuple(var.shape)}, got {tuple(value.shape)}")
                )
            if value.dtype.kind not in "biuf":
                raise ValueError(self.error(f"set_weights: '{key}' must hold numbers, got dtype {value.dtype}"))
            values[key] = value.astype(var.dtype.as_numpy_dtype, copy=False)
        for key, value in values.items():
            variables[key].assign(value)


def _check_module(module: Any, what: str) -> "Module":
    if not isinstance(module, Module):
        raise TypeError(f"{what}: expected a lamina Module, got {type(module).__name__}")
    return module


def freeze(module: "Module") -> "Module":
    """Freezes ``module``: ``module.trainable = False`` (see :attr:`Module.trainable`).

    Its variables leave ``trainable_variables`` of the module and of every module
    containing it, so the ``Trainer`` (and any ``GradientTape`` over
    ``trainable_variables``) leaves them alone; a frozen ``BatchNorm`` runs in
    inference mode. Works before the module is built too. Freeze before the
    first training step: a compiled step keeps the variables it was traced with.

    Args:
      module: a lamina module.

    Returns:
      ``module``.

    Raises:
      TypeError: if ``module`` is not a lamina ``Module``.
    """
    _check_module(module, "freeze").trainable = False
    return module


def unfreeze(module: "Module") -> "Module":
    """Unfreezes ``module`` and every lamina module inside it: ``module.trainable = True``.

    Args:
      module: a lamina module.

    Returns:
      ``module``.

    Raises:
      TypeError: if ``module`` is not a lamina ``Module``.
    """
    _check_module(module, "unfreeze").trainable = True
    return module


@functools.lru_cache(maxsize=None)
def _accepts_training(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "training" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def accepts_training(layer: Callable) -> bool:
    """Whether ``layer(..., training=...)`` is accepted (its ``__call__`` has ``training`` or ``**kwargs``).

    Args:
      layer: a module or any callable.

    Returns:
      ``True`` if a ``training`` keyword can be passed.
    """
    fn = type(layer).__call__ if isinstance(layer, tf.Module) else layer
    if getattr(fn, "__wrapped__", None) is not None:
        fn = fn.__wrapped__
    return _accepts_training(fn)


def call_with_training(layer: Callable, x: Any, training: Optional[bool]) -> Any:
    """Calls ``layer(x, training=training)`` if it takes ``training``, else ``layer(x)``.

    Args:
      layer: a module or any callable.
      x: its input.
      training: the training flag to pass on.

    Returns:
      The layer's output.
    """
    if accepts_training(layer):
        return layer(x, training=training)
    return layer(x)
