"""A retried step reuses what its first attempt started (issue 8, item 3), keyed by the KFP run and the backbone.

Reproduced on main: a retried open_run created a second parent run, a retried evaluate a second candidate run and a
second model version. Each step is called twice here exactly as KFP's retry calls it: same inputs, same KFP run id.
"""

from __future__ import annotations

import json

import pytest
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model

from bakeoff import contract, tracking
from components.evaluate import evaluate
from components.open_run import open_run
from components.select_and_register import select_and_register

from support import write_candidate_folders


def _open(artifact, dataset, experiment: str, kfp_run_id: str, model_name: str, name: str = "parent_run") -> str:
    return open_run(
        Dataset(uri=str(dataset)),
        experiment,
        kfp_run_id,
        "s3://raw/drop",
        ["mobilenet_v2"],
        "imagenet",
        32,
        "dense",
        1,
        model_name,
        "mcnemar",
        0.05,
        artifact(Artifact, name),
    )


def _evaluate(artifact, dataset, dirs: dict, parent_run, model_name: str, attempt: int) -> str:
    return evaluate(
        Dataset(uri=str(dataset)),
        Dataset(uri=dirs["features_dir"]),
        Model(uri=dirs["head_dir"]),
        Model(uri=dirs["model_dir"]),
        parent_run,
        "mobilenet_v2",
        model_name,
        32,
        0,
        artifact(Metrics, f"metrics-{attempt}"),
        artifact(ClassificationMetrics, f"classification-{attempt}"),
        artifact(Dataset, f"report-{attempt}"),
        artifact(HTML, f"errors-{attempt}"),
    )


def _pipeline_runs(experiment: str) -> list:
    c = tracking.client()
    exp = c.get_experiment_by_name(experiment)
    return c.search_runs([exp.experiment_id], filter_string=f"tags.`{contract.KIND_TAG}` = 'pipeline'")


def test_open_run_retried_reuses_its_parent_run(tracking_store, dataset, artifact, model_name):
    experiment = f"retries-open-{model_name}"
    first = _open(artifact, dataset, experiment, "kfp-run-1", model_name)
    second = _open(artifact, dataset, experiment, "kfp-run-1", model_name, name="parent_run_again")
    assert second == first and len(_pipeline_runs(experiment)) == 1
    run = tracking.client().get_run(first)
    assert run.info.status == "RUNNING" and run.data.params["backbones"] == "mobilenet_v2"
    assert len(run.inputs.dataset_inputs) == 1  # the manifest logged once

    # KFP's "retry run" of a failed pipeline keeps the run id: the FAILED parent is reopened, not duplicated
    tracking.fail_pipeline_run(first, "pipeline FAILED: task features: OOM")
    third = _open(artifact, dataset, experiment, "kfp-run-1", model_name, name="parent_run_third")
    run = tracking.client().get_run(third)
    assert third == first and run.info.status == "RUNNING" and contract.FAILURE_TAG not in run.data.tags
    assert _open(artifact, dataset, experiment, "kfp-run-2", model_name, name="other") != first  # another KFP run


def test_evaluate_and_select_retried_reuse_their_run_and_version(
    tracking_store, dataset, artifact, model_name, tmp_path
):
    experiment = f"retries-eval-{model_name}"
    parent_id = _open(artifact, dataset, experiment, "kfp-run-3", model_name)
    parent_run = artifact(Artifact, "parent_run")
    dirs = write_candidate_folders(tmp_path / "candidate", 127.5).dirs
    c = tracking.client()

    # attempt 1 dies after its run exists (MLflow refuses a param name): the run ends FAILED, keyed by the backbone
    from bakeoff.evaluate import evaluate as core

    core(dirs["model_dir"], str(dataset), str(tmp_path / "report-0"), seed=0)
    first_attempt = {**dirs, "eval_dir": str(tmp_path / "report-0")}
    with pytest.raises(Exception, match="(?i)invalid"):
        tracking.log_candidate(
            parent_id, model_name=model_name, **first_attempt, params={"bad?key": 1}, task_key="mobilenet_v2"
        )
    [failed] = tracking.candidate_runs(parent_id)
    assert failed.info.status == "FAILED"

    # attempt 2 (the retry) reuses that run; attempt 3 (a retry after success) returns it untouched
    first = _evaluate(artifact, dataset, dirs, parent_run, model_name, 1)
    second = _evaluate(artifact, dataset, dirs, parent_run, model_name, 2)
    assert first == second == failed.info.run_id
    [run] = tracking.candidate_runs(parent_id)
    assert run.info.status == "FINISHED" and run.data.tags[contract.TASK_KEY_TAG] == "mobilenet_v2"
    assert len(c.get_metric_history(first, "test_accuracy")) == 1  # the same point, stored once
    assert len(c.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{first}'")) == 1
    assert c.search_model_versions(f"name = '{model_name}'") == []  # nothing registered before the gate

    decisions = []
    for attempt in (1, 2):
        out = select_and_register(
            Dataset(uri=str(dataset)),
            parent_id,
            [first],
            [artifact(Metrics, f"m-{attempt}", backbone="mobilenet_v2", accuracy=1.0)],
            experiment,
            model_name,
            "mcnemar",
            0.05,
            artifact(Markdown, f"leaderboard-{attempt}"),
            artifact(Metrics, f"decision-{attempt}"),
        )
        decisions.append(json.loads(out))
    assert decisions[0] == decisions[1] and decisions[0]["promoted"] is True
    [version] = c.search_model_versions(f"name = '{model_name}'")
    assert version.tags[contract.VERSION_GATE_TAG] == contract.VERSION_GATE_PROMOTED
    assert version.tags[contract.VERSION_PIPELINE_RUN_TAG] == parent_id
    assert c.get_run(parent_id).info.status == "FINISHED"
