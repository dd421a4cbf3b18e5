"""Distributed training: MirroredStrategy on 2 logical CPUs, MultiWorkerMirroredStrategy on 2 processes.

Strategies that need several devices run in subprocesses: logical devices must
be configured (and ``TF_CONFIG`` read) before TensorFlow initializes.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from lamina.train import distribute as dist

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 150


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _result(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


# --------------------------------------------------------------- unit tests
def test_make_strategy_names_and_errors(monkeypatch):
    assert dist.make_strategy("default") is None and dist.make_strategy(None) is None
    with pytest.raises(dist.DistributeError, match="unknown strategy 'tpu'; expected one of default, mirrored, multiworker"):
        dist.make_strategy("tpu")
    with pytest.raises(dist.DistributeError, match="devices can only be given for the 'mirrored' strategy"):
        dist.make_strategy("multiworker", ["/cpu:0"])
    with pytest.raises(dist.DistributeError, match="communication must be one of auto, ring, nccl"):
        dist.make_strategy("mirrored", communication="mpi")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(dist.DistributeError, match="needs the TF_CONFIG environment variable"):
        dist.make_strategy("multiworker")
    one = dist.make_strategy("mirrored", ["/cpu:0"])
    assert one.num_replicas_in_sync == 1 and dist.is_chief(one)


def test_parse_tf_config_errors():
    good = {"cluster": {"worker": ["127.0.0.1:1111", "127.0.0.1:2222"]}, "task": {"type": "worker", "index": 1}}
    assert dist.parse_tf_config(json.dumps(good)) == good
    with pytest.raises(dist.DistributeError, match="not valid JSON"):
        dist.parse_tf_config("{cluster")
    with pytest.raises(dist.DistributeError, match='needs a "cluster" object'):
        dist.parse_tf_config(json.dumps({"task": {"type": "worker", "index": 0}}))
    with pytest.raises(dist.DistributeError, match='cluster "worker" must be a non-empty list of "host:port"'):
        dist.parse_tf_config(json.dumps({"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}))
    with pytest.raises(dist.DistributeError, match='needs a "task" object'):
        dist.parse_tf_config(json.dumps({"cluster": good["cluster"]}))
    with pytest.raises(dist.DistributeError, match="task index 2 is out of range for 2 'worker' task"):
        dist.parse_tf_config(json.dumps({"cluster": good["cluster"], "task": {"type": "worker", "index": 2}}))
    with pytest.raises(dist.DistributeError, match="task type 'chief' is not in the cluster"):
        dist.parse_tf_config(json.dumps({"cluster": good["cluster"], "task": {"type": "chief", "index": 0}}))


class _FakeResolver:
    def __init__(self, cluster, task_type, task_id):
        self._cluster, self.task_type, self.task_id = cluster, task_type, task_id

    def cluster_spec(self):
        return tf.train.ClusterSpec(self._cluster)


class _FakeStrategy:
    def __init__(self, cluster, task_type, task_id):
        self.cluster_resolver = _FakeResolver(cluster, task_type, task_id)


def test_is_chief_and_worker_dirs(tmp_path):
    workers = {"worker": ["a:1", "b:2"]}
    with_chief = {"chief": ["c:0"], "worker": ["a:1", "b:2"]}
    assert dist.is_chief(None) and dist.worker_info(None) == (None, 0, 1)
    assert dist.is_chief(_FakeStrategy(workers, "worker", 0))
    assert not dist.is_chief(_FakeStrategy(workers, "worker", 1))
    assert dist.is_chief(_FakeStrategy(with_chief, "chief", 0))
    assert not dist.is_chief(_FakeStrategy(with_chief, "worker", 0))
    assert dist.worker_info(_FakeStrategy(with_chief, "worker", 1)) == ("worker", 1, 3)
    run = str(tmp_path)
    assert dist.worker_dir(run, "checkpoints", None) == os.path.join(run, "checkpoints")
    assert dist.worker_dir(run, "checkpoints", _FakeStrategy(workers, "worker", 1)) == os.path.join(
        run, "_workers", "worker_1", "checkpoints"
    )
    # The Trainer uses the same rule.
    trainer = lm.train.Trainer(lm.Linear(2), lm.optim.SGD(0.1), "mse", metrics=(), quiet=True)
    assert trainer.is_chief


def test_shard_by_data_and_cpu_devices():
    ds = dist.shard_by_data(tf.data.Dataset.range(8).batch(4))
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
    assert list(dist.distribute_dataset(None, ds).as_numpy_iterator())[0].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="count must be a positive int"):
        dist.configure_cpu_devices(0)
    n = len(tf.config.list_logical_devices("CPU"))  # initializes TensorFlow here
    assert dist.configure_cpu_devices(n) == [f"/cpu:{i}" for i in range(n)]
    with pytest.raises(RuntimeError, match="already initialized with"):
        dist.configure_cpu_devices(n + 1)


def test_cli_multiworker_errors(tmp_path, monkeypatch, capsys):
    from lamina.cli import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert main(["train", "--strategy", "multiworker", "--quiet"]) == 2
    assert "--strategy multiworker needs --run-dir" in capsys.readouterr().err
    assert main(["train", "--strategy", "multiworker", "--run-dir", str(tmp_path / "r"), "--quiet"]) == 2
    assert "needs the TF_CONFIG environment variable" in capsys.readouterr().err


# ------------------------------------------------ MirroredStrategy, 2 replicas
_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf
    from lamina.train import distribute as dist
    devices = dist.configure_cpu_devices(2)
    import lamina as lm
    from lamina import data as ld

    lm.set_seed(0)
    data = ld.load("digits", validation_split=0.0, seed=0)
    batches = [(x.numpy(), y.numpy()) for x, y in data.batches("train", 32, shuffle=True, seed=0).take(3)]
    strategy = dist.make_strategy("mirrored", devices)
    out = {"replicas": strategy.num_replicas_in_sync}

    def make(strategy, opt_name, cross_replica=True, mlp=False):
        with strategy.scope() if strategy is not None else tf.device("/cpu:0"):
            if mlp:
                model = lm.models.MLP([16], 10, batch_norm=True)
            else:
                model = lm.models.ConvNet(10, widths=(8,), convs_per_block=1, batch_norm=True, hidden=16)
            # Adam's first steps move each weight by ~lr * sign(g): a weight whose gradient is
            # ~0 amplifies float noise by lr / eps, hence the moderate learning rate.
            opt = lm.optim.SGD(0.1, momentum=0.9) if opt_name == "sgd" else lm.optim.Adam(2e-3)
        for m in model.submodules:
            if isinstance(m, lm.BatchNorm):
                m.cross_replica = None if cross_replica else False
        trainer = lm.train.Trainer(model, opt, "cross_entropy", metrics=["accuracy"], strategy=strategy, quiet=True)
        trainer.build(batches[0][0])
        return trainer

    def max_diff(a, b):
        wa, wb = a.model.get_weights(), b.model.get_weights()
        assert set(wa) == set(wb)
        return max(float(np.abs(wa[k] - wb[k]).max()) for k in wa)

    def pair(opt_name, cross_replica=True, mlp=False):
        single, mirrored = make(None, opt_name, mlp=mlp), make(strategy, opt_name, cross_replica, mlp=mlp)
        mirrored.model.set_weights(single.model.get_weights())
        return single, mirrored

    for opt_name in ("sgd", "adam"):
        single, mirrored = pair(opt_name)
        res = {"diffs": [], "losses": []}
        for x, y in batches:
            res["losses"].append([float(single.train_step(x, y)["loss"]), float(mirrored.train_step(x, y)["loss"])])
            res["diffs"].append(max_diff(single, mirrored))
            res.setdefault("first_acc", [float(single.metrics[0].result()), float(mirrored.metrics[0].result())])
        res["acc"] = [float(single.metrics[0].result()), float(mirrored.metrics[0].result())]
        res["loss_metric"] = [single.epoch_logs()["loss"], mirrored.epoch_logs()["loss"]]
        res["steps"] = [int(single.step.numpy()), int(mirrored.step.numpy()), int(mirrored.optimizer.iterations.numpy())]
        res["replica_copies_equal"] = all(
            np.array_equal(v.values[0].numpy(), v.values[1].numpy()) for v in mirrored.model.trainable_variables
        )
        res["slot_kinds"] = sorted({type(s).__name__ for s in mirrored.optimizer.variables if s.shape.rank})
        if opt_name == "adam":
            # An uneven global batch: 3 examples, split 2 + 1.
            x, y = batches[0][0][:3], batches[0][1][:3]
            res["uneven_losses"] = [[float(single.train_step(x, y)["loss"]), float(mirrored.train_step(x, y)["loss"])]]
            res["uneven_diffs"] = [max_diff(single, mirrored)]
            # A global batch of 1: the second replica gets an empty slice. (MLP: oneDNN's
            # CPU conv2d returns a wrongly shaped output for an empty batch.)
            s_mlp, m_mlp = pair("adam", mlp=True)
            for n in (32, 1, 32):
                x, y = batches[1][0][:n], batches[1][1][:n]
                res["uneven_losses"].append([float(s_mlp.train_step(x, y)["loss"]), float(m_mlp.train_step(x, y)["loss"])])
                res["uneven_diffs"].append(max_diff(s_mlp, m_mlp))
            # Evaluation over 2 batches of 51 examples, each split 26 + 25 over the replicas.
            ev = data.batches("test", 51, shuffle=False).take(2)
            logits = np.concatenate([single.model(x, training=False).numpy() for x, _ in ev])
            labels = np.concatenate([y.numpy() for _, y in ev])
            res["numpy_eval_acc"] = float((logits.argmax(-1) == labels).mean())
            shifted = logits - logits.max(-1, keepdims=True)
            logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
            res["numpy_eval_loss"] = float(-logp[np.arange(len(labels)), labels].mean())
            res["eval"] = [single.evaluate(ev), mirrored.evaluate(ev)]
            res["eval_count"] = float(mirrored.metrics[0].count.numpy())
            res["eval_replica_counts"] = [float(v.numpy()) for v in mirrored.metrics[0].count.values]
        out[opt_name] = res

    # Control: per-replica BatchNorm statistics (cross_replica=False) do change the result.
    single, local_bn = pair("sgd", cross_replica=False)
    single.train_step(*batches[0]); local_bn.train_step(*batches[0])
    out["local_bn_diff"] = max_diff(single, local_bn)
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def mirrored():
    proc = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT], capture_output=True, text=True, env=_env(), timeout=TIMEOUT, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return _result(proc.stdout)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_mirrored_step_equals_single_device_step(mirrored, opt_name):
    res = mirrored[opt_name]
    assert mirrored["replicas"] == 2
    assert res["diffs"][0] < 1e-5, res["diffs"]  # one step over the global batch
    assert max(res["diffs"]) < 1e-5, res["diffs"]  # and after 3 steps
    for single_loss, mirrored_loss in res["losses"]:
        assert abs(single_loss - mirrored_loss) < 1e-5
    assert res["steps"] == [3, 3, 3]  # trainer step, trainer step, optimizer updates
    assert res["replica_copies_equal"]
    assert res["slot_kinds"] == ["MirroredVariable"]  # optimizer slots live on both replicas


def test_mirrored_uneven_and_empty_replica_batches(mirrored):
    res = mirrored["adam"]
    assert max(res["uneven_diffs"]) < 1e-5, res["uneven_diffs"]
    for single_loss, mirrored_loss in res["uneven_losses"]:
        assert np.isfinite(mirrored_loss) and abs(single_loss - mirrored_loss) < 1e-5


def test_mirrored_metrics_aggregate_over_the_global_batch(mirrored):
    res = mirrored["adam"]
    # Training metrics: accuracy and loss over the global batches, as on one device.
    assert abs(res["first_acc"][0] - res["first_acc"][1]) < 1e-7
    assert abs(res["acc"][0] - res["acc"][1]) < 1e-7
    assert abs(res["loss_metric"][0] - res["loss_metric"][1]) < 1e-5
    # Evaluation: 102 examples, each replica counted its own part; result() sums them.
    single_eval, mirrored_eval = res["eval"]
    assert res["eval_count"] == 102.0 and res["eval_replica_counts"] == [52.0, 50.0]
    assert abs(mirrored_eval["accuracy"] - res["numpy_eval_acc"]) < 1e-7
    assert abs(single_eval["accuracy"] - res["numpy_eval_acc"]) < 1e-7
    assert abs(mirrored_eval["loss"] - res["numpy_eval_loss"]) < 1e-5


def test_cross_replica_false_batchnorm_gives_per_replica_statistics(mirrored):
    # Sanity check of the comparison: without synchronized statistics the weights differ.
    assert mirrored["local_bn_diff"] > 1e-4


# ------------------------------------ MultiWorkerMirroredStrategy, 2 processes
_WORKER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    run_dir, max_steps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    from lamina.train import distribute as dist
    strategy = dist.make_strategy("multiworker")  # before any TensorFlow op
    import numpy as np
    import lamina as lm
    from lamina import data as ld

    lm.set_seed(0)
    data = ld.load("digits", validation_split=0.0, seed=0)
    with strategy.scope():
        model = lm.models.ConvNet(10, widths=(8,), convs_per_block=1, batch_norm=True, hidden=16)
        opt = lm.optim.Adam(1e-2)
    trainer = lm.train.Trainer(model, opt, "cross_entropy", metrics=["accuracy"], strategy=strategy,
                               run_dir=run_dir, tensorboard=False)

    def train(epoch, skip_batches):
        return data.batches("train", 32, shuffle=True, seed=0, epoch=epoch, skip_batches=skip_batches)

    first = next(iter(dist.distribute_dataset(strategy, train(0, 0))))
    local = [int(t.shape[0]) for t in strategy.experimental_local_results(first[0])]
    trainer.build(next(iter(train(0, 0)))[0])
    task = strategy.cluster_resolver.task_id
    flat = lambda w: {k.replace("/", "."): v for k, v in w.items()}
    np.savez(os.path.join(out, f"init_{task}_{max_steps}.npz"), **flat(model.get_weights()))
    trainer.fit(train, epochs=1, max_steps=max_steps)
    np.savez(os.path.join(out, f"final_{task}_{max_steps}.npz"), **flat(model.get_weights()))
    print("RESULT " + json.dumps({"task": task, "chief": trainer.is_chief, "step": int(trainer.step.numpy()),
                                  "replicas": strategy.num_replicas_in_sync, "local_batch": local,
                                  "loss": trainer.epoch_logs()["loss"]}), flush=True)
    """
)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _run_workers(script, run_dir, steps, out_dir):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs = []
    try:
        for i in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(script), str(run_dir), str(steps), str(out_dir)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(TF_CONFIG=tf_config), cwd=REPO,
                )
            )
        outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stdout[-3000:] + stderr[-5000:]
    return [(_result(stdout), stdout) for stdout, _ in outputs]


def _load(path):
    with np.load(path) as f:
        return {k.replace(".", "/"): f[k] for k in f.files}


def _max_diff(a, b):
    assert set(a) == set(b)
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def test_multiworker_two_processes_train_identically_and_resume(tmp_path):
    from lamina import data as ld

    script = tmp_path / "worker.py"
    script.write_text(_WORKER_SCRIPT)
    run_dir, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()

    first = _run_workers(script, run_dir, 3, out)
    (r0, log0), (r1, _) = first
    assert [r0["task"], r1["task"]] == [0, 1] and r0["chief"] and not r1["chief"]
    assert r0["replicas"] == r1["replicas"] == 2
    # DATA sharding: each worker gets its half of every global batch of 32.
    assert r0["local_batch"] == r1["local_batch"] == [16]
    assert r0["step"] == r1["step"] == 3 and abs(r0["loss"] - r1["loss"]) < 1e-6
    # Worker 0 broadcast its initial weights; both end with identical weights.
    assert _max_diff(_load(out / "init_0_3.npz"), _load(out / "init_1_3.npz")) == 0.0
    w0, w1 = _load(out / "final_0_3.npz"), _load(out / "final_1_3.npz")
    assert _max_diff(w0, w1) == 0.0
    # Only the chief writes into the run folder; the other worker's save goes aside.
    saved = set(os.listdir(run_dir / "checkpoints"))
    assert {"checkpoint", "ckpt-3.index", "ckpt-3.data-00000-of-00001"} <= saved
    assert not any(name.startswith("ckpt-") and not name.startswith("ckpt-3.") for name in saved), saved
    assert (run_dir / "_workers" / "worker_1" / "checkpoints" / "ckpt-3.index").exists()
    assert not (run_dir / "_workers" / "worker_0").exists()

    second = _run_workers(script, run_dir, 6, out)
    (s0, log0), (s1, _) = second
    assert "resuming from" in log0 and "ckpt-3" in log0 and "step 3" in log0
    assert s0["step"] == s1["step"] == 6
    # The resumed run started from the step-3 weights, not from a fresh init.
    assert _max_diff(_load(out / "init_0_6.npz"), w0) > 1e-3
    v0, v1 = _load(out / "final_0_6.npz"), _load(out / "final_1_6.npz")
    assert _max_diff(v0, v1) == 0.0 and _max_diff(v0, w0) > 1e-4

    # Two workers x 16 examples == one device x 32 examples, step for step (through the resume).
    data = ld.load("digits", validation_split=0.0, seed=0)
    model = lm.models.ConvNet(10, widths=(8,), convs_per_block=1, batch_norm=True, hidden=16)
    trainer = lm.train.Trainer(model, lm.optim.Adam(1e-2), "cross_entropy", quiet=True)
    for step, (x, y) in enumerate(data.batches("train", 32, shuffle=True, seed=0, epoch=0).take(6), start=1):
        if step == 1:
            trainer.build(x)
            model.set_weights(_load(out / "init_0_3.npz"))
        trainer.train_step(x, y)
        if step in (3, 6):
            assert _max_diff(model.get_weights(), w0 if step == 3 else v0) < 1e-5


@pytest.mark.slow  # two more worker processes (~15-25 s); the Trainer-level test above runs by default
def test_cli_multiworker_chief_writes_and_workers_agree(tmp_path):
    run_dir = tmp_path / "run"
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    args = [sys.executable, "-m", "lamina", "train", "--strategy", "multiworker", "--epochs", "1",
            "--max-steps", "2", "--run-dir", str(run_dir), "--quiet"]
    procs = []
    try:
        for i in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          env=_env(TF_CONFIG=tf_config), cwd=str(tmp_path)))
        outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stdout[-3000:] + stderr[-5000:]
        assert "test accuracy" in stdout
    # The chief wrote the run; the other worker only its private checkpoint copy.
    for name in ("config.json", "results.json", "confusion.png", "checkpoints/ckpt-2.index"):
        assert (run_dir / name).exists(), name
    worker = run_dir / "_workers" / "worker_1"
    assert sorted(p.name for p in worker.iterdir()) == [".lamina.lock", "checkpoints"]  # (its own lock)
    chief_ckpt = tf.train.load_checkpoint(str(run_dir / "checkpoints" / "ckpt-2"))
    worker_ckpt = tf.train.load_checkpoint(str(worker / "checkpoints" / "ckpt-2"))
    keys = [k for k in chief_ckpt.get_variable_to_shape_map() if k.startswith(("model/", "optimizer/", "step/"))]
    assert any("/m/" in k for k in keys) and len(keys) > 10
    for key in keys:  # model, Adam slots and step: identical on both workers
        np.testing.assert_array_equal(chief_ckpt.get_tensor(key), worker_ckpt.get_tensor(key), err_msg=key)
    assert int(chief_ckpt.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 2
