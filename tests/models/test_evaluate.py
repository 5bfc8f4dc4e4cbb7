"""Evaluation: scikit-learn metrics on known predictions, the bootstrap CI, plots, and a real run on the test split."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bakeoff.errors import BakeoffError
from bakeoff.evaluate import bootstrap_ci, compute_metrics, roc_auc, roc_points

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(data: bytes, min_side: int = 300) -> None:
    from PIL import Image

    assert data[:8] == PNG_MAGIC
    with Image.open(io.BytesIO(data)) as img:
        img.verify()
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG" and min(img.size) >= min_side
        assert len(set(np.asarray(img.convert("L")).ravel().tolist())) > 10  # something is drawn


def test_binary_metrics_on_known_predictions():
    # the textbook ROC example: AUC 0.75; argmax predictions [0, 0, 0, 1] -> 3 of 4 right
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    metrics, report, matrix = compute_metrics(y, np.c_[1 - p1, p1], ["neg", "pos"], n_bootstrap=200)
    assert metrics["accuracy"] == 0.75 and metrics["roc_auc"] == pytest.approx(0.75)
    assert metrics["balanced_accuracy"] == 0.75
    assert metrics["recall_macro"] == pytest.approx((1.0 + 0.5) / 2)
    assert metrics["precision_macro"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert matrix.tolist() == [[2, 0], [1, 1]]
    assert report["pos"]["recall"] == 0.5 and report["neg"]["support"] == 2
    assert metrics["n_test"] == 4 and metrics["classes"] == ["neg", "pos"]


def test_multiclass_metrics_equal_scikit_learn():
    from sklearn import metrics as skm

    rng = np.random.default_rng(7)
    y = rng.integers(0, 4, size=300)
    logits = rng.normal(size=(300, 4)) + 1.5 * np.eye(4)[y]  # informative but imperfect
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = probs.argmax(axis=1)
    metrics, report, matrix = compute_metrics(y, probs, ["a", "b", "c", "d"], n_bootstrap=300)
    assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert metrics["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert metrics["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert metrics["precision_macro"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert 0.5 < metrics["roc_auc"] < 1.0 and 0.25 < metrics["accuracy"] < 1.0
    np.testing.assert_array_equal(matrix, skm.confusion_matrix(y, pred))
    assert set(report) >= {"a", "b", "c", "d", "macro avg", "weighted avg"}


def test_roc_auc_is_none_when_a_class_is_missing_from_test():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    assert roc_auc(np.array([0, 1]), probs, 3) is None
    metrics, _, _ = compute_metrics(np.array([0, 1]), probs, ["a", "b", "c"], n_bootstrap=10)
    assert metrics["roc_auc"] is None and "undefined" in metrics["roc_auc_note"]


def test_roc_points_binary_textbook_example():
    # scikit-learn's own example: thresholds inf, 0.8, 0.4, 0.35, 0.1 -> the first is capped at 1.0 for KFP
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    roc = roc_points(y, np.c_[1 - p1, p1], 2)
    assert roc.fpr == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert roc.tpr == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert roc.thresholds == pytest.approx([1.0, 0.8, 0.4, 0.35, 0.1])
    few = roc_points(y, np.c_[1 - p1, p1], 2, max_points=3)  # evenly spaced, first and last kept
    assert few.fpr == [0.0, 0.5, 1.0] and few.tpr == [0.0, 0.5, 1.0]


def test_roc_points_multiclass_is_the_micro_average():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, size=400)
    logits = rng.normal(size=(400, 3)) + 1.2 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    roc = roc_points(y, probs, 3, max_points=10_000)
    area = float(np.sum(np.diff(roc.fpr) * (np.array(roc.tpr[1:]) + np.array(roc.tpr[:-1])) / 2))
    assert area == pytest.approx(roc_auc_score(np.eye(3)[y], probs, average="micro"))
    short = roc_points(y, probs, 3)
    assert len(short.fpr) <= 200 and short.fpr[0] == 0.0 and short.fpr[-1] == 1.0 and max(short.thresholds) <= 1.0


def test_bootstrap_ci_brackets_accuracy_and_is_seeded():
    correct = np.array([1] * 70 + [0] * 30)
    low, high = bootstrap_ci(correct, n_bootstrap=2000, seed=1)
    assert low < 0.70 < high
    assert 0.10 < high - low < 0.26  # binomial 95% interval for n=100, p=0.7 is about +-0.09
    assert bootstrap_ci(correct, n_bootstrap=2000, seed=1) == (low, high)
    assert abs((low + high) / 2 - 0.70) < 0.02  # centred on the observed accuracy
    big_low, big_high = bootstrap_ci(np.tile(correct, 10), n_bootstrap=2000, seed=1)
    assert big_high - big_low < (high - low) / 2  # ten times the data, ~3x narrower
    with pytest.raises(BakeoffError):
        bootstrap_ci(np.array([]), n_bootstrap=10)


def test_plots_are_real_pngs():
    from bakeoff import plots

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=60)
    probs = rng.dirichlet(np.ones(3), size=60)
    _assert_png(plots.confusion_matrix_png(np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]]), ["x", "y", "z"]))
    _assert_png(plots.roc_png(y, probs, ["x", "y", "z"]))
    _assert_png(
        plots.roc_png(
            np.array([0, 1, 1, 0]), np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4]]), ["neg", "pos"]
        )
    )


def test_evaluate_scores_only_the_test_split(hfe_faces_finetuned, hfe_faces_dataset, tmp_path):
    from bakeoff import manifest
    from bakeoff.evaluate import evaluate

    _, model_dir = hfe_faces_finetuned
    out = tmp_path / "eval"
    metrics = evaluate(model_dir, hfe_faces_dataset, str(out), n_bootstrap=500)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    for key in (
        "accuracy",
        "balanced_accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "roc_auc",
        "accuracy_ci_low",
        "accuracy_ci_high",
        "latency_ms_per_image",
        "model_size_mb",
        "n_test",
        "classes",
        "backbone",
        "weights",
    ):
        assert key in metrics, key

    rows = manifest.read_manifest(hfe_faces_dataset)
    preds = pd.read_parquet(out / "predictions.parquet")
    assert list(preds["sha256"]) == list(rows.loc[rows["split"] == "test", "sha256"])  # test only, manifest order
    assert list(preds.columns[:4]) == ["sha256", "label", "predicted", "correct"]
    assert {"prob_face", "prob_other"} <= set(preds.columns)
    test_rows = rows[rows["split"] == "test"]
    assert list(preds["path"]) == list(test_rows["source"])  # each image's original path
    assert list(preds.columns[-2:]) == ["top_1", "top_2"]  # top-k classes, k = min(3, classes)
    assert (preds["top_1"] == preds["predicted"]).all() and (preds["top_1"] != preds["top_2"]).all()
    page = (out / "error_report.html").read_text()
    assert f"{(~preds['correct']).sum()} of 16 test images wrong" in page and "Most-confused" in page
    np.testing.assert_allclose(preds[["prob_face", "prob_other"]].sum(axis=1), 1.0, atol=1e-6)
    assert (preds["correct"] == (preds["label"] == preds["predicted"])).all()
    assert metrics["accuracy"] == pytest.approx(preds["correct"].mean())
    assert metrics["n_test"] == 16 and metrics["accuracy"] >= 0.75  # faces vs non-faces; chance is 0.5
    assert metrics["accuracy_ci_low"] <= metrics["accuracy"] <= metrics["accuracy_ci_high"]
    assert metrics["model_size_mb"] == pytest.approx((Path(model_dir) / "model.keras").stat().st_size / 1e6, abs=1e-3)
    assert 0 < metrics["latency_ms_per_image"] < 5000
    assert metrics["backbone"] == "mobilenet_v2" and metrics["weights"]["pretrained"] is True
    assert metrics["dataset_hash"] == manifest.dataset_hash(rows)
    report = json.loads((out / "classification_report.json").read_text())
    assert report["face"]["support"] + report["other"]["support"] == 16
    _assert_png((out / "confusion_matrix.png").read_bytes())
    _assert_png((out / "roc.png").read_bytes())


def test_predict_split_serves_any_split_for_the_gate(hfe_faces_finetuned, hfe_faces_dataset):
    import keras

    from bakeoff.evaluate import predict_split

    _, model_dir = hfe_faces_finetuned
    model = keras.models.load_model(Path(model_dir) / "model.keras")
    val = predict_split(model, ["face", "other"], 64, hfe_faces_dataset, split="val", batch_size=5)
    assert len(val) == 16 and val["label"].value_counts().to_dict() == {"face": 8, "other": 8}
    with pytest.raises(BakeoffError, match="not among the model's classes"):
        predict_split(model, ["cat", "dog"], 64, hfe_faces_dataset)


def test_cli_evaluate(hfe_faces_finetuned, hfe_faces_dataset, tmp_path, capsys):
    from bakeoff.cli import main

    assert main(["evaluate", "--help"]) == 0
    assert "predictions.parquet" in capsys.readouterr().out
    before_dir, _ = hfe_faces_finetuned
    out = tmp_path / "cli-eval"
    assert main(["evaluate", before_dir, hfe_faces_dataset, "--out", str(out), "--bootstrap", "100"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "16 test images" in printed
    assert json.loads((out / "metrics.json").read_text())["finetuned"] is False
    assert main(["evaluate", str(tmp_path / "nothing"), hfe_faces_dataset, "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err
