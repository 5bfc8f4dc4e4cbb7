"""select_and_register: the gate over all candidates (fan-in), champion alias moved only on a real win."""

from typing import List

from kfp.dsl import Dataset, Input, Markdown, Metrics, Output


def select_and_register(
    dataset: Input[Dataset],
    parent_run_id: str,
    candidate_run_ids: List[str],
    candidate_metrics: Input[List[Metrics]],
    experiment: str,
    model_name: str,
    gate_test: str,
    gate_alpha: float,
    leaderboard: Output[Markdown],
    decision: Output[Metrics],
) -> str:
    """Returns the gate's decision as JSON (also on the parent MLflow run and in ``decision`` metadata)."""
    import json

    from bakeoff import registry, tracking

    tracking.configure()
    for item in candidate_metrics:  # every branch reported; a silent gap would skew the bake-off
        print(f"candidate {item.metadata.get('backbone')}: accuracy {item.metadata.get('accuracy')}")
    result = registry.select_and_register(
        parent_run_id,
        list(candidate_run_ids),
        model_name=model_name,
        dataset_dir=dataset.path,
        gate=registry.GateConfig(test=gate_test, alpha=gate_alpha),
    )
    board = tracking.leaderboard(experiment, parent_run_id=parent_run_id)
    tracking.finish_pipeline_run(parent_run_id, board, result)
    shown = board[tracking.leaderboard_columns(board)]

    verdict = "promoted to champion" if result.promoted else "not promoted"
    text = (
        f"# Bake-off leaderboard\n\n{tracking.leaderboard_markdown(shown)}\n"
        f"**Gate ({result.test}):** challenger {result.challenger_run_id} {verdict}: {result.reason}\n"
    )
    with open(leaderboard.path, "w") as handle:
        handle.write(text)
    leaderboard.metadata["rows"] = json.loads(shown.to_json(orient="records"))
    decision.metadata.update({k: v for k, v in result.to_dict().items() if v is not None})
    decision.log_metric("promoted", float(result.promoted))
    if result.p_value is not None:
        decision.log_metric("p_value", float(result.p_value))
    print(text)
    return result.to_json()
