"""``lamina train``'s run configuration: --print-config, --ema, --init-from, resume rules, retries."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import yaml

from lamina.cli import main
from lamina.train.config import RunConfig

FAST = ["--epochs", "1", "--max-steps", "3", "--quiet"]


def test_print_config_round_trips_through_config(tmp_path, capsys):
    assert main(["train", "--print-config", "--lr", "0.01", "--batch-size", "16", "--augment", "crop"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# lamina train configuration")
    assert "# peak learning rate" in text and "lr: 0.01" in text
    path = tmp_path / "my.yaml"
    path.write_text(text)
    parsed = yaml.safe_load(text)
    assert set(parsed) == {f.name for f in RunConfig.options()}
    config = RunConfig.from_file(str(path))
    assert config == RunConfig(lr=0.01, batch_size=16, augment="crop")
    assert RunConfig.from_file(str(path), overrides={"epochs": 3}).epochs == 3


def test_config_values_are_checked_once_for_every_source(tmp_path):
    from lamina.train.config import ConfigError

    with pytest.raises(ConfigError, match="--epochs must be a positive integer, got 0"):
        RunConfig(epochs=0)
    (tmp_path / "bad.yaml").write_text("lr: -1\n")
    with pytest.raises(ConfigError, match=r"config file '.*bad.yaml': --lr must be a positive number, got -1"):
        RunConfig.from_file(str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="--ema must be a number in \\(0, 1\\)"):
        RunConfig(ema=1.0)


def test_ema_run_exports_its_average(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--model", "mlp", "--ema", "0.9", "--run-dir", run] + FAST) == 0
    from lamina.train.run import load_run

    live, record = load_run(run, "latest")
    averaged, _ = load_run(run, "latest", weights="ema")
    assert record.config.ema == 0.9
    diffs = [np.abs(live.get_weights()[k] - averaged.get_weights()[k]).max() for k in live.get_weights()]
    assert max(diffs) > 0  # the average is not the live weights
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(run, "checkpoints")))
    shadows = sorted(k for k in reader.get_variable_to_shape_map() if k.startswith("ema/shadows/"))
    assert len(shadows) == len(live.get_weights())
    assert main(["export", run, "--format", "savedmodel", "--weights", "ema", "--checkpoint", "latest"]) == 0
    assert "(its weight average)" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "run"), "--format", "savedmodel", "--weights", "averaged"]) == 2


def test_resume_refuses_a_changed_option_and_retries_a_run_that_never_saved(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--model", "mlp", "--run-dir", run] + FAST) == 0
    capsys.readouterr()
    assert main(["train", "--model", "mlp", "--run-dir", run, "--lr", "0.1"] + FAST) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"lamina: error: cannot resume {run!r} with --lr 0.1: it was trained with 0.003 (only --epochs, "
                   "--max-steps, --checkpoint-every, --keep-checkpoints, --patience, --check-numerics, --strategy, "
                   "--jit, --deterministic, --mlflow may change on resume); use another --run-dir")
    # A run that failed before its first checkpoint leaves nothing to protect: another model may start there.
    fresh = tmp_path / "failed"
    fresh.mkdir()
    (fresh / "config.json").write_text(json.dumps({"model": "convnet", "num_classes": 10, "input_shape": [8, 8, 1]}))
    assert main(["train", "--model", "mlp", "--run-dir", str(fresh)] + FAST) == 0
    assert json.load(open(fresh / "config.json"))["model"] == "mlp"


def test_rerunning_a_finished_run_says_so(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--model", "mlp", "--epochs", "1", "--run-dir", run, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--model", "mlp", "--epochs", "1", "--run-dir", run]) == 0
    out = capsys.readouterr().out
    assert "run already finished (1 epochs); re-evaluated its checkpoint" in out


def test_init_from_a_run_drops_a_head_of_another_size(tmp_path, capsys):
    source = str(tmp_path / "source")
    assert main(["train", "--model", "convnet", "--run-dir", source] + FAST) == 0
    x = np.random.default_rng(0).random((40, 8, 8, 1)).astype(np.float32)
    np.savez(tmp_path / "four.npz", x_train=x, y_train=np.arange(40) % 4, x_test=x[:8], y_test=np.arange(8) % 4)
    target = str(tmp_path / "target")
    capsys.readouterr()
    assert main(["train", "--model", "convnet", "--data", str(tmp_path / "four.npz"), "--val-split", "0",
                 "--init-from", source, "--run-dir", target, "--epochs", "1", "--max-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "dropped the source's classifier/weights (128, 10): the new head has (128, 4)" in out
    assert "initialized" in out
    from lamina.train.run import load_run

    src, _ = load_run(source, "latest")
    w = src.get_weights()
    assert "blocks/0/convs/0/weights" in w


def test_vit_training_writes_nothing_to_stderr(tmp_path, capfd):
    # tf.tile's gradient used to make oneDNN print "supports DT_INT32 only on platforms with AVX-512"
    assert main(["train", "--model", "vit", "--run-dir", str(tmp_path / "vit")] + FAST) == 0
    assert capfd.readouterr().err == ""


def test_tabular_data_with_an_image_model_suggests_mlp_and_the_transformer_reads_sequences(tmp_path, capsys):
    rows = ["a,b,c,d,label"] + [f"{i % 7},{i % 3},{i % 5},{i % 2},{i % 3}" for i in range(60)]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    assert main(["train", "--data", str(tmp_path / "table.csv"), "--run-dir", str(tmp_path / "a")] + FAST) == 2
    assert capsys.readouterr().err.strip() == (
        f"lamina: error: --model convnet needs images (height, width, channels); '{tmp_path / 'table.csv'}' has "
        "examples of shape (4,): use --model mlp (or --model transformer) for such data")
    assert main(["train", "--data", str(tmp_path / "table.csv"), "--model", "mlp", "--run-dir", str(tmp_path / "a")]
                + FAST) == 0
    assert main(["train", "--model", "transformer", "--run-dir", str(tmp_path / "t")] + FAST) == 0  # digits rows
    from lamina.train.run import load_run

    model, record = load_run(str(tmp_path / "t"), "latest")
    assert record.model_kwargs == {"sequence_shape": [8, 8]}
    assert model(tf.zeros([2, 8, 8, 1])).shape == (2, 10)


def test_sequential_given_layers_as_arguments_says_to_pass_a_list():
    import lamina as lm

    with pytest.raises(TypeError, match=r"Sequential: takes one list of layers, Sequential\(\[a, b, ...\]\); got a "
                                        r"Linear as its second argument"):
        lm.Sequential(lm.Linear(2), lm.Linear(3))


def test_on_bad_file_fail_stops_a_streamed_run_with_one_line(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "pics"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(np.full((8, 8), 20 * i, np.uint8)).save(root / cls / f"{i}.png")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    args = ["train", "--data", f"{root}?stream=1", "--model", "mlp", "--val-split", "0", "--epochs", "1",
            "--batch-size", "4", "--quiet"]
    assert main(args + ["--run-dir", str(tmp_path / "run"), "--on-bad-file", "fail"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lamina: error: ") and "broken.png" in err[0], err
    assert main(args + ["--run-dir", str(tmp_path / "skip"), "--on-bad-file", "skip"]) == 0
    assert "broken.png" in capsys.readouterr().err  # skipped with a warning naming it
    from lamina.train.run import default_run_dir

    assert os.path.basename(default_run_dir("mlp", f"{root}?stream=1")).startswith("mlp-pics-")


def test_the_reported_accuracy_is_the_exported_checkpoints_and_every_command_names_it(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--model", "mlp", "--epochs", "3", "--run-dir", run]) == 0
    out = capsys.readouterr().out
    results = json.load(open(os.path.join(run, "results.json")))
    ckpt = results["checkpoint"]
    assert ckpt["which"] == "best" and ckpt["epoch"] in (1, 2, 3) and ckpt["step"] > 0
    assert f"test accuracy {results['test_accuracy']:.2%}" in out
    assert f"with the best checkpoint (epoch {ckpt['epoch']}, step {ckpt['step']})" in out
    assert f"last epoch's weights {results['final_test_accuracy']:.2%}" in out
    assert main(["evaluate", run]) == 0
    ev = capsys.readouterr().out
    assert ev.startswith(f"best checkpoint (epoch {ckpt['epoch']}, step {ckpt['step']}):")
    assert f"accuracy {results['test_accuracy']:.2%}" in ev  # evaluate agrees with what train reported
    assert main(["export", run, "--format", "savedmodel"]) == 0
    import glob

    (meta_path,) = glob.glob(os.path.join(run, "export", "savedmodel", "*", "lamina_export.json"))
    meta = json.load(open(meta_path))
    assert meta["checkpoint"]["epoch"] == ckpt["epoch"] and meta["checkpoint"]["which"] == "best"
    # fewer epochs than were done is refused
    capsys.readouterr()
    assert main(["train", "--model", "mlp", "--epochs", "2", "--run-dir", run, "--quiet"]) == 2
    assert "it has already trained 3 epochs" in capsys.readouterr().err


def test_help_texts(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    options = text[text.index("options:"):]
    blocks = {}
    for line in options.splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            blocks[current] = line
        elif line.strip() and blocks:
            blocks[current] += " " + line.strip()
    for flag in ("--batch-size", "--checkpoint-every", "--init-from", "--freeze", "--ema", "--on-bad-file", "--model"):
        assert blocks[flag].count("[default:") == 1, blocks[flag]  # every option says its default, once
    assert flat.count("[default: runs/<model>-<data>-<time>]") == 1
    from lamina.models.registry import model_names

    for name in model_names():  # the whole list, vit included, nothing cut with "..."
        assert name in flat
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    export_help = " ".join(capsys.readouterr().out.split())
    assert "{best,latest}" in export_help or "best (by validation) or latest" in export_help
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "how many classes to show per image" in " ".join(capsys.readouterr().out.split())
    assert main(["summary"]) == 0
    assert "on input (1, 8, 8, 1)" in capsys.readouterr().out  # the default data's 8x8x1 input


def test_resume_finds_a_run_with_a_chosen_name_under_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "mlp", "--epochs", "1", "--run-dir", "runs/my-experiment", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--model", "mlp", "--epochs", "2", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resuming from runs/my-experiment/checkpoints/" in out and "run dir runs/my-experiment" in out
