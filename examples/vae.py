"""A convolutional VAE on the 8x8 digits, trained by ``lm.train.Trainer`` with a custom ELBO step on ``x`` alone.

The encoder (two stride-2 convolutions) gives the mean and log-variance of an
8-dimensional Gaussian; the decoder (a dense layer and a transposed
convolution) gives Bernoulli logits for the 64 pixels (intensities in
``[0, 1]``). The train step minimizes the negative ELBO, ``reconstruction +
KL``, with the reparameterization trick (noise from ``ctx.random_seed()``, so a
resumed run draws the same numbers); the ``eval_step`` reports the same terms
on the held-out digits (``val_elbo``, ``val_recon``, ``val_kl``), and the best
checkpoint is the one with the lowest ``val_elbo``.

Measured (2 CPU cores, AMD EPYC, tensorflow-cpu 2.21, ``--epochs 100``, seed 0):
held-out negative ELBO 24.1 nats per image (reconstruction 20.5 + KL 3.6),
a pixel error of 0.097 (mean |x - reconstruction| in [0, 1] units); 18 s of training.

Run::

    python examples/vae.py                      # 100 epochs, writes runs/vae/ (reconstructions.png)
    python examples/vae.py --epochs 1 --max-steps 3 --run-dir /tmp/vae   # smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, Optional, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import lamina as lm  # noqa: E402

__all__ = ["VAE", "load_images", "elbo_terms", "main"]

LATENT = 8


class VAE(lm.Module):
    """Encoder ``x -> (mean, log_var)`` and decoder ``z -> pixel logits`` for 8x8x1 images."""

    def __init__(self, latent: int = LATENT, name: Optional[str] = "vae") -> None:
        super().__init__(name=name)
        self.enc0 = lm.Conv2D(32, 3, strides=2, activation="relu", name="enc0")
        self.enc1 = lm.Conv2D(64, 3, strides=2, activation="relu", name="enc1")
        self.stats = lm.Linear(2 * latent, name="stats")
        self.dec0 = lm.Linear(4 * 4 * 64, activation="relu", name="dec0")
        self.dec1 = lm.Conv2DTranspose(32, 4, strides=2, activation="relu", name="dec1")
        self.logits = lm.Conv2D(1, 3, name="logits")
        self.latent = latent

    def encode(self, x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        """Returns the posterior's ``(mean, log_var)``, each ``(N, latent)``."""
        h = self.enc1(self.enc0(x))
        stats = self.stats(tf.reshape(h, [tf.shape(h)[0], -1]))
        return stats[:, : self.latent], stats[:, self.latent:]

    def decode(self, z: tf.Tensor) -> tf.Tensor:
        """Returns pixel logits ``(N, 8, 8, 1)``."""
        return self.logits(self.dec1(tf.reshape(self.dec0(z), [-1, 4, 4, 64])))

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """The reconstruction's logits through the posterior mean (no noise)."""
        return self.decode(self.encode(x)[0])


def load_images() -> Tuple[np.ndarray, np.ndarray]:
    """The digits as ``(N, 8, 8, 1)`` float32 in ``[0, 1]``: the first 1,437 for training, the last 360 held out."""
    from sklearn.datasets import load_digits

    x = (load_digits().images[..., None] / 16.0).astype(np.float32)
    return x[:-360], x[-360:]


def elbo_terms(model: VAE, x: tf.Tensor, noise: tf.Tensor) -> Dict[str, tf.Tensor]:
    """The negative ELBO and its two terms, each averaged over the batch (nats per image).

    Args:
      model: the VAE.
      x: images in ``[0, 1]``.
      noise: standard normal ``(N, latent)`` for the reparameterization.

    Returns:
      ``{"elbo", "recon", "kl"}`` (``elbo = recon + kl``, to minimize).
    """
    mean, log_var = model.encode(x)
    z = mean + tf.exp(0.5 * log_var) * noise
    logits = tf.cast(model.decode(z), tf.float32)
    recon = tf.reduce_mean(tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(x, tf.float32), logits), [1, 2, 3]))
    mean, log_var = tf.cast(mean, tf.float32), tf.cast(log_var, tf.float32)
    kl = tf.reduce_mean(0.5 * tf.reduce_sum(tf.exp(log_var) + tf.square(mean) - 1.0 - log_var, axis=1))
    return {"elbo": recon + kl, "recon": recon, "kl": kl}


def steps_for(model: VAE) -> Tuple[Any, Any]:
    """The train and evaluation steps: minimize the negative ELBO; report it.

    Returns:
      ``(train_step, eval_step)``, each ``(batch, ctx) -> {"elbo", "recon", "kl"}``.
    """

    def noise(batch: tf.Tensor, ctx: lm.train.StepContext) -> tf.Tensor:
        return ctx.cast(tf.random.stateless_normal([ctx.batch_size(batch), model.latent], seed=ctx.random_seed()))

    def train_step(batch: tf.Tensor, ctx: lm.train.StepContext) -> Dict[str, tf.Tensor]:
        variables = model.trainable_variables
        with tf.GradientTape() as tape:
            terms = elbo_terms(model, ctx.cast(batch), noise(batch, ctx))
            scaled = ctx.scale_loss(terms["elbo"])
        ctx.apply(tape.gradient(scaled, variables), variables)
        return terms

    def eval_step(batch: tf.Tensor, ctx: lm.train.StepContext) -> Dict[str, tf.Tensor]:
        return elbo_terms(model, ctx.cast(batch), noise(batch, ctx))

    return train_step, eval_step


def main(argv: Optional[list] = None) -> Dict[str, Any]:
    """Trains the VAE and reports the held-out negative ELBO.

    Args:
      argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
      ``{"history", "test", "pixel_error", "train_time_s", "run_dir"}``.
    """
    p = argparse.ArgumentParser(description="Convolutional VAE on the 8x8 digits, trained by lm.train.Trainer.")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", default=os.path.join("runs", "vae"))
    p.add_argument("--max-steps", type=int, default=None)
    args = p.parse_args(argv)

    lm.set_seed(args.seed)
    train_x, test_x = load_images()
    model = VAE()
    model.encode(tf.zeros([1, 8, 8, 1]))
    model.decode(tf.zeros([1, LATENT]))
    train_step, eval_step = steps_for(model)
    trainer = lm.train.Trainer(model, lm.optim.Adam(2e-3), loss=None, metrics=(), step=train_step,
                               eval_step=eval_step, seed=args.seed, run_dir=args.run_dir,
                               monitor="val_elbo", monitor_mode="min")
    t0 = time.perf_counter()
    history = trainer.fit((train_x,), validation=(test_x,), batch_size=args.batch_size, epochs=args.epochs,
                          max_steps=args.max_steps)
    train_time = time.perf_counter() - t0
    test = trainer.evaluate((test_x,))
    recon = tf.sigmoid(model(tf.constant(test_x))).numpy()
    pixel_error = float(np.abs(recon - test_x).mean())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = np.concatenate([test_x[:16], recon[:16]], axis=2)  # original | reconstruction
    from lamina.train import summaries

    plt.imsave(os.path.join(args.run_dir, "reconstructions.png"), summaries.sample_grid_image(pairs, raw_max=1.0))
    print(f"held-out negative ELBO {test['elbo']:.1f} nats per image (reconstruction {test['recon']:.1f} + "
          f"KL {test['kl']:.1f}); pixel error {pixel_error:.3f}; training {train_time:.1f}s", flush=True)
    return {"history": history, "test": test, "pixel_error": pixel_error, "train_time_s": train_time,
            "run_dir": args.run_dir}


if __name__ == "__main__":
    main()
