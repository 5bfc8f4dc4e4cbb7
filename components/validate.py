"""validate: the pipeline's first step, the whole run form checked before any work (never cached, never retried).

A KFP UI user types the form by hand, past every check the CLI makes: a typo here must fail in seconds, before
ingest, GPU nodes or MLflow, and with every problem listed, not the first. Retrying would not fix a typo, so this
step has no retries; it is not cached, so a changed weights mirror or deleted data is seen on every run.

Its parameters are exactly the run form's fields (``pipelines.settings.Parameters``; a test keeps them in step)
plus the KFP run id. Why this component imports ``pipelines.settings``: the form's types, ranges and choices are
declared there once; copying them here would make a second source of truth.
"""

from typing import List


def validate(
    data_uri: str,
    label_map_uri: str,
    classes: str,
    per_class: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    data_version: str,
    backbones: List[str],
    weights: str,
    image_size: int,
    extra_image_sizes: List[int],
    batch_size: int,
    precision: str,
    flip: str,
    head_kind: str,
    head_epochs: int,
    head_lr: float,
    head_hidden: int,
    head_dropout: float,
    finetune_epochs: int,
    finetune_top_k: int,
    ensemble_max_members: int,
    finetune_lr: float,
    finetune_blocks: int,
    experiment: str,
    model_name: str,
    gate_test: str,
    gate_alpha: float,
    kfp_run_id: str,
) -> str:
    """Returns ``kfp_run_id``: ``bakeoff run`` reads it from this step's output to find the run's MLflow runs
    when it is stopped (kfp.local makes the id up inside the orchestrator)."""
    form = {name: value for name, value in locals().items() if name != "kfp_run_id"}
    from bakeoff.validation import RunFormError
    from pipelines.settings import check_run_form

    try:
        check_run_form(form)
    except RunFormError as exc:
        for problem in exc.problems:  # one per line in the task log; the error itself stays one line
            print(f"run form: {problem}")
        raise
    print(f"run form of KFP run {kfp_run_id}: every field checked, backbones {', '.join(backbones)}")
    return kfp_run_id
