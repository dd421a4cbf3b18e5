"""Inference speed of the seed CNN: exported SavedModel vs the live lamina model vs Keras.

Usage::

    python benchmarks/inference.py            # ~2 min on 2 cores
    python benchmarks/inference.py --smoke    # a few calls of each

Every variant runs ``ConvNet(10)`` on 28x28x1 with the same weights (Keras's
and PyTorch's copied from the lamina model; their logits are checked against
lamina's before timing). Two measurements, interleaved round-robin like
``train_step.py``:

* batch-1 latency: ms per call, each call including the read-back of its
  result to NumPy (what a request-serving loop pays);
* batch-256 throughput: images/s.

Variants: ``lamina-live`` (``tf.function`` of ``model(x, training=False)``),
``lamina-live-concrete`` (its concrete function, called directly: no
per-call signature binding), ``lamina-live-xla`` (``jit_compile=True``), ``savedmodel``
(a ``tf.Module`` wrapper with one ``tf.function`` signature returning logits,
``tf.saved_model.save``-d, reloaded, called through its ``serving_default``
signature), ``lamina-export`` (``lamina.export.saved_model``: also adds
preprocessing, softmax and argmax outputs), ``keras-call`` (the Keras model's
call in a ``tf.function``), ``keras-predict`` (``Model.predict_on_batch``,
the idiomatic call), ``keras-export`` (``Model.export`` SavedModel),
``onnxruntime`` (``lamina.export.onnx``'s file in an onnxruntime CPU session),
``litert-f32`` / ``litert-int8`` (``lamina.export.tflite``'s float32 and
full-integer files in LiteRT's interpreter with XNNPACK, one interpreter per
batch size so none is resized between calls) and ``torch`` (eager,
``torch.inference_mode``; for context).

Batch-1 latency is reported as the median of the windows and as the median
and 99th percentile of single calls (each call timed alone; the untimed
settle call of each window left out). Exported variants also report their
size on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Entry, fmt, format_table, machine_info, machine_line, round_robin  # noqa: E402
from nets import NETS, keras_model, lamina_model, synthetic_batch, torch_model  # noqa: E402

VARIANTS = ["lamina-live", "lamina-live-concrete", "lamina-live-xla", "savedmodel", "lamina-export", "keras-call", "keras-predict",
            "keras-export", "onnxruntime", "litert-f32", "litert-int8", "torch"]
# Variants that run a file written to disk: their size is reported.
EXPORTED = {"savedmodel": "wrapper", "lamina-export": "lamina_export", "keras-export": "keras_export",
            "onnxruntime": "onnx_export", "litert-f32": "tflite_f32", "litert-int8": "tflite_int8"}
SHAPE = NETS["cnn"].input_shape
SETTLE = 1  # untimed calls before each window


def _savedmodel_wrapper(model: Any, path: str) -> Callable:
    """Saves ``model`` behind a one-signature ``tf.Module``; returns the reloaded signature (logits out)."""
    import tensorflow as tf

    class Serving(tf.Module):
        """The lamina model behind one batch-polymorphic signature."""

        def __init__(self, m: Any) -> None:
            super().__init__(name="serving")
            self.model = m

        @tf.function(input_signature=[tf.TensorSpec([None, *SHAPE], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> Dict[str, tf.Tensor]:
            return {"logits": self.model(x, training=False)}

    module = Serving(model)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    sig = tf.saved_model.load(path).signatures["serving_default"]
    return lambda x: sig(x=x)["logits"]


def build(variant: str, ref: Any, tmp: str, threads: int) -> Tuple[Callable[[np.ndarray], Any], Callable[[Any], np.ndarray]]:
    """``(call, to_numpy)`` for ``variant``: ``call`` takes a NumPy batch already converted by ``prepare``."""
    import tensorflow as tf

    spec = [tf.TensorSpec([None, *SHAPE], tf.float32)]
    if variant in ("lamina-live", "lamina-live-xla", "lamina-live-concrete"):
        fn = tf.function(lambda x: ref(x, training=False), input_signature=spec,
                         jit_compile=variant.endswith("xla"), autograph=False)
        if variant.endswith("concrete"):
            fn = fn.get_concrete_function()  # skips tf.function's per-call argument binding and dispatch
        return fn, lambda t: t.numpy()
    if variant == "savedmodel":
        return _savedmodel_wrapper(ref, os.path.join(tmp, "wrapper")), lambda t: t.numpy()
    if variant == "lamina-export":
        import lamina as lm

        path = lm.export.saved_model(ref, os.path.join(tmp, "lamina_export"), input_shape=SHAPE, verbose=False)
        sig = tf.saved_model.load(path).signatures["serving_default"]
        return (lambda x: sig(image=x)["logits"]), lambda t: t.numpy()
    if variant.startswith("keras"):
        km = keras_model("cnn", ref)
        if variant == "keras-call":
            fn = tf.function(lambda x: km(x, training=False), input_signature=spec, autograph=False)
            return fn, lambda t: t.numpy()
        if variant == "keras-predict":
            return km.predict_on_batch, np.asarray
        path = os.path.join(tmp, "keras_export")
        km.export(path, format="tf_saved_model", verbose=False)
        loaded = tf.saved_model.load(path)
        sig = loaded.signatures["serving_default"]
        key = list(sig.structured_input_signature[1])[0]
        out_key = list(sig.structured_outputs)[0]
        return (lambda x: sig(**{key: x})[out_key]), lambda t: t.numpy()
    if variant == "onnxruntime":
        import lamina as lm
        import onnxruntime as ort

        path = lm.export.onnx(ref, os.path.join(tmp, EXPORTED[variant]), input_shape=SHAPE, verbose=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(os.path.join(path, "model.onnx"), sess_options=options,
                                       providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return (lambda x: session.run(["logits"], {name: x})[0]), np.asarray
    if variant.startswith("litert"):
        import lamina as lm
        from ai_edge_litert.interpreter import Interpreter

        quantize = "int8" if variant.endswith("int8") else None
        rep = synthetic_batch(NETS["cnn"], 200, seed=3)[0] if quantize else None
        path = lm.export.tflite(ref, os.path.join(tmp, EXPORTED[variant]), input_shape=SHAPE, quantize=quantize,
                                representative_data=rep, verbose=False)
        runners: Dict[int, Any] = {}

        def call(x: np.ndarray) -> Any:
            runner = runners.get(x.shape[0])
            if runner is None:  # one interpreter per batch size: never resized between timed calls
                interp = Interpreter(model_path=os.path.join(path, "model.tflite"), num_threads=threads)
                runner = runners[x.shape[0]] = interp.get_signature_runner("serving_default")
                runner(image=x)
            return runner(image=x)["logits"]

        return call, np.asarray
    if variant == "torch":
        import torch

        torch.set_num_threads(threads)
        torch.set_flush_denormal(True)  # as TensorFlow
        tm = torch_model("cnn", ref).eval()

        def call(x: Any) -> Any:
            with torch.inference_mode():
                return tm(x)

        return call, lambda t: t.numpy()
    raise ValueError(f"unknown variant {variant!r}")


def prepare(variant: str, x: np.ndarray) -> Any:
    """The input as the variant takes it: a tf.constant (TF), NCHW tensor (torch), NumPy (predict_on_batch)."""
    if variant == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    if variant in ("keras-predict", "onnxruntime") or variant.startswith("litert"):
        return np.ascontiguousarray(x, np.float32)
    import tensorflow as tf

    return tf.constant(x)


def _disk_mib(path: str) -> float:
    """The size of a file or of every file below a folder, in MiB."""
    if os.path.isfile(path):
        return os.path.getsize(path) / 2**20
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total / 2**20


def _timed_calls(times: List[float], calls: int, settle: int) -> List[float]:
    """The single-call times of the timed windows: each window's ``settle`` leading calls dropped.

    ``times`` holds, in order, per window ``settle`` untimed and ``calls``
    timed calls (the warm-up call before the windows does not go through the
    recording step).
    """
    per = settle + calls
    return [t for i, t in enumerate(times) if i % per >= settle]


def _targets(results: Dict[str, Dict[str, Any]]) -> List[str]:
    """The issue's inference targets, each with its measured value (when both sides ran)."""
    out = []
    if "lamina-export" in results and "keras-export" in results:
        r = results["lamina-export"]["latency_ms"] / results["keras-export"]["latency_ms"]
        out.append(f"- target: lamina's SavedModel <= 1.0x Keras's export latency (batch 1): {r:.2f}x "
                   f"({'met' if r <= 1.0 else 'not met'})")
    # the same float32 model in the other runtimes (int8 is another model; PyTorch is not a runtime of the export)
    runtimes = {v: r["latency_ms"] for v, r in results.items() if v not in ("onnxruntime", "litert-int8", "torch")}
    if "onnxruntime" in results and runtimes:
        best = min(runtimes, key=runtimes.get)
        r = results["onnxruntime"]["latency_ms"] / runtimes[best]
        out.append(f"- target: the ONNX export within 10% of the best runtime (batch 1; best other: {best}): "
                   f"{r:.2f}x ({'met' if r <= 1.10 else 'not met'})")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frameworks", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    p.add_argument("--windows", type=int, default=None, help="round-robin windows (default 7; smoke 1)")
    p.add_argument("--calls", type=int, default=None, help="batch-1 calls per window (default 100; smoke 2)")
    p.add_argument("--batches", type=int, default=None, help="batch-256 calls per window (default 5; smoke 1)")
    p.add_argument("--big-batch", type=int, default=256)
    p.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    p.add_argument("--smoke", action="store_true", help="a few calls of each variant (tests)")
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.frameworks.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"inference.py: unknown variant {v!r}; known: {', '.join(VARIANTS)}")
    windows = args.windows or (1 if args.smoke else 7)
    calls = args.calls or (2 if args.smoke else 100)
    batches = args.batches or (1 if args.smoke else 5)
    big = 8 if args.smoke else args.big_batch

    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    info = machine_info()
    print(machine_line(info), flush=True)
    ref = lamina_model("cnn")
    x1, _ = synthetic_batch(NETS["cnn"], 1, seed=1)
    xb, _ = synthetic_batch(NETS["cnn"], big, seed=2)
    expected = ref(tf.constant(xb), training=False).numpy()
    lat: List[Entry] = []
    thr: List[Entry] = []
    skipped: Dict[str, str] = {}
    diffs: Dict[str, float] = {}
    call_ms: Dict[str, List[float]] = {}
    sizes: Dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="lamina_bench_") as tmp:
        for v in variants:
            try:
                call, to_np = build(v, ref, tmp, args.torch_threads)
                a1, ab = prepare(v, x1), prepare(v, xb)
                diffs[v] = float(np.max(np.abs(to_np(call(ab)) - expected)))
                to_np(call(a1))
            except Exception as e:  # noqa: BLE001 - reported; the other variants still run
                skipped[v] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
                print(f"  {v}: skipped ({skipped[v]})", flush=True)
                continue
            print(f"  {v}: ready, max |logit - lamina| = {diffs[v]:.2e}", flush=True)

            single: List[float] = []
            call_ms[v] = single

            def one(call: Callable = call, to_np: Callable = to_np, a1: Any = a1, single: List[float] = single) -> Any:
                t0 = time.perf_counter()
                out = to_np(call(a1))  # each call waits for its result
                single.append((time.perf_counter() - t0) * 1000.0)
                return out

            lat.append(Entry(v, step=one, steps=calls))
            if v in EXPORTED:
                sizes[v] = _disk_mib(os.path.join(tmp, EXPORTED[v]))
            thr.append(Entry(v, step=lambda call=call, ab=ab: call(ab), sync=to_np, steps=batches))
        round_robin(lat + thr, windows, 1, settle=SETTLE)
    rows = []
    results = {}
    for a, b in zip(lat, thr):
        ips = big / (b.ms / 1000.0)
        timed = _timed_calls(call_ms[a.name], calls, SETTLE)
        p50, p99 = (float(np.percentile(timed, q)) for q in (50, 99))
        results[a.name] = {"latency_ms": a.ms, "latency_ms_min": min(a.samples), "call_ms_p50": p50,
                           "call_ms_p99": p99, "throughput_ips": ips, "max_abs_diff": diffs[a.name],
                           "disk_mib": sizes.get(a.name)}
        rows.append([a.name, fmt(a.ms, 2), fmt(p50, 2), fmt(p99, 2), fmt(ips, 0), f"{diffs[a.name]:.1e}",
                     fmt(sizes.get(a.name), 2)])
    ref_name = "lamina-live" if "lamina-live" in results else None
    head = ["variant", "batch-1 ms (median window)", "call p50 ms", "call p99 ms", f"batch-{big} img/s",
            "max |logit diff|", "disk MiB"]
    print()
    print(f"### ConvNet(10) inference, 28x28x1 ({windows} windows of {calls} batch-1 calls and {batches} batch-{big} calls)")
    print()
    print(format_table(head, rows))
    if ref_name:
        print()
        base = results[ref_name]
        lines = [[v, f"{r['latency_ms'] / base['latency_ms']:.2f}x", f"{base['throughput_ips'] / r['throughput_ips']:.2f}x"]
                 for v, r in results.items() if v != ref_name]
        print(format_table(["variant (> 1: lamina-live is faster)", "batch-1: variant ms / lamina-live ms",
                            f"batch-{big}: lamina-live img/s / variant img/s"], lines))
    for line in _targets(results):
        print(line)
    for v, why in skipped.items():
        print(f"- skipped {v}: {why}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "results": results, "skipped": skipped}, f, indent=1)
    print(f"done (load {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
