"""A DCGAN on the 8x8 digits, trained by ``lm.train.Trainer`` with a two-optimizer step.

The generator maps 32 normal numbers to an 8x8 image (a dense layer to 4x4x64,
a stride-2 transposed convolution, a tanh convolution); the discriminator is
two stride-2 convolutions and a logit. One custom train step updates both
with their own Adam (``ctx.apply(..., optimizer=...)``), so the run gets
everything the Trainer does for supervised models: one compiled step,
checkpoints with exact resume, ``metrics.jsonl`` / TensorBoard curves of
``d_loss`` and ``g_loss``, the progress bar and ``history.png``.

Quality is measured with a digit classifier trained in the same script (a
``ConvNet`` on the real digits): the *digits score* ``exp(E[KL(p(y|x) || p(y))])``
over 2,000 samples (the Inception Score with a digits classifier; 10 is the
best possible, 1 the worst) and the share of samples the classifier assigns a
class with probability > 0.9.

Measured (2 CPU cores, AMD EPYC, tensorflow-cpu 2.21, ``--epochs 60``, seed 0):
digits score 8.0 (held-out real digits: 9.5), 80 % of samples confidently
classified, all 10 classes generated; 18-31 s of training (a shared machine).

Run::

    python examples/dcgan.py                       # 60 epochs, writes runs/dcgan/ (samples.png)
    python examples/dcgan.py --epochs 1 --max-steps 3 --classifier-epochs 1 --run-dir /tmp/dcgan   # smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import lamina as lm  # noqa: E402

__all__ = ["Generator", "Discriminator", "load_images", "gan_step_for", "digits_score", "main"]

LATENT = 32


class Generator(lm.Module):
    """``z (N, 32) -> image (N, 8, 8, 1)`` in ``[-1, 1]``."""

    def __init__(self, name: Optional[str] = "generator") -> None:
        super().__init__(name=name)
        self.project = lm.Linear(4 * 4 * 64, name="project")
        self.norm0 = lm.BatchNorm(name="norm0")
        self.up = lm.Conv2DTranspose(32, 4, strides=2, use_bias=False, name="up")
        self.norm1 = lm.BatchNorm(name="norm1")
        self.out = lm.Conv2D(1, 3, activation="tanh", name="out")

    def __call__(self, z: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Generates images from noise."""
        h = tf.reshape(self.project(z), [-1, 4, 4, 64])
        h = tf.nn.relu(self.norm0(h, training=training))
        h = tf.nn.relu(self.norm1(self.up(h), training=training))
        return self.out(h)


class Discriminator(lm.Module):
    """``image (N, 8, 8, 1) -> logit (N, 1)`` (real vs generated)."""

    def __init__(self, name: Optional[str] = "discriminator") -> None:
        super().__init__(name=name)
        self.conv0 = lm.Conv2D(32, 3, strides=2, name="conv0")
        self.conv1 = lm.Conv2D(64, 3, strides=2, name="conv1")
        self.logit = lm.Linear(1, name="logit")

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Scores images."""
        # max(h, 0.2 h) is leaky ReLU; written out, because grappler's remapper fails (and logs an
        # error) fusing tf.nn.leaky_relu when two tapes differentiate the same convolution.
        h = self.conv0(x)
        h = tf.maximum(h, 0.2 * h)
        h = self.conv1(h)
        h = tf.maximum(h, 0.2 * h)
        return self.logit(tf.reshape(h, [tf.shape(h)[0], -1]))


def load_images() -> np.ndarray:
    """The 1,797 digits as ``(N, 8, 8, 1)`` float32 in ``[-1, 1]``."""
    from sklearn.datasets import load_digits

    return (load_digits().images[..., None] / 8.0 - 1.0).astype(np.float32)


def _bce(labels: float, logits: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(tf.fill(tf.shape(logits), labels), logits))


def gan_step_for(gen: Generator, disc: Discriminator, g_opt: Any, d_opt: Any) -> Any:
    """The train step: one discriminator and one generator update per batch of real images.

    Args:
      gen: the generator.
      disc: the discriminator.
      g_opt: the generator's optimizer.
      d_opt: the discriminator's optimizer.

    Returns:
      ``step(batch, ctx) -> {"d_loss", "g_loss", "d_real", "d_fake"}``.
    """

    def gan_step(batch: tf.Tensor, ctx: lm.train.StepContext) -> Dict[str, tf.Tensor]:
        real = ctx.cast(batch)
        z = tf.random.stateless_normal([ctx.batch_size(batch), LATENT], seed=ctx.random_seed())
        with tf.GradientTape() as d_tape, tf.GradientTape() as g_tape:
            fake = gen(ctx.cast(z), training=True)
            real_logits = ctx.to_float32(disc(real, training=True))
            fake_logits = ctx.to_float32(disc(fake, training=True))
            d_loss = _bce(1.0, real_logits) + _bce(0.0, fake_logits)
            g_loss = _bce(1.0, fake_logits)  # the non-saturating generator loss
            d_scaled, g_scaled = ctx.scale_loss(d_loss), ctx.scale_loss(g_loss)
        ctx.apply(d_tape.gradient(d_scaled, disc.trainable_variables), disc.trainable_variables, optimizer=d_opt)
        ctx.apply(g_tape.gradient(g_scaled, gen.trainable_variables), gen.trainable_variables, optimizer=g_opt)
        return {"d_loss": d_loss, "g_loss": g_loss, "d_real": tf.reduce_mean(tf.sigmoid(real_logits)),
                "d_fake": tf.reduce_mean(tf.sigmoid(fake_logits))}

    return gan_step


def _classifier(seed: int, epochs: int = 12) -> Any:
    """A ConvNet on the real digits but the last 360 (inputs in [-1, 1], like the generator's)."""
    from sklearn.datasets import load_digits

    lm.set_seed(seed)
    labels = load_digits().target.astype(np.int32)
    model = lm.models.ConvNet(10)
    trainer = lm.train.Trainer(model, lm.optim.Adam(3e-3), quiet=True, seed=seed)
    trainer.fit((load_images()[:-360], labels[:-360]), batch_size=64, epochs=epochs)
    return model


def digits_score(classifier: Any, images: np.ndarray) -> Dict[str, float]:
    """The digits score (Inception Score with a digits classifier), confident share and classes seen.

    Args:
      classifier: a digit classifier taking ``[-1, 1]`` images.
      images: ``(N, 8, 8, 1)``.

    Returns:
      ``{"score", "confident", "classes"}``.
    """
    p = tf.nn.softmax(classifier(tf.constant(images), training=False)).numpy().astype(np.float64)
    marginal = p.mean(0, keepdims=True)
    kl = (p * (np.log(p + 1e-12) - np.log(marginal + 1e-12))).sum(1)
    return {"score": float(np.exp(kl.mean())), "confident": float((p.max(1) > 0.9).mean()),
            "classes": int(len(set(p.argmax(1).tolist())))}


def main(argv: Optional[list] = None) -> Dict[str, Any]:
    """Trains the DCGAN and reports its digits score.

    Args:
      argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
      ``{"history", "score", "real_score", "train_time_s", "run_dir"}``.
    """
    p = argparse.ArgumentParser(description="DCGAN on the 8x8 digits, trained by lm.train.Trainer.")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", default=os.path.join("runs", "dcgan"))
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--samples", type=int, default=2000, help="samples scored at the end")
    p.add_argument("--classifier-epochs", type=int, default=12, help="epochs of the scoring classifier")
    args = p.parse_args(argv)

    lm.set_seed(args.seed)
    gen, disc = Generator(), Discriminator()
    gen(tf.zeros([1, LATENT]))
    disc(tf.zeros([1, 8, 8, 1]))
    g_opt = lm.optim.Adam(2e-3, beta1=0.5, name="g_adam")
    d_opt = lm.optim.Adam(2e-3, beta1=0.5, name="d_adam")
    trainer = lm.train.Trainer(
        {"generator": gen, "discriminator": disc}, {"generator": g_opt, "discriminator": d_opt},
        loss=None, metrics=(), step=gan_step_for(gen, disc, g_opt, d_opt), seed=args.seed, run_dir=args.run_dir,
        monitor="g_loss", monitor_mode="min",
    )
    t0 = time.perf_counter()
    history = trainer.fit((load_images(),), batch_size=args.batch_size, epochs=args.epochs, max_steps=args.max_steps)
    train_time = time.perf_counter() - t0

    z = tf.random.stateless_normal([args.samples, LATENT], seed=[args.seed, 12345])
    samples = gen(z, training=False).numpy()
    classifier = _classifier(args.seed, args.classifier_epochs)
    score = digits_score(classifier, samples)
    real = digits_score(classifier, load_images()[-360:])  # held out from the classifier
    from lamina.train import summaries

    grid = summaries.sample_grid_image((samples[:32] + 1.0) / 2.0, raw_max=1.0)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(os.path.join(args.run_dir, "samples.png"), grid)
    print(f"digits score {score['score']:.2f} (real digits {real['score']:.2f}); "
          f"{score['confident']:.0%} of samples confidently classified, {score['classes']} classes; "
          f"training {train_time:.1f}s; samples in {os.path.join(args.run_dir, 'samples.png')}", flush=True)
    return {"history": history, "score": score, "real_score": real, "train_time_s": train_time, "run_dir": args.run_dir}


if __name__ == "__main__":
    main()
