"""Evaluation of a finished model: metrics on the frozen TEST split, a bootstrap CI, latency, size, plots, and the
VAL split's accuracy and macro F1 (``val_accuracy``, ``val_f1_macro``): the numbers every choice is made on.

Why both: the challenger is chosen on val (``bakeoff.registry.pick_challenger``), so the test split stays an
honest estimate of the chosen model; test numbers are reported, and used only by the promotion gate.

Every number comes from scikit-learn (accuracy, balanced accuracy, macro precision/recall/F1, ROC-AUC, confusion
matrix, classification report), so there is no hand-written metric to get wrong. ``predictions.parquet`` keeps one
row per test image (sha256, label, predicted, correct, path, prob_<class>..., top_1..top_k; see
``bakeoff.contract``): the promotion gate's paired test (McNemar / paired bootstrap, ``bakeoff.stats``) compares two
models image by image from it, and ``error_report.html`` (``bakeoff.insight.error_report``) shows its worst
mistakes.
"""

from __future__ import annotations

import io
import os
import statistics
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bakeoff import manifest, storage
from bakeoff.contract import (
    CONFUSION_PNG,
    ERROR_REPORT_HTML,
    METRICS_JSON,
    MODEL_KERAS,
    PATH_COLUMN,
    PREDICTIONS,
    REPORT_JSON,
    ROC_PNG,
    TOP_K,
    VAL_PREDICTIONS,
    MetricsInfo,
    ModelInfo,
    prob_column,
    top_column,
)
from bakeoff.errors import BakeoffError
from bakeoff.heads import load_keras, probabilities
from bakeoff.redaction import redact

ROC_MAX_POINTS = 200  # enough for a smooth curve in the KFP UI, small enough for its metadata store


def split_rows(dataset_dir: str, split: str, classes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the whole manifest, its ``split`` rows in manifest order): the rows every prediction of a split lists."""
    df = manifest.read_manifest(dataset_dir)
    rows = df[df["split"] == split].reset_index(drop=True)
    if rows.empty:
        raise BakeoffError(f"the dataset at {dataset_dir} has no {split!r} images")
    unknown = sorted(set(rows["label"]) - set(classes))
    if unknown:
        raise BakeoffError(
            f"{split} labels {unknown} are not among the model's classes {classes}; "
            "evaluate on the dataset the model was trained on"
        )
    return df, rows


def predictions_frame(rows: pd.DataFrame, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One predictions.parquet row per image of ``rows``: label, predicted class, correct, path, each class's
    probability and the top-k classes."""
    if len(probs) != len(rows):
        raise BakeoffError(f"got {len(probs)} predictions for {len(rows)} images")
    predicted = [classes[i] for i in probs.argmax(axis=1)]
    out = pd.DataFrame(
        {
            "sha256": rows["sha256"].astype(str),
            "label": rows["label"].astype(str),
            "predicted": predicted,
        }
    )
    out["correct"] = out["label"] == out["predicted"]
    out[PATH_COLUMN] = [redact(str(source)) for source in rows["source"]]  # shown in reports: no secret in a URI
    for k, name in enumerate(classes):
        out[prob_column(name)] = probs[:, k]
    ranked = np.argsort(-probs, axis=1, kind="stable")
    for rank in range(min(TOP_K, len(classes))):
        out[top_column(rank + 1)] = [classes[i] for i in ranked[:, rank]]
    return out


def predict_split(
    model, classes: list[str], image_size: int, dataset_dir: str, split: str = "test", batch_size: int = 32
) -> pd.DataFrame:
    """Run ``model`` over one split of a dataset; one row per image in manifest order."""
    from bakeoff.decoded import image_batches

    df, rows = split_rows(dataset_dir, split, classes)
    # the dataset's decoded tensor: shared with features and fine-tuning, and with the gate's re-scoring of the champion
    raw = model.predict(image_batches(df, rows, image_size, batch_size=batch_size), verbose=0)
    return predictions_frame(rows, probabilities(raw, len(classes)), classes)


def bootstrap_ci(
    correct: np.ndarray, n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the accuracy (resample images with replacement; seeded, so reproducible)."""
    correct = np.asarray(correct, dtype=np.float64)
    if correct.size == 0 or n_bootstrap < 1:
        raise BakeoffError("bootstrap needs at least one prediction and n_bootstrap >= 1")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, correct.size, size=(n_bootstrap, correct.size))
    means = correct[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def roc_auc(y_true: np.ndarray, probs: np.ndarray, n_classes: int) -> float | None:
    """Binary ROC-AUC on the positive class's probability; macro one-vs-rest for many classes.

    None when undefined (a class missing from the test split), rather than a misleading number.
    """
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < n_classes:
        return None
    if n_classes == 2:
        return float(roc_auc_score(y_true, probs[:, 1]))
    normalised = probs / probs.sum(axis=1, keepdims=True)  # float32 softmax rows can miss 1.0 by a hair
    return float(roc_auc_score(y_true, normalised, multi_class="ovr", average="macro", labels=list(range(n_classes))))


@dataclass(frozen=True)
class RocPoints:
    """One ROC curve as plain lists (false/true positive rates and the thresholds that give them)."""

    fpr: list[float]
    tpr: list[float]
    thresholds: list[float]


def roc_points(y_true: np.ndarray, probs: np.ndarray, n_classes: int, max_points: int = ROC_MAX_POINTS) -> RocPoints:
    """ONE ROC curve for a dashboard that draws one (KFP's ClassificationMetrics): for two classes the positive
    class is classes[1]; for more, the micro-average over one-vs-rest (every image x class is one decision).

    Thresholds are capped at 1.0 (scikit-learn's first one is +inf, which JSON metadata cannot hold) and at most
    ``max_points`` evenly spaced points are kept (first and last included).
    """
    from sklearn.metrics import roc_curve
    from sklearn.preprocessing import label_binarize

    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    if n_classes == 2:
        truth, scores = (y_true == 1).astype(int), probs[:, 1]
    else:
        truth, scores = label_binarize(y_true, classes=list(range(n_classes))).ravel(), probs.ravel()
    fpr, tpr, thresholds = roc_curve(truth, scores)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), max_points)).astype(int))
    return RocPoints(fpr[keep].tolist(), tpr[keep].tolist(), np.minimum(thresholds[keep], 1.0).tolist())


def _labels_and_probs(preds: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """predictions.parquet rows -> (class index per image, [n, n_classes] probabilities in ``classes`` order)."""
    index = {c: i for i, c in enumerate(classes)}
    return preds["label"].map(index).to_numpy(), preds[[prob_column(c) for c in classes]].to_numpy()


def evaluation_roc(eval_dir: str, max_points: int = ROC_MAX_POINTS) -> RocPoints:
    """The ROC points of a finished evaluation folder (classes from metrics.json, scores from predictions.parquet)."""
    classes = list(MetricsInfo.read(eval_dir).classes)
    preds = pd.read_parquet(io.BytesIO(storage.read_bytes(storage.join(eval_dir, PREDICTIONS))))
    y_true, probs = _labels_and_probs(preds, classes)
    return roc_points(y_true, probs, len(classes), max_points)


def compute_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str], *, n_bootstrap: int = 1000, seed: int = 0
) -> tuple[dict, dict, np.ndarray]:
    """All scikit-learn metrics for integer labels and class probabilities -> (metrics, report, confusion)."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        classification_report,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    y_pred = probs.argmax(axis=1)
    labels = list(range(len(classes)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    low, high = bootstrap_ci(y_true == y_pred, n_bootstrap=n_bootstrap, seed=seed)
    auc = roc_auc(y_true, probs, len(classes))
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "roc_auc": auc,
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "ci_level": 0.95,
        "n_bootstrap": n_bootstrap,
        "n_test": int(len(y_true)),
        "classes": list(classes),
    }
    if auc is None:
        metrics["roc_auc_note"] = "undefined: some class has no test image"
    report = classification_report(
        y_true, y_pred, labels=labels, target_names=list(classes), output_dict=True, zero_division=0
    )
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    return metrics, report, matrix


def val_metrics(preds: pd.DataFrame, classes: list[str]) -> dict:
    """``val_accuracy``, ``val_f1_macro`` and ``val_n`` of val predictions (``predict_split(..., "val")``)."""
    from sklearn.metrics import accuracy_score, f1_score

    y_true, probs = _labels_and_probs(preds, classes)
    y_pred = probs.argmax(axis=1)
    f1 = f1_score(y_true, y_pred, labels=list(range(len(classes))), average="macro", zero_division=0)
    return {"val_accuracy": float(accuracy_score(y_true, y_pred)), "val_f1_macro": float(f1), "val_n": len(y_true)}


def measure_latency(model, image: np.ndarray, warmup: int = 3, repeats: int = 10) -> float:
    """Per-image latency in ms: batch of one, median of ``repeats`` timed calls after ``warmup`` untimed ones."""
    batch = np.asarray(image, dtype=np.float32)[None, ...]
    for _ in range(warmup):
        model.predict_on_batch(batch)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_on_batch(batch)
        timings.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(timings))


def _size_mb(uri: str) -> float:
    if storage.is_s3(uri):
        bucket, key = storage.split_s3(uri)
        size = storage.s3_client().head_object(Bucket=bucket, Key=key)["ContentLength"]
    else:
        size = os.path.getsize(uri)
    return round(size / 1e6, 3)


def _first_image(dataset_dir: str, image_size: int) -> np.ndarray:
    from bakeoff.decoded import image_batches

    df = manifest.read_manifest(dataset_dir)
    rows = df[df["split"] == "test"].head(1)
    for batch in image_batches(df, rows, image_size, batch_size=1).take(1):
        return np.asarray(batch)[0]
    raise BakeoffError("no test image to time")


def evaluate(
    model_dir: str,
    dataset_dir: str,
    out_dir: str,
    *,
    batch_size: int = 32,
    n_bootstrap: int = 1000,
    seed: int = 0,
    known: dict[str, np.ndarray] | None = None,
) -> dict:
    """Score model_dir/model.keras on the test split (and val: ``val_*`` keys); write metrics, report, predictions
    of both splits and plots to out_dir.

    ``known``: split -> the model's probabilities on that split (manifest order), already computed and checked
    (an ensemble's are the mean of its members' logged ones); those splits are not predicted again.
    """
    from bakeoff import plots
    from bakeoff.insight import error_report

    if batch_size < 1 or n_bootstrap < 1:
        raise BakeoffError("need batch_size >= 1 and n_bootstrap >= 1")
    info = ModelInfo.read(model_dir)
    classes, image_size = list(info.classes), info.image_size
    model_uri = storage.join(model_dir, MODEL_KERAS)
    model = load_keras(model_uri)
    known = known or {}

    def split_predictions(split: str) -> pd.DataFrame:
        if split in known:
            return predictions_frame(split_rows(dataset_dir, split, classes)[1], np.asarray(known[split]), classes)
        return predict_split(model, classes, image_size, dataset_dir, split, batch_size)

    preds = split_predictions("test")
    y_true, probs = _labels_and_probs(preds, classes)
    metrics, report, matrix = compute_metrics(y_true, probs, classes, n_bootstrap=n_bootstrap, seed=seed)

    df = manifest.read_manifest(dataset_dir, resolve=False)
    val = split_predictions("val") if (df["split"] == "val").any() else None
    if val is not None:
        metrics.update(val_metrics(val, classes))
    metrics.update(
        {
            "latency_ms_per_image": round(measure_latency(model, _first_image(dataset_dir, image_size)), 3),
            "model_size_mb": _size_mb(model_uri),
            "backbone": info.backbone,
            "weights": dict(info.weights) or None,
            "image_size": image_size,
            "cut": info.cut,
            "finetuned": info.finetuned,
            "head_kind": info.head_kind,
            "dataset_hash": manifest.dataset_hash(df),
            "confusion_matrix": matrix.tolist(),
        }
    )
    buffer = io.BytesIO()
    preds.to_parquet(buffer, index=False)
    storage.write_bytes(storage.join(out_dir, PREDICTIONS), buffer.getvalue())
    if val is not None:
        buffer = io.BytesIO()
        val.to_parquet(buffer, index=False)
        storage.write_bytes(storage.join(out_dir, VAL_PREDICTIONS), buffer.getvalue())
    storage.write_json(storage.join(out_dir, REPORT_JSON), report)
    storage.write_bytes(storage.join(out_dir, CONFUSION_PNG), plots.confusion_matrix_png(matrix, classes))
    storage.write_bytes(storage.join(out_dir, ROC_PNG), plots.roc_png(y_true, probs, classes))
    html = error_report.error_report_html(preds, classes, matrix, report, dataset_dir, title=info.backbone or "")
    storage.write_bytes(storage.join(out_dir, ERROR_REPORT_HTML), html.encode())
    storage.write_json(storage.join(out_dir, METRICS_JSON), metrics)
    return metrics
