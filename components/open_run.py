"""open_run: the MLflow parent run of one pipeline run (every backbone nests under it)."""

from kfp.dsl import Dataset, Input


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
) -> str:
    """Returns the parent run id; ``tracking`` leaves it RUNNING until select_and_register finishes it."""
    from bakeoff import tracking

    tracking.configure()
    params = dict(data_uri=data_uri, backbones=",".join(backbones), weights=weights, image_size=image_size,
                  head_kind=head_kind, finetune_epochs=finetune_epochs, model_name=model_name,
                  gate_test=gate_test, gate_alpha=gate_alpha)
    return tracking.start_pipeline_run(experiment, dataset.path, kfp_run_id=kfp_run_id or None, params=params)
