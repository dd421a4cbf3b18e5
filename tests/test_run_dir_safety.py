"""A run directory that defends itself: resumes that would train another run, a second writer,
divergence, labels out of range, paths leading outside, damaged or busy runs, and the rest of issue 18.

Most cases run ``lamina.cli.main`` in-process on a tiny ``.npz`` (3 steps an epoch) and check the
exit code, the one line on standard error and what is (not) on disk afterwards.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from conftest import run_cli
from lamina.train.checkpoints import SafeCheckpointManager, latest_good_checkpoint, verify_checkpoint
from lamina.train.run import original_config

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def cli(argv):
    return run_cli([str(a) for a in argv])


def one_error(code, err):
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("lamina: error: "), err
    return lines[0][len("lamina: error: "):]


def tiny(path, n=48, dtype=np.float32, labels=None):
    rng = np.random.default_rng(0)
    x = rng.random((n + 12, 4, 4)).astype(dtype) if dtype == np.float32 else rng.integers(0, 255, (n + 12, 4, 4), dtype)
    y = np.arange(n + 12) % 3 if labels is None else labels
    np.savez(path, x_train=x[:n], y_train=y[:n], x_test=x[n:], y_test=y[n:])
    return str(path)


def train_args(data, run, *extra, epochs=2):
    return ["train", "--data", data, "--model", "mlp", "--epochs", epochs, "--batch-size", 12, "--val-split", 0.25,
            "--run-dir", run, "--quiet", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 2-epoch run (6 steps) on the tiny data."""
    root = tmp_path_factory.mktemp("trained")
    data = tiny(root / "tiny.npz")
    run = str(root / "run")
    code, out, err = cli(train_args(data, run))
    assert code == 0, err
    return data, run


@pytest.fixture
def run_copy(trained, tmp_path):
    data, run = trained
    dst = str(tmp_path / "run")
    shutil.copytree(run, dst)
    return data, dst


# ----------------------------------------------------- #1: files that follow symlinks
def test_results_json_is_replaced_not_written_through_a_symlink(run_copy, tmp_path):
    data, run = run_copy
    secret = tmp_path / "secret.txt"
    secret.write_text("keep me")
    os.remove(os.path.join(run, "results.json"))
    os.symlink(secret, os.path.join(run, "results.json"))
    code, out, err = cli(train_args(data, run))  # a finished run: re-evaluated, results written again
    assert code == 0, err
    assert secret.read_text() == "keep me"
    assert not os.path.islink(os.path.join(run, "results.json"))
    assert "test_accuracy" in json.load(open(os.path.join(run, "results.json")))


def test_metrics_log_symlinked_outside_is_refused(run_copy, tmp_path):
    data, run = run_copy
    outside = tmp_path / "elsewhere.jsonl"
    shutil.copy(os.path.join(run, "metrics.jsonl"), outside)
    before = outside.read_bytes()
    os.remove(os.path.join(run, "metrics.jsonl"))
    os.symlink(outside, os.path.join(run, "metrics.jsonl"))
    code, out, err = cli(train_args(data, run, epochs=3))
    assert "outside the run directory" in one_error(code, err)
    assert outside.read_bytes() == before


# ------------------------------------------------ #4: what a resume may change
REFUSED = [("--batch-size", "24", "12"), ("--lr", "0.01", "0.003"), ("--optimizer", "sgd", "'adam'"),
           ("--seed", "1", "0"), ("--grad-accum", "2", "1"), ("--val-split", "0.5", "0.25"),
           ("--schedule", "constant", "'cosine'"), ("--augment", "flip", "None"), ("--label-smoothing", "0.1", "0.0")]


@pytest.mark.parametrize("flag, new, old", REFUSED, ids=[r[0] for r in REFUSED])
def test_resume_with_a_changed_option_is_refused_naming_both_values(run_copy, flag, new, old):
    data, run = run_copy
    before = open(os.path.join(run, "config.json"), "rb").read()
    code, out, err = cli(train_args(data, run, flag, new))
    message = one_error(code, err)
    assert message.startswith(f"cannot resume {run!r} with {flag} ")
    assert f"it was trained with {old}" in message
    assert open(os.path.join(run, "config.json"), "rb").read() == before


def test_resume_with_other_data_is_refused(run_copy, tmp_path):
    data, run = run_copy
    other = tiny(tmp_path / "other.npz")
    code, out, err = cli(train_args(other, run))
    assert "with --data" in one_error(code, err)
    # The same path, new content whose scale differs (uint8 pixels): the preprocessing is part of the run.
    shutil.copy(data, tmp_path / "orig.npz")
    tiny(data, dtype=np.uint8)
    try:
        code, out, err = cli(train_args(data, run))
        assert "holds a different run (preprocessing:" in one_error(code, err)
    finally:
        shutil.copy(tmp_path / "orig.npz", data)


def test_fewer_epochs_than_done_is_refused_from_the_checkpoint(run_copy):
    data, run = run_copy
    os.remove(os.path.join(run, "metrics.jsonl"))  # the checkpoint, not the log, says how many were done
    code, out, err = cli(train_args(data, run, epochs=1))
    assert one_error(code, err) == f"cannot resume {run!r} with --epochs 1: it has already trained 2 epochs"


def test_more_epochs_resume_and_the_original_config_is_kept(run_copy):
    data, run = run_copy
    first = json.load(open(os.path.join(run, "config.json")))
    code, out, err = cli(train_args(data, run, "--checkpoint-every", "2", epochs=3))
    assert code == 0, err
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["epochs"] == 3 and config["checkpoint_every"] == 2
    [entry] = config["resumes"]
    # (the copy also moved the run: its --run-dir changed too)
    assert entry["changed"] == {"epochs": [2, 3], "checkpoint_every": [None, 2], "run_dir": [first["run_dir"], run]}
    assert entry["epochs_done"] == 2
    assert original_config(run) == first
    assert len(open(os.path.join(run, "metrics.jsonl")).readlines()) == 3


def test_a_run_dir_without_checkpoints_takes_any_config(tmp_path):
    data = tiny(tmp_path / "tiny.npz")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "convnet", "num_classes": 10, "input_shape": [8, 8, 1]}))
    code, out, err = cli(train_args(data, run, "--max-steps", "1", epochs=1))
    assert code == 0, err
    assert json.load(open(run / "config.json"))["model"] == "mlp" and "resumes" not in json.load(open(run / "config.json"))


# --------------------------------------------------- #5: one writer per run dir
LOCK_HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("lock", sys.argv[1])
lock = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock)
held = lock.RunLock(sys.argv[2]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_train_on_a_run_dir_is_refused_and_a_dead_holder_frees_it(run_copy):
    data, run = run_copy
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, os.path.join(REPO, "lamina", "train", "lock.py"), run],
                              stdout=subprocess.PIPE, text=True)  # lock.py alone: no TensorFlow to import
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = open(os.path.join(run, "metrics.jsonl")).read()
        code, out, err = cli(train_args(data, run, epochs=3))
        message = one_error(code, err)
        assert message.startswith(f"run directory {run!r} is in use by another lamina train (pid {holder.pid} on ")
        assert message.endswith("; wait for it to finish or use another --run-dir")
        assert open(os.path.join(run, "metrics.jsonl")).read() == before
        holder.send_signal(signal.SIGKILL)  # a crash: the operating system releases the lock
        holder.wait(timeout=30)
        code, out, err = cli(train_args(data, run, epochs=3))
        assert code == 0, err
        assert [json.loads(l)["epoch"] for l in open(os.path.join(run, "metrics.jsonl"))] == [1, 2, 3]
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_released_when_train_fails(run_copy):
    from lamina.train.lock import RunLock

    data, run = run_copy
    code, out, err = cli(train_args(data, run, "--lr", "0.5"))  # refused: another run
    assert code == 2
    with RunLock(run):  # free again
        pass


# --------------------------------------------------------- #6: divergence
def test_divergence_stops_at_the_step_keeps_the_last_finite_checkpoint_and_exits_2(tmp_path):
    data = tiny(tmp_path / "tiny.npz")
    run = str(tmp_path / "run")
    code, out, err = cli(train_args(data, run, "--lr", "1e9", "--checkpoint-every", "1", epochs=3))
    message = one_error(code, err)
    assert message.startswith("non-finite loss or gradient at step ")
    bad = int(message.split("at step ")[1].split(";")[0])
    # (the module is named when re-running the batch finds one: here the gradient overflows, not an output)
    assert "test accuracy" not in out and not os.path.exists(os.path.join(run, "results.json"))
    prefix = latest_good_checkpoint(os.path.join(run, "checkpoints"))
    assert os.path.basename(prefix) == f"ckpt-{bad - 1}"
    reader = tf.train.load_checkpoint(prefix)
    keys = [k for k in reader.get_variable_to_shape_map() if k.startswith(("model/", "optimizer/"))]
    assert len(keys) > 4
    for key in keys:
        value = reader.get_tensor(key)
        if np.asarray(value).dtype.kind == "f":
            assert np.all(np.isfinite(value)), key
    # The same command again fails the same way (and does not start over).
    code, out, err = cli(train_args(data, run, "--lr", "1e9", "--checkpoint-every", "1", epochs=3))
    assert one_error(code, err) == message


def test_late_divergence_keeps_the_finite_best_and_latest(tmp_path):
    """A huge input in epoch 2 overflows to inf: epoch 1's best and latest stay, nothing non-finite is saved."""
    rng = np.random.default_rng(0)
    x = rng.random((36, 5)).astype("float32")
    y = np.arange(36) % 3

    def data(epoch, skip_batches):
        xe = x.copy()
        if epoch == 1:
            xe[13] = 3e38  # the second batch of epoch 2: step 3 + 2 = 5
        return tf.data.Dataset.from_tensor_slices((xe, y)).batch(12).skip(skip_batches)

    run = str(tmp_path / "run")
    trainer = lm.train.Trainer(lm.models.MLP([8], 3), "adam", quiet=True, run_dir=run, tensorboard=False,
                               monitor="accuracy")
    with pytest.raises(lm.train.TrainingError, match=r"^non-finite loss or gradient at step 5; first non-finite "
                                                     r"output: Linear '"):
        trainer.fit(data, epochs=3)
    for sub in ("checkpoints", "best"):
        prefix = latest_good_checkpoint(os.path.join(run, sub))
        assert os.path.basename(prefix) == "ckpt-3", sub  # epoch 1's end
        reader = tf.train.load_checkpoint(prefix)
        values = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith(("model/", "optimizer/"))]
        assert len(values) > 4 and all(np.all(np.isfinite(v)) for v in values if np.asarray(v).dtype.kind == "f")
    assert [json.loads(l)["epoch"] for l in open(os.path.join(run, "metrics.jsonl"))] == [1]


# ------------------------------------------------------------ #7: labels
@pytest.mark.parametrize("label, message", [
    (2**32 + 1, "label 4294967297 is out of range [0, 2**31) for a class id"),
    (10**9, "label 1000000000 implies 1,000,000,001 classes, more than 100,000"),
])
def test_labels_out_of_range_name_the_file_and_the_value(tmp_path, label, message):
    labels = np.arange(60, dtype=np.int64) % 3
    labels[5] = label
    data = tiny(tmp_path / "labels.npz", labels=labels)
    code, out, err = cli(train_args(data, tmp_path / "run"))
    text = one_error(code, err)
    assert text.startswith(f"{data} [y_train]: ") and message in text


def test_csv_label_out_of_range_and_the_class_limit(tmp_path, monkeypatch):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(20)) + "1,2,1000000000\n")
    with pytest.raises(lm.data.DataError, match=r"t\.csv: label 1000000000 implies 1,000,000,001 classes"):
        lm.data.load(str(path))
    path.write_text("a,label\n1,0\n2,1\n3,4294967297\n")
    with pytest.raises(lm.data.DataError, match=r"t\.csv:4: label '4294967297' is out of range"):
        lm.data.load(str(path))
    labels = np.arange(60) % 3
    labels[7] = 150_000
    data = tiny(tmp_path / "many.npz", labels=labels)
    with pytest.raises(lm.data.DataError, match="more than 100,000"):
        lm.data.load(data)
    monkeypatch.setenv("LAMINA_MAX_CLASSES", "200000")  # asked for
    assert lm.data.load(data).num_classes == 150_001


# ------------------------------------------------------- #8: paths leading outside
def _fake_file_export(folder, name):
    os.makedirs(folder, exist_ok=True)
    meta = {"format": "tflite", "file": name, "input_shape": [4, 4, 1], "class_names": ["a", "b"],
            "preprocessing": {"scale": 1.0, "mean": [0.0], "std": [1.0]}}
    with open(os.path.join(folder, "lamina_export.json"), "w") as f:
        json.dump(meta, f)


@pytest.mark.parametrize("name", ["../../../../secret.txt", "ABSOLUTE", "link.tflite"])
def test_a_file_named_by_lamina_export_json_must_be_inside_the_folder(tmp_path, name):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOPSECRETBYTES")
    folder = str(tmp_path / "a" / "b" / "c" / "export")
    if name == "ABSOLUTE":
        name = str(secret)
    if name == "link.tflite":
        os.makedirs(folder)
        os.symlink(secret, os.path.join(folder, name))
    _fake_file_export(folder, name)
    with pytest.raises(ValueError, match=r"lamina_export\.json names .*(outside the folder|absolute path)"):
        lm.export.load(folder)
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), np.uint8)).save(image)
    code, out, err = cli(["predict", folder, image])
    message = one_error(code, err)
    assert "outside the folder" in message or "absolute path" in message
    assert "TOPS" not in message and "SECR" not in err


def test_a_checkpoint_state_file_pointing_into_another_run_is_not_followed(trained, tmp_path):
    data, other = trained  # 2 epochs: ckpt-6
    run = str(tmp_path / "run")
    code, out, err = cli(train_args(data, run, epochs=1))  # 1 epoch: ckpt-3
    assert code == 0, err
    state = os.path.join(run, "checkpoints", "checkpoint")
    foreign = os.path.join(other, "checkpoints", "ckpt-6")
    rel = os.path.relpath(foreign, os.path.dirname(state))
    with open(state, "w") as f:
        f.write(f'model_checkpoint_path: "{foreign}"\nall_model_checkpoint_paths: "{rel}"\n'
                f'all_model_checkpoint_paths: "{foreign}"\n')
    code, out, err = cli(["evaluate", run, "--checkpoint", "latest"])
    assert code == 0, err
    assert f"latest checkpoint (epoch 1, step 3): {os.path.join(run, 'checkpoints', 'ckpt-3')}\n" in out
    assert "outside its folder; ignored" in err
    assert lm.train.run.epochs_done(run) == 1  # not the foreign run's 2
    # A checkpoints folder that is a symbolic link to the other run is refused.
    shutil.rmtree(os.path.join(run, "checkpoints"))
    os.symlink(os.path.join(other, "checkpoints"), os.path.join(run, "checkpoints"))
    code, out, err = cli(["evaluate", run, "--checkpoint", "latest"])
    assert "outside the run directory" in one_error(code, err)


def test_a_checkpoint_file_that_is_a_symlink_is_corrupt(trained, tmp_path):
    data, other = trained
    folder = tmp_path / "ck"
    shutil.copytree(os.path.join(other, "checkpoints"), folder)
    data_file = next(folder.glob("ckpt-6.data-*"))
    data_file.unlink()
    os.symlink(next(iter((tmp_path.parent).glob("*"))), data_file)
    assert "is a symbolic link" in verify_checkpoint(str(folder / "ckpt-6"))


# ------------------------------------------------------------- the rest
def test_a_damaged_best_falls_back_to_the_latest_with_a_warning(run_copy):
    data, run = run_copy
    best = latest_good_checkpoint(os.path.join(run, "best"))
    path = best + ".data-00000-of-00001"
    raw = bytearray(open(path, "rb").read())
    raw[len(raw) // 2] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    code, out, err = cli(["evaluate", run])
    assert code == 0, err
    latest = latest_good_checkpoint(os.path.join(run, "checkpoints"))
    assert f"latest checkpoint (epoch 2, step 6): {latest}\n" in out
    [line] = err.strip().splitlines()
    assert line.startswith("lamina: warning: ") and "best: no intact checkpoint" in line
    assert line.endswith(f"using the latest checkpoint {os.path.normpath(latest)}")


def test_a_checkpoint_deleted_between_verification_and_restore_is_looked_up_again(run_copy, monkeypatch):
    """Reading a run while it trains: retention deletes the checkpoint just verified."""
    import lamina.train.run as run_mod

    data, run = run_copy
    folder = os.path.join(run, "checkpoints")
    mgr = SafeCheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)), folder, max_to_keep=5)
    del mgr  # (the run's own checkpoints: ckpt-6)
    real = run_mod.checkpoint_path
    calls = []

    def racing(run_dir, which="best"):
        path = real(run_dir, which)
        calls.append(path)
        if len(calls) == 1:  # the trainer saves ckpt-7 and drops ckpt-6 right now
            shutil.copy(path + ".index", os.path.join(folder, "ckpt-7.index"))
            shutil.copy(path + ".data-00000-of-00001", os.path.join(folder, "ckpt-7.data-00000-of-00001"))
            for suffix in (".index", ".data-00000-of-00001", ".sha256"):
                os.remove(path + suffix)
            with open(os.path.join(folder, "checkpoint"), "w") as f:
                f.write('model_checkpoint_path: "ckpt-7"\nall_model_checkpoint_paths: "ckpt-7"\n')
        return path if len(calls) == 1 else real(run_dir, which)

    monkeypatch.setattr(run_mod, "checkpoint_path", racing)
    model, record, used = run_mod.load_run_checkpoint(run, "latest")
    assert len(calls) == 2 and os.path.basename(used) == "ckpt-7"
    want = tf.train.load_checkpoint(used)
    key = next(k for k in want.get_variable_to_shape_map() if k.startswith("model/") and "weights" in k)
    assert any(np.array_equal(v.numpy(), want.get_tensor(key)) for v in model.variables)


def test_an_empty_split_is_not_reported_as_zero_accuracy(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((36, 4, 4), dtype=np.float32)
    np.savez(tmp_path / "notest.npz", x_train=x, y_train=np.arange(36) % 3, x_test=x[:0], y_test=np.zeros(0, int))
    run = str(tmp_path / "run")
    code, out, err = cli(["train", "--data", tmp_path / "notest.npz", "--model", "mlp", "--epochs", 1,
                          "--batch-size", 12, "--val-split", 0, "--run-dir", run, "--quiet"])
    assert code == 0, err
    assert "test accuracy" not in out and out.startswith("done: 1 epochs")
    assert "test_accuracy" not in json.load(open(os.path.join(run, "results.json")))
    code, out, err = cli(["evaluate", run])
    assert "the 'test' split is empty (0 examples)" in one_error(code, err)


@pytest.mark.parametrize("kind", ["image", "npz", "csv"])
def test_fifos_in_data_are_refused_not_read(tmp_path, kind):
    from PIL import Image

    def alarm(*_):
        raise AssertionError("reading the FIFO blocked")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(30)
    try:
        if kind == "image":
            for cls in ("a", "b"):
                (tmp_path / "img" / cls).mkdir(parents=True)
                for i in range(3):
                    Image.fromarray(np.full((4, 4), 9 * i, np.uint8)).save(tmp_path / "img" / cls / f"{i}.png")
            os.mkfifo(tmp_path / "img" / "a" / "fifo.png")
            source, where = tmp_path / "img", tmp_path / "img" / "a" / "fifo.png"
        else:
            source = where = tmp_path / f"data.{kind}"
            os.mkfifo(where)
        if kind == "image":  # skipped with a warning (the listing sees it is not a regular file)
            ds = lm.data.load(str(source))
            assert sum(ds.splits.values()) == 6
            return
        with pytest.raises(lm.data.DataError) as info:
            lm.data.load(str(source))
        assert str(info.value) == f"{where}: is a FIFO, not a regular file; refusing to read it"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_deferred_interrupts_hold_a_signal_until_the_block_ends():
    from lamina.train.interrupts import deferred_interrupts

    reached = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            reached.append(True)  # not cut short
    assert reached == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_interrupt_during_the_interrupt_save_lets_the_save_finish(tmp_path, monkeypatch):
    """A second Ctrl-C while the interrupt's checkpoint is written: the checkpoint completes, one message."""
    from lamina.train import Callback

    run = str(tmp_path / "run")
    real_replace = os.replace
    sent = []

    def replace(src, dst):
        if os.path.basename(str(dst)).startswith("ckpt-2") and not sent:
            sent.append(dst)
            os.kill(os.getpid(), signal.SIGINT)  # the second interrupt, in the middle of the save
            time.sleep(0.05)
        return real_replace(src, dst)

    class CtrlC(Callback):
        def on_step_end(self, step, logs):
            if step == 2:
                monkeypatch.setattr(os, "replace", replace)
                raise KeyboardInterrupt  # the first interrupt

    x = np.random.default_rng(0).normal(size=(64, 5)).astype("float32")
    trainer = lm.train.Trainer(lm.models.MLP([8], 3), "adam", metrics=[], quiet=True, run_dir=run, tensorboard=False)
    with pytest.raises(KeyboardInterrupt) as info:
        trainer.fit((x, np.arange(64) % 3), batch_size=8, epochs=2, callbacks=[CtrlC()])
    monkeypatch.undo()
    folder = os.path.join(run, "checkpoints")
    assert sent, "the save was not reached"
    assert str(info.value) == f"at step 2; checkpoint saved: {os.path.join(folder, 'ckpt-2')}"
    assert latest_good_checkpoint(folder) == os.path.join(folder, "ckpt-2")
    assert int(tf.train.load_checkpoint(os.path.join(folder, "ckpt-2")).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 2


def test_set_weights_failing_half_way_changes_nothing():
    model = lm.models.MLP([4], 2)
    model(tf.zeros([1, 3]))
    before = model.get_weights()
    bad = {k: np.ones_like(v) for k, v in before.items()}
    bad[sorted(bad)[-1]] = np.full(before[sorted(bad)[-1]].shape, "x")  # the last one cannot be converted
    with pytest.raises(ValueError, match="must hold numbers"):
        model.set_weights(bad)
    for key, value in model.get_weights().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_one_trainer_refuses_a_second_thread_while_it_runs():
    from lamina.train import Callback
    from lamina.train.exclusive import TrainerBusyError

    inside, release = threading.Event(), threading.Event()

    class Hold(Callback):
        def on_step_end(self, step, logs):
            if step == 1:
                inside.set()
                release.wait(30)

    x = np.random.default_rng(0).normal(size=(32, 5)).astype("float32")
    y = np.arange(32) % 3
    trainer = lm.train.Trainer(lm.models.MLP([8], 3), "adam", quiet=True)
    errors = []
    worker = threading.Thread(target=lambda: errors.append(trainer.fit((x, y), batch_size=8, epochs=1,
                                                                       callbacks=[Hold()])))
    worker.start()
    try:
        assert inside.wait(60)
        with pytest.raises(TrainerBusyError, match=r"Trainer\.evaluate: this Trainer is running fit\(\) in another thread"):
            trainer.evaluate((x, y), batch_size=8)
        with pytest.raises(TrainerBusyError, match=r"Trainer\.fit: "):
            trainer.fit((x, y), batch_size=8, epochs=1)
    finally:
        release.set()
        worker.join(60)
    assert int(trainer.step.numpy()) == 4  # the first fit ran its 4 steps alone
    assert set(trainer.evaluate((x, y), batch_size=8)) == {"loss", "accuracy"}  # free again


class _Killed(BaseException):
    """A crash right after a step's periodic checkpoint (no interrupt handling runs)."""


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_a_crash_after_an_epochs_last_step_resumes_identically(tmp_path, grad_accum):
    """Killed between the periodic save of an epoch's last step and the epoch's end: the resumed run
    restores the epoch's running means (and gradient accumulators spanning the epoch boundary)."""
    from lamina.train import Callback

    rng = np.random.default_rng(0)
    x = rng.normal(size=(36, 5)).astype("float32")
    y = np.arange(36) % 3

    def data(epoch, skip_batches):
        order = np.random.default_rng(epoch).permutation(36)
        return tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(12).skip(skip_batches)

    def trainer(run):
        return lm.train.Trainer(lm.models.MLP([8], 3), "adam", quiet=True, run_dir=run, tensorboard=False, seed=0,
                                monitor="accuracy", checkpoint_every=3, grad_accum_steps=grad_accum)

    class Crash(Callback):
        def on_step_end(self, step, logs):
            if step == 3:  # after Checkpointing saved ckpt-3 with the epoch not yet closed
                raise _Killed

    ref = str(tmp_path / "ref")
    trainer(ref).fit(data, epochs=2)
    run = str(tmp_path / "run")
    with pytest.raises(_Killed):
        trainer(run).fit(data, epochs=2, callbacks=[Crash()])
    trainer(run).fit(data, epochs=2)
    metrics = [[{k: v for k, v in json.loads(l).items() if k not in ("time", "images_per_sec")}
                for l in open(os.path.join(d, "metrics.jsonl"))] for d in (ref, run)]
    assert metrics[0] == metrics[1] and "loss" in metrics[1][0]
    a, b = (tf.train.load_checkpoint(os.path.join(d, "checkpoints", "ckpt-6")) for d in (ref, run))
    keys = [k for k in a.get_variable_to_shape_map() if not k.startswith(("save_counter", "_CHECKPOINTABLE"))]
    assert any(k.startswith("accum/") for k in keys) == (grad_accum > 1)
    for key in keys:
        np.testing.assert_array_equal(a.get_tensor(key), b.get_tensor(key), err_msg=key)
