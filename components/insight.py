"""insight: after the gate, the chosen candidate's learning curve and suspected label errors (seconds, cached
features only), on the parent MLflow run and as HTML the KFP UI shows."""

from typing import List

from kfp.dsl import HTML, Dataset, Input, Output


def insight(
    dataset: Input[Dataset],
    features: Input[List[Dataset]],
    parent_run_id: str,
    decision: str,
    seed: int,
    learning_curve: Output[HTML],
    label_issues: Output[HTML],
    report: Output[Dataset],
) -> str:
    """Returns insight.json's record as JSON (the verdict, the counts, and any report skipped with its reason).

    ``decision`` is select_and_register's JSON: its challenger names the backbone whose features are read (an
    ensemble's: its first member's, the best single candidate on val).
    """
    import html
    import json
    import os
    import shutil

    from bakeoff import contract, tracking
    from bakeoff.insight.run import insight_for_challenger
    from bakeoff.tracking.ensemble_run import features_subject

    tracking.configure()
    chosen = json.loads(decision)
    run = tracking.client().get_run(chosen["challenger_run_id"])
    backbone, cut, size = features_subject(run, chosen["challenger_backbone"])
    record = insight_for_challenger(
        dataset.path, [item.path for item in features], backbone, cut, report.path, seed=seed, image_size=size
    )
    tracking.log_insight(parent_run_id, report.path, dataset.path, record)
    for output, name, key in (
        (learning_curve, contract.LEARNING_CURVE_HTML, "learning_curve"),
        (label_issues, contract.LABEL_ISSUES_HTML, "label_issues"),
    ):
        made = os.path.join(report.path, name)
        if os.path.exists(made):
            shutil.copyfile(made, output.path)
        else:  # skipped: the KFP UI says why instead of showing nothing
            with open(output.path, "w") as handle:
                handle.write(f"<p>Skipped: {html.escape(record['skipped'].get(key, 'no output'))}</p>\n")
    learning_curve.metadata["verdict"] = record.get("verdict", "")
    label_issues.metadata["suspected"] = record.get("label_issues")
    print(record.get("verdict", ""), f"suspected label errors: {record.get('label_issues')}")
    return json.dumps(record, default=str)
