"""``lm.summary(model, input_shape)``: a per-module table of shapes, parameters and FLOPs.

The model is called once, eagerly, on zeros of shape ``(batch_size, *input_shape)``
(which builds it if needed). During that one call the ``__call__`` of every
lamina ``Module`` class used by the model is temporarily wrapped to record each
module's input and output shapes; the original methods are restored afterwards,
so the model is left exactly as it was (apart from being built).

FLOPs are the forward pass's ``2 * multiply-accumulates`` of the layers that do
the heavy lifting: ``Linear``, convolutions (any rank, grouped, depthwise,
separable) and transposed convolutions, for the whole batch given. Bias adds,
activations, normalization and pooling are not counted (TensorFlow's profiler
counts bias adds as one FLOP per output element, so it reports slightly more).
Other layer types can declare their cost with :func:`register_flops`.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from lamina.module import Module, call_with_training

__all__ = ["summary", "SummaryResult", "register_flops", "layer_flops"]

Shape = Optional[Tuple[Optional[int], ...]]
FlopsFn = Callable[[Module, Shape, Shape], int]

_FLOPS_RULES: Dict[type, FlopsFn] = {}


def register_flops(cls: type, fn: FlopsFn) -> None:
    """Declares how to count the forward FLOPs of a module type.

    Args:
      cls: a ``Module`` subclass (subclasses of it use the same rule).
      fn: ``fn(module, input_shape, output_shape) -> int``; shapes include the batch.

    Raises:
      TypeError: if ``cls`` is not a ``Module`` subclass or ``fn`` not callable.
    """
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise TypeError(f"register_flops: expected a lamina Module subclass, got {cls!r}")
    if not callable(fn):
        raise TypeError(f"register_flops: expected a callable, got {type(fn).__name__}")
    _FLOPS_RULES[cls] = fn


def _own_variables(module: tf.Module) -> List[tf.Variable]:
    """Variables held by ``module`` itself (not by its sub-modules), deduplicated."""
    out, seen = [], set()
    for v in module._flatten(recursive=False, predicate=lambda x: isinstance(x, tf.Variable)):
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def _prod(values: Sequence[Optional[int]]) -> int:
    return int(math.prod(int(v) for v in values))


def _positions(module: Module, shape: Shape) -> int:
    """Batch x spatial positions of a feature map (all axes but the channel axis)."""
    if shape is None or any(d is None for d in shape):
        return 0
    axis = 1 if getattr(module, "data_format", "channels_last") == "channels_first" and len(shape) > 2 else -1
    dims = list(shape)
    del dims[axis]
    return _prod(dims)


def _kernels(module: Module) -> List[tf.Variable]:
    """The module's own weight tensors of rank >= 2 that are trainable (kernels)."""
    return [v for v in _own_variables(module) if v.shape.rank is not None and v.shape.rank >= 2 and v.trainable]


def layer_flops(module: Module, input_shape: Shape, output_shape: Shape) -> int:
    """Forward FLOPs (``2 * MACs``) of one call of ``module`` (its own computation only).

    Rules: a type registered with :func:`register_flops`; ``Linear``:
    ``2 * rows * in * out``; a transposed convolution (class name contains
    ``Transpose``): ``2 * input positions * kernel size``; any other module with
    kernels of rank >= 3 (convolutions, depthwise, separable):
    ``2 * output positions * kernel sizes``. Everything else counts 0.

    Args:
      module: a lamina module.
      input_shape: its input's shape (batch included) or ``None``.
      output_shape: its output's shape (batch included) or ``None``.

    Returns:
      The FLOP count (0 when unknown).
    """
    for cls in type(module).__mro__:
        if cls in _FLOPS_RULES:
            return int(_FLOPS_RULES[cls](module, input_shape, output_shape))
    from lamina.layers.linear import Linear  # local: avoid an import cycle at package import

    if isinstance(module, Linear):
        if output_shape is None or any(d is None for d in output_shape[:-1]):
            return 0
        w = getattr(module, "weights", None)
        if w is None:
            return 0
        return 2 * _prod(output_shape[:-1]) * _prod(w.shape)
    kernels = [k for k in _kernels(module) if k.shape.rank >= 3]
    if not kernels:
        return 0
    size = sum(_prod(k.shape) for k in kernels)
    if "Transpose" in type(module).__name__:
        return 2 * _positions(module, input_shape) * size
    return 2 * _positions(module, output_shape) * size


def _shape_of(x: Any) -> Shape:
    """The static shape of a tensor (or of the first tensor in a nest)."""
    for t in tf.nest.flatten(x):
        if hasattr(t, "shape") and hasattr(t, "dtype"):
            shape = tf.TensorShape(t.shape)
            return tuple(shape.as_list()) if shape.rank is not None else None
    return None


@dataclasses.dataclass
class SummaryResult:
    """What :func:`summary` found.

    Attributes:
      rows: one dict per module, in call order (pre-order): ``path``, ``name``,
        ``type``, ``input_shape``, ``output_shape``, ``params`` (own),
        ``trainable_params`` (own), ``flops`` (own, summed over calls), ``calls``.
      total_params: every variable's element count (each shared variable once).
      trainable_params: elements of the model's ``trainable_variables``.
      non_trainable_params: elements of the other variables (e.g. BN moving
        stats, and every variable of a frozen module).
      total_bytes: memory of all variables.
      flops: forward FLOPs of the whole batch (see the module docstring).
      input_shape: the shape the model was called on.
      output_shape: the model's output shape.
      table: the rendered table (also ``str(result)``).
    """

    rows: List[Dict[str, Any]]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    total_bytes: int
    flops: int
    input_shape: Tuple[int, ...]
    output_shape: Shape
    table: str = ""

    def __str__(self) -> str:
        """Returns the rendered table."""
        return self.table


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fmt_units(n: float, unit: str, binary: bool = False) -> str:
    base = 1024.0 if binary else 1000.0
    prefixes = ("", "Ki", "Mi", "Gi", "Ti") if binary else ("", "K", "M", "G", "T")
    for prefix in prefixes:
        if abs(n) < base or prefix == prefixes[-1]:
            return f"{n:.0f} {unit}" if prefix == "" else f"{n:.2f} {prefix}{unit}"
        n /= base
    return f"{n} {unit}"  # pragma: no cover


def _fmt_shape(shape: Shape) -> str:
    if shape is None:
        return "-"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _render(model: Module, rows: List[Dict[str, Any]], res: SummaryResult) -> str:
    headers = ["Module", "Type", "Output shape", "Params", "FLOPs"]
    body = [
        [
            r["path"],
            r["type"],
            _fmt_shape(r["output_shape"]),
            _fmt_int(r["params"]) if r["params"] else "-",
            _fmt_int(r["flops"]) if r["flops"] else "-",
        ]
        for r in rows
    ]
    totals = [
        f"Total params: {_fmt_int(res.total_params)}",
        f"Trainable params: {_fmt_int(res.trainable_params)}",
        f"Non-trainable params: {_fmt_int(res.non_trainable_params)}",
        f"Parameter memory: {_fmt_units(res.total_bytes, 'B', binary=True)} ({_fmt_int(res.total_bytes)} bytes)",
        f"Forward FLOPs (batch {res.input_shape[0]}): {_fmt_units(res.flops, 'FLOPs')} ({_fmt_int(res.flops)})",
    ]
    title = f"{type(model).__name__} '{model.name}' on input {_fmt_shape(res.input_shape)}"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is optional
        Console = None  # type: ignore[assignment]
    if Console is not None:
        table = Table(title=title, caption="\n".join(totals), caption_justify="left")
        for i, h in enumerate(headers):
            table.add_column(h, justify="right" if i >= 3 else "left", no_wrap=True)
        for line in body:
            table.add_row(*line)
        width = sum(max(len(h), *(len(line[i]) for line in body)) for i, h in enumerate(headers)) + 20
        buf = io.StringIO()
        Console(file=buf, width=max(width, 80), color_system=None, force_terminal=False).print(table)
        return buf.getvalue().rstrip("\n")
    widths = [max(len(h), *(len(line[i]) for line in body)) for i, h in enumerate(headers)]

    def fmt(cells: Sequence[str]) -> str:
        """One plain-text table line (numbers right-aligned)."""
        return "  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(fmt(headers))
    return "\n".join([title, rule, fmt(headers), rule, *map(fmt, body), rule, *totals])


def summary(
    model: Module,
    input_shape: Sequence[int],
    batch_size: int = 1,
    dtype: tf.DType = tf.float32,
    print_fn: Optional[Callable[[str], Any]] = print,
) -> SummaryResult:
    """Calls ``model`` once on zeros and tabulates its modules, parameters and FLOPs.

    The model is called as ``model(zeros, training=False)`` (or without
    ``training`` if it does not take it); this builds an unbuilt model. Nothing
    else about the model changes.

    Args:
      model: a lamina ``Module``.
      input_shape: the input's shape without the batch dimension, e.g. ``(28, 28, 1)``.
      batch_size: the batch size of the zeros input (FLOPs are for this batch).
      dtype: the input's dtype.
      print_fn: called with the rendered table; ``None`` prints nothing.

    Returns:
      A :class:`SummaryResult`.

    Raises:
      TypeError: if ``model`` is not a lamina ``Module``.
      ValueError: if ``input_shape`` or ``batch_size`` is not made of positive ints.
    """
    if not isinstance(model, Module):
        raise TypeError(f"summary: expected a lamina Module, got {type(model).__name__}")
    try:
        dims = tuple(input_shape)
    except TypeError:
        raise TypeError(f"summary: input_shape must be a sequence of ints, got {input_shape!r}") from None
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ValueError(f"summary: input_shape must hold positive ints (no batch dimension), got {input_shape!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"summary: batch_size must be a positive int, got {batch_size!r}")
    full_shape = (batch_size,) + dims

    active: set = set()
    records: Dict[int, Dict[str, Any]] = {}
    order: List[int] = []

    def make_wrapper(orig: Callable) -> Callable:
        """Wraps one class's ``__call__`` to record shapes and FLOPs of tracked modules."""

        @functools.wraps(orig)
        def recording_call(self: Module, *args: Any, **kwargs: Any) -> Any:
            """``orig`` plus recording (once per module, outermost class level only)."""
            key = id(self)
            if key in active:
                return orig(self, *args, **kwargs)
            active.add(key)
            rec = records.get(key)
            if rec is None:
                rec = records[key] = {"input_shape": _shape_of(args[0]) if args else None, "calls": 0, "flops": 0}
                order.append(key)
            try:
                out = orig(self, *args, **kwargs)
            finally:
                active.discard(key)
            in_shape = _shape_of(args[0]) if args else None
            out_shape = _shape_of(out)
            if rec["calls"] == 0:
                rec["output_shape"] = out_shape
            rec["calls"] += 1
            rec["flops"] += layer_flops(self, in_shape, out_shape)
            return out

        return recording_call

    # Every lamina Module class defining ``__call__`` (also those of children that a
    # module would create lazily during the call) is wrapped for this one call.
    patched: Dict[type, Callable] = {}
    pending = [Module]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "__call__" in cls.__dict__ and cls not in patched:
            patched[cls] = cls.__dict__["__call__"]
    try:
        for cls, orig in patched.items():
            setattr(cls, "__call__", make_wrapper(orig))
        out = call_with_training(model, tf.zeros(full_shape, dtype), False)
    finally:
        for cls, orig in patched.items():
            setattr(cls, "__call__", orig)

    # Modules may have been created during the call (built lazily); list them all.
    # Modules called but not part of the model (temporaries) are left out.
    modules: List[Module] = [model] + [m for m in model.submodules if isinstance(m, Module)]
    attr_paths: Dict[int, str] = {}
    for path, m in model._flatten(predicate=lambda x: isinstance(x, Module), with_path=True):
        attr_paths.setdefault(id(m), "/".join([model.name] + [str(p) for p in path]))
    attr_paths[id(model)] = model.name
    scope_paths = {id(m): (m.name_scope.name.rstrip("/") or m.name) for m in modules}
    use_scope = len(set(scope_paths.values())) == len(scope_paths)

    # Frozen modules' variables count as non-trainable (what the Trainer trains).
    trainable_ids = {id(v) for v in model.trainable_variables}
    by_id = {id(m): m for m in modules}
    ordered = [k for k in order if k in by_id] + [id(m) for m in modules if id(m) not in records]
    rows: List[Dict[str, Any]] = []
    for key in ordered:
        m = by_id[key]
        own = _own_variables(m)
        rec = records.get(key, {})
        rows.append(
            {
                "path": scope_paths[key] if use_scope else attr_paths.get(key, m.name),
                "attr_path": attr_paths.get(key, m.name),
                "name": m.name,
                "type": type(m).__name__,
                "input_shape": rec.get("input_shape"),
                "output_shape": rec.get("output_shape"),
                "params": sum(_prod(v.shape) for v in own),
                "trainable_params": sum(_prod(v.shape) for v in own if id(v) in trainable_ids),
                "flops": rec.get("flops", 0),
                "calls": rec.get("calls", 0),
            }
        )

    seen: set = set()
    variables = []
    for v in model.variables:
        if id(v) not in seen:
            seen.add(id(v))
            variables.append(v)
    trainable = sum(_prod(v.shape) for v in variables if id(v) in trainable_ids)
    non_trainable = sum(_prod(v.shape) for v in variables if id(v) not in trainable_ids)
    result = SummaryResult(
        rows=rows,
        total_params=trainable + non_trainable,
        trainable_params=trainable,
        non_trainable_params=non_trainable,
        total_bytes=sum(_prod(v.shape) * v.dtype.size for v in variables),
        flops=sum(r["flops"] for r in rows),
        input_shape=full_shape,
        output_shape=_shape_of(out),
    )
    result.table = _render(model, rows, result)
    if print_fn is not None:
        print_fn(result.table)
    return result
