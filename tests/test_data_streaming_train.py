"""`lamina train` on a streamed image folder: end to end, and SIGKILL mid-epoch then resume bit-identical.

The real command (``python -m lamina train``) on a tiny generated folder read
with ``?stream=1``; each process is bounded by a timeout and killed at the end.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.test_reliability import _latest, _tensors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("LAMINA_DEBUG", None)
    return env


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream") / "shapes"
    rng = np.random.default_rng(0)
    for c in range(3):
        os.makedirs(root / f"class{c}")
        for i in range(24):
            img = np.full((9, 9, 3), 60 * c, np.uint8) + rng.integers(0, 40, (9, 9, 3), dtype=np.uint8)
            tf.io.write_file(str(root / f"class{c}" / f"{i:02d}.png"), tf.io.encode_png(img))
    (root / "class1" / "07.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # met mid-epoch, skipped
    return str(root)


def _cmd(folder, run_dir, *extra):
    return [sys.executable, "-m", "lamina", "train", "--data", folder + "?stream=1", "--image-size", "8,8",
            "--model", "mlp", "--epochs", "2", "--batch-size", "8", "--checkpoint-every", "2", "--deterministic",
            "--seed", "0", "--val-split", "0.1", "--run-dir", run_dir, "--quiet", *extra]


def test_lamina_train_one_epoch_on_a_streamed_folder(folder, tmp_path, capsys):
    from lamina.cli import main

    run_dir = str(tmp_path / "run")
    code = main(["train", "--data", folder + "?stream=1", "--image-size", "8,8", "--model", "mlp", "--epochs", "1",
                 "--batch-size", "16", "--val-split", "0.1", "--run-dir", run_dir, "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "test accuracy" in out.out
    assert "07.png: corrupt or unreadable image" in out.err and "skipped (1 bad file" in out.err
    results = json.load(open(os.path.join(run_dir, "results.json")))
    assert results["epochs_run"] == 1 and sum(map(sum, results["confusion_matrix"])) == 15  # the test split
    history = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert history[0]["step"] == 4  # ceil(51 / 16) steps: the plan's batches, bad file included


@pytest.mark.slow  # three `lamina train` processes (~20-35 s on 2 shared cores); the plan's exact skip is tested fast
def test_train_on_a_streamed_folder_then_kill_9_and_resume_bit_identical(folder, tmp_path):
    ref_dir, run_dir = str(tmp_path / "ref"), str(tmp_path / "run")
    ref = subprocess.Popen(_cmd(folder, ref_dir), cwd=str(tmp_path), env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    proc = subprocess.Popen(_cmd(folder, run_dir), cwd=str(tmp_path), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    steps_per_epoch = 7  # 72 files - 15 test - 6 validation = 51 train examples, batch 8 (a bad one included)
    try:
        ckpts, killed, seen = os.path.join(run_dir, "checkpoints"), None, None
        deadline = time.monotonic() + 150
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            state = os.path.join(ckpts, "checkpoint")
            stamp = os.stat(state).st_mtime_ns if os.path.exists(state) else None
            if stamp is not None and stamp != seen:
                seen = stamp
                os.kill(proc.pid, signal.SIGSTOP)  # freeze, then look at what is on disk
                latest = _latest(ckpts)
                if latest and latest[1] > steps_per_epoch and latest[2] > 0:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed = latest
                else:
                    os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.01)
        assert killed is not None, "no mid-epoch checkpoint in epoch 2 was seen: " + (proc.communicate()[1][-2000:] if proc.poll() is not None else "")
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        _, step, in_epoch = killed
        assert step % steps_per_epoch == in_epoch and 0 < in_epoch < steps_per_epoch
        again = subprocess.run(_cmd(folder, run_dir), cwd=str(tmp_path), env=_env(), capture_output=True,
                               text=True, timeout=150)
        assert again.returncode == 0, again.stderr
        assert "test accuracy" in again.stdout
        assert "07.png: corrupt or unreadable image" in again.stderr and "skipped (" in again.stderr
        ref_out, ref_err = ref.communicate(timeout=150)
        assert ref.returncode == 0, ref_err
    finally:
        for p in (proc, ref):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.communicate(timeout=30)
    want_prefix, want_step, _ = _latest(os.path.join(ref_dir, "checkpoints"))
    got_prefix, got_step, _ = _latest(os.path.join(run_dir, "checkpoints"))
    assert want_step == got_step == 2 * steps_per_epoch
    want, got = _tensors(want_prefix), _tensors(got_prefix)
    assert set(want) == set(got) and len([k for k in want if k.startswith("model/")]) >= 4
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    config = json.load(open(os.path.join(run_dir, "config.json")))
    assert config["input_shape"] == [8, 8, 3] and config["class_names"] == ["class0", "class1", "class2"]
