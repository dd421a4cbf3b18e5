"""End-of-training plots: ``history.png`` and ``confusion.png`` (matplotlib, Agg)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

__all__ = ["plot_history", "plot_confusion", "confusion_figure"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _atomic_savefig(fig, path: str) -> None:
    from lamina.fileio import atomic_output

    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


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
    """Writes :func:`confusion_figure` as a PNG.

    Args:
      matrix: ``(C, C)`` counts.
      path: the PNG to write.
      class_names: labels for the axes.
      title: the figure title (the accuracy is appended).

    Returns:
      ``path``.

    Raises:
      ValueError: for a matrix that is not square or a wrong number of names.
    """
    plt = _pyplot()
    fig = confusion_figure(matrix, class_names, title)
    _atomic_savefig(fig, path)
    plt.close(fig)
    return path


def confusion_figure(matrix: np.ndarray, class_names: Optional[Sequence[str]] = None,
                     title: str = "confusion matrix (test split)") -> Any:
    """Draws a confusion matrix (rows: true class, columns: predicted) with scikit-learn's ``ConfusionMatrixDisplay``.

    Counts are written in the cells (text colour chosen against the cell's
    colour) up to 30 classes; past that only the colours and no tick labels.
    Column labels are turned 90 degrees when there are more than 10 classes
    or names longer than 3 characters, so they never overlap.

    Args:
      matrix: ``(C, C)`` counts.
      class_names: labels for the axes.
      title: the figure title (the accuracy is appended).

    Returns:
      The matplotlib ``Figure`` (close it with ``plt.close(fig)``).

    Raises:
      ValueError: for a matrix that is not square or a wrong number of names.
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"plot_confusion: expected a square (C, C) matrix, got shape {matrix.shape}")
    n = matrix.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"plot_confusion: {len(names)} class names for a {n}x{n} matrix")
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    integral = np.all(matrix == np.round(matrix))
    shown = n <= 30
    display = ConfusionMatrixDisplay(matrix if not integral else matrix.astype(np.int64),
                                     display_labels=names if shown else None)
    rotate = 90 if n > 10 or max(len(s) for s in names) > 3 else 0
    display.plot(ax=ax, cmap="Blues", include_values=shown, values_format="d" if integral else ".2g",
                 xticks_rotation=rotate, colorbar=False, text_kw={"fontsize": 8})
    fig.colorbar(display.im_, ax=ax, fraction=0.046, pad=0.04)
    if not shown:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(matrix) / max(1, matrix.sum())
    ax.set_title(f"{title}: accuracy {acc:.2%}")
    fig.tight_layout()
    return fig
