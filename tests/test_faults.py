"""Fault injection over every write of ``lamina train`` and ``lamina export`` (see tests/faults.py).

Each scenario runs in its own process (it enables TensorFlow's op determinism
and patches the file operations); the test checks its report. A kill at any
fault point, followed by the same command, must end bit-identical to an
uninterrupted run; a full disk at any point must fail with one line (exit 2)
and lose nothing. The manager and folder-publishing tests below go through
every operation of one save / publish in-process, in milliseconds.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import faults
from lamina.fileio import clean_stale_dirs, publish_dir
from lamina.train.checkpoints import SafeCheckpointManager, latest_good_checkpoint, verify_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def _scenario(name, work, timeout=600):
    report = os.path.join(work, f"{name}.json")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("LAMINA_DEBUG", None)
    proc = subprocess.run([sys.executable, os.path.join(HERE, "faults.py"), name, work, report], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if not os.path.exists(report):
        return proc, None
    with open(report) as f:
        return proc, json.load(f)


def _cases(name, work):
    """Runs a scenario and returns its cases, none of which may have failed."""
    proc, report = _scenario(name, work)
    assert report is not None, proc.stderr[-3000:]
    assert "error" not in report, report["error"]
    failed = [c for c in report["cases"] if c["outcome"] == "FAILED"]
    assert not failed, _table(failed)
    return report["cases"]


def _table(cases):
    return "\n".join(f"{c['kind']:<22} {c.get('format', ''):<10} {c['op']:<16} {c['site']:<50} {c['outcome']} "
                     f"{c.get('detail', '')}" for c in cases)


def test_every_write_of_train_survives_a_kill_or_a_full_disk(tmp_path):
    cases = _cases("train", str(tmp_path))
    ops = {(c["kind"], c["op"]) for c in cases}
    sites = {c["site"] for c in cases}
    # Every kind of write was a kill point: checkpoints (new and re-saved numbers, retention), best/,
    # the torn append of metrics.jsonl, config.json, the plots and results.json.
    assert ("kill -9 mid-write", "write") in ops  # a torn metrics.jsonl line
    assert any(s.startswith("checkpoints/.ckpt-3.sha256.tmp-") for s in sites)  # inside the re-save of ckpt-3
    assert any(c["op"] == "remove" and c["site"].startswith("checkpoints/ckpt-3") for c in cases)  # retention
    assert any(s.startswith("best/") for s in sites)
    assert {".config.json.tmp-*", ".results.json.tmp-*"} <= sites
    assert ("full disk (ENOSPC)", "link") in ops and ("full disk (ENOSPC)", "checkpoint-write") in ops
    assert len([c for c in cases if c["kind"].startswith("kill")]) >= 25
    messages = [c["message"] for c in cases if c["outcome"].startswith("exit 2")]
    assert messages and all("No space left on device" in m for m in messages)


def test_every_write_of_export_survives_a_kill_or_a_full_disk(tmp_path):
    cases = _cases("export", str(tmp_path))
    for fmt in ("savedmodel", "tflite"):
        mine = [c for c in cases if c["format"] == fmt]
        assert any(c["op"] == "exchange" and c["kind"] == "kill -9" for c in mine), fmt
        assert any("re-export cleans up" in c["outcome"] for c in mine), fmt
        assert any(c["kind"] == "full disk (ENOSPC)" and c["outcome"].startswith("exit 2") for c in mine), fmt


def test_sigkill_inside_the_resave_of_an_epoch_end_resumes_from_it(tmp_path):
    """The issue's #2 with a real SIGKILL: a periodic save on an epoch end saves that number twice."""
    work = str(tmp_path)
    proc, report = _scenario("kill", work)
    assert proc.returncode == -9, (proc.returncode, proc.stderr[-2000:])
    proc, report = _scenario("resume", work)
    assert report is not None and "error" not in report, (report or {}).get("error", proc.stderr[-3000:])
    # The kill left the new ckpt-3 listed under its temporary name, the old index still in place:
    left = report["left"]
    assert len(left["listed"]) == 1 and left["listed"][0].startswith(".tmp-ckpt-3-")
    assert "ckpt-3.index" in left["files"]
    assert report["code"] == 0, report["stderr"]
    assert "test accuracy" in report["stdout"]
    assert report["differences"] == []


# ------------------------------------------------ every operation, in-process
def _value(prefix):
    return float(tf.train.load_checkpoint(prefix).get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE")[0])


@pytest.mark.parametrize("keep", [1, 2])
def test_manager_any_crash_leaves_the_previous_or_the_new_checkpoint(tmp_path, keep):
    """Snapshots at every operation of new saves, re-saves (one number twice) and retention drops."""
    folder = str(tmp_path / "ck")
    var = tf.Variable(tf.zeros([50]), name="v")
    mgr = SafeCheckpointManager(tf.train.Checkpoint(v=var), folder, max_to_keep=keep)
    plan = [(1, 1.0), (1, 2.0), (2, 3.0), (2, 4.0), (3, 5.0)]  # (number, value): 1 and 2 saved twice
    snaps = faults.Snapshots(str(tmp_path / "snaps"))
    expected = []  # per snapshot: the values acceptable for the newest intact checkpoint
    done = None
    with faults.FaultInjector(folder, lambda p, phase: (snaps.take(folder, p, phase), expected.append(done))):
        for number, value in plan:
            var.assign(tf.fill([50], value))
            pending = value
            expected_before = len(expected)
            mgr.save(number)
            for i in range(expected_before, len(expected)):
                expected[i] = (expected[i], pending)  # the old one or the one being saved
            done = value
    assert len(snaps.taken) > 40
    ops = {s["point"].op for s in snaps.taken}
    assert {"checkpoint-write", "replace", "link", "remove", "os.open", "open-x"} <= ops
    for snap, (old, new) in zip(snaps.taken, expected):
        faults.restore(snap["dir"], folder)
        prefix = latest_good_checkpoint(folder, warn=None)
        if old is None:
            assert prefix is None or _value(prefix) == new, snap["point"]
            continue
        assert prefix is not None, snap["point"]  # never "no checkpoint" once one was complete
        value = _value(prefix)
        assert value in (old, new), (snap["point"], value)
        # The writer's next resume (it finishes an interrupted re-save) and save put the folder in order.
        resumed = SafeCheckpointManager(tf.train.Checkpoint(v=tf.Variable(tf.zeros([50]), name="v")), folder,
                                        max_to_keep=keep)
        assert _value(resumed.latest_good()) == value
        resumed.save(9)
        names = sorted(os.listdir(folder))
        assert not [n for n in names if n.startswith(".")], (snap["point"], names)
        assert [os.path.basename(p) for p in resumed.checkpoints][-1] == "ckpt-9"
        assert all(verify_checkpoint(p) is None for p in resumed.checkpoints)


def _build(value):
    def build(tmp):
        with open(os.path.join(tmp, "a.txt"), "w") as f:
            f.write(value)
        os.makedirs(os.path.join(tmp, "sub"))
        with open(os.path.join(tmp, "sub", "b.txt"), "w") as f:
            f.write(value * 2)
        return value
    return build


def _content(path):
    if not os.path.isdir(path):
        return None
    return open(os.path.join(path, "a.txt")).read(), open(os.path.join(path, "sub", "b.txt")).read()


@pytest.mark.parametrize("atomic_swap", [True, False])
def test_publish_dir_any_crash_leaves_the_old_or_the_new_folder(tmp_path, monkeypatch, atomic_swap):
    """Every operation of replacing a folder, with renameat2(RENAME_EXCHANGE) and with the two-rename fallback."""
    import lamina.fileio as fileio

    if not atomic_swap:
        monkeypatch.setattr(fileio, "exchange", lambda a, b: False)
    root = tmp_path / "base"
    target = str(root / "export")
    publish_dir(target, _build("old"))
    snaps = faults.Snapshots(str(tmp_path / "snaps"))
    with faults.FaultInjector(str(root), lambda p, phase: snaps.take(str(root), p, phase)):
        assert publish_dir(target, _build("new")) == "new"
    assert _content(target) == ("new", "newnew")
    assert not [n for n in os.listdir(root) if n.startswith(".")]
    ops = [s["point"].op for s in snaps.taken]
    assert "exchange" in ops and ("rename" in ops) != atomic_swap  # the fallback renames twice
    missing = 0
    for snap in snaps.taken:
        faults.restore(snap["dir"], str(root))
        seen = _content(target)
        if seen is None:
            missing += 1  # only between the fallback's two renames
        else:
            assert seen in (("old", "oldold"), ("new", "newnew")), snap["point"]
        clean_stale_dirs(target)  # what the next export does first: puts the old one back
        assert _content(target) in (("old", "oldold"), ("new", "newnew")), snap["point"]
        assert not [n for n in os.listdir(root) if n.startswith(".")], snap["point"]
    assert missing == (0 if atomic_swap else 1)


def test_publish_dir_failure_keeps_the_old_folder_and_leaves_nothing(tmp_path):
    target = str(tmp_path / "export")
    publish_dir(target, _build("old"))

    def broken(tmp):
        _build("new")(tmp)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        publish_dir(target, broken)
    assert _content(target) == ("old", "oldold")
    assert os.listdir(tmp_path) == ["export"]


def test_a_live_publishers_temporaries_are_left_alone(tmp_path):
    """clean_stale_dirs removes only what dead processes left (a concurrent export keeps its folder)."""
    target = str(tmp_path / "export")
    publish_dir(target, _build("old"))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        mine = tmp_path / f".export.tmp-{live.pid}-abcdefgh"
        dead = tmp_path / ".export.tmp-999999999-abcdefgh"
        mine.mkdir()
        dead.mkdir()
        clean_stale_dirs(target)
        assert mine.exists() and not dead.exists()
    finally:
        live.kill()
        live.wait()
    clean_stale_dirs(target)
    assert os.listdir(tmp_path) == ["export"]


def test_fault_points_are_counted_in_order(tmp_path):
    """The injector itself: each write-side call is one point, nested calls are not, torn writes split."""
    from lamina.fileio import append_line, atomic_write

    seen = []
    root = str(tmp_path)
    with faults.FaultInjector(root, lambda p, phase: seen.append((p.op, p.site, phase))):
        atomic_write(os.path.join(root, "x.json"), "{}")
        append_line(os.path.join(root, "log.jsonl"), "abc")
        np.save(os.path.join(root, "a.npy"), np.zeros(3))
    assert seen == [
        ("os.open", ".x.json.tmp-*", "before"), ("open-w", ".x.json.tmp-*", "before"), ("replace", "x.json", "before"),
        ("os.open", "log.jsonl", "before"), ("write", "log.jsonl", "before"), ("write", "log.jsonl", "torn"),
        ("open-w", "a.npy", "before"),
    ]
    assert open(os.path.join(root, "log.jsonl")).read() == "abc\n"
