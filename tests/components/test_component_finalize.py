"""components.finalize, the ExitHandler's task: a failed pipeline leaves honest state (issue 8, item 3).

Reproduced on main: a failed branch left the parent run RUNNING forever and the healthy branch registered as a
version with no alias and no gate decision. Here the exit task ends the parent and every candidate FAILED with the
reason, deletes what this pipeline run registered without a verdict, and `bakeoff compare` and the gate ignore it.
"""

from __future__ import annotations

import pytest
from kfp.dsl import PipelineTaskFinalStatus

from bakeoff import contract, registry, tracking
from bakeoff.cli import main
from bakeoff.errors import BakeoffError
from components.finalize import finalize


def _status(state: str, message: str = "") -> PipelineTaskFinalStatus:
    return PipelineTaskFinalStatus(
        state=state,
        pipeline_job_resource_name="local-pipeline-exit-handler-1",
        pipeline_task_name="exit-handler-1",
        error_code=1 if message else None,
        error_message=message,
    )


def test_success_touches_nothing(tracking_store, dataset, model_name):
    parent = tracking.start_pipeline_run("components-finalize-ok", str(dataset), kfp_run_id="kfp-ok")
    assert finalize(_status("SUCCEEDED"), "components-finalize-ok", model_name, "kfp-ok") == "succeeded"
    assert tracking.client().get_run(parent).info.status == "RUNNING"  # select-and-register finishes it, not this


def test_failure_ends_every_run_failed_and_leaves_no_undecided_version(
    tracking_store, dataset, candidates, model_name, capsys
):
    experiment = f"components-finalize-{model_name}"
    c = tracking.client()
    # another pipeline's champion: a version with an alias and a verdict, never touched
    other = tracking.start_pipeline_run(experiment, str(dataset), kfp_run_id="kfp-earlier")
    champion_run = tracking.log_candidate(other, model_name=model_name, **candidates(201.03).dirs)
    assert registry.select_and_register(other, [champion_run], model_name=model_name, dataset_dir=str(dataset))[
        "promoted"
    ]
    tracking.finish_pipeline_run(other, tracking.leaderboard(experiment, parent_run_id=other), None)

    # this pipeline: one branch finished, one still running, the gate stopped after registering its challenger
    parent = tracking.start_pipeline_run(experiment, str(dataset), kfp_run_id="kfp-broken")
    done = tracking.log_candidate(parent, model_name=model_name, **candidates(127.5).dirs, task_key="mobilenet_v2")
    running = c.create_run(
        c.get_run(parent).info.experiment_id,
        tags={contract.PARENT_RUN_TAG: parent, contract.KIND_TAG: contract.KIND_CANDIDATE},
    ).info.run_id
    undecided = registry.register_candidate(c.get_run(done), model_name, parent).data.tags[contract.MODEL_VERSION_TAG]

    summary = finalize(_status("FAILED", "Task features failed."), experiment, model_name, "kfp-broken")

    assert summary.startswith("KFP run kfp-broken FAILED: ended 3 MLflow run(s) FAILED")
    assert "deleted 1 undecided model version(s)" in summary
    for run_id in (parent, done, running):
        run = c.get_run(run_id)
        assert run.info.status == "FAILED"
        assert run.data.tags[contract.FAILURE_TAG] == "pipeline FAILED: task exit-handler-1: Task features failed."
    versions = {str(v.version) for v in c.search_model_versions(f"name = '{model_name}'")}
    assert undecided not in versions  # registered by this run without a verdict: gone
    champion = c.get_model_version_by_alias(model_name, "champion")
    assert str(champion.version) in versions and champion.tags[contract.VERSION_RUN_TAG] == champion_run

    # compare and the gate ignore the failed pipeline run
    board = tracking.leaderboard(experiment)
    assert set(board["run_id"]) == {champion_run}
    assert tracking.leaderboard(experiment, parent_run_id=parent).empty
    capsys.readouterr()
    assert main(["compare", "--experiment", experiment, "--tracking-uri", tracking_store]) == 0
    out = capsys.readouterr().out
    assert "1 candidates" in out
    with pytest.raises(BakeoffError, match=f"pipeline run {parent} is FAILED, not RUNNING"):
        registry.select_and_register(parent, [done], model_name=model_name, dataset_dir=str(dataset))
    with pytest.raises(BakeoffError, match="FAILED"):
        registry.promote(parent, model_name=model_name, dataset_dir=str(dataset))

    # a retried exit task changes nothing more
    again = finalize(_status("FAILED", "Task features failed."), experiment, model_name, "kfp-broken")
    assert "ended 0 MLflow run(s)" in again and "deleted 0" in again


def test_failure_before_the_mlflow_run_opened_writes_nothing(tracking_store, model_name):
    summary = finalize(_status("FAILED", "Task validate failed."), "components-finalize-none", model_name, "kfp-x")
    assert summary == "KFP run kfp-x FAILED before its MLflow run was opened: nothing to end"
    assert tracking.client().get_experiment_by_name("components-finalize-none") is None
