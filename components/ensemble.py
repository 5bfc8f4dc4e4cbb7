"""ensemble: the candidates that together do best on val, averaged into one more candidate (fan-in, before the
gate), so select_and_register and the gate treat it like any backbone."""

from typing import List

from kfp.dsl import Dataset, Input, Model, Output


def ensemble(
    dataset: Input[Dataset],
    parent_run_id: str,
    candidate_run_ids: List[str],
    max_members: int,
    model_name: str,
    batch_size: int,
    seed: int,
    model: Output[Model],
    report: Output[Dataset],
) -> List[str]:
    """Returns the candidate run ids with the ensemble's appended, or unchanged (with the reason printed) when
    no ensemble is made: fewer than 2 candidates, ``max_members`` below 2, or no second one helps on val."""
    if max_members < 2:  # the default: pass the list on without importing MLflow (seconds of a default run)
        print(f"ensemble_max_members is {max_members}: no ensemble")
        return list(candidate_run_ids)
    from bakeoff import tracking
    from bakeoff.tracking.ensemble_run import log_ensemble

    tracking.configure()
    run_id, message = log_ensemble(
        parent_run_id,
        list(candidate_run_ids),
        dataset_dir=dataset.path,
        model_dir=model.path,
        eval_dir=report.path,
        model_name=model_name,
        max_members=max_members,
        batch_size=batch_size,
        seed=seed,
    )
    print(message + (f", MLflow run {run_id}" if run_id else ""))
    return list(candidate_run_ids) + ([run_id] if run_id else [])
