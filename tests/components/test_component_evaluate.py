"""components.evaluate: the core evaluation, the candidate logged to MLflow, and KFP's own metric artifacts."""

from __future__ import annotations

import pytest
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Metrics, Model

from bakeoff import contract, tracking
from components.evaluate import evaluate

from support import expected_accuracy, write_candidate_folders

THRESHOLD = 160.46  # 87 of the 100 test images right: a curve with something to show


def test_evaluate_logs_the_candidate_and_fills_kfp_metrics(tracking_store, dataset, artifact, model_name, tmp_path):
    folders = write_candidate_folders(tmp_path / "candidate", THRESHOLD)
    parent_id = tracking.start_pipeline_run("components-evaluate", str(dataset))
    parent_run = artifact(Artifact, "parent_run")
    with open(parent_run.path, "w") as handle:
        handle.write(parent_id + "\n")
    metrics, classification, report, errors = (
        artifact(Metrics, "metrics"),
        artifact(ClassificationMetrics, "classification"),
        artifact(Dataset, "report"),
        artifact(HTML, "errors"),
    )
    dirs = folders.dirs
    run_id = evaluate(
        Dataset(uri=str(dataset)),
        Dataset(uri=dirs["features_dir"]),
        Model(uri=dirs["head_dir"]),
        Model(uri=dirs["model_dir"]),
        parent_run,
        "mobilenet_v2",
        model_name,
        32,
        0,
        metrics,
        classification,
        report,
        errors,
    )

    # the core's files in the report folder
    evaluated = contract.MetricsInfo.read(report.path)
    assert evaluated.accuracy == pytest.approx(expected_accuracy(THRESHOLD))
    for name in contract.EVALUATION_FILES:
        assert (tmp_path / "report" / name).stat().st_size > 0, name

    # the error analysis for the KFP UI: the evaluation's own page (worst mistakes, confused pairs, per class)
    page = (tmp_path / "errors").read_text()
    assert page == (tmp_path / "report" / contract.ERROR_REPORT_HTML).read_text()
    assert "Worst mistakes" in page and "Per class" in page and page.count('class="card"') == 13  # 13 of 100 wrong

    # KFP Metrics: every finite number of metrics.json, and where the MLflow run is
    assert metrics.metadata["accuracy"] == pytest.approx(evaluated.accuracy)
    assert metrics.metadata["n_test"] == 100 and "classes" not in metrics.metadata
    assert metrics.metadata["mlflow_run_id"] == run_id and metrics.metadata["backbone"] == "mobilenet_v2"

    # KFP ClassificationMetrics: the confusion matrix of metrics.json, one ROC curve
    matrix = classification.metadata["confusionMatrix"]
    assert [spec["displayName"] for spec in matrix["annotationSpecs"]] == ["blue", "red"]
    rows = [row["row"] for row in matrix["rows"]]
    assert rows == [list(r) for r in evaluated.confusion_matrix]
    assert sum(map(sum, rows)) == 100 and (rows[0][0] + rows[1][1]) / 100 == pytest.approx(evaluated.accuracy)
    curve = classification.metadata["confidenceMetrics"]
    assert 2 < len(curve) <= 200
    assert all(0.0 <= p["confidenceThreshold"] <= 1.0 for p in curve)
    fpr = [p["falsePositiveRate"] for p in curve]
    assert fpr == sorted(fpr) and fpr[0] == 0.0 and fpr[-1] == 1.0 and curve[-1]["recall"] == 1.0

    # MLflow: the nested run under the parent, its model logged; only the gate registers a version (issue 8)
    run = tracking.client().get_run(run_id)
    assert run.data.tags[contract.PARENT_RUN_TAG] == parent_id and run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] == pytest.approx(evaluated.accuracy)
    assert run.data.tags[contract.MODEL_URI_TAG].startswith("models:/")
    assert run.data.tags[contract.MODEL_NAME_TAG] == model_name and contract.MODEL_VERSION_TAG not in run.data.tags
    assert tracking.client().search_model_versions(f"name = '{model_name}'") == []
