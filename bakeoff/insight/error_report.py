"""Error analysis of one candidate on the test split: what it gets wrong, and how badly.

Three views a team can act on, in ONE self-contained HTML page (logged with the candidate's evaluation in MLflow
and shown in the KFP UI by the evaluate step):

* the worst mistakes: wrong predictions with the highest probability on the wrong class, with thumbnails
  (confidently wrong images are often mislabelled, ambiguous, or a class the data under-represents);
* the most-confused class pairs (true -> predicted), counted from the confusion matrix;
* per-class precision, recall, F1 and support (scikit-learn's classification report).

Everything comes from ``predictions.parquet`` and the numbers evaluate already computed; only the thumbnails
read images.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bakeoff import manifest
from bakeoff.contract import PATH_COLUMN, prob_column
from bakeoff.insight import gallery

WORST_MAX = 24
PAIRS_MAX = 10


def worst_mistakes(preds: pd.DataFrame, classes: list[str], limit: int = WORST_MAX) -> pd.DataFrame:
    """Wrong predictions, highest wrong-class probability first: sha256, path, label, predicted, probability."""
    wrong = preds[~preds["correct"]].copy()
    probs = wrong[[prob_column(c) for c in classes]].to_numpy()
    wrong["probability"] = probs.max(axis=1) if len(wrong) else np.array([])
    wrong = wrong.sort_values("probability", ascending=False, kind="stable").head(limit)
    return wrong[["sha256", PATH_COLUMN, "label", "predicted", "probability"]].reset_index(drop=True)


def confused_pairs(matrix: np.ndarray, classes: list[str], limit: int = PAIRS_MAX) -> pd.DataFrame:
    """(true, predicted) class pairs by how many test images went that way, with the share of the true class."""
    matrix = np.asarray(matrix)
    rows = [
        {
            "true": classes[i],
            "predicted": classes[j],
            "images": int(matrix[i, j]),
            "share_of_true_class": float(matrix[i, j] / matrix[i].sum()),
        }
        for i in range(len(classes))
        for j in range(len(classes))
        if i != j and matrix[i, j] > 0
    ]
    frame = pd.DataFrame(rows, columns=["true", "predicted", "images", "share_of_true_class"])
    return frame.sort_values(["images", "true"], ascending=[False, True], kind="stable").head(limit)


def per_class(report: dict, classes: list[str]) -> pd.DataFrame:
    """Precision, recall, F1, support per class from scikit-learn's ``classification_report(output_dict=True)``."""
    return pd.DataFrame(
        [
            {
                "class": name,
                "precision": float(report[name]["precision"]),
                "recall": float(report[name]["recall"]),
                "f1": float(report[name]["f1-score"]),
                "support": int(report[name]["support"]),
            }
            for name in classes
        ]
    )


def error_report_html(
    preds: pd.DataFrame, classes: list[str], matrix: np.ndarray, report: dict, dataset_dir: str, title: str = ""
) -> str:
    """The whole page; every user-supplied name (file paths, class names) escaped."""
    worst = worst_mistakes(preds, classes)
    uris = manifest.read_manifest(dataset_dir).drop_duplicates("sha256").set_index("sha256")["uri"]
    n_wrong = int((~preds["correct"]).sum())
    body = [
        f"<p>{n_wrong} of {len(preds)} test images wrong (accuracy {preds['correct'].mean():.3f}).</p>",
        "<h2>Per class</h2>",
        gallery.table(per_class(report, classes)),
        "<h2>Most-confused class pairs (true &rarr; predicted)</h2>",
        gallery.table(confused_pairs(matrix, classes)) if n_wrong else "<p>None.</p>",
        f"<h2>Worst mistakes (highest wrong-class probability, {len(worst)} shown)</h2>",
        '<div class="grid">',
    ]
    for row in worst.itertuples(index=False):
        lines = [getattr(row, PATH_COLUMN), f"true: {row.label}", f"predicted: {row.predicted} ({row.probability:.3f})"]
        body.append(gallery.card(str(uris.get(row.sha256, "")), lines))
    body.append("</div>")
    return gallery.page(f"Error analysis: {title}" if title else "Error analysis", body)
