"""Every public module and model (``descriptors.py``) through the same checks.

In this process: the checks of :mod:`lamina.testing` (tf.function, XLA,
retracing, mixed precision, checkpoints, get/set_weights, deepcopy,
channels_first). In two subprocesses shared by every test (and by both pytest
workers, through a file lock): ``Trainer.fit`` under ``MirroredStrategy`` over
2 logical CPUs vs one device (``strategy_worker.py``), and SavedModels loaded in
a fresh process (``saved_model_worker.py``). Known failures are strict xfails
whose reason is written beside the descriptor.
"""

import inspect
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from lamina.testing import CHECKS, float_outputs
from conftest import once_per_session
from descriptors import DESCRIPTORS, EXCLUDED

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
# A hang guard, not a time limit: each worker runs every descriptor in one process. The strategy
# worker took over 420 s on an AVX2-only 2-core host (TensorFlow's Eigen convolutions, no oneDNN)
# while another job ran beside it.
TIMEOUT = 1800


def _param(d, check, raises=None):
    reason = d.xfail.get(check)
    marks = [pytest.mark.xfail(strict=True, reason=reason, raises=raises)] if reason else []
    return pytest.param(d, id=d.name, marks=marks)


# ---------------------------------------------------------------- coverage
def _public_module_classes():
    out = set()
    for namespace in (lm, lm.models):
        for name in dir(namespace):
            obj = getattr(namespace, name)
            if not name.startswith("_") and inspect.isclass(obj) and issubclass(obj, lm.Module):
                out.add(obj)
    return out


def test_every_public_module_has_a_descriptor():
    """A new public lm.Module subclass (in lamina or lamina.models) needs a descriptor or an exclusion."""
    covered = set().union(*(d.classes for d in DESCRIPTORS))
    public = _public_module_classes()
    missing = sorted(c.__name__ for c in public - covered - set(EXCLUDED))
    assert not missing, f"public modules without a descriptor in tests/conformance/descriptors.py: {missing}"
    assert not set(EXCLUDED) & covered, "a class is both excluded and covered"
    assert set(EXCLUDED) <= public, "EXCLUDED lists a class that is not public any more"
    names = [d.name for d in DESCRIPTORS]
    assert len(names) == len(set(names)), "descriptor names must be unique"
    unknown = {k for d in DESCRIPTORS for k in d.xfail} - set(CHECKS) - {"strategy", "saved_model"}
    assert not unknown, f"xfail names unknown checks: {unknown}"


# ------------------------------------------------------- in-process checks
IN_PROCESS = [
    pytest.param(check, d, id=f"{check}-{d.name}",
                 marks=[pytest.mark.xfail(strict=True, reason=d.xfail[check])] if check in d.xfail else [])
    for check in CHECKS
    for d in DESCRIPTORS
    if check != "channels_first" or d.channels_first is not None
]


@pytest.mark.parametrize("check, d", IN_PROCESS)
def test_check(check, d):
    CHECKS[check](d)


# ------------------------------------------------- shared subprocess results
def _run(args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def _result(results, d, what):
    """A descriptor's entry in a subprocess's results; its recorded error raised (not an AssertionError:
    an expected failure of the check must not hide a crash)."""
    res = results[d.name]
    if res.get("error"):
        raise RuntimeError(f"{d.name}: {what}: {res['error']}\n{res.get('trace', '')}")
    return res


# ------------------------------------------------- MirroredStrategy training
@pytest.fixture(scope="session")
def strategy_results(tmp_path_factory):
    def produce(folder):
        out = folder / "strategy.json"
        _run([os.path.join(HERE, "strategy_worker.py"), str(out)], cwd=str(folder))
        return json.loads(out.read_text())

    return once_per_session(tmp_path_factory, "conformance_strategy", produce)


@pytest.mark.parametrize("d", [_param(d, "strategy", raises=AssertionError) for d in DESCRIPTORS if d.expensive])
def test_mirrored_strategy_fit_equals_one_device(d, strategy_results):
    """Trainer.fit, 3 epochs of 2 steps, MirroredStrategy over 2 logical CPUs == one device, to 1e-5."""
    res = _result(strategy_results, d, "training under the strategy failed")
    assert res["steps"] == 6, res
    assert res["moved"] > 1e-3, f"{d.name}: training did not change the weights ({res['moved']:.3g})"
    assert res["diff"] <= 1e-5, f"{d.name}: weights differ by {res['diff']:.3g} after 6 steps (losses {res['losses']})"


# ----------------------------------------------------------- SavedModel
def _folder_name(i, d):
    return f"m{i:02d}_" + re.sub(r"\W+", "_", d.name).strip("_")


def _serving(d, module):
    """The serving signature: ``x`` (any batch size) -> ``{"output_<i>": each floating output}``."""

    @tf.function(input_signature=[tf.TensorSpec([None, *d.shape], d.dtype, name="x")])
    def serve(x):
        return {f"output_{j}": t for j, t in enumerate(float_outputs(d.call(module, x)))}

    return serve.get_concrete_function()


@pytest.fixture(scope="session")
def saved_model_results(tmp_path_factory):
    def produce(folder):
        inputs, expected, results = {}, {}, {}
        for i, d in enumerate(DESCRIPTORS):
            if not d.expensive:
                continue
            name = _folder_name(i, d)
            try:
                module, _, _ = d.build()
                tf.saved_model.save(module, str(folder / name), signatures={"serving_default": _serving(d, module)})
                x = d.make_input(4, seed=2)  # another batch size than the build's
                inputs[name] = x.numpy()
                expected[name] = [np.asarray(tf.cast(t, tf.float32)) for t in float_outputs(d.call(module, x))]
            except Exception as e:  # noqa: BLE001 - reported by the test of this descriptor
                results[d.name] = {"error": f"saving failed: {type(e).__name__}: {e}"[:2000]}
        np.savez(folder / "inputs.npz", **inputs)
        _run([os.path.join(HERE, "saved_model_worker.py"), str(folder)], cwd=str(folder))
        errors = json.loads((folder / "errors.json").read_text())
        with np.load(folder / "outputs.npz", allow_pickle=False) as f:
            got = {k: f[k] for k in f.files}
        for i, d in enumerate(DESCRIPTORS):
            name = _folder_name(i, d)
            if d.name in results or name not in inputs:
                continue
            if name in errors:
                results[d.name] = {"error": f"loading or running failed: {errors[name]}"}
                continue
            diffs = []
            for j, want in enumerate(expected[name]):
                have = got.get(f"{name}/output_{j}")
                if have is None or have.shape != want.shape:
                    diffs.append(float("inf"))
                else:
                    diffs.append(float(np.abs(have.astype(np.float32) - want).max()) / max(float(np.abs(want).max()), 1e-6))
            results[d.name] = {"error": None, "relative_diffs": diffs}
        return results

    return once_per_session(tmp_path_factory, "conformance_saved_model", produce)


@pytest.mark.parametrize("d", [_param(d, "saved_model", raises=AssertionError) for d in DESCRIPTORS if d.expensive])
def test_saved_model_in_a_fresh_process_gives_the_same_outputs(d, saved_model_results):
    """tf.saved_model.save(module, signatures=...) -> tf.saved_model.load in another process -> same outputs."""
    res = _result(saved_model_results, d, "SavedModel")
    assert res["relative_diffs"], f"{d.name}: no output"
    assert max(res["relative_diffs"]) <= 1e-5, f"{d.name}: outputs differ (relative) by {res['relative_diffs']}"
