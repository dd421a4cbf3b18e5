"""The benchmark scripts run end to end (``--smoke``: one step / a few calls, tiny batches).

Each script runs in a subprocess; a test checks that it exits 0 and prints its
table. Nothing is asserted about speed: timings never gate CI.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import List

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"


def _run(args: List[str], timeout: float = 180.0) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_train_step_smoke() -> None:
    # One framework variant each; the CNN only (the MLP and ResNet-18 go through the same code).
    variants = ["lamina", "lamina-bf16", "keras", "sonnet", "torch"]
    out = _run([str(BENCH / "train_step.py"), "--smoke", "--nets", "cnn", "--frameworks", ",".join(variants)])
    assert "### cnn (batch 4)" in out
    assert out.startswith("machine: ") and "; ISA " in out.splitlines()[0]
    assert "| variant" in out and "ms/step" in out and "% matmul" in out
    assert "speed ratio: peer ms / lamina ms" in out
    for variant in variants:
        assert f"| {variant} " in out or f"skipped {variant}" in out, variant
    assert "done:" in out


def test_train_step_rss_child() -> None:
    # The per-variant RSS child process (used by --rss subprocess) prints one JSON line.
    out = _run([str(BENCH / "train_step.py"), "--rss-child", "--nets", "mlp", "--frameworks", "torch", "--batch", "4"])
    assert out.strip().splitlines()[-1].startswith("RSS {")


def test_inference_smoke() -> None:
    variants = ("lamina-live", "savedmodel", "lamina-export", "keras-export", "onnxruntime", "litert-f32", "litert-int8")
    out = _run([str(BENCH / "inference.py"), "--smoke", "--frameworks", ",".join(variants)])
    assert "batch-1 ms" in out and "img/s" in out and "call p99 ms" in out and "disk MiB" in out
    assert "- target: lamina's SavedModel <= 1.0x Keras's export latency" in out
    assert "- target: the ONNX export within 10% of the best runtime" in out
    assert out.startswith("machine: ") and "; ISA " in out.splitlines()[0]
    for variant in variants:
        assert f"| {variant} " in out, variant


def test_startup_smoke() -> None:
    out = _run([str(BENCH / "startup.py"), "--smoke"])
    assert "| import lamina (after tensorflow)" in out
    assert out.startswith("machine: ") and "; ISA " in out.splitlines()[0]
    assert "lamina train --max-steps 1 --quiet" in out
    assert "### Time to the first training step" in out and "- target: lamina / Keras time to first step" in out


def test_profile_step_smoke() -> None:
    out = _run([str(BENCH / "profile_step.py"), "--net", "mlp", "--variants", "lamina", "--steps", "1", "--batch", "4"])
    assert "## lamina on mlp" in out and "kernel (node:op)" in out


def test_generate_smoke() -> None:
    # A 2-layer, 32-wide decoder: lamina cached / cached under XLA / recompute and the PyTorch KV-cache twin,
    # whose greedy tokens must all agree.
    out = _run([str(BENCH / "generate.py"), "--smoke"])
    assert "\nmachine: " in "\n" + out and "| variant" in out and "tokens/s" in out
    for variant in ("lamina-cached", "lamina-cached-tf", "lamina-cached-xla", "lamina-recompute", "torch-cached"):
        assert f"| {variant} " in out, variant
        assert f"{variant}: first call" in out and "at 12 of 12 positions" in out.split(f"{variant}: first call")[1].split("\n")[0]


@pytest.mark.parametrize("script", ["train_step.py", "inference.py", "startup.py", "profile_step.py", "data_pipeline.py",
                                    "generate.py"])
def test_help(script: str) -> None:
    assert "usage" in _run([str(BENCH / script), "--help"], timeout=60).lower()


def test_kernels_smoke() -> None:
    out = _run([str(BENCH / "kernels.py"), "--smoke"])
    assert "| conv 3x3 (stride 1, SAME)" in out and "filter grad ms" in out
    assert "Sum of a step's conv kernels" in out and "FusedBatchNormV3 ms" in out


def test_data_pipeline_smoke() -> None:
    # A 60-image folder: one batch of each pipeline (lamina, its TFRecords, hand-tuned tf.data, torch DataLoader),
    # the wait share over one step, one `lamina train` child for the peak RSS.
    out = _run([str(BENCH / "data_pipeline.py"), "--smoke"], timeout=300)
    assert "\nmachine: " in "\n" + out and "| pipeline" in out
    for name in ("lamina ", "lamina-tfrecord", "tf.data (hand-tuned)", "torch DataLoader"):
        assert f"| {name}" in out, name
    assert "share of step time waiting for input" in out
    assert "| 60    | stream=1 | streaming | 0    |" in out


def test_remat_smoke() -> None:
    out = _run([str(BENCH / "remat.py"), "--smoke"])
    assert out.startswith("machine: ") and "| remat " in out and "remat / plain: memory for the step" in out


def test_initializers_smoke() -> None:
    out = _run([str(BENCH / "initializers.py"), "--smoke"], timeout=300.0)
    for task in ("digits-convnet", "cnn-adam", "mlp-cancer", "gru-rows", "lstm-rows", "transformer-tokens"):
        assert f"### {task}:" in out, task
    for scheme in ("default", "lamina0", "torch", "he_uniform"):
        assert f"| {scheme} " in out, scheme
    assert "done:" in out


def test_machine_info_names_the_cpu_isa_and_versions() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import common
    finally:
        sys.path.remove(str(BENCH))
    info = common.machine_info()
    for key in ("cpu", "cores", "isa", "python", "tensorflow", "tf_kernels", "onednn", "onednn_isa", "load1"):
        assert key in info, key
    from tensorflow.python.util import _pywrap_util_port

    assert info["tf_kernels"] == ("oneDNN" if _pywrap_util_port.IsMklEnabled() else "Eigen")
    assert f"on {info['tf_kernels']} kernels" in common.machine_line(info)
    assert info["cores"] == os.cpu_count()
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if " avx512f" in flags:
        assert "avx512f" in info["isa"].split(",")
    line = common.machine_line(info)
    assert line.startswith("machine: ") and f"ISA {info['isa']}" in line and f"tensorflow {info['tensorflow']}" in line
    assert f"oneDNN {info['onednn']}" in line
