"""The parent run: one per pipeline run, carrying what every candidate shares, and the gate's decision.

It is created before the backbones run (left RUNNING so candidate runs nest under it) and finished by the last
step with the leaderboard and the decision. Runs are made with ``MlflowClient``, not the fluent "active run":
KFP components call these functions from different processes/pods, and a run id is all they pass along.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from bakeoff import contract, manifest, storage
from bakeoff.contract import GateDecision
from bakeoff.provenance import git_commit, version
from bakeoff.redaction import redact, safe_params
from bakeoff.tracking.artifacts import log_files
from bakeoff.tracking.batching import log_params
from bakeoff.tracking.leaderboard import leaderboard_markdown
from bakeoff.tracking.store import client, ensure_configured, ensure_experiment, ui_command

MAX_TAG_CHARS = 5000
SPLIT_COLUMNS = ["sha256", "label", "split"]


def start_pipeline_run(
    experiment: str,
    dataset_dir: str,
    *,
    run_name: str | None = None,
    kfp_run_id: str | None = None,
    params: dict | None = None,
) -> str:
    """Create the parent run (left RUNNING for nested candidate runs); return its run id.

    Tags identify the data and code (dataset content hash, manifest URI, git commit, bakeoff version,
    KFP run id); the manifest is logged as an MLflow dataset input and the dataset card as artifacts.
    """
    c = client()
    exp_id = ensure_experiment(experiment)
    df = manifest.read_manifest(dataset_dir, resolve=False)
    dataset_hash = manifest.dataset_hash(df)
    manifest_uri = manifest.manifest_uri(dataset_dir)
    if not storage.is_s3(manifest_uri):
        manifest_uri = str(Path(manifest_uri).resolve())
        dataset_dir = str(Path(dataset_dir).resolve())
    classes = manifest.class_names(df)
    tags = {
        contract.KIND_TAG: contract.KIND_PIPELINE,
        contract.DATASET_HASH_TAG: dataset_hash,
        contract.MANIFEST_URI_TAG: redact(manifest_uri),
        contract.DATASET_URI_TAG: redact(str(dataset_dir)),
        contract.GIT_COMMIT_TAG: git_commit(),
        contract.VERSION_TAG: version(),
        contract.KFP_RUN_ID_TAG: kfp_run_id or "",
        contract.CLASSES_TAG: ",".join(classes),
    }
    run_id = c.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
    counts = df.groupby("split").size().to_dict()
    base_params = {f"n_{split}": int(counts.get(split, 0)) for split in manifest.SPLITS}
    base_params["n_classes"] = len(classes)
    log_params(run_id, safe_params({**base_params, **(params or {})}))
    _log_dataset_input(c, run_id, df, manifest_uri, dataset_hash)
    _log_dataset_files(c, run_id, df, str(dataset_dir))
    return run_id


def _log_dataset_input(c, run_id: str, df: pd.DataFrame, manifest_uri: str, dataset_hash: str) -> None:
    """The manifest (sha256, label, split) as an MLflow dataset input: the UI shows which data trained a run."""
    from mlflow.entities import DatasetInput, InputTag

    import mlflow

    dataset = mlflow.data.from_pandas(
        df[SPLIT_COLUMNS],
        source=redact(manifest_uri),
        name=f"dataset-{dataset_hash[:12]}",
        digest=dataset_hash[:16],
    )
    c.log_inputs(
        run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), [InputTag("mlflow.data.context", "training")])]
    )


def _log_dataset_files(c, run_id: str, df: pd.DataFrame, dataset_dir: str) -> None:
    """The dataset card and rejections, and the split table the gate reads later."""
    folder, name = contract.SPLITS_ARTIFACT.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as tmp:
        names = (contract.CARD_MD_NAME, contract.CARD_JSON_NAME, contract.REJECTED_NAME)
        log_files(c, run_id, dataset_dir, names, contract.DATASET_ARTIFACTS, tmp)
        # Which image sat in which split: the gate needs it later to keep a champion's own training
        # images out of the comparison when the data (or the per-class cap) changed between runs.
        splits_path = Path(tmp, name)
        df[SPLIT_COLUMNS].to_parquet(splits_path, index=False)
        c.log_artifact(run_id, str(splits_path), folder)


def tag_gate_decision(run_id: str, decision: GateDecision) -> None:
    """The decision's ``bakeoff.gate.*`` tags on the run (redacted, within MLflow's tag size)."""
    c = client()
    for key, value in decision.tags().items():
        c.set_tag(run_id, key, redact(value)[:MAX_TAG_CHARS])


def log_gate_decision(run_id: str, decision: GateDecision) -> None:
    """The decision on the run: ``bakeoff.gate.*`` tags, ``gate_report.md`` and ``gate_decision.json``."""
    c = client()
    tag_gate_decision(run_id, decision)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp, contract.GATE_REPORT_MD)
        report.write_text(decision.to_markdown())
        record = Path(tmp, contract.GATE_DECISION_JSON)
        record.write_text(decision.to_json(indent=2))
        c.log_artifact(run_id, str(report))
        c.log_artifact(run_id, str(record))


def finish_pipeline_run(parent_run_id: str, leaderboard: pd.DataFrame, decision: GateDecision | None) -> None:
    """Log the leaderboard and the gate decision's tags on the parent run, end it, print the UI command."""
    c = client()
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp, contract.LEADERBOARD_CSV)
        leaderboard.to_csv(csv, index=False)
        md = Path(tmp, contract.LEADERBOARD_MD)
        md.write_text(leaderboard_markdown(leaderboard))
        c.log_artifact(parent_run_id, str(csv))
        c.log_artifact(parent_run_id, str(md))
    if decision is not None:
        tag_gate_decision(parent_run_id, decision)
    if not leaderboard.empty and "test_accuracy" in leaderboard:
        best = leaderboard.iloc[0]
        c.log_metric(parent_run_id, "best_test_accuracy", float(best["test_accuracy"]))
        c.set_tag(parent_run_id, contract.BEST_BACKBONE_TAG, str(best.get("backbone", "")))
    c.set_terminated(parent_run_id, "FINISHED")
    print(f"MLflow: {ui_command(ensure_configured())}")
