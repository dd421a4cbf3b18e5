"""Reliability: kill and resume, signals, atomic and verified checkpoints, NaN stops, safety.

The subprocess tests run the real ``lamina train`` (``python -m lamina``) on the
bundled digits; each is bounded by a timeout and its process is always killed
and reaped at the end.
"""

import errno
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from lamina.train.checkpoints import CheckpointError, SafeCheckpointManager, latest_good_checkpoint, verify_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"
STEP_IN_EPOCH_KEY = "step_in_epoch/.ATTRIBUTES/VARIABLE_VALUE"
STEPS_PER_EPOCH = 41  # digits: 1437 train examples, 10% held out -> 1293, batch 32


# ----------------------------------------------------------------- helpers
def _env():
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("LAMINA_DEBUG", None)
    return env


def _train_cmd(run_dir, *extra, epochs=3, every=5):
    return [
        sys.executable, "-m", "lamina", "train", "--epochs", str(epochs), "--batch-size", "32",
        "--checkpoint-every", str(every), "--deterministic", "--seed", "0", "--run-dir", run_dir, "--quiet", *extra,
    ]


def _run(cmd, cwd, timeout=180, **kw):
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture
def spawn():
    """Starts subprocesses; whatever is still running at the end is killed and reaped."""
    procs = []

    def start(cmd, cwd):
        proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            proc.kill()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass


def _latest(folder):
    """(prefix, step, step_in_epoch) of a folder's newest listed checkpoint, or None."""
    path = tf.train.latest_checkpoint(folder)
    if path is None:
        return None
    reader = tf.train.load_checkpoint(path)
    return path, int(reader.get_tensor(STEP_KEY)), int(reader.get_tensor(STEP_IN_EPOCH_KEY))


def _tensors(prefix, skip=("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH")):
    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if not k.startswith(skip)}


def _wait_for(predicate, proc, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (code {proc.returncode}) before {what}: {err[-2000:]}")
        time.sleep(0.01)
    pytest.fail(f"timed out waiting for {what}")


def _metrics(run):
    drop = ("time", "images_per_sec")
    return [{k: v for k, v in json.loads(l).items() if k not in drop} for l in open(os.path.join(run, "metrics.jsonl"))]


# --------------------------------------------------------- kill and resume
def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path, spawn):
    """SIGKILL in the middle of epoch 2 (a checkpoint exists), rerun: same end as an uninterrupted run."""
    ref = str(tmp_path / "ref")
    ref_proc = spawn(_train_cmd(ref), cwd=str(tmp_path))  # the uninterrupted run, alongside
    run = str(tmp_path / "run")
    folder = os.path.join(run, "checkpoints")
    proc = spawn(_train_cmd(run), cwd=str(tmp_path))
    killed_at = None
    seen = None
    deadline = time.monotonic() + 120
    while killed_at is None and time.monotonic() < deadline:
        state = os.path.join(folder, "checkpoint")
        stamp = os.stat(state).st_mtime_ns if os.path.exists(state) else None
        if stamp is not None and stamp != seen:
            seen = stamp
            os.kill(proc.pid, signal.SIGSTOP)  # freeze it, then look at what is on disk
            latest = _latest(folder)
            if latest and latest[1] > STEPS_PER_EPOCH and latest[2] > 0:
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = latest
            else:
                os.kill(proc.pid, signal.SIGCONT)
        if proc.poll() is not None and killed_at is None:
            pytest.fail(f"training ended before a mid-epoch checkpoint in epoch 2 was seen: {proc.communicate()[1][-2000:]}")
        time.sleep(0.01)
    assert killed_at is not None, "no mid-epoch checkpoint appeared in time"
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    prefix, step, in_epoch = killed_at
    assert step % STEPS_PER_EPOCH == in_epoch and 0 < in_epoch < STEPS_PER_EPOCH  # not an epoch boundary
    assert verify_checkpoint(prefix) is None

    again = _run(_train_cmd(run), cwd=str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert "test accuracy" in again.stdout
    _, ref_err = ref_proc.communicate(timeout=120)
    assert ref_proc.returncode == 0, ref_err
    ref_final, ref_step, _ = _latest(os.path.join(ref, "checkpoints"))
    assert ref_step == 3 * STEPS_PER_EPOCH
    final, final_step, _ = _latest(folder)
    assert final_step == ref_step
    want, got = _tensors(ref_final), _tensors(final)
    assert set(got) == set(want)
    model_keys = [k for k in want if k.startswith("model/")]
    assert len(model_keys) >= 10
    for key in want:  # model, optimizer slots and step count, metric state, epoch, best value
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    # The same weights through the public loader, and the same per-epoch records.
    m_ref, _ = lm.train.load_run(ref, "latest")
    m_run, _ = lm.train.load_run(run, "latest")
    for (k, a), (_, b) in zip(sorted(m_ref.variable_paths().items()), sorted(m_run.variable_paths().items())):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
    assert _metrics(run) == _metrics(ref)
    assert not [n for n in os.listdir(folder) if n.startswith(".tmp-")]


def test_sigint_and_sigterm_save_a_checkpoint_and_exit_130(tmp_path, spawn):
    procs = {}
    for sig in (signal.SIGINT, signal.SIGTERM):  # two runs side by side
        run = str(tmp_path / sig.name)
        # No periodic checkpoints: the first one is the end of epoch 1, the next is the signal's.
        procs[sig] = (run, spawn(_train_cmd(run, epochs=6, every=10_000), cwd=str(tmp_path)))
    for sig, (run, proc) in procs.items():
        state = os.path.join(run, "checkpoints", "checkpoint")
        _wait_for(lambda: os.path.exists(state), proc, 120, f"the first checkpoint ({sig.name})")
        os.kill(proc.pid, sig)
    for sig, (run, proc) in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, (sig.name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (sig.name, err)
        match = re.fullmatch(r"lamina: interrupted at step (\d+); checkpoint saved: (.+)", lines[0])
        assert match, lines[0]
        reached, path = int(match.group(1)), match.group(2)
        prefix, step, in_epoch = _latest(os.path.join(run, "checkpoints"))
        assert path == prefix
        assert step == reached >= STEPS_PER_EPOCH, sig.name
        assert os.path.basename(prefix) == f"ckpt-{reached}"
        # A signal right after an epoch's last step may save that epoch as complete but not
        # yet closed (step_in_epoch == STEPS_PER_EPOCH; its record is written on resume), or
        # after it was closed (step_in_epoch == 0).
        boundary = reached % STEPS_PER_EPOCH == 0
        assert in_epoch == reached % STEPS_PER_EPOCH or (boundary and in_epoch == STEPS_PER_EPOCH)
        assert verify_checkpoint(prefix) is None


# ---------------------------------------------------------------- NaN / Inf
def test_check_numerics_cli_stops_names_step_and_module_keeps_last_good_checkpoint(tmp_path):
    """A huge (finite) example overflows to inf in the first conv at a known step."""
    from lamina.data.split import epoch_permutation

    n, batch, bad_step = 160, 16, 7
    rng = np.random.default_rng(0)
    x = rng.random((n, 8, 8), dtype=np.float32)
    y = np.arange(n) % 4
    order = epoch_permutation(n, 0, 0)  # the epoch-0 order of `--seed 0`
    x[order[batch * (bad_step - 1) + 3]] = 3e38
    np.savez(tmp_path / "overflow.npz", x_train=x, y_train=y, x_test=x[:20] * 0 + 0.5, y_test=y[:20])
    run = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "lamina", "train", "--data", "overflow.npz", "--val-split", "0", "--batch-size",
           str(batch), "--epochs", "2", "--checkpoint-every", "2", "--check-numerics", "--run-dir", run, "--quiet"]
    proc = _run(cmd, cwd=str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"lamina: error: non-finite loss or gradient at step {bad_step}; first non-finite output: Conv2D 'conv_0'"
    ]
    prefix, step, _ = _latest(os.path.join(run, "checkpoints"))
    assert step == bad_step - 1 and os.path.basename(prefix) == f"ckpt-{bad_step - 1}"
    weights = {k: v for k, v in _tensors(prefix).items() if k.startswith(("model/", "optimizer/"))}
    assert len(weights) > 10
    for key, value in weights.items():
        assert np.all(np.isfinite(value)), key


def test_check_numerics_does_not_apply_the_bad_step():
    model = lm.models.MLP([8], 3)
    trainer = lm.train.Trainer(model, lm.optim.Adam(1e-2), metrics=[], quiet=True, check_numerics=True)
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    y = np.arange(8) % 3
    trainer.train_step(tf.constant(x), tf.constant(y))
    before = {k: v.numpy().copy() for k, v in model.variable_paths().items()}
    slots = [v.numpy().copy() for v in trainer.optimizer.variables]
    assert len(slots) > 2
    x[2, 1] = np.nan
    with pytest.raises(lm.train.TrainingError, match=r"non-finite loss or gradient at step 2; first non-finite output: "):
        trainer.train_step(tf.constant(x), tf.constant(y))
    for k, v in model.variable_paths().items():
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=k)
    for a, b in zip(slots, trainer.optimizer.variables):
        np.testing.assert_array_equal(a, b.numpy())


# ------------------------------------------------ atomic, verified checkpoints
def _manager(tmp_path, keep=3, value=0.0):
    var = tf.Variable(tf.fill([300], value), name="v")
    return var, SafeCheckpointManager(tf.train.Checkpoint(v=var), str(tmp_path / "ck"), max_to_keep=keep)


def _flip_byte(path, offset=None):
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2 if offset is None else offset] ^= 0xFF
    open(path, "wb").write(bytes(data))


def test_safe_manager_files_state_and_retention(tmp_path):
    var, mgr = _manager(tmp_path, keep=2)
    for n in (5, 10, 10, 15):  # 10 twice: a periodic save falling on an epoch end
        var.assign_add(tf.ones_like(var))
        assert mgr.save(checkpoint_number=n).endswith(f"ckpt-{n}")
    folder = mgr.directory
    names = sorted(os.listdir(folder))
    assert names == [
        "checkpoint", "ckpt-10.data-00000-of-00001", "ckpt-10.index", "ckpt-10.sha256",
        "ckpt-15.data-00000-of-00001", "ckpt-15.index", "ckpt-15.sha256",
    ]
    # TensorFlow's own readers understand the folder.
    assert tf.train.latest_checkpoint(folder) == os.path.join(folder, "ckpt-15")
    state = tf.train.get_checkpoint_state(folder)
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-10", "ckpt-15"]
    assert mgr.checkpoints == [os.path.join(folder, "ckpt-10"), os.path.join(folder, "ckpt-15")]
    sidecar = json.load(open(os.path.join(folder, "ckpt-15.sha256")))
    assert set(sidecar["files"]) == {"ckpt-15.index", "ckpt-15.data-00000-of-00001"}
    assert verify_checkpoint(os.path.join(folder, "ckpt-10")) is None
    reader = tf.train.load_checkpoint(os.path.join(folder, "ckpt-10"))
    assert float(reader.get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE")[0]) == 3.0  # the second save of 10


@pytest.mark.parametrize("damage", ["flip_data", "truncate_data", "truncate_index", "delete_data"])
def test_corrupt_newest_checkpoint_is_detected_and_the_previous_used(tmp_path, capsys, damage):
    var, mgr = _manager(tmp_path)
    for n in (35, 40):
        var.assign_add(tf.ones_like(var))
        mgr.save(checkpoint_number=n)
    newest = os.path.join(mgr.directory, "ckpt-40")
    data = newest + ".data-00000-of-00001"
    if damage == "flip_data":
        _flip_byte(data)
    elif damage == "truncate_data":
        open(data, "r+b").truncate(os.path.getsize(data) // 2)
    elif damage == "truncate_index":
        open(newest + ".index", "r+b").truncate(10)
    else:
        os.remove(data)
    assert verify_checkpoint(newest) is not None
    assert mgr.latest_good() == os.path.join(mgr.directory, "ckpt-35")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert re.fullmatch(rf"lamina: warning: checkpoint {re.escape(newest)} is corrupt \(.+\); using ckpt-35", err[0])


def test_checkpoints_of_plain_tensorflow_are_verified_by_reading_every_tensor(tmp_path, capsys):
    var = tf.Variable(tf.range(500.0))
    folder = str(tmp_path / "plain")
    tf_mgr = tf.train.CheckpointManager(tf.train.Checkpoint(v=var), folder, max_to_keep=3)
    tf_mgr.save(checkpoint_number=1)
    tf_mgr.save(checkpoint_number=2)
    assert latest_good_checkpoint(folder) == os.path.join(folder, "ckpt-2")
    _flip_byte(os.path.join(folder, "ckpt-2.data-00000-of-00001"), offset=100)
    assert "Checksum does not match" in verify_checkpoint(os.path.join(folder, "ckpt-2"))
    assert latest_good_checkpoint(folder) == os.path.join(folder, "ckpt-1")
    assert "ckpt-2 is corrupt" in capsys.readouterr().err


def test_only_corrupt_checkpoints_is_an_error(tmp_path):
    var, mgr = _manager(tmp_path)
    mgr.save(checkpoint_number=1)
    _flip_byte(os.path.join(mgr.directory, "ckpt-1.index"))
    with pytest.raises(CheckpointError, match=r"ck: no intact checkpoint: ckpt-1 is corrupt \(.*\); move the folder"):
        mgr.latest_good()


def test_unreadable_state_file_falls_back_to_the_files(tmp_path, capsys):
    var, mgr = _manager(tmp_path)
    mgr.save(checkpoint_number=3)
    mgr.save(checkpoint_number=7)
    with open(os.path.join(mgr.directory, "checkpoint"), "w") as f:
        f.write("\x00garbage{")
    assert mgr.latest_good() == os.path.join(mgr.directory, "ckpt-7")
    assert "state file" in capsys.readouterr().err


def test_interrupted_save_is_invisible_and_cleaned_up(tmp_path, monkeypatch):
    """A crash between writing the files and publishing them leaves the old state intact."""
    var, mgr = _manager(tmp_path)
    mgr.save(checkpoint_number=1)
    real_replace = os.replace

    def crash(src, dst):
        if os.path.basename(dst).startswith("ckpt-2"):
            raise KeyboardInterrupt  # e.g. SIGTERM arriving in the middle
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        mgr.save(checkpoint_number=2)
    monkeypatch.setattr(os, "replace", real_replace)
    assert tf.train.latest_checkpoint(mgr.directory).endswith("ckpt-1")
    assert any(n.startswith(".tmp-") for n in os.listdir(mgr.directory))
    assert latest_good_checkpoint(mgr.directory).endswith("ckpt-1")  # a reader changes nothing
    assert any(n.startswith(".tmp-") for n in os.listdir(mgr.directory))
    assert mgr.latest_good().endswith("ckpt-1")  # the writer's resume removes what the crash left
    assert not any(n.startswith(".tmp-") for n in os.listdir(mgr.directory))
    mgr.save(checkpoint_number=3)
    assert not any(n.startswith(".tmp-") for n in os.listdir(mgr.directory))
    assert [os.path.basename(p) for p in mgr.checkpoints] == ["ckpt-1", "ckpt-3"]


def test_failed_write_keeps_earlier_checkpoints_and_says_why(tmp_path, monkeypatch):
    var, mgr = _manager(tmp_path, value=1.0)
    mgr.save(checkpoint_number=5)
    before = sorted(os.listdir(mgr.directory))
    real_write = tf.train.Checkpoint.write

    def full_disk(self, prefix, *a, **k):
        real_write(self, prefix, *a, **k)  # the files are written ... then the disk fills up
        with open(prefix + ".data-00000-of-00001", "r+b") as f:
            f.truncate(7)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tf.train.Checkpoint, "write", full_disk)
    var.assign(tf.fill([300], 2.0))
    with pytest.raises(CheckpointError) as info:
        mgr.save(checkpoint_number=10)
    assert str(info.value) == (
        f"cannot write checkpoint ckpt-10 in {os.path.normpath(mgr.directory)}: [Errno 28] No space left on device"
    )
    assert sorted(os.listdir(mgr.directory)) == before  # partial files removed, old ones untouched
    assert mgr.latest_good().endswith("ckpt-5") and verify_checkpoint(mgr.latest_good()) is None
    reader = tf.train.load_checkpoint(mgr.latest_good())
    assert float(reader.get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE")[0]) == 1.0


def _tiny_trainer(run_dir, **kw):
    model = lm.models.MLP([16], 3)
    return lm.train.Trainer(model, lm.optim.Adam(1e-2), metrics=["accuracy"], quiet=True, seed=0,
                            run_dir=run_dir, tensorboard=False, **kw)


def _tiny_data(epoch=0, skip_batches=0):
    rng = np.random.default_rng(epoch)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 1).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(8).skip(skip_batches)


def test_trainer_skips_a_corrupt_newest_checkpoint_when_resuming(tmp_path, capsys):
    run = str(tmp_path / "run")
    t = _tiny_trainer(run, checkpoint_every=3)
    t.fit(_tiny_data, epochs=1, max_steps=7)  # checkpoints at steps 3, 6, 7
    folder = os.path.join(run, "checkpoints")
    assert [os.path.basename(p) for p in tf.train.get_checkpoint_state(folder).all_model_checkpoint_paths] == [
        "ckpt-3", "ckpt-6", "ckpt-7"]
    _flip_byte(os.path.join(folder, "ckpt-7.data-00000-of-00001"))
    capsys.readouterr()
    resumed = _tiny_trainer(run, checkpoint_every=3)
    resumed.build(tf.zeros([1, 5]))
    assert resumed.restore() == os.path.join(folder, "ckpt-6")
    assert int(resumed.step.numpy()) == 6
    err = capsys.readouterr().err
    assert f"lamina: warning: checkpoint {os.path.join(folder, 'ckpt-7')} is corrupt (" in err
    assert err.strip().endswith("using ckpt-6")


def test_trainer_stops_with_one_line_when_the_checkpoint_cannot_be_written(tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    t = _tiny_trainer(run, checkpoint_every=2)
    real_write = tf.train.Checkpoint.write
    calls = []

    def flaky(self, prefix, *a, **k):
        calls.append(prefix)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, prefix, *a, **k)

    monkeypatch.setattr(tf.train.Checkpoint, "write", flaky)
    with pytest.raises(CheckpointError, match=r"^cannot write checkpoint ckpt-4 in .*checkpoints: \[Errno 28\] No space"):
        t.fit(_tiny_data, epochs=1)
    folder = os.path.join(run, "checkpoints")
    assert latest_good_checkpoint(folder).endswith("ckpt-2")


@pytest.mark.slow
def test_cli_full_disk_is_one_line_exit_2(tmp_path):
    """A real write failure: the file-size limit makes the checkpoint data file fail (EFBIG)."""

    def limit():  # in the child only
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (600_000, 600_000))  # a checkpoint is ~1.2 MB

    run = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "lamina", "train", "--epochs", "1", "--batch-size", "32", "--checkpoint-every", "5",
           "--run-dir", run, "--quiet"]
    proc = _run(cmd, cwd=str(tmp_path), preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"lamina: error: cannot write checkpoint ckpt-5 in {os.path.join(run, 'checkpoints')}: ")
    assert "File too large" in lines[0]
    assert os.listdir(os.path.join(run, "checkpoints")) == []


# ------------------------------------------------------------------ safety
def test_nothing_in_lamina_loads_pickles():
    pattern_load = re.compile(r"\bnp\.load\(|\bnumpy\.load\(")
    offenders = []
    for root, _, files in os.walk(os.path.join(REPO, "lamina")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            text = open(path, encoding="utf-8").read()
            code = "\n".join(l.split("#")[0] for l in text.splitlines())
            if re.search(r"^\s*(import|from)\s+(c?pickle|dill|joblib|shelve|marshal)\b", code, re.M):
                offenders.append(f"{path}: imports a pickle module")
            if re.search(r"\bpickle\.loads?\(|allow_pickle\s*=\s*True", code):
                offenders.append(f"{path}: loads pickles")
            for match in pattern_load.finditer(code):
                call = code[match.start(): code.find(")", match.end()) + 1]
                if "allow_pickle=False" not in call.replace(" ", ""):
                    offenders.append(f"{path}: {call} without allow_pickle=False")
    assert offenders == []


def test_pickled_npz_is_refused(tmp_path):
    from lamina.data import DataError

    path = tmp_path / "objects.npz"
    np.savez(path, x_train=np.array([{"a": 1}] * 4, dtype=object), y_train=np.zeros(4),
             x_test=np.zeros((2, 3)), y_test=np.zeros(2))
    with pytest.raises(DataError, match=r"objects\.npz: array 'x_train' contains pickled objects; refusing to load"):
        lm.data.load(str(path))


def _png(path, value):
    from PIL import Image

    Image.fromarray(np.full((4, 4), value, np.uint8)).save(path)


def test_image_folder_symlinks_outside_the_root_are_skipped_with_a_warning(tmp_path, capsys):
    root = tmp_path / "data"
    outside = tmp_path / "elsewhere"
    for d in (root / "a", root / "b", outside / "c"):
        d.mkdir(parents=True)
    for i in range(5):
        _png(root / "a" / f"{i}.png", 10)
        _png(root / "b" / f"{i}.png", 200)
        _png(outside / f"x{i}.png", 99)
        _png(outside / "c" / f"{i}.png", 50)
    os.symlink(outside / "x0.png", root / "a" / "escape.png")  # a file outside the root
    os.symlink(root / "a" / "0.png", root / "b" / "inside.png")  # inside the root: fine
    os.symlink(outside / "c", root / "c")  # a whole class folder outside the root
    ds = lm.data.load(str(root))
    assert ds.class_names == ["a", "b"]
    assert sum(ds.splits.values()) == 11  # 5 + 5 + the inside link
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert all(line.startswith("lamina: warning: ") and "outside the data folder" in line for line in err)
    assert any(str(root / "a" / "escape.png") in line for line in err)
    assert any(str(root / "c") in line for line in err)
