"""evaluate: test-split metrics for one candidate, logged to MLflow as a nested run + registered version.

Also fills KFP's own artifacts so the KFP UI draws the confusion matrix and the ROC curve.
"""

from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output


def evaluate(
    dataset: Input[Dataset],
    features: Input[Dataset],
    head: Input[Model],
    model: Input[Model],
    parent_run: Input[Artifact],
    model_name: str,
    batch_size: int,
    seed: int,
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[Dataset],
) -> str:
    """Returns the candidate's MLflow run id (select_and_register collects them across backbones)."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import confusion_matrix, roc_curve
    from sklearn.preprocessing import label_binarize

    from bakeoff import tracking
    from bakeoff.evaluate import evaluate as core

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
    )

    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
            metrics.log_metric(key, float(value))
    metrics.metadata.update({"backbone": result.get("backbone"), "mlflow_run_id": run_id})

    # KFP's UI format: one confusion matrix, one ROC curve (binary: the second class; else micro-averaged).
    classes = list(result["classes"])
    preds = pd.read_parquet(f"{report.path}/predictions.parquet")
    matrix = confusion_matrix(preds["label"], preds["predicted"], labels=classes)
    classification.log_confusion_matrix(classes, matrix.tolist())
    probs = preds[[f"prob_{c}" for c in classes]].to_numpy()
    truth = label_binarize(preds["label"], classes=classes)
    if len(classes) == 2:
        truth, probs = truth[:, 0], probs[:, 1]
    fpr, tpr, thresholds = roc_curve(truth.ravel(), probs.ravel())
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).astype(int))
    classification.log_roc_curve(
        fpr[keep].tolist(), tpr[keep].tolist(), np.minimum(thresholds[keep], 1.0).tolist()
    )  # roc_curve's first threshold is inf
    print(f"{result.get('backbone')}: test accuracy {result.get('accuracy'):.4f}, MLflow run {run_id}")
    return run_id
