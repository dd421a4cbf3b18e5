"""A U-Net (``lm.models.UNet``) segmenting synthetic shapes, trained by ``lm.train.Trainer``'s default step.

Each 32x32 grayscale image holds up to three shapes — a disc, a square and a
triangle, of random sizes and positions, possibly overlapping — on a noisy
background with a random brightness gradient; the mask gives each pixel's
class (0 background, 1 disc, 2 square, 3 triangle; a later shape covers an
earlier one). The Trainer's default step trains on ``(images, masks)`` with the
per-pixel softmax cross-entropy (``lm.losses.SoftmaxCrossEntropy`` averages
over every pixel of ``(B, H, W, classes)`` logits) and pixel accuracy; the
test split is scored by the mean intersection over union (mIoU) over the four
classes, from a per-pixel ``lm.metrics.ConfusionMatrix``.

Measured (2 shared CPU cores, AMD EPYC, tensorflow-cpu 2.21, defaults:
depth 3, widths 16-32-64-128, 2000 training images, 8 epochs, seed 0):
held-out pixel accuracy 98.84 %, **mIoU 0.899** (background 0.999, disc 0.889,
square 0.878, triangle 0.831) on 400 new images; 56 s of training.

Run::

    python examples/unet_shapes.py                 # writes runs/unet_shapes/ (predictions.png)
    python examples/unet_shapes.py --epochs 1 --max-steps 3 --train 64 --run-dir /tmp/unet   # smoke run
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

import lamina as lm  # noqa: E402

__all__ = ["make_shapes", "CLASSES", "main"]

SIZE = 32
CLASSES = ("background", "disc", "square", "triangle")


def make_shapes(n: int, seed: int, size: int = SIZE) -> Tuple[np.ndarray, np.ndarray]:
    """``n`` images ``(n, size, size, 1)`` float32 in about [0, 1] and masks ``(n, size, size)`` int32.

    Args:
      n: how many.
      seed: the NumPy seed (the same seed gives the same images).
      size: the side in pixels.

    Returns:
      ``(images, masks)``.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.zeros((n, size, size), np.float32)
    masks = np.zeros((n, size, size), np.int32)
    for i in range(n):
        gx, gy = rng.uniform(-0.3, 0.3, 2)
        img = 0.3 + gx * (xx / size - 0.5) + gy * (yy / size - 0.5)
        mask = np.zeros((size, size), np.int32)
        for cls in rng.permutation([1, 2, 3])[: rng.integers(1, 4)]:
            r = rng.uniform(3.5, 8.0)
            cx, cy = rng.uniform(r, size - r, 2)
            if cls == 1:
                inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2
            elif cls == 2:
                inside = (np.abs(xx - cx) <= r * 0.85) & (np.abs(yy - cy) <= r * 0.85)
            else:  # an upright triangle: below the two slanted edges, above the base
                inside = (yy <= cy + r * 0.8) & (yy >= cy - r + 1.8 * np.abs(xx - cx))
            mask[inside] = cls
            img[inside] = rng.uniform(0.6, 1.0)
        images[i] = img + rng.normal(0, 0.08, (size, size))
        masks[i] = mask
    return images[..., None], masks


def main(argv: Optional[list] = None) -> Dict[str, Any]:
    """Trains the U-Net and prints the held-out pixel accuracy and mIoU.

    Args:
      argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
      ``{"history", "test", "miou", "iou", "train_time_s", "run_dir"}``.
    """
    p = argparse.ArgumentParser(description="U-Net on synthetic shapes, trained by lm.train.Trainer.")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train", type=int, default=2000, help="training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", default=os.path.join("runs", "unet_shapes"))
    p.add_argument("--max-steps", type=int, default=None)
    args = p.parse_args(argv)

    lm.set_seed(args.seed)
    x_train, y_train = make_shapes(args.train, seed=args.seed)
    x_test, y_test = make_shapes(max(64, args.train // 5), seed=args.seed + 1)
    model = lm.models.UNet(len(CLASSES), depth=3, widths=(16, 32, 64, 128))
    trainer = lm.train.Trainer(model, lm.optim.Adam(2e-3), loss=lm.losses.SoftmaxCrossEntropy(), metrics=["accuracy"],
                               seed=args.seed, run_dir=args.run_dir, monitor="val_accuracy")
    t0 = time.perf_counter()
    history = trainer.fit((x_train, y_train), validation=(x_test, y_test), batch_size=args.batch_size,
                          epochs=args.epochs, max_steps=args.max_steps)
    train_time = time.perf_counter() - t0
    confusion = lm.metrics.ConfusionMatrix(len(CLASSES))
    test = trainer.evaluate((x_test, y_test), extra_metrics=[confusion])
    iou, miou = lm.metrics.iou_from_confusion(confusion.result().numpy())
    predicted = np.argmax(model(x_test[:8]).numpy(), -1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [np.concatenate([x_test[i, ..., 0], y_test[i] / 3.0, predicted[i] / 3.0], axis=1) for i in range(8)]
    os.makedirs(args.run_dir, exist_ok=True)
    plt.imsave(os.path.join(args.run_dir, "predictions.png"), np.concatenate(rows, axis=0), cmap="viridis")
    per_class = ", ".join(f"{c} {v:.3f}" for c, v in zip(CLASSES, iou) if v is not None)
    print(f"held-out pixel accuracy {test['accuracy']:.2%}; mIoU {miou:.3f} ({per_class}); training {train_time:.1f}s",
          flush=True)
    return {"history": history, "test": test, "miou": miou, "iou": iou, "train_time_s": train_time,
            "run_dir": args.run_dir}


if __name__ == "__main__":
    main()
