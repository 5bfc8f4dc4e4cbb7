"""Suspected label errors: images whose given label the rest of the data disagrees with.

Confident learning (the cleanlab library) needs out-of-sample class probabilities for every labelled image: a
logistic head on the cached train+val features, fitted K times by scikit-learn's ``cross_val_predict`` so each
image is scored by a model that never saw it. cleanlab then flags the images whose given label is unlikely given
the per-class thresholds it learns, ranked by its label-quality score (self-confidence: the probability the model
gives the GIVEN label; low = suspicious). The test split is left out: it is for the final estimate only.

Nothing is removed or relabelled here. The output is a list for a person to review: ``label_issues.csv``
(path, given label, suggested label, score) and an HTML gallery with thumbnails.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from bakeoff import manifest, storage
from bakeoff.contract import LABEL_ISSUES_CSV, LABEL_ISSUES_HTML
from bakeoff.errors import BakeoffError
from bakeoff.insight import gallery
from bakeoff.insight.learning_curve import logistic_head, single_threaded
from bakeoff.redaction import redact

FOLDS = 5
GALLERY_MAX = 60  # the gallery shows the most suspicious ones; the CSV lists every flagged image
COLUMNS = ("path", "given_label", "suggested_label", "score", "split", "sha256")


def out_of_fold_probabilities(
    x: np.ndarray, y: np.ndarray, n_classes: int, folds: int = FOLDS, seed: int = 0
) -> np.ndarray:
    """[n, n_classes] probabilities, each row from a head fitted without that image (stratified K folds)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    smallest = int(np.bincount(y, minlength=n_classes).min())
    if smallest < 2:
        raise BakeoffError("label issues need at least two train+val images of every class; skipped")
    cv = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    with single_threaded():
        return cross_val_predict(logistic_head(seed), x, y, cv=cv, method="predict_proba")


def find_issues(arrays: dict[str, np.ndarray], *, folds: int = FOLDS, seed: int = 0) -> pd.DataFrame:
    """Flagged train+val images, most suspicious first: sha256, split, given/suggested label, score (0-1)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    keep = np.isin(arrays["split"], ("train", "val"))
    labels_text = arrays["label"][keep].astype(str)
    classes = sorted(np.unique(labels_text))
    if len(classes) < 2:
        raise BakeoffError("label issues need train+val images of at least two classes; skipped")
    y = np.searchsorted(classes, labels_text)
    probs = out_of_fold_probabilities(arrays["features"][keep], y, len(classes), folds, seed)
    ranked = find_label_issues(y, probs, return_indices_ranked_by="self_confidence")
    scores = get_label_quality_scores(y, probs, method="self_confidence")
    names = np.asarray(classes)
    return pd.DataFrame(
        {
            "sha256": arrays["sha256"][keep][ranked].astype(str),
            "split": arrays["split"][keep][ranked].astype(str),
            "given_label": names[y[ranked]],
            "suggested_label": names[probs[ranked].argmax(axis=1)],
            "score": scores[ranked].astype(float),
        }
    )


def with_paths(issues: pd.DataFrame, dataset_dir: str) -> pd.DataFrame:
    """Add each image's original path (the manifest's ``source``) and its stored ``uri`` (for thumbnails)."""
    df = manifest.read_manifest(dataset_dir)[["sha256", "source", "uri"]].drop_duplicates("sha256")
    merged = issues.merge(df, on="sha256", how="left").rename(columns={"source": "path"})
    merged["path"] = [redact(str(path)) for path in merged["path"]]  # a source URI may carry credentials
    return merged[[*COLUMNS, "uri"]]


def gallery_html(issues: pd.DataFrame, n_candidates: int, limit: int = GALLERY_MAX) -> str:
    """The most suspicious images with thumbnails; every name escaped (file names are user input)."""
    shown = issues.head(limit)
    body = [
        f"<p>{len(issues)} of {n_candidates} train+val images flagged by confident learning on out-of-fold "
        f"probabilities (lowest score first; score = the probability the model gives the given label). "
        f"Nothing was removed: review them, fix labels at the source, and rerun.</p>",
        f"<p>Showing {len(shown)}; all are in {gallery.esc(LABEL_ISSUES_CSV)}.</p>",
        '<div class="grid">',
    ]
    for row in shown.itertuples(index=False):
        body.append(
            gallery.card(
                row.uri,
                [row.path, f"given: {row.given_label}", f"suggested: {row.suggested_label}", f"score {row.score:.3f}"],
            )
        )
    body.append("</div>")
    return gallery.page("Suspected label errors", body)


def write_label_issues(
    arrays: dict[str, np.ndarray], dataset_dir: str, out_dir: str, *, folds: int = FOLDS, seed: int = 0
) -> dict:
    """Find the issues, write ``label_issues.csv`` and ``label_issues.html`` to ``out_dir``; returns the counts."""
    issues = with_paths(find_issues(arrays, folds=folds, seed=seed), dataset_dir)
    n_candidates = int(np.isin(arrays["split"], ("train", "val")).sum())
    buffer = io.StringIO()
    issues[list(COLUMNS)].to_csv(buffer, index=False)
    storage.write_bytes(storage.join(out_dir, LABEL_ISSUES_CSV), buffer.getvalue().encode())
    storage.write_bytes(storage.join(out_dir, LABEL_ISSUES_HTML), gallery_html(issues, n_candidates).encode())
    return {"label_issues": len(issues), "label_issues_checked": n_candidates}
