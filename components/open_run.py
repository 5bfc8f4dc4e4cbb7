"""open_run: the MLflow parent run of one pipeline run (every backbone nests under it)."""

from kfp.dsl import Artifact, Dataset, Input, Output


def open_run(
    dataset: Input[Dataset],
    experiment: str,
    kfp_run_id: str,
    data_uri: str,
    backbones: list,
    weights: str,
    image_size: int,
    head_kind: str,
    finetune_epochs: int,
    model_name: str,
    gate_test: str,
    gate_alpha: float,
    parent_run: Output[Artifact],
) -> str:
    """Returns the parent run id; ``tracking`` leaves it RUNNING until select_and_register finishes it.

    The id also goes out as a small artifact (``parent_run``): the ParallelFor branches read it from
    there, because kfp.local 2.17.0 replaces a task-output PARAMETER fed into a loop with the loop item.
    """
    from bakeoff import tracking

    tracking.configure()
    params = dict(
        data_uri=data_uri,
        backbones=",".join(backbones),
        weights=weights,
        image_size=image_size,
        head_kind=head_kind,
        finetune_epochs=finetune_epochs,
        model_name=model_name,
        gate_test=gate_test,
        gate_alpha=gate_alpha,
    )
    run_id = tracking.start_pipeline_run(experiment, dataset.path, kfp_run_id=kfp_run_id or None, params=params)
    with open(parent_run.path, "w") as handle:
        handle.write(run_id)
    parent_run.metadata.update({"mlflow_run_id": run_id, "experiment": experiment})
    return run_id
