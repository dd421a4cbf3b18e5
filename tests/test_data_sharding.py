"""Streaming data under several workers: file or data sharding of the epoch plan, per-worker pipelines.

The per-worker pipelines are built directly (as ``distribute_dataset`` builds
them on each worker); one slow test runs two ``MultiWorkerMirroredStrategy``
processes on 127.0.0.1 over streamed TFRecords.
"""

import os
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import lamina.data as ld
from lamina.data.sharding import WorkerShard, worker_builder
from lamina.train import distribute as dist

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _folder(root, n=8, classes=("a", "b")):
    rng = np.random.default_rng(0)
    for c in classes:
        os.makedirs(os.path.join(root, c))
        for i in range(n):
            tf.io.write_file(os.path.join(root, c, f"{i}.png"), tf.io.encode_png(rng.integers(0, 256, (4, 4, 1), dtype=np.uint8)))
    return str(root)


def _arrays(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_shard_policy_by_number_of_files():
    policy = tf.data.experimental.AutoShardPolicy
    assert dist.shard_policy(2, 2) == policy.FILE and dist.shard_policy(100, 8) == policy.FILE
    assert dist.shard_policy(1, 2) == policy.DATA and dist.shard_policy(3, 4) == policy.DATA
    plain = tf.data.Dataset.range(8).batch(4)
    assert worker_builder(plain) is None  # not a streaming pipeline: the DATA path of before
    with pytest.raises(ValueError, match="not a multiple of 2 workers"):
        WorkerShard(0, 2, 3)


def test_folder_workers_read_their_slices_of_the_same_global_batches(tmp_path):
    ds = ld.load(_folder(tmp_path / "f"), stream=True, seed=1)
    batches = ds.batches("train", 5, epoch=1, augment="crop", skip_batches=1)
    builder, files = worker_builder(batches)
    assert files == ds.splits["train"] == 12
    full = _arrays(batches)
    per_worker = [_arrays(builder(WorkerShard(w, 2, 4, "file"))) for w in range(2)]
    assert [len(p) for p in per_worker] == [2 * len(full)] * 2  # two local replicas per step
    for k, (x, y) in enumerate(full):
        parts = per_worker[0][2 * k : 2 * k + 2] + per_worker[1][2 * k : 2 * k + 2]  # replicas 0..3
        assert [len(p[1]) for p in parts] == [len(range(r * 2, min(r * 2 + 2, len(y)))) for r in range(4)]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    base = tmp_path_factory.mktemp("shard")
    src = _folder(base / "src", n=15)
    out = str(base / "tfr")
    ld.convert(src, out, num_shards=4, quiet=True)
    return out


def _shard_images(ds):
    """Raw images of each train shard, as byte strings."""
    out = []
    for shard in ds.index.splits["train"]:
        spec = {"image": tf.io.FixedLenFeature([], tf.string)}
        images = [tf.io.decode_png(tf.io.parse_single_example(r, spec)["image"]).numpy().tobytes()
                  for r in tf.data.TFRecordDataset(shard.path)]
        out.append(set(images))
    return out


def test_tfrecord_file_sharding_reads_only_the_workers_shards(records):
    ds = ld.load(records, stream=True, seed=3)
    assert ds.num_files("train") == 4 and ds.splits["train"] == 24
    batches = ds.batches("train", 4, epoch=2)
    builder, files = worker_builder(batches)
    assert files == 4
    steps = ds.num_batches("train", 4)
    shard_sets = _shard_images(ds)
    order = np.random.default_rng([3, 2, 0x54465245]).permutation(4)
    seen = []
    for w in range(2):
        got = _arrays(builder(WorkerShard(w, 2, 2, "file")))
        assert len(got) == steps and all(len(y) == 2 for _, y in got)  # same steps, full replica batches
        mine = set().union(*(shard_sets[i] for i in order[w::2]))
        images = {np.rint(img * 255).astype(np.uint8).tobytes() for x, _ in got for img in x}
        assert images <= mine  # only this worker's shards were read
        seen.append(images)
    assert not seen[0] & seen[1]
    # resuming a worker: its tail, exactly
    tail = _arrays(worker_builder(ds.batches("train", 4, epoch=2, skip_batches=2))[0](WorkerShard(1, 2, 2, "file")))
    full = _arrays(builder(WorkerShard(1, 2, 2, "file")))
    assert len(tail) == steps - 2
    for (a, b), (c, d) in zip(full[2:], tail):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_tfrecord_data_sharding_when_files_are_fewer_than_workers(records):
    ds = ld.load(records, stream=True)
    batches = ds.batches("test", 3)  # evaluation (not shuffled): never file-sharded, nothing repeated
    builder, _ = worker_builder(batches)
    full = _arrays(batches)
    parts = [_arrays(builder(WorkerShard(w, 2, 2, "file"))) for w in range(2)]
    for k, (x, y) in enumerate(full):
        np.testing.assert_array_equal(np.concatenate([parts[0][k][1], parts[1][k][1]]), y)
        np.testing.assert_array_equal(np.concatenate([parts[0][k][0], parts[1][k][0]]), x)


_WORKER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    data_dir, steps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    from lamina.train import distribute as dist
    strategy = dist.make_strategy("multiworker")  # before any TensorFlow op
    import numpy as np
    import lamina as lm
    from lamina import data as ld

    lm.set_seed(0)
    data = ld.load(data_dir, stream=True, seed=0)
    with strategy.scope():
        model = lm.models.MLP((8,), 2)
        opt = lm.optim.Adam(1e-2)
    trainer = lm.train.Trainer(model, opt, "cross_entropy", strategy=strategy, tensorboard=False, quiet=True)

    def train(epoch, skip_batches):
        return data.batches("train", 4, shuffle=True, seed=0, epoch=epoch, skip_batches=skip_batches)

    trainer.fit(train, epochs=1, steps_per_epoch=data.num_batches("train", 4), max_steps=steps)
    task = strategy.cluster_resolver.task_id
    np.savez(os.path.join(out, f"final_{task}.npz"), **{k.replace("/", "."): v for k, v in model.get_weights().items()})
    print("RESULT " + json.dumps({"task": task, "step": int(trainer.step.numpy())}), flush=True)
    """
)


@pytest.mark.slow  # two worker processes (~20 s); the per-worker plans are tested above
def test_two_workers_train_on_file_sharded_records(records, tmp_path):
    from tests.test_distributed import _run_workers

    script = tmp_path / "worker.py"
    script.write_text(_WORKER_SCRIPT)
    results = [r for r, _ in _run_workers(script, records, 6, tmp_path)]
    assert [r["step"] for r in results] == [6, 6]  # 24 records / global batch 4, on both workers
    w0, w1 = (np.load(tmp_path / f"final_{i}.npz") for i in range(2))
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key])
