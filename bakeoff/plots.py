"""PNG plots of an evaluation: confusion matrix and ROC curves (matplotlib's Agg backend, no display needed).

scikit-learn's ``ConfusionMatrixDisplay`` and ``RocCurveDisplay`` draw them, so the pictures agree with the
numbers in metrics.json by construction. Each function returns PNG bytes; the caller writes them atomically.
"""

from __future__ import annotations

import io

import numpy as np


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt, plt.subplots(figsize=(width, height), dpi=100)


def _png(plt, fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def confusion_matrix_png(matrix: np.ndarray, classes: list[str], title: str = "Confusion matrix (test split)") -> bytes:
    """Counts per (true, predicted) class; rows are the true class."""
    from sklearn.metrics import ConfusionMatrixDisplay

    side = max(4.0, 0.6 * len(classes) + 2.5)
    plt, (fig, ax) = _figure(side, side)
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=classes).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45 if len(classes) > 4 else "horizontal"
    )
    ax.set_title(title)
    return _png(plt, fig)


def roc_png(y_true: np.ndarray, probs: np.ndarray, classes: list[str], title: str = "ROC (test split)") -> bytes:
    """One curve for two classes (positive = classes[1]); one-vs-rest curves per class otherwise."""
    from sklearn.metrics import RocCurveDisplay

    plt, (fig, ax) = _figure(5.5, 5.0)
    y_true = np.asarray(y_true)
    targets = [1] if len(classes) == 2 else list(range(len(classes)))
    drawn = 0
    for k in targets:
        positives = y_true == k
        if positives.all() or not positives.any():
            continue  # a curve needs both positives and negatives
        name = classes[k] if len(classes) > 2 else f"{classes[1]} vs {classes[0]}"
        RocCurveDisplay.from_predictions(positives.astype(int), probs[:, k], name=name, ax=ax)
        drawn += 1
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    if not drawn:
        ax.text(0.5, 0.5, "ROC undefined: the test split holds one class", ha="center", va="center")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    return _png(plt, fig)


def learning_curve_png(x: np.ndarray, series: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> bytes:
    """Accuracy (mean ± spread per series, e.g. val and test) against train images per class, log2 x axis."""
    plt, (fig, ax) = _figure(6.0, 4.0)
    for name, (mean, spread) in series.items():
        ax.errorbar(x, mean, yerr=spread, marker="o", capsize=3, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("train images per class")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(plt, fig)
