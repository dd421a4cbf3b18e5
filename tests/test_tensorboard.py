"""What lamina writes for TensorBoard, read back with TensorBoard's own event reader."""

import importlib.metadata
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from lamina.train import summaries

pea = pytest.importorskip("tensorboard.backend.event_processing.plugin_event_accumulator")


def read_events(logdir):
    """TensorBoard's reader (the one its plugins use), every event kept."""
    acc = pea.EventAccumulator(logdir, size_guidance={"tensors": 0, "scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    return acc


def plugin(acc, tag):
    return acc.SummaryMetadata(tag).plugin_data.plugin_name


def test_the_readme_command_is_installed():
    # `tensorboard --logdir runs` after `pip install -e ".[cpu]"`: the console script and its package exist
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="tensorboard")
    assert script.value.startswith("tensorboard.main")
    import tensorboard.main  # noqa: F401


def test_trainer_scalars_match_metrics_jsonl_and_the_graph_is_there(tmp_path):
    lm.set_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    trainer = lm.train.Trainer(lm.models.MLP([8], 2), lm.optim.Adam(1e-2), metrics=["accuracy"], quiet=True,
                               seed=0, run_dir=str(tmp_path / "run"))
    trainer.fit(train, validation=train, epochs=2)
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert len(records) == 2
    logged = {k for k in records[0] if k not in ("epoch", "step")}
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= logged
    # Two runs with the same tags, so TensorBoard overlays train and validation curves.
    runs = {"train": {k: k for k in logged if not k.startswith("val_")},
            "validation": {k[4:]: k for k in logged if k.startswith("val_")}}
    for run, tags in runs.items():
        acc = read_events(str(tmp_path / "run" / "tensorboard" / run))
        scalar_tags = {t for t in acc.Tags()["tensors"] if plugin(acc, t) == "scalars"}
        assert scalar_tags == set(tags), run
        for tag, key in tags.items():
            events = acc.Tensors(tag)
            assert [e.step for e in events] == [r["epoch"] for r in records], tag
            got = [float(tf.make_ndarray(e.tensor_proto)) for e in events]
            np.testing.assert_allclose(got, [r[key] for r in records], rtol=1e-6, err_msg=f"{run}/{tag}")
    assert {"loss", "accuracy"} <= set(runs["validation"])
    # the traced training step, for TensorBoard's graph dashboard
    graph = read_events(str(tmp_path / "run" / "tensorboard" / "train")).Graph()
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    assert "MatMul" in ops  # the MLP's layers
    assert any(op.startswith("ResourceApply") or op == "AssignSubVariableOp" for op in ops)  # the optimizer update


def test_weight_histograms_on_request(tmp_path):
    lm.set_seed(0)
    x = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = lm.models.MLP([8], 2)
    trainer = lm.train.Trainer(model, "adam", quiet=True, run_dir=str(tmp_path / "run"), tensorboard=False,
                               callbacks=[lm.train.callbacks.TensorBoard(histograms=True)])
    trainer.fit((x, y), batch_size=16, epochs=1)
    acc = read_events(str(tmp_path / "run" / "tensorboard" / "train"))
    hist = {t for t in acc.Tags()["tensors"] if plugin(acc, t) == "histograms"}
    assert hist == {f"weights/{k}" for k in model.variable_paths()}
    for k, v in model.variable_paths().items():
        (event,) = acc.Tensors(f"weights/{k}")
        assert tf.make_ndarray(event.tensor_proto)[:, 2].sum() == pytest.approx(v.numpy().size)


def test_write_scalars_histograms_and_images(tmp_path):
    logdir = str(tmp_path / "tb")
    writer = tf.summary.create_file_writer(logdir)
    model = lm.models.MLP([4], 3)
    model(tf.ones((2, 5)))
    tags = summaries.write_scalars(writer, {"epoch": 3, "loss": 0.25, "accuracy": np.float32(0.5),
                                            "lr": tf.constant(1e-3)}, step=3, prefix="train/")
    assert tags == ["train/loss", "train/accuracy", "train/lr"]
    weights = model.variable_paths()
    hist_tags = summaries.write_histograms(writer, weights, step=3, prefix="weights/", buckets=10)
    matrix = np.array([[5, 1], [2, 7]])
    cm = summaries.confusion_matrix_image(matrix, ["cat", "dog"])
    grid = summaries.sample_grid_image(np.random.default_rng(0).random((5, 8, 8)), labels=[0, 1, 1, 0, 1],
                                       predictions=[0, 1, 0, 0, 1], class_names=["cat", "dog"], columns=3)
    small = (np.arange(4 * 6 * 3) % 256).astype(np.uint8).reshape(4, 6, 3)
    summaries.write_image(writer, "confusion_matrix", cm, step=3)
    summaries.write_image(writer, "samples", grid, step=3)
    summaries.write_image(writer, "small", small, step=3)
    writer.flush()

    acc = read_events(logdir)
    for tag, value in (("train/loss", 0.25), ("train/accuracy", 0.5), ("train/lr", 1e-3)):
        (event,) = acc.Tensors(tag)
        assert plugin(acc, tag) == "scalars" and event.step == 3
        assert float(tf.make_ndarray(event.tensor_proto)) == pytest.approx(value, rel=1e-6)
    assert "train/epoch" not in acc.Tags()["tensors"]
    assert hist_tags == [f"weights/{k}" for k in weights]
    for name, var in weights.items():
        tag = f"weights/{name}"
        (event,) = acc.Tensors(tag)
        assert plugin(acc, tag) == "histograms"
        buckets = tf.make_ndarray(event.tensor_proto)  # (buckets, 3): left edge, right edge, count
        values = var.numpy().ravel()
        assert buckets.shape == (10, 3)
        assert buckets[:, 2].sum() == pytest.approx(values.size)
        assert buckets[0, 0] == pytest.approx(values.min(), abs=1e-6)
        assert buckets[-1, 1] == pytest.approx(values.max(), abs=1e-6)
    for tag, array in (("confusion_matrix", cm), ("samples", grid), ("small", small)):
        (event,) = acc.Tensors(tag)
        assert plugin(acc, tag) == "images"
        width, height, png = tf.make_ndarray(event.tensor_proto)  # TensorBoard's image layout
        assert (int(width), int(height)) == (array.shape[1], array.shape[0])
        np.testing.assert_array_equal(tf.io.decode_png(png).numpy(), array)  # PNG is lossless
    assert cm.dtype == np.uint8 and cm.shape[-1] == 3 and cm.std() > 10
    # the grid has red titles (one wrong prediction) and gray images
    red = (grid[..., 0] > 200) & (grid[..., 1] < 60) & (grid[..., 2] < 60)
    assert red.sum() > 5


def test_a_figure_and_float_images(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    writer = tf.summary.create_file_writer(str(tmp_path / "tb"))
    fig, ax = plt.subplots(figsize=(2, 1), dpi=50)
    ax.plot([0, 1], [1, 0])
    written = summaries.write_image(writer, "fig", fig, step=0)
    plt.close(fig)
    assert written.shape == (50, 100, 3)
    gray = summaries.write_image(writer, "gray", np.linspace(0, 1, 12).reshape(3, 4), step=1)
    assert gray.shape == (3, 4, 1) and gray[0, 0, 0] == 0 and gray[-1, -1, 0] == 255
    writer.flush()
    acc = read_events(str(tmp_path / "tb"))
    assert {"fig", "gray"} <= set(acc.Tags()["tensors"])


def test_summary_errors(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path / "tb"))
    with pytest.raises(TypeError, match=r"'name' is not a number \(got str\)"):
        summaries.write_scalars(writer, {"loss": 1.0, "name": "convnet"}, step=0)
    with pytest.raises(TypeError, match=r"'dense/weights' is not a tensor \(got NoneType\)"):
        summaries.write_histograms(writer, {"dense/weights": None}, step=0)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        summaries.write_image(writer, "x", np.full((2, 2), 3.0), step=0)
    with pytest.raises(ValueError, match="expected an image"):
        summaries.write_image(writer, "x", np.zeros((2, 2, 2)), step=0)
    with pytest.raises(ValueError, match="2 labels for 3 images"):
        summaries.sample_grid_image(np.zeros((3, 4, 4)), labels=[0, 1])
