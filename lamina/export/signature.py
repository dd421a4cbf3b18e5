"""Exporting any module through an input signature: token ids, regression, several inputs, dict outputs.

``lm.export.saved_model(module, path, input_signature=[tf.TensorSpec(...)])``
(and ``tflite`` / ``onnx``) serve ``module`` as it is: no preprocessing, no
softmax, no class names. :class:`ModuleServing` wraps it in one
batch-polymorphic ``serve`` function whose inputs are named after the specs and
whose outputs are named after what the module returns:

* a list or tuple of specs: ``module(a, b, training=False)``; a dict of specs:
  ``module({"a": a, "b": b}, training=False)``. Inputs are named by the spec's
  ``name``, else the dict key, else ``input_0``, ``input_1``, ...;
* a tensor output is ``output_0``; a list or tuple gives ``output_0``,
  ``output_1``, ...; a dict keeps its keys. Half-precision outputs are cast to
  float32 (as the classifier export does).

The export is checked like the image-classifier one: run on a sample (given,
or random inputs from the specs), compared output by output with the module
run eagerly, written only if every difference is within tolerance.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from lamina.module import accepts_training

__all__ = [
    "ModuleServing",
    "normalize_signature",
    "module_sample",
    "output_differences",
    "check_outputs",
    "module_metadata",
    "reject_classifier_args",
    "first_batch",
    "feed_inputs",
    "RANDOM_BATCH",
]

RANDOM_BATCH = 8
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def normalize_signature(input_signature: Any) -> Dict[str, tf.TensorSpec]:
    """Names and checks the specs of an input signature.

    Args:
      input_signature: a ``tf.TensorSpec``, a list/tuple of them (positional
        inputs) or a dict ``{name: spec}`` (one dict input).

    Returns:
      ``{name: TensorSpec(shape, dtype, name=name)}`` in call order.

    Raises:
      TypeError: for an entry that is not a ``tf.TensorSpec``.
      ValueError: for an empty signature, a spec of rank 0 (no batch axis),
        a fixed batch size, or names that repeat or are not identifiers.
    """
    if isinstance(input_signature, tf.TensorSpec):
        input_signature = [input_signature]
    if isinstance(input_signature, Mapping):
        pairs = [(spec.name or str(key), spec) for key, spec in input_signature.items()]
    elif isinstance(input_signature, (list, tuple)):
        pairs = [(getattr(spec, "name", None) or f"input_{i}", spec) for i, spec in enumerate(input_signature)]
    else:
        raise TypeError(f"lamina.export: input_signature must be a tf.TensorSpec, a list of them or a dict of them, got {type(input_signature).__name__}")
    if not pairs:
        raise ValueError("lamina.export: input_signature is empty")
    out: Dict[str, tf.TensorSpec] = {}
    for name, spec in pairs:
        if not isinstance(spec, tf.TensorSpec):
            raise TypeError(f"lamina.export: input {name!r}: expected a tf.TensorSpec, got {type(spec).__name__}")
        if not _NAME.match(name):
            raise ValueError(f"lamina.export: input name {name!r} must be an identifier (letters, digits, _)")
        if name in out:
            raise ValueError(f"lamina.export: two inputs are named {name!r}")
        if spec.shape.rank is None or spec.shape.rank < 1:
            raise ValueError(f"lamina.export: input {name!r} needs a batch axis first, got shape {spec.shape}")
        if spec.shape[0] is not None:
            raise ValueError(f"lamina.export: input {name!r}: the batch axis must be None (any size), got shape {spec.shape}")
        out[name] = tf.TensorSpec(spec.shape, spec.dtype, name=name)
    return out


def _random_input(spec: tf.TensorSpec, n: int, rng: np.random.RandomState) -> np.ndarray:
    shape = [n] + [4 if d is None else int(d) for d in spec.shape[1:]]
    dtype = spec.dtype
    if dtype.is_bool:
        return rng.rand(*shape) < 0.5
    if dtype.is_integer:
        return rng.randint(0, 2, size=shape).astype(dtype.as_numpy_dtype)  # 0/1: valid ids for any vocabulary
    return rng.standard_normal(shape).astype(dtype.as_numpy_dtype)


def module_sample(specs: Mapping[str, tf.TensorSpec], sample: Any = None, seed: int = 0) -> Dict[str, np.ndarray]:
    """The self-check inputs: ``sample`` checked against the specs, or random inputs.

    Random inputs: batch :data:`RANDOM_BATCH`, open axes of size 4, floats
    standard normal, integers 0 or 1 (valid ids for any vocabulary; pass real
    ids as ``sample`` for a stronger check), booleans fair coins.

    Args:
      specs: from :func:`normalize_signature`.
      sample: ``None``; an array (one input); a list/tuple (positional); or a
        dict by input name.
      seed: NumPy seed of the random inputs.

    Returns:
      ``{name: array}`` with the specs' dtypes.

    Raises:
      ValueError: for missing or extra inputs, a shape the spec does not
        accept, or inputs of different batch sizes.
    """
    names = list(specs)
    if sample is None:
        rng = np.random.RandomState(seed)
        return {name: _random_input(spec, RANDOM_BATCH, rng) for name, spec in specs.items()}
    if isinstance(sample, Mapping):
        if set(sample) != set(names):
            raise ValueError(f"lamina.export: sample has inputs {sorted(sample)}, the signature {names}")
        values = [sample[n] for n in names]
    elif isinstance(sample, (list, tuple)):
        if len(sample) != len(names):
            raise ValueError(f"lamina.export: sample has {len(sample)} inputs, the signature {len(names)} ({', '.join(names)})")
        values = list(sample)
    else:
        if len(names) != 1:
            raise ValueError(f"lamina.export: the signature has {len(names)} inputs ({', '.join(names)}); pass sample as a list or dict")
        values = [sample]
    out: Dict[str, np.ndarray] = {}
    batch = None
    for name, value in zip(names, values):
        spec = specs[name]
        array = np.asarray(value.numpy() if hasattr(value, "numpy") else value).astype(spec.dtype.as_numpy_dtype)
        if not spec.shape.is_compatible_with(array.shape) or array.shape[0] < 1:
            raise ValueError(f"lamina.export: sample {name!r} has shape {array.shape}, the signature takes {spec.shape}")
        if batch is not None and array.shape[0] != batch:
            raise ValueError(f"lamina.export: sample inputs have different batch sizes ({batch} and {array.shape[0]} for {name!r})")
        batch = array.shape[0]
        out[name] = array
    return out


def _named_outputs(out: Any) -> Dict[str, Any]:
    """The module's output as ``{name: tensor}`` (see the module docstring)."""
    if isinstance(out, Mapping):
        items = list(out.items())
        for key, _ in items:
            if not isinstance(key, str) or not _NAME.match(key):
                raise ValueError(f"lamina.export: output key {key!r} must be an identifier string")
    elif isinstance(out, (list, tuple)):
        items = [(f"output_{i}", v) for i, v in enumerate(out)]
    else:
        items = [("output_0", out)]
    if not items:
        raise ValueError("lamina.export: the module returned no outputs")
    for key, value in items:
        if not (hasattr(value, "shape") and hasattr(value, "dtype")):
            raise ValueError(f"lamina.export: output {key!r} is a {type(value).__name__}, expected a tensor (nested outputs are not supported)")
    return dict(items)


class ModuleServing(tf.Module):
    """Serves any module behind a ``serve`` function with named inputs and outputs.

    Args:
      model: the module (or any callable), called as described in the module
        docstring, with ``training=False`` when it takes ``training``.
      input_signature: see :func:`normalize_signature`.
      metadata: JSON-serializable dict stored in the ``metadata`` variable.

    Raises:
      ValueError / TypeError: for a bad signature, or a module whose outputs
        are not tensors (or a flat list/dict of them).
    """

    def __init__(self, model: Any, input_signature: Any, metadata: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(name="lamina_module_serving")
        self.call_style = "dict" if isinstance(input_signature, Mapping) else "positional"
        self.specs = normalize_signature(input_signature)
        self.input_names = list(self.specs)
        self.model = model
        self._training = accepts_training(model)
        probe = self.reference(module_sample(self.specs, None))  # builds the model, checks the outputs
        self.output_names = list(probe)
        self.metadata = tf.Variable(json.dumps(dict(metadata or {}), sort_keys=True), dtype=tf.string, trainable=False, name="metadata")
        self.serve = tf.function(self._serve, input_signature=list(self.specs.values()), autograph=False)

    def _call(self, tensors: Sequence[tf.Tensor]) -> Dict[str, tf.Tensor]:
        args = [dict(zip(self.input_names, tensors))] if self.call_style == "dict" else list(tensors)
        out = self.model(*args, training=False) if self._training else self.model(*args)
        named = _named_outputs(out)
        return {k: tf.cast(v, tf.float32) if v.dtype in (tf.float16, tf.bfloat16) else tf.convert_to_tensor(v)
                for k, v in named.items()}

    def _serve(self, *tensors: tf.Tensor) -> Dict[str, tf.Tensor]:
        return {k: tf.identity(v, name=k) for k, v in self._call(tensors).items()}

    def reference(self, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Runs the module eagerly on named inputs.

        Args:
          inputs: ``{name: array}`` (from :func:`module_sample`).

        Returns:
          ``{output name: array}``.
        """
        tensors = [tf.constant(inputs[n], self.specs[n].dtype) for n in self.input_names]
        return {k: v.numpy() for k, v in self._call(tensors).items()}


def output_differences(got: Mapping[str, Any], ref: Mapping[str, np.ndarray]) -> Dict[str, Any]:
    """Compares an export's outputs with the module's, output by output.

    Floating outputs: ``max |difference|`` and that divided by
    ``max(1, max |reference|)`` (``scaled``); other outputs: the number and the
    fraction of entries that differ.

    Args:
      got: the exported model's outputs.
      ref: :meth:`ModuleServing.reference`'s.

    Returns:
      ``{"outputs": {name: {...}}, "max_difference": the largest scaled
      difference or mismatch fraction}``.

    Raises:
      ValueError: if an output is missing or has another shape.
    """
    per: Dict[str, Dict[str, float]] = {}
    worst = 0.0
    for name, r in ref.items():
        if name not in got:
            raise ValueError(f"output {name!r} is missing (got {sorted(got)})")
        g = np.asarray(got[name])
        if g.shape != r.shape:
            raise ValueError(f"output {name!r} has shape {g.shape}, the module's {r.shape}")
        if np.issubdtype(r.dtype, np.floating):
            d = float(np.max(np.abs(g.astype(np.float64) - r))) if r.size else 0.0
            scale = max(1.0, float(np.max(np.abs(r))) if r.size else 1.0)
            per[name] = {"max_abs": d, "scaled": d / scale}
            worst = max(worst, d / scale)
        else:
            n = int(np.sum(g.astype(r.dtype) != r))
            per[name] = {"mismatches": n, "fraction": n / max(1, r.size)}
            worst = max(worst, n / max(1, r.size))
    return {"outputs": per, "max_difference": worst}


def check_outputs(fmt: str, diff: Mapping[str, Any], tolerance: float, n: int, say: Callable[[str], None]) -> None:
    """Prints the per-output self-check and raises if it is above tolerance.

    Args:
      fmt: format name for the message.
      diff: from :func:`output_differences`.
      tolerance: the allowed ``max_difference``.
      n: number of examples compared.
      say: print function.

    Raises:
      ExportError: if ``diff["max_difference"] > tolerance``.
    """
    from lamina.export.saved_model import enforce_tolerance

    parts = []
    for name, d in diff["outputs"].items():
        parts.append(f"{name} {d['max_abs']:.3g}" if "max_abs" in d else f"{name} {d['mismatches']} mismatches")
    text = f"{fmt}: verified on {n} examples: max |difference| {', '.join(parts)} (tolerance {tolerance:g})"
    enforce_tolerance(fmt, text, diff["max_difference"], tolerance, n, say, "module")


def _spec_record(spec: tf.TensorSpec) -> Dict[str, Any]:
    return {"dtype": spec.dtype.name, "shape": [None if d is None else int(d) for d in spec.shape]}


def module_metadata(serving: ModuleServing, fmt: str, source_run: Optional[str]) -> Dict[str, Any]:
    """The ``lamina_export.json`` of a module export (no preprocessing, no class names).

    Args:
      serving: the wrapper.
      fmt: ``"savedmodel"``, ``"tflite"`` or ``"onnx"``.
      source_run: the run directory exported, if any.

    Returns:
      A JSON-serializable dict with ``kind: "module"`` and the signature.
    """
    import os

    from lamina import __version__
    from lamina.export.saved_model import SIGNATURE_KEY

    outputs = serving.serve.get_concrete_function().structured_outputs
    return {
        "format": fmt,
        "kind": "module",
        "lamina_version": __version__,
        "source_run": os.path.abspath(source_run) if source_run else None,
        "call": serving.call_style,
        "input_names": list(serving.input_names),
        "signature": {
            "key": SIGNATURE_KEY,
            "inputs": {n: _spec_record(s) for n, s in serving.specs.items()},
            "outputs": {n: _spec_record(tf.TensorSpec(outputs[n].shape, outputs[n].dtype)) for n in serving.output_names},
        },
    }


def reject_classifier_args(input_shape: Any, preprocessing: Any, class_names: Any) -> None:
    """Refuses the image-classifier arguments next to ``input_signature`` (they would have no effect).

    Args:
      input_shape: must be ``None``.
      preprocessing: must be ``None``.
      class_names: must be ``None``.

    Raises:
      ValueError: naming the arguments given.
    """
    given = [n for n, v in (("input_shape", input_shape), ("preprocessing", preprocessing), ("class_names", class_names)) if v is not None]
    if given:
        raise ValueError(f"lamina.export: input_signature exports the module as it is; {', '.join(given)} "
                         f"{'applies' if len(given) == 1 else 'apply'} to the image-classifier export only (drop {'it' if len(given) == 1 else 'them'})")


def first_batch(feed: Mapping[str, np.ndarray]) -> int:
    """The batch size of a sample from :func:`module_sample`."""
    return int(len(next(iter(feed.values()))))


def feed_inputs(names: Sequence[str], args: Sequence[Any], inputs: Mapping[str, Any], what: str) -> Dict[str, Any]:
    """Maps positional or named inputs of a runner call to the model's input names.

    Args:
      names: the model's inputs in order.
      args: positional inputs (all of them, in order), or empty.
      inputs: named inputs (all of them), or empty.
      what: the model, for the error message.

    Returns:
      ``{name: value}``.

    Raises:
      ValueError: for both kinds at once, a wrong count, or wrong names.
    """
    if args and inputs:
        raise ValueError(f"{what}: pass the inputs by position or by name, not both")
    if args:
        if len(args) != len(names):
            raise ValueError(f"{what}: takes {len(names)} inputs ({', '.join(names)}), got {len(args)}")
        return dict(zip(names, args))
    if set(inputs) != set(names):
        raise ValueError(f"{what}: takes inputs {sorted(names)}, got {sorted(inputs)}")
    return dict(inputs)
