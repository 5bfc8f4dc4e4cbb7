"""The parent run: one per pipeline run, carrying what every candidate shares, and the gate's decision.

It is created before the backbones run (left RUNNING so candidate runs nest under it) and finished by the last
step with the leaderboard and the decision. Runs are made with ``MlflowClient``, not the fluent "active run":
KFP components call these functions from different processes/pods, and a run id is all they pass along.
"""

from __future__ import annotations

import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from bakeoff import contract, manifest, storage
from bakeoff.contract import GateDecision
from bakeoff.errors import BakeoffError
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
    """Create the parent run (left RUNNING for nested candidate runs), named ``pipeline_run_name`` unless
    ``run_name`` is given; return its run id.

    Tags identify the data and code (dataset content hash, manifest URI, git commit, bakeoff version,
    KFP run id); the manifest is logged as an MLflow dataset input and the dataset card as artifacts.

    Idempotent per KFP run: with a ``kfp_run_id`` whose parent run exists already (a retried ``open_run``, or
    KFP's "retry run" of a failed pipeline), that run is reused, set RUNNING again and its logging redone
    (identical params, inputs and files are accepted twice), so a retry never opens a second parent run.
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
    existing = find_pipeline_run(experiment, kfp_run_id) if kfp_run_id else None
    if existing is None:
        name = run_name or pipeline_run_name(experiment, kfp_run_id)
        run_id = c.create_run(exp_id, run_name=name, tags=tags).info.run_id
    else:
        run_id = existing.info.run_id
        _reopen(c, existing)
    counts = df.groupby("split").size().to_dict()
    base_params = {f"n_{split}": int(counts.get(split, 0)) for split in manifest.SPLITS}
    base_params["n_classes"] = len(classes)
    log_params(run_id, safe_params({**base_params, **(params or {})}))
    _log_dataset_input(c, run_id, df, manifest_uri, dataset_hash)
    _log_dataset_files(c, run_id, df, str(dataset_dir))
    return run_id


def pipeline_run_name(experiment: str, kfp_run_id: str | None, when: datetime | None = None) -> str:
    """``<experiment>-<UTC date-time>-<short KFP run id>``, e.g. ``bakeoff-20261205-1042-3f9a1c2e``: what a user
    scans the MLflow run list for (MLflow's default is a random pair of words)."""
    when = when or datetime.now(UTC)
    short = re.sub(r"[^A-Za-z0-9]", "", kfp_run_id or "")[:8]
    return "-".join(p for p in (experiment, f"{when:%Y%m%d-%H%M}", short) if p)


def find_pipeline_run(experiment: str, kfp_run_id: str):
    """The parent run of KFP run ``kfp_run_id`` in ``experiment`` (oldest first if several), or None."""
    c = client()
    exp = c.get_experiment_by_name(experiment)
    if exp is None or not kfp_run_id:
        return None
    runs = c.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{contract.KIND_TAG}` = '{contract.KIND_PIPELINE}' "
        f"and tags.`{contract.KFP_RUN_ID_TAG}` = '{_searchable(kfp_run_id)}'",
        order_by=["attributes.start_time ASC"],
        max_results=10,
    )
    return runs[0] if runs else None


def candidate_runs(parent_run_id: str, experiment_id: str | None = None) -> list:
    """Every candidate run nested under ``parent_run_id``, whatever its status."""
    c = client()
    experiment_id = experiment_id or c.get_run(parent_run_id).info.experiment_id
    return c.search_runs(
        [experiment_id], filter_string=f"tags.`{contract.PARENT_RUN_TAG}` = '{parent_run_id}'", max_results=5000
    )


def fail_pipeline_run(parent_run_id: str, reason: str) -> list[str]:
    """End a pipeline run FAILED: the parent and every candidate run under it, each tagged with ``reason``.

    Called when the pipeline did not succeed (the exit handler, a stopped ``bakeoff run``): a half-done bake-off
    must not look finished, so ``bakeoff compare`` and the gate, which read only FINISHED runs, ignore all of it.
    Returns the ids of the runs it ended (already FAILED ones are left as they are).
    """
    c = client()
    parent = c.get_run(parent_run_id)
    ended = []
    text = redact(reason)[:MAX_TAG_CHARS]
    for run in [*candidate_runs(parent_run_id, parent.info.experiment_id), parent]:
        if run.info.status == "FAILED":
            continue
        c.set_tag(run.info.run_id, contract.FAILURE_TAG, text)
        c.set_terminated(run.info.run_id, "FAILED")
        ended.append(run.info.run_id)
    return ended


def _reopen(c, run) -> None:
    """A reused run is RUNNING again (a retry's work is in progress), without the failure of its last attempt."""
    if run.info.status != "RUNNING":
        c.update_run(run.info.run_id, status="RUNNING")
    if contract.FAILURE_TAG in run.data.tags:
        c.delete_tag(run.info.run_id, contract.FAILURE_TAG)


def _searchable(value: str) -> str:
    """A value MLflow's search grammar can hold in single quotes (KFP run ids are UUIDs or digits)."""
    if "'" in value or "\\" in value:
        raise BakeoffError(f"KFP run id {value!r} has a quote or backslash; it cannot be searched for")
    return value


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
