"""evaluate: test-split metrics for one candidate, logged to MLflow as a nested run with its model (the gate
registers the one it decides about).

Also fills KFP's own artifacts so the KFP UI draws the confusion matrix and the ROC curve.
"""

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output


def evaluate(
    dataset: Input[Dataset],
    features: Input[Dataset],
    head: Input[Model],
    model: Input[Model],
    parent_run: Input[Artifact],
    backbone: str,
    model_name: str,
    batch_size: int,
    seed: int,
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[Dataset],
    errors: Output[HTML],
) -> str:
    """Returns the candidate's MLflow run id (select_and_register collects them across backbones).

    ``backbone`` (the loop item) keys the candidate run within its pipeline run: a retry reuses it.
    ``errors`` is the error analysis (worst mistakes, confused pairs, per-class numbers) for the KFP UI.
    """
    import os
    import shutil

    from bakeoff import contract, tracking
    from bakeoff.contract import MetricsInfo
    from bakeoff.evaluate import evaluate as core
    from bakeoff.evaluate import evaluation_roc
    from bakeoff.tracking.batching import number

    tracking.configure()
    with open(parent_run.path) as handle:  # open_run's artifact: see components/open_run.py for why not a parameter
        parent_run_id = handle.read().strip()
    result = core(model.path, dataset.path, report.path, batch_size=batch_size, seed=seed)
    run_id = tracking.log_candidate(
        parent_run_id,
        features_dir=features.path,
        head_dir=head.path,
        model_dir=model.path,
        eval_dir=report.path,
        model_name=model_name,
        task_key=backbone,
    )

    for key, value in result.items():  # every finite number; lists (classes, confusion matrix) are not metrics
        if (finite := number(value)) is not None:
            metrics.log_metric(key, finite)
    metrics.metadata.update({"backbone": result.get("backbone"), "mlflow_run_id": run_id})

    # KFP's UI format: one confusion matrix, one ROC curve (binary: the second class; else micro-averaged)
    evaluated = MetricsInfo.read(report.path)
    classification.log_confusion_matrix(list(evaluated.classes), [list(row) for row in evaluated.confusion_matrix])
    roc = evaluation_roc(report.path)
    classification.log_roc_curve(roc.fpr, roc.tpr, roc.thresholds)
    shutil.copyfile(os.path.join(report.path, contract.ERROR_REPORT_HTML), errors.path)
    print(f"{result.get('backbone')}: test accuracy {evaluated.accuracy:.4f}, MLflow run {run_id}")
    return run_id
