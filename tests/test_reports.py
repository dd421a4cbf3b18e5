"""lamina.metrics.classification_report and the confusion-matrix plot (scikit-learn underneath)."""

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from lamina import metrics
from lamina.train import plots


def _cli_rows(matrix):
    """The per-class rows ``lamina evaluate`` prints today (its own formulas), as numbers."""
    rows = []
    for i in range(len(matrix)):
        tp = matrix[i, i]
        pred, true = matrix[:, i].sum(), matrix[i].sum()
        p = tp / pred if pred else 0.0
        r = tp / true if true else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        rows.append((p, r, f1, int(true)))
    return rows


@pytest.fixture
def labels():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 4, 300))
    y_pred[y_pred == 4] = 0  # class 4 is never predicted
    return y_true, y_pred


def test_report_matches_the_cli_table_and_sklearn(labels):
    y_true, y_pred = labels
    matrix = confusion_matrix(y_true, y_pred, labels=range(5))
    names = ["zero", "one", "two", "three", "four"]
    report = metrics.classification_report(matrix, names, output_dict=True)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=range(5), zero_division=0)
    for i, (name, row) in enumerate(zip(names, _cli_rows(matrix))):
        got = report[name]
        np.testing.assert_allclose([got["precision"], got["recall"], got["f1-score"]], row[:3], rtol=1e-12)
        np.testing.assert_allclose([got["precision"], got["recall"], got["f1-score"]], [p[i], r[i], f[i]], rtol=1e-12)
        assert got["support"] == row[3] == s[i]
    assert report["four"]["precision"] == 0.0  # never predicted: 0, no warning
    assert report["accuracy"] == pytest.approx(np.mean(y_true == y_pred))
    text = metrics.classification_report(matrix, names)
    lines = text.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
    row = lines[2].split()
    cli = _cli_rows(matrix)[0]
    assert row == ["zero", f"{cli[0]:.3f}", f"{cli[1]:.3f}", f"{cli[2]:.3f}", str(cli[3])]
    assert any(line.split()[:1] == ["accuracy"] for line in lines)


def test_report_of_a_tensor_with_fractional_weights():
    import tensorflow as tf

    m = metrics.ConfusionMatrix(3, dtype=tf.float32)
    y_true, y_pred, w = [0, 1, 2, 2, 1], [0, 1, 1, 2, 1], [0.5, 2.0, 1.0, 1.5, 1.0]
    m.update(tf.constant(y_true), tf.constant(y_pred), tf.constant(w))
    report = metrics.classification_report(m.result(), output_dict=True)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=range(3), sample_weight=w, zero_division=0)
    np.testing.assert_allclose([report[str(i)]["recall"] for i in range(3)], r, rtol=1e-6)
    np.testing.assert_allclose([report[str(i)]["support"] for i in range(3)], s, rtol=1e-6)


@pytest.mark.parametrize("matrix, names, match", [
    (np.ones((2, 3)), None, "square"),
    (np.array([[1, -1], [0, 2]]), None, "non-negative"),
    (np.zeros((2, 2)), None, "empty"),
    (np.eye(2), ["a"], "1 class names for a 2x2"),
])
def test_report_errors(matrix, names, match):
    with pytest.raises(ValueError, match=match):
        metrics.classification_report(matrix, names)


def test_confusion_figure_labels_counts_and_png(tmp_path):
    import matplotlib.pyplot as plt
    import matplotlib.image as mpimg

    matrix = np.array([[9, 1, 0], [2, 7, 1], [0, 0, 5]])
    names = ["airplane", "automobile", "bird"]
    fig = plots.confusion_figure(matrix, names)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert all(t.get_rotation() == 90 for t in ax.get_xticklabels())  # long names are turned, no overlap
    cells = sorted((t.get_position(), t.get_text()) for t in ax.texts)
    assert [text for _, text in cells] == [str(matrix[i, j]) for j in range(3) for i in range(3)]
    assert "accuracy 84.00%" in ax.get_title()
    plt.close(fig)
    path = plots.plot_confusion(matrix, str(tmp_path / "c.png"), names)
    image = mpimg.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 200 and image.std() > 0.05
    with pytest.raises(ValueError, match="2 class names for a 3x3"):
        plots.plot_confusion(matrix, str(tmp_path / "d.png"), names[:2])
