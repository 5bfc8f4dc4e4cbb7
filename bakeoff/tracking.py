"""MLflow tracking: one parent run per pipeline run, one nested run per backbone, the model registered.

Why this shape: the MLflow UI compares nested runs side by side (same params and metric names for
every backbone), the parent run carries what the candidates share (dataset, code version, KFP run,
leaderboard, gate decision), and every candidate's model becomes a version of ONE registered model so
the promotion gate (``bakeoff.registry``) only ever moves aliases.

Runs are created with ``MlflowClient`` (not the fluent "active run"), because KFP components call these
functions from different processes/pods: a run id is all they pass along. MLflow itself is imported
inside functions so ``bakeoff --help`` stays fast.

Configuration: ``MLFLOW_TRACKING_URI`` if set (a team server, artifacts proxied to S3), else an embedded
SQLite database + artifact folder under ``./.bakeoff/mlflow``. Secrets never reach MLflow: parameters are
filtered by name and every logged string is scrubbed of credential values found in the environment.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from bakeoff import __version__, manifest, storage
from bakeoff.errors import BakeoffError

EMBEDDED_DIR = Path(".bakeoff") / "mlflow"
MODEL_ARTIFACT = "model"
KIND_TAG = "bakeoff.kind"
SPLITS_ARTIFACT = "dataset/splits.parquet"  # sha256, label, split of the run's dataset
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
LEADERBOARD_SORT = ["test_accuracy", "test_f1_macro"]
_SECRET_NAME = re.compile(
    r"(secret|password|passwd|token|credential|access_key|api_key|private_key|session_key)", re.IGNORECASE
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@")
_AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")

_state: dict[str, str | None] = {"uri": None, "artifacts": None}


# ---------------------------------------------------------------------------------------- configuration


def configure(tracking_uri: str | None = None) -> str:
    """Point MLflow at ``tracking_uri``, ``$MLFLOW_TRACKING_URI`` or the embedded SQLite default; return the URI.

    The embedded default keeps everything under ``./.bakeoff/mlflow`` (``mlflow.db`` + ``artifacts/``) so
    a laptop run needs no server, and ``ui_command`` prints the one line that opens it.
    """
    import mlflow

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    artifacts = None
    if not uri:
        base = (Path.cwd() / EMBEDDED_DIR).resolve()
        base.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{base / 'mlflow.db'}"
        artifacts = str(base / "artifacts")
    elif uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        artifacts = str(db.resolve().parent / "artifacts")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    _state["uri"], _state["artifacts"] = uri, artifacts
    return uri


def _ensure_configured() -> str:
    import mlflow

    wanted = os.environ.get("MLFLOW_TRACKING_URI")
    if _state["uri"] is None or (wanted and wanted != _state["uri"]):
        return configure()
    mlflow.set_tracking_uri(_state["uri"])
    return _state["uri"]  # type: ignore[return-value]


def ui_command(tracking_uri: str) -> str:
    """The exact command that opens the MLflow UI on these runs (for a server: its URL is the UI)."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} in a browser (the tracking server serves the MLflow UI)"
    artifacts = _state["artifacts"] if tracking_uri == _state["uri"] else None
    if artifacts is None and tracking_uri.startswith("sqlite:///"):
        artifacts = str(Path(tracking_uri[len("sqlite:///") :]).parent / "artifacts")
    cmd = f"mlflow ui --backend-store-uri {tracking_uri}"
    if artifacts:
        cmd += f" --default-artifact-root {artifacts}"
    return cmd + " --host 127.0.0.1 --port 5000"


def client():
    """An ``MlflowClient`` on the configured tracking URI."""
    from mlflow.tracking import MlflowClient

    uri = _ensure_configured()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(name: str) -> str:
    """Experiment id for ``name``, creating it (embedded: with an absolute artifact folder) if needed."""
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise BakeoffError(f"experiment {name!r} is deleted; restore it in the MLflow UI or pick another name")
        return exp.experiment_id
    location = None
    if _state["artifacts"]:
        location = Path(_state["artifacts"]).as_uri()
    try:
        return c.create_experiment(name, artifact_location=location)
    except Exception:  # a concurrent pipeline created it first
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


# ---------------------------------------------------------------------------------------- secrets


def _secret_values() -> list[str]:
    """Values of environment variables whose NAME says they are secret (long enough to be real)."""
    return sorted(
        {v for k, v in os.environ.items() if _SECRET_NAME.search(k) or k.endswith("_KEY_ID") if v and len(v) >= 6},
        key=len,
        reverse=True,
    )


def redact(text: str) -> str:
    """Remove credentials from a string: URL user:password@, AWS key ids, secret env values."""
    text = _URL_USERINFO.sub(r"\g<scheme>***@", text)
    text = _AWS_KEY_ID.sub("***", text)
    for value in _secret_values():
        text = text.replace(value, "***")
    return text


def safe_params(params: dict[str, Any] | None, prefix: str = "") -> dict[str, str]:
    """Flatten a (nested) dict into MLflow params; keys that name secrets are dropped, values scrubbed."""
    out: dict[str, str] = {}
    for key, value in (params or {}).items():
        name = f"{prefix}{key}"
        if _SECRET_NAME.search(str(key)):
            continue
        if isinstance(value, dict):
            out.update(safe_params(value, prefix=f"{name}."))
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        out[name] = redact(str(value))[:6000]
    return out


# ---------------------------------------------------------------------------------------- helpers


def git_commit() -> str:
    """The code version: $BAKEOFF_GIT_COMMIT (set in container builds) or the checkout's HEAD."""
    env = os.environ.get("BAKEOFF_GIT_COMMIT")
    if env:
        return env
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _read_json(folder: str, name: str, required: bool = True) -> dict:
    return storage.read_json(storage.join(folder, name), missing_ok=not required)


def _local(folder: str, name: str, tmp: str) -> str | None:
    """A local path for folder/name (downloaded when the folder is on S3); None when absent."""
    uri = storage.join(folder, name)
    if not storage.exists(uri):
        return None
    if storage.is_s3(uri):
        return storage.download(uri, Path(tmp, name))
    return uri


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _log_metrics(run_id: str, metrics: list) -> None:
    c = client()
    for start in range(0, len(metrics), 1000):
        c.log_batch(run_id, metrics=metrics[start : start + 1000])


def _log_params(run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    c = client()
    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), 100):
        c.log_batch(run_id, params=items[start : start + 100])


def _history_metrics(history: dict | None, prefix: str, timestamp: int) -> list:
    """Per-epoch Keras history -> MLflow metrics ``<prefix>_<key>`` with step = epoch."""
    from mlflow.entities import Metric

    out = []
    for key, values in (history or {}).items():
        if not isinstance(values, list):
            continue
        for epoch, value in enumerate(values):
            number = _number(value)
            if number is not None:
                out.append(Metric(f"{prefix}_{key}", number, timestamp, epoch))
    return out


# ---------------------------------------------------------------------------------------- runs


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
    from mlflow.entities import DatasetInput, InputTag

    import mlflow

    c = client()
    exp_id = ensure_experiment(experiment)
    df = manifest.read_manifest(dataset_dir, resolve=False)
    dataset_hash = manifest.dataset_hash(df)
    manifest_uri = manifest.manifest_uri(dataset_dir)
    if not storage.is_s3(manifest_uri):
        manifest_uri = str(Path(manifest_uri).resolve())
        dataset_dir = str(Path(dataset_dir).resolve())
    tags = {
        KIND_TAG: "pipeline",
        "bakeoff.dataset_hash": dataset_hash,
        "bakeoff.manifest_uri": redact(manifest_uri),
        "bakeoff.dataset_uri": redact(str(dataset_dir)),
        "bakeoff.git_commit": git_commit(),
        "bakeoff.version": __version__,
        "bakeoff.kfp_run_id": kfp_run_id or "",
        "bakeoff.classes": ",".join(manifest.class_names(df)),
    }
    run = c.create_run(exp_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    counts = df.groupby("split").size().to_dict()
    base_params = {f"n_{split}": int(counts.get(split, 0)) for split in manifest.SPLITS}
    base_params["n_classes"] = len(manifest.class_names(df))
    _log_params(run_id, safe_params({**base_params, **(params or {})}))

    dataset = mlflow.data.from_pandas(
        df[["sha256", "label", "split"]],
        source=redact(manifest_uri),
        name=f"dataset-{dataset_hash[:12]}",
        digest=dataset_hash[:16],
    )
    c.log_inputs(
        run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), [InputTag("mlflow.data.context", "training")])]
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in (manifest.CARD_MD_NAME, manifest.CARD_JSON_NAME, manifest.REJECTED_NAME):
            path = _local(str(dataset_dir), name, tmp)
            if path:
                c.log_artifact(run_id, path, "dataset")
        # Which image sat in which split: the gate needs it later to keep a champion's own training
        # images out of the comparison when the data (or the per-class cap) changed between runs.
        splits_path = Path(tmp, SPLITS_ARTIFACT.rsplit("/", 1)[1])
        df[["sha256", "label", "split"]].to_parquet(splits_path, index=False)
        c.log_artifact(run_id, str(splits_path), SPLITS_ARTIFACT.rsplit("/", 1)[0])
    return run_id


def log_candidate(
    parent_run_id: str,
    *,
    features_dir: str,
    head_dir: str,
    model_dir: str,
    eval_dir: str,
    model_name: str,
    params: dict | None = None,
) -> str:
    """Log one backbone as a nested run and register its model as a new version of ``model_name``.

    Reads the artifact folders of the features, head, finetune and evaluate steps (local or s3://).
    Returns the nested run id; its tags ``bakeoff.model_version`` / ``bakeoff.model_uri`` point at the
    registered version.
    """
    from mlflow.entities import Metric

    c = client()
    parent = c.get_run(parent_run_id)
    features = _read_json(features_dir, "features.json", required=False)
    head = _read_json(head_dir, "head.json", required=False)
    model_info = _read_json(model_dir, "model.json")
    metrics = _read_json(eval_dir, "metrics.json")
    weights = model_info.get("weights") or features.get("weights") or {}
    backbone = model_info.get("backbone") or features.get("backbone") or "unknown"
    pretrained = bool(weights.get("pretrained", True))
    classes = model_info.get("classes") or metrics.get("classes")
    image_size = int(model_info.get("image_size") or features.get("image_size") or 0)
    if not classes or not image_size:
        raise BakeoffError(f"{storage.join(model_dir, 'model.json')} lacks classes/image_size; re-run finetune")

    tags = {
        "mlflow.parentRunId": parent_run_id,
        KIND_TAG: "candidate",
        "bakeoff.backbone": backbone,
        "bakeoff.weights_pretrained": str(pretrained).lower(),
        "bakeoff.dataset_hash": parent.data.tags.get("bakeoff.dataset_hash", ""),
        "bakeoff.git_commit": parent.data.tags.get("bakeoff.git_commit", ""),
        "bakeoff.version": __version__,
        "bakeoff.kfp_run_id": parent.data.tags.get("bakeoff.kfp_run_id", ""),
    }
    run = c.create_run(parent.info.experiment_id, run_name=f"{backbone}-{weights.get('name', 'weights')}", tags=tags)
    run_id = run.info.run_id

    head_hp = head.get("hyperparameters") or {}
    model_hp = model_info.get("hyperparameters") or {}
    run_params: dict[str, Any] = {
        "backbone": backbone,
        "weights_spec": weights.get("spec", ""),
        "weights_name": weights.get("name", ""),
        "weights_sha256": weights.get("sha256") or "",
        "weights_pretrained": pretrained,
        "weights_source": weights.get("source", ""),
        "image_size": image_size,
        "cut": model_info.get("cut") or features.get("cut") or "",
        "feature_dim": features.get("feature_dim", ""),
        "classes": classes,
        "head_kind": head.get("kind", ""),
        "finetuned": model_info.get("finetuned", ""),
        "finetune_unfrozen_layers": len(model_info.get("unfrozen_layers") or []),
    }
    run_params.update({f"head_{k}": v for k, v in head_hp.items()})
    run_params.update({f"finetune_{k}": v for k, v in model_hp.items()})
    run_params.update(params or {})
    _log_params(run_id, safe_params(run_params))

    import time

    now = int(time.time() * 1000)
    batch = _history_metrics(head.get("history"), "head", now)
    batch += _history_metrics(model_info.get("history"), "finetune", now)
    for key, value in metrics.items():
        number = _number(value)
        if number is not None:
            batch.append(Metric(f"test_{key}", number, now, 0))
    for key in ("images_per_s",):
        number = _number(features.get(key))
        if number is not None:
            batch.append(Metric(f"features_{key}", number, now, 0))
    for key in ("model_size_mb", "latency_ms_per_image"):
        number = _number(metrics.get(key))
        if number is not None:
            batch.append(Metric(key, number, now, 0))
    _log_metrics(run_id, batch)

    with tempfile.TemporaryDirectory() as tmp:
        for name in (
            "metrics.json",
            "classification_report.json",
            "predictions.parquet",
            "confusion_matrix.png",
            "roc.png",
        ):
            path = _local(eval_dir, name, tmp)
            if path:
                c.log_artifact(run_id, path, "evaluation")
        for folder, name in ((features_dir, "features.json"), (head_dir, "head.json"), (model_dir, "model.json")):
            path = _local(folder, name, tmp)
            if path:
                c.log_artifact(run_id, path, "config")
        keras_path = _local(model_dir, "model.keras", tmp)
        json_path = _local(model_dir, "model.json", tmp)
        if keras_path is None:
            raise BakeoffError(f"missing {storage.join(model_dir, 'model.keras')}; run finetune first")
        version, model_uri = _log_model(run_id, keras_path, json_path, classes, image_size, model_name)

    c.set_tag(run_id, "bakeoff.model_name", model_name)
    c.set_tag(run_id, "bakeoff.model_version", str(version))
    c.set_tag(run_id, "bakeoff.model_uri", model_uri)
    for key, value in {
        "run": run_id,
        "backbone": backbone,
        "weights_pretrained": str(pretrained).lower(),
        "dataset_hash": tags["bakeoff.dataset_hash"],
        "test_accuracy": str(metrics.get("accuracy", "")),
    }.items():
        c.set_model_version_tag(model_name, str(version), key, value)
    c.set_terminated(run_id, "FINISHED")
    return run_id


def _log_model(
    run_id: str, keras_path: str, json_path: str | None, classes: list[str], image_size: int, model_name: str
) -> tuple[str, str]:
    """Log the Keras model as a pyfunc that predicts class names, and register it.

    One logged model serves both readers: ``mlflow.pyfunc.load_model`` returns class names and
    probabilities; ``bakeoff.predict.load_keras_model`` returns the Keras model from the same artifacts.
    """
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    import mlflow
    from bakeoff.predict import KerasImageClassifier, pip_requirements

    with tempfile.TemporaryDirectory() as tmp:
        if json_path is None:
            json_path = str(Path(tmp, "model.json"))
            Path(json_path).write_text(json.dumps({"classes": classes, "image_size": image_size}))
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, image_size, image_size, 3))]),
            outputs=Schema(
                [ColSpec("string", "label"), ColSpec("double", "probability")]
                + [ColSpec("double", f"prob_{c}") for c in classes]
            ),
        )
        # a real-looking input: a mid-grey RGB image in the model's 0..255 pixel range
        example = np.full((1, image_size, image_size, 3), 127.0, dtype=np.float32)
        mlflow.set_tracking_uri(_state["uri"])
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=KerasImageClassifier(),
                artifacts={"keras_model": keras_path, "model_json": json_path},
                signature=signature,
                input_example=example,
                pip_requirements=pip_requirements(),
                registered_model_name=model_name,
            )
    version = info.registered_model_version
    if version is None:
        raise BakeoffError(f"MLflow did not register {model_name}; does the tracking server have a model registry?")
    return str(version), info.model_uri


def finish_pipeline_run(parent_run_id: str, leaderboard: pd.DataFrame, decision: dict) -> None:
    """Log the leaderboard and the gate decision on the parent run, end it, print the UI command."""
    c = client()
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp, "leaderboard.csv")
        leaderboard.to_csv(csv, index=False)
        md = Path(tmp, "leaderboard.md")
        md.write_text(leaderboard_markdown(leaderboard))
        c.log_artifact(parent_run_id, str(csv))
        c.log_artifact(parent_run_id, str(md))
    for key, value in (decision or {}).items():
        if value is not None and not isinstance(value, (dict, list)):
            c.set_tag(parent_run_id, f"bakeoff.gate.{key}", redact(str(value)))
    if not leaderboard.empty and "test_accuracy" in leaderboard:
        best = leaderboard.iloc[0]
        c.log_metric(parent_run_id, "best_test_accuracy", float(best["test_accuracy"]))
        c.set_tag(parent_run_id, "bakeoff.best_backbone", str(best.get("backbone", "")))
    c.set_terminated(parent_run_id, "FINISHED")
    print(f"MLflow: {ui_command(_state['uri'] or configure())}")


def leaderboard_markdown(df: pd.DataFrame) -> str:
    cols = [
        c
        for c in (
            "backbone",
            "weights",
            "pretrained",
            "test_accuracy",
            "test_f1_macro",
            "test_roc_auc",
            "latency_ms_per_image",
            "model_size_mb",
            "model_version",
            "run_id",
        )
        if c in df
    ]
    if df.empty:
        return "(no candidates)\n"
    shown = df[cols].copy()
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in shown.iterrows():
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def candidate_row(run) -> dict:
    """One leaderboard row from a candidate run."""
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    return {
        "run_id": run.info.run_id,
        "parent_run_id": t.get("mlflow.parentRunId", ""),
        "run_name": run.info.run_name,
        "backbone": p.get("backbone", t.get("bakeoff.backbone", "")),
        "weights": p.get("weights_name", ""),
        "pretrained": t.get("bakeoff.weights_pretrained", "true") == "true",
        "image_size": int(p["image_size"]) if p.get("image_size", "").isdigit() else None,
        "test_accuracy": m.get("test_accuracy", float("nan")),
        "test_f1_macro": m.get("test_f1_macro", float("nan")),
        "test_roc_auc": m.get("test_roc_auc", float("nan")),
        "latency_ms_per_image": m.get("latency_ms_per_image", float("nan")),
        "model_size_mb": m.get("model_size_mb", float("nan")),
        "features_images_per_s": m.get("features_images_per_s", float("nan")),
        "model_name": t.get("bakeoff.model_name", ""),
        "model_version": t.get("bakeoff.model_version", ""),
        "start_time": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
    }


def leaderboard(experiment: str, last: int | None = None, parent_run_id: str | None = None) -> pd.DataFrame:
    """Candidates of the last ``last`` pipeline runs (or of one parent run), best test accuracy first."""
    c = client()
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise BakeoffError(
            f"no MLflow experiment {experiment!r} at {_state['uri']}; run a pipeline first or pass --experiment"
        )
    if parent_run_id:
        parents = [parent_run_id]
    else:
        runs = c.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{KIND_TAG}` = 'pipeline'",
            order_by=["attributes.start_time DESC"],
            max_results=last or 1000,
        )
        parents = [r.info.run_id for r in runs]
    rows = []
    for parent in parents:  # the search grammar has no IN for tags: one query per pipeline run
        for run in c.search_runs(
            [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'", max_results=5000
        ):
            rows.append(candidate_row(run))
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(
            columns=[
                "run_id",
                "parent_run_id",
                "backbone",
                "weights",
                "pretrained",
                "test_accuracy",
                "test_f1_macro",
                "model_version",
            ]
        )
    return df.sort_values(LEADERBOARD_SORT, ascending=False, na_position="last").reset_index(drop=True)
