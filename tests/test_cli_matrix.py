"""Every CLI command, for every ``--strategy`` and every ``--precision``, on the default model.

``lamina train`` (one epoch of 2 steps on a tiny ``.npz``), then ``evaluate``,
``export --format savedmodel`` and ``predict`` (from the run and from the
export, which must agree) on the run it wrote; ``summary`` once. ``default``
trains in this process; ``mirrored`` (one replica on a CPU-only machine, as the
CLI builds it) and ``multiworker`` (a one-worker ``TF_CONFIG`` on 127.0.0.1;
the strategy must exist before TensorFlow runs an op) train their four
precisions in one subprocess each, so that a failure there cannot leave a
strategy scope entered in the test process; the other commands then run here
on their run folders.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from conftest import once_per_session, run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATEGIES = ("default", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
TRAIN = ["--epochs", "1", "--batch-size", "64", "--val-split", "0.2", "--quiet"]


def _write_files(root):
    """A tiny 8x8 two-class data set (160 train = 2 steps of 64 after the validation split) and one PNG."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    x = (rng.integers(0, 60, (200, 8, 8)) + 150 * y[:, None, None] * (np.arange(8) < 4)).astype(np.uint8)
    np.savez(root / "tiny.npz", x_train=x[:160], y_train=y[:160], x_test=x[160:], y_test=y[160:])
    (root / "digit.png").write_bytes(tf.io.encode_png(x[0][:, :, None]).numpy())
    return root


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return _write_files(tmp_path_factory.mktemp("cli_matrix"))


def _cli(*argv):
    code, out, err = run_cli([str(a) for a in argv])
    assert code == 0, f"lamina {' '.join(map(str, argv))} exited {code}: {err.strip()[-2000:]}"
    return out


_TRAIN_ALL = textwrap.dedent(
    """
    import json, os, sys
    from lamina.cli import main
    strategy, data, root, precisions, train = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(","), sys.argv[5:]
    codes = {}
    for p in precisions:
        codes[p] = main(["train", "--strategy", strategy, "--precision", p, "--data", data,
                         "--run-dir", os.path.join(root, strategy + "-" + p), *train])
    print("RESULT " + json.dumps(codes), flush=True)
    """
)


def _train_in_subprocess(tmp_path_factory, strategy):
    """Trains the four precisions with ``strategy`` in one subprocess (once, whichever worker asks first)."""

    def produce(folder):
        _write_files(folder)
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3")
        env.pop("TF_CONFIG", None)
        if strategy == "multiworker":
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}"]},
                                           "task": {"type": "worker", "index": 0}})
        proc = subprocess.run(
            [sys.executable, "-c", _TRAIN_ALL, strategy, str(folder / "tiny.npz"), str(folder), ",".join(PRECISIONS),
             *TRAIN],
            capture_output=True, text=True, env=env, cwd=str(folder), timeout=300,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        codes = json.loads(lines[-1][len("RESULT "):]) if lines else {}
        return {"folder": str(folder), "returncode": proc.returncode, "codes": codes,
                "log": proc.stdout[-3000:] + proc.stderr[-5000:]}

    return once_per_session(tmp_path_factory, f"cli_matrix_{strategy}", produce)


def _train(strategy, precision, files, request):
    if strategy == "default":
        run = files / f"{strategy}-{precision}"
        out = _cli("train", "--strategy", strategy, "--precision", precision, "--data", files / "tiny.npz",
                   "--run-dir", run, *TRAIN)
    else:
        res = _train_in_subprocess(request.getfixturevalue("tmp_path_factory"), strategy)
        assert res["returncode"] == 0 and res["codes"].get(precision) == 0, res["log"]
        run, out = pathlib.Path(res["folder"]) / f"{strategy}-{precision}", res["log"]
    assert f"run dir {run}" in out and "test accuracy" in out
    return run


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_train_evaluate_export_predict(strategy, precision, files, request):
    run = _train(strategy, precision, files, request)
    config = json.loads((run / "config.json").read_text())
    assert config["strategy"] == strategy and config["precision"] == precision
    assert config["precision_resolved"] in PRECISIONS[:3]
    results = json.loads((run / "results.json").read_text())
    assert results["epochs_run"] == 1 and np.array(results["confusion_matrix"]).sum() == 40
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["step"] == 2 and np.isfinite(history[0]["loss"])

    out = _cli("evaluate", run)
    assert "test: loss " in out and "accuracy" in out

    _cli("export", run, "--format", "savedmodel")
    exported = run / "export" / "savedmodel"  # TF Serving's layout: version folders inside
    assert (exported / "1" / "saved_model.pb").exists()

    rows = []
    for source in (run, exported):
        out = _cli("predict", source, files / "digit.png", "--json", "--top-k", "2")
        rows.append([json.loads(line) for line in out.splitlines() if line.startswith("{")])
    assert len(rows[0]) == len(rows[1]) == 1
    live, served = rows[0][0], rows[1][0]
    assert len(live["predictions"]) == 2
    assert [c["class_id"] for c in live["predictions"]] == [c["class_id"] for c in served["predictions"]]
    np.testing.assert_allclose([c["probability"] for c in live["predictions"]],
                               [c["probability"] for c in served["predictions"]], atol=1e-4)


def test_summary_of_the_default_model():
    out = _cli("summary", "--input-shape", "8,8,1")
    assert "ConvNet 'convnet' on input (1, 8, 8, 1)" in out and "Trainable params:" in out
