"""One candidate (backbone) as a nested run under its pipeline run, with its model logged (not yet registered).

Why nested runs with the same param and metric names for every backbone: the MLflow UI then compares the
candidates side by side. ``log_candidate`` reads the step folders (features, head, finetune, evaluate; local or
s3://) and runs the steps below in order; everything that can fail on bad input is checked before the run exists.
The model becomes a registered version only at the promotion gate (``bakeoff.registry``), so no version exists
without a gate decision.
"""

from __future__ import annotations

import re
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
# metrics.json keys that are the evaluation's SETTINGS, not results: logged as params ``test_<key>``
EVALUATION_SETTINGS = ("n_bootstrap", "ci_level")
# metrics.json keys logged under their own name (properties of the model, not of the test split), once each
MODEL_METRICS = ("model_size_mb", "latency_ms_per_image")
# metrics.json keys that are params of the candidate already (``_params``)
NOT_METRICS = ("image_size",)


@dataclass(frozen=True)
class CandidateFolders:
    """The four step folders of one candidate, with their JSONs read (features/head are optional)."""

    features_dir: str | None
    head_dir: str | None
    model_dir: str
    eval_dir: str
    features: FeaturesInfo | None
    head: HeadInfo | None
    model: ModelInfo
    metrics: MetricsInfo

    @classmethod
    def read(cls, features_dir: str | None, head_dir: str | None, model_dir: str, eval_dir: str) -> CandidateFolders:
        """Read the step JSONs and check the model file exists: one-line errors before anything is logged.

        No features or head folder (None): a candidate not made from one backbone's features (an ensemble)."""
        keras_uri = storage.join(model_dir, contract.MODEL_KERAS)
        if not storage.exists(keras_uri):
            raise BakeoffError(f"missing {keras_uri}; run finetune first")
        return cls(
            features_dir,
            head_dir,
            model_dir,
            eval_dir,
            features=FeaturesInfo.read_if_present(features_dir) if features_dir else None,
            head=HeadInfo.read_if_present(head_dir) if head_dir else None,
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

    @property
    def name(self) -> str:
        """The candidate's name (run and logged model): backbone, weights and variant (head kind, fine-tuned or not),
        e.g. ``mobilenet_v2-imagenet-dense-finetuned``; only letters, digits, ``.``, ``_`` and ``-``."""
        head = self.model.head_kind or (self.head.kind if self.head else None) or "head"
        parts = [self.backbone, self.weights.get("name") or "weights", head]
        parts.append("finetuned" if self.model.finetuned else "frozen")
        return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(str(p) for p in parts))


def log_candidate(
    parent_run_id: str,
    *,
    features_dir: str | None,
    head_dir: str | None,
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
        _log_dataset_input(c, parent, run_id)
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
                    name=folders.name,
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
    """The nested run, named after the candidate (``CandidateFolders.name``), tagged with its parent's identity."""
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
    return c.create_run(parent.info.experiment_id, run_name=folders.name, tags=tags)


def _log_dataset_input(c, parent, run_id: str) -> None:
    """The parent's dataset input (the manifest, logged by ``start_pipeline_run``) as an input of this run too:
    MLflow's UI and ``search_runs`` show which data trained and tested each candidate, not only the pipeline."""
    from mlflow.entities import DatasetInput

    inputs = [DatasetInput(d.dataset, d.tags) for d in (parent.inputs.dataset_inputs if parent.inputs else [])]
    if inputs:
        c.log_inputs(run_id, datasets=inputs)


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
    values = folders.metrics.values
    params.update({f"test_{k}": values[k] for k in EVALUATION_SETTINGS if k in values})
    return params


def _metrics(folders: CandidateFolders, now: int) -> list:
    """Per-epoch histories (step = epoch, at the epoch's own wall-clock time), the test split's numbers of
    metrics.json as ``test_<key>`` (its ``val_*`` keys as they are: the numbers the challenger is chosen on), the
    model's speed and size and what fine-tuning gained on val; each number once, no settings.

    ``now`` is the run's start time (ms), the timestamp of points that have no time of their own (and of every
    epoch of a model folder written before epochs were timed): the same points every attempt, so a retry's
    identical points are stored once (MLflow drops exact duplicates).
    """
    head, model = folders.head, folders.model
    points = history_metrics(head.history if head else None, "head", head.epoch_end_ms if head else (), now)
    points += history_metrics(model.history, "finetune", model.epoch_end_ms, now)
    values = folders.metrics.values
    skip = set(EVALUATION_SETTINGS) | set(MODEL_METRICS) | set(NOT_METRICS)
    candidates = [
        metric(key if key.startswith("val_") else f"test_{key}", value, now)
        for key, value in values.items()
        if key not in skip
    ]
    if folders.features:
        candidates.append(metric("features_images_per_s", folders.features.images_per_s, now))
    candidates += [metric(key, values.get(key), now) for key in MODEL_METRICS]
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
        if folder:
            log_files(c, run_id, folder, (name,), contract.CONFIG_ARTIFACTS, tmp)
