"""One candidate (backbone) as a nested run under its pipeline run, with its model logged (not yet registered).

Why nested runs with the same param and metric names for every backbone: the MLflow UI then compares the
candidates side by side. ``log_candidate`` reads the step folders (features, head, finetune, evaluate; local or
s3://) and runs the steps below in order; everything that can fail on bad input is checked before the run exists.
The model becomes a registered version only at the promotion gate (``bakeoff.registry``), so no version exists
without a gate decision.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

from bakeoff import contract, storage
from bakeoff.contract import FeaturesInfo, HeadInfo, MetricsInfo, ModelInfo
from bakeoff.errors import BakeoffError
from bakeoff.provenance import version
from bakeoff.redaction import safe_params
from bakeoff.tracking.artifacts import local_copy, log_files
from bakeoff.tracking.batching import history_metrics, log_metrics, log_params, metric
from bakeoff.tracking.models import log_and_register
from bakeoff.tracking.store import client

# tags a candidate run copies from its parent (identity of the data, the code and the KFP run)
INHERITED_TAGS = (contract.DATASET_HASH_TAG, contract.GIT_COMMIT_TAG, contract.KFP_RUN_ID_TAG)


@dataclass(frozen=True)
class CandidateFolders:
    """The four step folders of one candidate, with their JSONs read (features/head are optional)."""

    features_dir: str
    head_dir: str
    model_dir: str
    eval_dir: str
    features: FeaturesInfo | None
    head: HeadInfo | None
    model: ModelInfo
    metrics: MetricsInfo

    @classmethod
    def read(cls, features_dir: str, head_dir: str, model_dir: str, eval_dir: str) -> CandidateFolders:
        """Read the step JSONs and check the model file exists: one-line errors before anything is logged."""
        keras_uri = storage.join(model_dir, contract.MODEL_KERAS)
        if not storage.exists(keras_uri):
            raise BakeoffError(f"missing {keras_uri}; run finetune first")
        return cls(
            features_dir,
            head_dir,
            model_dir,
            eval_dir,
            features=FeaturesInfo.read_if_present(features_dir),
            head=HeadInfo.read_if_present(head_dir),
            model=ModelInfo.read(model_dir),
            metrics=MetricsInfo.read(eval_dir),
        )

    @property
    def weights(self) -> dict:
        return dict(self.model.weights or (self.features.weights if self.features else None) or {})

    @property
    def backbone(self) -> str:
        return self.model.backbone or (self.features.backbone if self.features else None) or "unknown"

    @property
    def pretrained(self) -> bool:
        return bool(self.weights.get("pretrained", True))


def log_candidate(
    parent_run_id: str,
    *,
    features_dir: str,
    head_dir: str,
    model_dir: str,
    eval_dir: str,
    model_name: str,
    params: dict | None = None,
    task_key: str | None = None,
) -> str:
    """Log one backbone as a nested run with its model (registered later, by the gate); return the run id.

    Its tags ``bakeoff.model_name`` / ``bakeoff.model_uri`` say which registered model the gate adds it to and
    where the logged model is. Why not register here: a version must not exist without a gate decision, and a
    pipeline that fails after this step never reaches the gate (``bakeoff.registry`` registers what it decides on).

    ``task_key`` (the pipeline passes the backbone) makes the call idempotent within one pipeline run: a retry finds
    the run its first attempt created under the same parent and reuses it (a FINISHED one as it is; a failed or
    interrupted one is logged again: same params, metrics with the run's start time, artifacts overwritten, the
    model logged only if the first attempt did not get that far).
    """
    from bakeoff.validation import model_name_problem

    folders = CandidateFolders.read(features_dir, head_dir, model_dir, eval_dir)
    if problem := model_name_problem(model_name):
        raise BakeoffError(f"model name {problem}")
    c = client()
    parent = c.get_run(parent_run_id)
    existing = _find_candidate(c, parent, task_key) if task_key else None
    if existing is not None and existing.info.status == "FINISHED":
        return existing.info.run_id
    run = _reuse(c, existing) if existing is not None else _create_run(c, parent, folders, task_key)
    run_id = run.info.run_id
    try:
        log_params(run_id, safe_params({**_params(folders), **(params or {})}))
        log_metrics(run_id, _metrics(folders, run.info.start_time))
        with tempfile.TemporaryDirectory() as tmp:
            _log_step_files(c, run_id, folders, tmp)
            if contract.MODEL_URI_TAG not in run.data.tags:
                _, model_uri = log_and_register(
                    run_id,
                    local_copy(model_dir, contract.MODEL_KERAS, tmp),
                    local_copy(model_dir, contract.MODEL_JSON, tmp),
                    list(folders.model.classes),
                    folders.model.image_size,
                    None,  # no registration here: the gate registers (bakeoff.registry.register_candidate)
                )
                c.set_tag(run_id, contract.MODEL_URI_TAG, model_uri)
        c.set_tag(run_id, contract.MODEL_NAME_TAG, model_name)
    except BaseException:  # a half-logged candidate ends FAILED, not RUNNING forever
        c.set_terminated(run_id, "FAILED")
        raise
    c.set_terminated(run_id, "FINISHED")
    return run_id


def _find_candidate(c, parent, task_key: str):
    """The candidate run an earlier attempt created for ``task_key`` under ``parent``, or None."""
    runs = c.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{contract.PARENT_RUN_TAG}` = '{parent.info.run_id}' "
        f"and tags.`{contract.TASK_KEY_TAG}` = '{task_key}'",
        order_by=["attributes.start_time ASC"],
        max_results=10,
    )
    return runs[0] if runs else None


def _reuse(c, run):
    """An earlier attempt's run, RUNNING again, without that attempt's failure tag."""
    c.update_run(run.info.run_id, status="RUNNING")
    if contract.FAILURE_TAG in run.data.tags:
        c.delete_tag(run.info.run_id, contract.FAILURE_TAG)
    return run


def _create_run(c, parent, folders: CandidateFolders, task_key: str | None):
    """The nested run, named ``<backbone>-<weights>``, tagged with its parent's data/code identity."""
    tags = {
        contract.PARENT_RUN_TAG: parent.info.run_id,
        contract.KIND_TAG: contract.KIND_CANDIDATE,
        contract.BACKBONE_TAG: folders.backbone,
        contract.WEIGHTS_PRETRAINED_TAG: str(folders.pretrained).lower(),
        **{key: parent.data.tags.get(key, "") for key in INHERITED_TAGS},
        contract.VERSION_TAG: version(),
    }
    if task_key:
        tags[contract.TASK_KEY_TAG] = task_key
    name = f"{folders.backbone}-{folders.weights.get('name', 'weights')}"
    return c.create_run(parent.info.experiment_id, run_name=name, tags=tags)


def _params(folders: CandidateFolders) -> dict[str, Any]:
    """Identity of the backbone and weights, the input, the head and the fine-tuning (same names for all)."""
    features, head, model, weights = folders.features, folders.head, folders.model, folders.weights
    params: dict[str, Any] = {
        "backbone": folders.backbone,
        "weights_spec": weights.get("spec", ""),
        "weights_name": weights.get("name", ""),
        "weights_sha256": weights.get("sha256") or "",
        "weights_pretrained": folders.pretrained,
        "weights_source": weights.get("source", ""),
        "image_size": model.image_size,
        "cut": model.cut or (features.cut if features else None) or "",
        "feature_dim": features.feature_dim if features and features.feature_dim is not None else "",
        "classes": list(model.classes),
        "head_kind": head.kind if head else "",
        "finetuned": model.finetuned,
        "finetune_unfrozen_layers": len(model.unfrozen_layers),
    }
    params.update({f"head_{k}": v for k, v in (head.hyperparameters if head else {}).items()})
    params.update({f"finetune_{k}": v for k, v in model.hyperparameters.items()})
    return params


def _metrics(folders: CandidateFolders, now: int) -> list:
    """Per-epoch histories (step = epoch), every number of metrics.json as ``test_<key>`` (its ``val_*`` keys as
    they are: the numbers the challenger is chosen on), speed and size.

    ``now`` is the run's start time (ms): the same points every attempt, so a retry's identical points are
    stored once (MLflow drops exact duplicates).
    """
    points = history_metrics(folders.head.history if folders.head else None, "head", now)
    points += history_metrics(folders.model.history, "finetune", now)
    values = folders.metrics.values
    candidates = [metric(key if key.startswith("val_") else f"test_{key}", value, now) for key, value in values.items()]
    if folders.features:
        candidates.append(metric("features_images_per_s", folders.features.images_per_s, now))
    candidates += [metric(key, values.get(key), now) for key in ("model_size_mb", "latency_ms_per_image")]
    candidates.append(metric("finetune_val_gain", folders.model.finetune_val_gain, now))
    return points + [m for m in candidates if m is not None]


def _log_step_files(c, run_id: str, folders: CandidateFolders, tmp: str) -> None:
    """``evaluation/`` (metrics, report, predictions, plots) and ``config/`` (the three step JSONs, the head
    search's table when there was one)."""
    log_files(c, run_id, folders.eval_dir, contract.EVALUATION_FILES, contract.EVALUATION_ARTIFACTS, tmp)
    for folder, name in (
        (folders.features_dir, contract.FEATURES_JSON),
        (folders.head_dir, contract.HEAD_JSON),
        (folders.head_dir, contract.HEAD_SEARCH_MD),  # kind "search": every head tried on val, the kept one marked
        (folders.model_dir, contract.MODEL_JSON),
    ):
        log_files(c, run_id, folder, (name,), contract.CONFIG_ARTIFACTS, tmp)
