"""The examples keep working (short versions)."""

import importlib.util
import os

import numpy as np
import pytest
import tensorflow as tf

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_tutorial_layer_matches_lamina_conv(capsys):
    tut = _load("seed_tutorial")
    tut.step_1_and_2()
    out = capsys.readouterr().out
    assert "('test_conv/bias:0', (4,)), ('test_conv/weights:0', (3, 3, 3, 4))" in out
    assert "max |seed - lm.Conv2D(padding=1)| = 0.0" in out
    assert "expected 3 input channels (fixed at first call), got 5" in out
    # The seed's own layer agrees with tf.nn computed independently.
    layer = tut.SeedConv2D(2)
    x = tf.random.uniform((2, 5, 5, 3))
    y = layer(x).numpy()
    ref = tf.nn.conv2d(x, layer.weights, 1, "SAME").numpy() + layer.bias.numpy()
    np.testing.assert_allclose(y, ref, atol=1e-6)


def test_seed_tutorial_manual_loop_runs(capsys):
    tut = _load("seed_tutorial")
    tut.step_3_manual_loop(epochs=1)
    assert "manual loop epoch 1" in capsys.readouterr().out


def test_dcgan_vae_and_char_lm_run_through_the_trainer(tmp_path, capsys):
    """Smoke runs of the three examples of custom steps (their resume is tested in test_resume_kinds.py)."""
    gan = _load("dcgan").main(["--epochs", "1", "--max-steps", "3", "--samples", "64", "--classifier-epochs", "1",
                               "--run-dir", str(tmp_path / "gan")])
    assert gan["history"] == []  # cut inside the first epoch: its position is checkpointed, no epoch record
    assert tf.train.latest_checkpoint(str(tmp_path / "gan" / "checkpoints")).endswith("ckpt-3")
    assert 1.0 <= gan["score"]["score"] <= 10.0 and os.path.exists(tmp_path / "gan" / "samples.png")
    vae = _load("vae").main(["--epochs", "1", "--max-steps", "3", "--run-dir", str(tmp_path / "vae")])
    assert vae["test"]["elbo"] == pytest.approx(vae["test"]["recon"] + vae["test"]["kl"], rel=1e-5)
    assert os.path.exists(tmp_path / "vae" / "reconstructions.png")
    lm_run = _load("char_lm").main(["--epochs", "1", "--max-steps", "3", "--sample-length", "8",
                                    "--run-dir", str(tmp_path / "lm")])
    assert lm_run["test"]["bits_per_char"] == pytest.approx(lm_run["test"]["loss"] / np.log(2), rel=1e-5)
    assert lm_run["sample"].startswith("The ``for`` statement") and len(lm_run["sample"]) >= len("The ``for`` statement")
    out = capsys.readouterr().out
    assert "digits score" in out and "negative ELBO" in out and "bits per character" in out


def test_unet_and_vqvae_examples_run(tmp_path, capsys):
    """Smoke runs of the U-Net (default step on image + mask pairs) and VQ-VAE (custom step) examples."""
    unet = _load("unet_shapes")
    x, y = unet.make_shapes(4, seed=3)
    assert x.shape == (4, 32, 32, 1) and y.shape == (4, 32, 32) and set(np.unique(y)) <= {0, 1, 2, 3}
    assert (np.unique(y) > 0).any()  # shapes were drawn
    np.testing.assert_array_equal(unet.make_shapes(4, seed=3)[1], y)
    run = unet.main(["--epochs", "1", "--max-steps", "2", "--train", "32", "--run-dir", str(tmp_path / "unet")])
    assert 0.0 <= run["miou"] <= 1.0 and os.path.exists(tmp_path / "unet" / "predictions.png")
    vq = _load("vqvae").main(["--epochs", "1", "--max-steps", "3", "--run-dir", str(tmp_path / "vq")])
    assert vq["test"]["loss"] == pytest.approx(vq["test"]["mse"] + vq["test"]["vq_loss"], rel=1e-5)
    assert 1.0 <= vq["perplexity"] <= 64.0 and 1 <= vq["codes_used"] <= 64
    out = capsys.readouterr().out
    assert "mIoU" in out and "code perplexity" in out
