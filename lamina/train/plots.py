"""End-of-training plots: ``history.png`` and ``confusion.png`` (matplotlib, Agg)."""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["plot_history", "plot_confusion"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _atomic_savefig(fig, path: str) -> None:
    tmp = path + ".part.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


_BOOKKEEPING = ("epoch", "step", "time", "images_per_sec")


def _curves(history: List[Dict[str, float]]) -> List[str]:
    """The logged quantities, train names first-seen order (``val_x`` pairs with ``x``)."""
    names: List[str] = []
    for h in history:
        for k, v in h.items():
            if k in _BOOKKEEPING or k.startswith("learning_rate") or not isinstance(v, (int, float)):
                continue
            base = k[4:] if k.startswith("val_") else k
            if base not in names:
                names.append(base)
    return names


def plot_history(history: List[Dict[str, float]], path: str, monitor: Optional[str] = None,
                 mode: str = "max") -> str:
    """Plots every logged quantity per epoch, train vs validation, in one row of panels.

    Losses (names containing ``loss``) use a log axis when all their values are
    positive, so late epochs stay readable; epochs are integer ticks; the best
    epoch by ``monitor`` is marked in every panel.

    Args:
      history: one dict per epoch, with keys like ``loss``, ``accuracy``,
        ``val_loss``, ``val_accuracy`` (as in ``metrics.jsonl``).
      path: the PNG to write.
      monitor: the key whose best epoch is marked (``None``: no mark).
      mode: ``"max"`` or ``"min"`` for ``monitor``.

    Returns:
      ``path``.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    names = _curves(history) or ["loss"]
    best_epoch = None
    if monitor:
        scored = [(h[monitor], e) for h, e in zip(history, epochs) if isinstance(h.get(monitor), (int, float))
                  and np.isfinite(h[monitor])]
        if scored:
            pick = max if mode == "max" else min
            best_value = pick(v for v, _ in scored)
            best_epoch = next(e for v, e in scored if v == best_value)  # the earliest of ties, as the checkpoint
    cols = len(names)
    fig, axes = plt.subplots(1, cols, figsize=(4.6 * cols, 3.6), squeeze=False)
    for ax, key in zip(axes[0], names):
        values = []
        for prefix, style in (("", "-o"), ("val_", "-s")):
            ys = [h.get(prefix + key) for h in history]
            pts = [(e, y) for e, y in zip(epochs, ys) if isinstance(y, (int, float))]
            if pts:
                ax.plot(*zip(*pts), style, ms=3, label="train" if not prefix else "validation")
                values += [y for _, y in pts]
        finite = [v for v in values if np.isfinite(v)]
        if "loss" in key and finite and min(finite) > 0:
            ax.set_yscale("log")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.5", ls="--", lw=1, label=f"best ({monitor}, epoch {best_epoch})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _atomic_savefig(fig, path)
    plt.close(fig)
    return path


def plot_confusion(matrix: np.ndarray, path: str, class_names: Optional[Sequence[str]] = None,
                   title: str = "confusion matrix (test split)") -> str:
    """Draws a confusion matrix (rows: true class, columns: predicted).

    Args:
      matrix: ``(C, C)`` counts.
      path: the PNG to write.
      class_names: labels for the axes.
      title: the figure title.

    Returns:
      ``path``.
    """
    plt = _pyplot()
    matrix = np.asarray(matrix)
    n = matrix.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if n <= 30:
        ax.set_xticks(range(n), names, rotation=90 if n > 10 else 0)
        ax.set_yticks(range(n), names)
        thresh = matrix.max() / 2 if matrix.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if matrix[i, j] > thresh else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(matrix) / max(1, matrix.sum())
    ax.set_title(f"{title}: accuracy {acc:.2%}")
    fig.tight_layout()
    _atomic_savefig(fig, path)
    plt.close(fig)
    return path
