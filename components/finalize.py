"""finalize: the pipeline's exit task (``dsl.ExitHandler``): after a failure, nothing is left looking unfinished.

KFP runs it when the pipeline's body ends, whatever happened (kfp.local too). On success it does nothing. Otherwise
it ends the MLflow parent run of this KFP run and every candidate run under it FAILED, tagged with why, and deletes
the model versions this pipeline run registered without a gate verdict, so ``bakeoff compare`` and the gate,
which read FINISHED runs only, ignore the half-done bake-off.
"""

from kfp.dsl import PipelineTaskFinalStatus


def finalize(status: PipelineTaskFinalStatus, experiment: str, model_name: str, kfp_run_id: str) -> str:
    """Returns what it did, one line (also printed to the task log)."""
    if status.state == "SUCCEEDED":
        print(f"KFP run {kfp_run_id} succeeded")
        return "succeeded"
    from bakeoff import registry, tracking

    tracking.configure()
    parent = tracking.find_pipeline_run(experiment, kfp_run_id)
    if parent is None:
        summary = f"KFP run {kfp_run_id} {status.state} before its MLflow run was opened: nothing to end"
    else:
        reason = f"pipeline {status.state}: task {status.pipeline_task_name}: {status.error_message or 'no message'}"
        ended = tracking.fail_pipeline_run(parent.info.run_id, reason)
        deleted = registry.discard_undecided_versions(model_name, parent.info.run_id)
        summary = (
            f"KFP run {kfp_run_id} {status.state}: ended {len(ended)} MLflow run(s) FAILED "
            f"(parent {parent.info.run_id}), deleted {len(deleted)} undecided model version(s)"
        )
    print(summary)
    return summary
