"""The leaderboard: candidate runs of one or more pipeline runs as a table, in the order the gate chooses them:
best VAL accuracy first (ties: val macro F1, then run id), test numbers beside them as the honest estimate.

Read back from MLflow (not from the step folders), so ``bakeoff compare`` works on any machine that reaches the
tracking server, across pipeline runs.
"""

from __future__ import annotations

import pandas as pd

from bakeoff import contract
from bakeoff.errors import BakeoffError
from bakeoff.tracking.store import client, ensure_configured

# ties broken by run id, as `registry.pick_challenger` does: the first row is always the challenger, never a test pick
LEADERBOARD_SORT = ["val_accuracy", "val_f1_macro", "run_id"]
FINISHED, FAILED = "FINISHED", "FAILED"  # MLflow run statuses
# the columns the Markdown leaderboard (MLflow artifact, KFP Markdown output) shows, in order
LEADERBOARD_COLUMNS = (
    "backbone",
    "weights",
    "pretrained",
    "image_size",
    "val_accuracy",
    "val_f1_macro",
    "test_accuracy",
    "test_f1_macro",
    "test_roc_auc",
    "latency_ms_per_image",
    "model_size_mb",
    "model_version",
    "run_id",
)
EMPTY_COLUMNS = [
    "run_id",
    "parent_run_id",
    "backbone",
    "weights",
    "pretrained",
    "test_accuracy",
    "test_f1_macro",
    "model_version",
]


def candidate_row(run) -> dict:
    """One leaderboard row from a candidate run."""
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    nan = float("nan")
    return {
        "run_id": run.info.run_id,
        "parent_run_id": t.get(contract.PARENT_RUN_TAG, ""),
        "run_name": run.info.run_name,
        "backbone": p.get("backbone", t.get(contract.BACKBONE_TAG, "")),
        "weights": p.get("weights_name", ""),
        "pretrained": t.get(contract.WEIGHTS_PRETRAINED_TAG, "true") == "true",
        "image_size": int(p["image_size"]) if p.get("image_size", "").isdigit() else None,
        "val_accuracy": m.get("val_accuracy", nan),
        "val_f1_macro": m.get("val_f1_macro", nan),
        "test_accuracy": m.get("test_accuracy", nan),
        "test_f1_macro": m.get("test_f1_macro", nan),
        "test_roc_auc": m.get("test_roc_auc", nan),
        "latency_ms_per_image": m.get("latency_ms_per_image", nan),
        "model_size_mb": m.get("model_size_mb", nan),
        "features_images_per_s": m.get("features_images_per_s", nan),
        "model_name": t.get(contract.MODEL_NAME_TAG, ""),
        "model_version": t.get(contract.MODEL_VERSION_TAG, ""),
        "dataset_hash": t.get(contract.DATASET_HASH_TAG, ""),
        "start_time": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
    }


def last_experiment() -> str:
    """The experiment of the most recent pipeline run in the store: what ``bakeoff compare`` shows by default."""
    c = client()
    ids = [e.experiment_id for e in c.search_experiments()]
    runs = (
        c.search_runs(
            ids,
            filter_string=f"tags.`{contract.KIND_TAG}` = '{contract.KIND_PIPELINE}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if ids
        else []
    )
    if not runs:
        raise BakeoffError(
            f"no pipeline runs at {ensure_configured()}; run one first (bakeoff run) or pass --experiment"
        )
    return c.get_experiment(runs[0].info.experiment_id).name


def pipeline_run_experiment(run_id: str) -> str:
    """The experiment of pipeline run ``run_id``; an unknown id, or a run that is no pipeline run, is an error."""
    from mlflow.exceptions import MlflowException

    c = client()
    try:
        run = c.get_run(run_id)
    except MlflowException as exc:
        raise BakeoffError(
            f"no MLflow run {run_id!r} at {ensure_configured()}; see `bakeoff compare` for run ids"
        ) from exc
    if run.data.tags.get(contract.KIND_TAG) != contract.KIND_PIPELINE:
        parent = run.data.tags.get(contract.PARENT_RUN_TAG)
        hint = f" (its pipeline run is {parent})" if parent else ""
        raise BakeoffError(f"run {run_id} is not a pipeline run{hint}; pass a pipeline (parent) run id to --run")
    return c.get_experiment(run.info.experiment_id).name


def with_aliases(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with an ``aliases`` column: the registry aliases (champion, challenger) each row's version holds now."""
    held: dict[tuple[str, str], list[str]] = {}
    c = client()
    for name in sorted({n for n in df.get("model_name", []) if n}):
        try:
            aliases = c.get_registered_model(name).aliases or {}
        except Exception:  # a model deleted since: its rows hold no alias
            continue
        for alias, version in aliases.items():
            held.setdefault((name, str(version)), []).append(alias)
    df = df.copy()
    df["aliases"] = [
        ",".join(sorted(held.get((row.get("model_name", ""), str(row.get("model_version", ""))), [])))
        for _, row in df.iterrows()
    ]
    return df


def leaderboard(experiment: str, last: int | None = None, parent_run_id: str | None = None) -> pd.DataFrame:
    """Candidates of the last ``last`` pipeline runs (or of one parent run), best val accuracy first.

    Only FINISHED candidates of pipeline runs that did not fail: a failed or stopped pipeline's runs end FAILED
    (``fail_pipeline_run``) and a half-done bake-off must not rank beside finished ones.
    """
    c = client()
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise BakeoffError(
            f"no MLflow experiment {experiment!r} at {ensure_configured()}; run a pipeline first or pass --experiment"
        )
    if parent_run_id:
        parents = [parent_run_id]
    else:
        runs = c.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{contract.KIND_TAG}` = '{contract.KIND_PIPELINE}' "
            f"and attributes.status != '{FAILED}'",
            order_by=["attributes.start_time DESC"],
            max_results=last or 1000,
        )
        parents = [r.info.run_id for r in runs]
    rows = []
    for parent in parents:  # the search grammar has no IN for tags: one query per pipeline run
        for run in c.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{contract.PARENT_RUN_TAG}` = '{parent}' and attributes.status = '{FINISHED}'",
            max_results=5000,
        ):
            rows.append(candidate_row(run))
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=EMPTY_COLUMNS)
    return df.sort_values(LEADERBOARD_SORT, ascending=False, na_position="last").reset_index(drop=True)


def leaderboard_columns(df: pd.DataFrame) -> list[str]:
    """The shown columns that ``df`` has."""
    return [c for c in LEADERBOARD_COLUMNS if c in df]


def leaderboard_markdown(df: pd.DataFrame) -> str:
    """A Markdown table of the shown columns (floats to 4 places); the one renderer for every leaderboard.

    Hand-written rather than ``DataFrame.to_markdown``: that needs ``tabulate``, which the core does not declare.
    """
    if df.empty:
        return "(no candidates)\n"
    cols = leaderboard_columns(df)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df[cols].iterrows():
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
