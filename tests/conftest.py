"""Shared test setup: quiet TensorFlow logs, a fixed seed per test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import lamina as lm  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same seed."""
    lm.set_seed(1234)
    yield


def assert_close(a, b, atol=1e-5, rtol=1e-5):
    """np.testing.assert_allclose on tensors or arrays."""
    a = a.numpy() if hasattr(a, "numpy") else np.asarray(a)
    b = b.numpy() if hasattr(b, "numpy") else np.asarray(b)
    np.testing.assert_allclose(a, b, atol=atol, rtol=rtol)


def train_run(run_dir, steps=120, class_prefix=""):
    """Trains a ConvNet on the digits for ``steps`` SGD+momentum steps and writes a run directory.

    The run directory is what ``lamina train`` leaves (``config.json`` and a
    ``best/`` checkpoint), so export / predict tests can start from it without a
    full training run. Returns ``(model, dataset)``.
    """
    from lamina.models.registry import create_model
    from lamina.train.config import RunConfig, RunRecord
    from lamina.train.run import write_record

    lm.set_seed(0)
    ds = lm.data.load("digits")
    model = create_model("convnet", ds.num_classes)
    model(tf.zeros((1, *ds.input_shape)), training=False)
    variables = model.trainable_variables
    velocity = [tf.Variable(tf.zeros_like(v)) for v in variables]

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y, tf.int32), logits))
        for v, m, g in zip(variables, velocity, tape.gradient(loss, variables)):
            m.assign(0.9 * m + g)
            v.assign_sub(0.05 * m)

    done, epoch = 0, 0
    while done < steps:
        for x, y in ds.batches("train", 64, shuffle=True, seed=0, epoch=epoch):
            step(x, y)
            done += 1
            if done >= steps:
                break
        epoch += 1
    write_record(run_dir, RunRecord(
        config=RunConfig(model="convnet", data="digits", val_split=0.0, seed=0), num_classes=ds.num_classes,
        input_shape=list(ds.input_shape), class_names=[f"{class_prefix}{c}" for c in ds.class_names],
        preprocessing=ds.preprocessing,
    ))
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), os.path.join(run_dir, "best"), 1).save()
    return model, ds


def run_cli(argv):
    """Runs ``lamina.cli.main(argv)`` in-process; returns ``(exit code, stdout, stderr)``."""
    import contextlib
    import io

    from lamina.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def once_per_session(tmp_path_factory, name, produce):
    """``produce(folder) -> JSON-able result``, run once per test session, also across pytest-xdist workers.

    The first worker to ask runs it in ``<session tmp>/<name>`` under a file lock
    and stores the result next to it; the others wait and read it (so one
    costly subprocess serves the tests of every worker).
    """
    import json

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return produce(tmp_path_factory.mktemp(name))
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent
    out = root / f"{name}.json"
    with FileLock(str(out) + ".lock"):
        if out.is_file():
            return json.loads(out.read_text())
        folder = root / name
        folder.mkdir(exist_ok=True)
        data = produce(folder)
        out.write_text(json.dumps(data))
    return data


@pytest.fixture
def rng():
    """A NumPy generator seeded 0, with PyTorch's global seed set too (the reference tests draw from both)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return np.random.default_rng(0)


def t2n(t):
    """A PyTorch tensor as a NumPy array (detached)."""
    return t.detach().numpy()
