"""The promotion gate: the alias ``champion`` moves only when a challenger is really better.

Candidates arrive as logged models (``tracking.log_candidate``); the gate registers the ones it decides about as
versions of one registered model, so no version exists without a gate decision. Here:

1. the run's best FINISHED candidate (test accuracy, ties by macro F1) is the challenger;
2. a candidate trained from random weights (``--weights none``) is never promoted;
3. with no champion yet the challenger becomes champion; otherwise the CURRENT champion is re-evaluated
   on this run's test split (``bakeoff.evaluate.predict_split``) and both models' per-image correctness is
   compared with a paired one-sided test (McNemar exact / mid-p, or paired bootstrap). The challenger
   wins only if ``delta > min_delta`` and ``p < alpha``; otherwise it gets the alias ``challenger``;
4. the decision and its numbers are logged as tags and a markdown report on the parent run.

Concurrency: two pipelines may finish at once. The whole of step 3 runs under the registry-wide promotion lock
(``bakeoff.promotion_lock``: a registered model ``<name>.lock``, a short lease renewed while held). Under the lock
the champion is re-read and the comparison runs against whoever is champion NOW, so the later pipeline compares
against the earlier one's winner and a worse model can never overwrite a better champion. A crashed holder's
lease lapses within ``lock_ttl_s`` and the next caller breaks it; a lock lost while held moves no alias.

Re-gating the champion's own version changes nothing: no alias moves, no tag is rewritten.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bakeoff import contract, manifest, stats, tracking
from bakeoff.contract import CHALLENGER_ALIAS, CHAMPION_ALIAS, GateDecision
from bakeoff.errors import BakeoffError
from bakeoff.promotion_lock import DEFAULT_TIMEOUT_S, DEFAULT_TTL_S, registry_lock
from bakeoff.redaction import one_line


@dataclass
class GateConfig:
    """How sure the gate must be: which paired test, its significance level, the minimum accuracy gain."""

    test: str = "mcnemar"  # "mcnemar" (exact), "mcnemar-midp" or "bootstrap"
    alpha: float = 0.05
    min_delta: float = 0.0  # challenger accuracy - champion accuracy must exceed this
    n_bootstrap: int = 2000
    lock_timeout_s: float = DEFAULT_TIMEOUT_S  # longest wait for the promotion lock
    lock_ttl_s: float = DEFAULT_TTL_S  # the lock's lease: renewed while held, lapses this long after its holder died

    def __post_init__(self) -> None:
        if self.test not in stats.TESTS:
            raise BakeoffError(f"unknown gate test {self.test!r}; choose one of {', '.join(stats.TESTS)}")
        if not 0.0 < self.alpha < 1.0:
            raise BakeoffError(f"alpha must be between 0 and 1 (got {self.alpha})")


# ---------------------------------------------------------------------------------------- helpers


def _metric(run, key: str) -> float:
    value = run.data.metrics.get(key)
    return float(value) if value is not None else float("-inf")


def pick_challenger(runs: list) -> object:
    """Best test accuracy, ties broken by macro F1, then by earlier run id for determinism."""
    if not runs:
        raise BakeoffError("no candidate runs to choose a challenger from")
    return max(runs, key=lambda r: (_metric(r, "test_accuracy"), _metric(r, "test_f1_macro"), r.info.run_id))


def _champion(c, model_name: str):
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def _predict_split(model, classes: list[str], image_size: int, dataset_dir: str) -> pd.DataFrame:
    """Test-split predictions through the evaluate step's own function (one definition of "correct")."""
    from bakeoff.evaluate import predict_split

    return predict_split(model, classes, image_size, dataset_dir, split="test")


def _model_predictions(model_uri: str, dataset_dir: str) -> pd.DataFrame:
    from bakeoff.predict import load_keras_model, model_info

    info = model_info(model_uri)
    model = load_keras_model(model_uri)
    return _predict_split(model, list(info.classes), info.image_size, dataset_dir)


def _challenger_predictions(run, dataset_dir: str, dataset_hash: str) -> pd.DataFrame:
    """The challenger's logged test predictions when they are of this dataset, else a fresh prediction."""
    import mlflow.artifacts

    if run.data.tags.get(contract.DATASET_HASH_TAG) == dataset_hash:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id, artifact_path=contract.PREDICTIONS_ARTIFACT, dst_path=tmp
                )
                return pd.read_parquet(path)
            except Exception:
                pass  # fall through: predict again
    return _model_predictions(run.data.tags[contract.MODEL_URI_TAG], dataset_dir)


def _seen_by_model(model_name: str, version: str) -> set[str]:
    """sha256 of the images a registered version trained or validated on (empty when not recorded).

    Data changes between runs (new images, another per-class cap) can move a champion's training
    images into the new test split; the paired test must not count them.
    """
    import mlflow.artifacts

    c = tracking.client()
    try:
        run = c.get_run(c.get_model_version(model_name, version).run_id)
        source_run_id = run.data.tags.get(contract.PARENT_RUN_TAG) or run.info.run_id
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=source_run_id, artifact_path=contract.SPLITS_ARTIFACT, dst_path=tmp
            )
            splits = pd.read_parquet(path)
    except Exception:  # older runs without the split table: nothing to exclude
        return set()
    return set(splits.loc[splits["split"].isin(["train", "val"]), "sha256"])


def _paired(challenger: pd.DataFrame, champion: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    a = challenger[["sha256", "correct"]].drop_duplicates("sha256")
    b = champion[["sha256", "correct"]].drop_duplicates("sha256")
    both = a.merge(b, on="sha256", suffixes=("_challenger", "_champion"), how="inner")
    if len(both) != len(a) or len(both) != len(b):
        raise BakeoffError(
            f"challenger and champion were scored on different test images ({len(a)} vs {len(b)}, "
            f"{len(both)} shared); re-run evaluate on this dataset"
        )
    return both["correct_challenger"].astype(bool), both["correct_champion"].astype(bool)


# ---------------------------------------------------------------------------------------- the gate


def _compare(
    challenger_run, model_name: str, champion_version: str, dataset_dir: str, dataset_hash: str, gate: GateConfig
) -> dict[str, Any]:
    """Paired comparison of the challenger with the champion on this dataset's test split -> decision fields."""
    chal = _challenger_predictions(challenger_run, dataset_dir, dataset_hash)
    try:
        champ = _model_predictions(f"models:/{model_name}/{champion_version}", dataset_dir)
    except BakeoffError as exc:  # e.g. the class set changed: no fair paired comparison exists
        return {
            "reason": f"champion v{champion_version} cannot be scored on this test split ({exc}); "
            "not promoted automatically: review, then move the alias by hand"
        }
    seen = _seen_by_model(model_name, champion_version)
    test_shas = set(chal["sha256"])
    excluded = len(test_shas & seen)
    if excluded:  # the champion trained/validated on these: comparing on them would flatter it
        chal, champ = chal[~chal["sha256"].isin(seen)], champ[~champ["sha256"].isin(seen)]
        if chal.empty:
            return {
                "n_excluded_seen_by_champion": excluded,
                "reason": f"every test image was in champion v{champion_version}'s training or validation "
                "data: no fair comparison; not promoted automatically",
            }
    a, b = _paired(chal, champ)
    result = stats.paired_test(a.to_numpy(), b.to_numpy(), test=gate.test, n_bootstrap=gate.n_bootstrap)
    out = {**result.as_dict(), "n_excluded_seen_by_champion": excluded}
    if result.delta <= gate.min_delta:
        out["reason"] = (
            f"not better than champion v{champion_version}: accuracy delta "
            f"{result.delta:+.4f} <= min_delta {gate.min_delta}"
        )
    elif result.p_value >= gate.alpha:
        out["reason"] = (
            f"better than champion v{champion_version} by {result.delta:+.4f} but not "
            f"significantly ({gate.test} p={result.p_value:.4g} >= alpha {gate.alpha})"
        )
    else:
        out.update(
            promoted=True,
            reason=(
                f"beats champion v{champion_version} by {result.delta:+.4f} accuracy on the same "
                f"{result.n} test images ({gate.test} p={result.p_value:.4g} < alpha {gate.alpha})"
            ),
        )
    return out


def gate_challenger(
    challenger_run,
    *,
    model_name: str,
    dataset_dir: str,
    gate: GateConfig,
    still_owned: Callable[[], None] | None = None,
    holder: str | None = None,
) -> GateDecision:
    """Apply the gate to one candidate run and move an alias; returns the decision (not logged).

    ``still_owned`` is called under the lock right before an alias moves and raises when the pipeline that asked
    for this decision was stopped meanwhile (its parent run no longer RUNNING): an orphan never moves an alias.
    ``holder`` names the caller on the promotion lock for whoever waits for it. A challenger that already is the
    champion moves nothing and tags nothing (:func:`is_unchanged` tells the callers not to log it again).
    """
    c = tracking.client()
    tags = challenger_run.data.tags
    version = tags.get(contract.MODEL_VERSION_TAG)
    if not version:
        raise BakeoffError(
            f"run {challenger_run.info.run_id} has no registered model version; "
            "was it logged with tracking.log_candidate?"
        )
    recorded_name = tags.get(contract.MODEL_NAME_TAG, model_name)
    if recorded_name != model_name:
        raise BakeoffError(
            f"run {challenger_run.info.run_id} is a version of {recorded_name!r}, "
            f"not {model_name!r}; pass --model-name {recorded_name}"
        )
    pretrained = tags.get(contract.WEIGHTS_PRETRAINED_TAG, "true") == "true"
    dataset_hash = manifest.dataset_hash(manifest.read_manifest(dataset_dir, resolve=False))
    decision = GateDecision(
        model_name=model_name,
        challenger_run_id=challenger_run.info.run_id,
        challenger_version=version,
        challenger_backbone=tags.get(contract.BACKBONE_TAG, ""),
        test=gate.test,
        alpha=gate.alpha,
        min_delta=gate.min_delta,
        dataset_hash=dataset_hash,
    )
    with registry_lock(model_name, timeout_s=gate.lock_timeout_s, ttl_s=gate.lock_ttl_s, holder=holder) as lease:
        champion = _champion(c, model_name)  # re-read under the lock: whoever is champion NOW
        decision = dataclasses.replace(decision, champion_version_before=_version_of(champion))
        if champion is not None and str(champion.version) == str(version):
            # re-gating the champion itself: @challenger must not land on it, its verdict tag stays
            return dataclasses.replace(
                decision,
                champion_version_after=str(version),
                reason=f"v{version} already is the champion: nothing changed",
            )
        if not pretrained:
            outcome = {"reason": "trained from random weights (--weights none): never promoted"}
        elif champion is None:
            outcome = {"promoted": True, "reason": "no champion yet"}
        else:
            outcome = _compare(challenger_run, model_name, champion.version, dataset_dir, dataset_hash, gate)
        decision = dataclasses.replace(decision, **outcome)
        if decision.promoted:
            alias, verdict = CHAMPION_ALIAS, contract.VERSION_GATE_PROMOTED
        else:
            alias, verdict = CHALLENGER_ALIAS, contract.VERSION_GATE_CHALLENGER
        if still_owned is not None:
            still_owned()
        lease.check()  # broken by an operator or lapsed meanwhile: another gate may be moving aliases now
        c.set_registered_model_alias(model_name, alias, version)
        c.set_model_version_tag(model_name, version, contract.VERSION_GATE_TAG, verdict)
        decision = dataclasses.replace(decision, champion_version_after=_version_of(_champion(c, model_name)))
    return decision


def is_unchanged(decision: GateDecision) -> bool:
    """True for a re-gate of the champion itself: nothing moved, so nothing is logged again."""
    return not decision.promoted and decision.champion_version_before == decision.challenger_version


def _log_unless_unchanged(parent, decision: GateDecision) -> None:
    """Log the decision on the pipeline run, except a re-gate of the champion over a decision already recorded."""
    if is_unchanged(decision) and parent.data.tags.get(contract.GATE_CHALLENGER_TAG):
        return
    tracking.log_gate_decision(parent.info.run_id, decision)


def _holder(parent) -> str:
    """How the promotion lock names this caller: the pipeline run and its KFP run."""
    kfp = parent.data.tags.get(contract.KFP_RUN_ID_TAG)
    return f"pipeline run {parent.info.run_id}" + (f" (KFP run {kfp})" if kfp else "")


def _version_of(model_version) -> str | None:
    return str(model_version.version) if model_version is not None else None


def select_and_register(
    parent_run_id: str,
    candidate_run_ids: list[str],
    *,
    model_name: str,
    dataset_dir: str,
    gate: GateConfig | None = None,
) -> GateDecision:
    """Pick the run's challenger, register it, gate it against the current champion, log the decision.

    Only FINISHED candidates take part. Idempotent per pipeline run: a retry after the decision was recorded on
    the parent run returns that decision (no second registration, no alias moved twice). A pipeline run that is
    no longer RUNNING (stopped, failed) is refused, also under the lock right before an alias moves.
    """
    gate = gate or GateConfig()
    c = tracking.client()
    parent = c.get_run(parent_run_id)
    recorded = _recorded_decision(parent, candidate_run_ids)
    if recorded is not None:
        return recorded
    _check_owned(c, parent_run_id)
    runs = [c.get_run(run_id) for run_id in candidate_run_ids]
    finished = [run for run in runs if run.info.status == "FINISHED"]
    if not finished:
        raise BakeoffError(f"pipeline run {parent_run_id} has no FINISHED candidate run to gate")
    challenger = register_candidate(pick_challenger(finished), model_name, parent_run_id)
    decision = gate_challenger(
        challenger,
        model_name=model_name,
        dataset_dir=dataset_dir,
        gate=gate,
        still_owned=lambda: _check_owned(c, parent_run_id),
        holder=_holder(parent),
    )
    _log_unless_unchanged(c.get_run(parent_run_id), decision)
    return decision


def register_candidate(run, model_name: str, parent_run_id: str | None = None):
    """Register a candidate run's logged model as a version of ``model_name`` (once; a retry finds the version
    by run id) and tag both ways; returns the run re-read with its ``bakeoff.model_version`` tag."""
    from bakeoff.tracking.models import register_logged_model

    c = tracking.client()
    run_id = run.info.run_id
    if run.data.tags.get(contract.MODEL_VERSION_TAG):
        return run
    model_uri = run.data.tags.get(contract.MODEL_URI_TAG)
    if not model_uri:
        raise BakeoffError(f"run {run_id} has no logged model; was it logged with tracking.log_candidate?")
    found = c.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    if found:
        version = str(found[0].version)
    else:
        version = register_logged_model(model_uri, model_name)
    tags = run.data.tags
    for key, value in {
        contract.VERSION_RUN_TAG: run_id,
        contract.VERSION_BACKBONE_TAG: tags.get(contract.BACKBONE_TAG, ""),
        contract.VERSION_WEIGHTS_PRETRAINED_TAG: tags.get(contract.WEIGHTS_PRETRAINED_TAG, "true"),
        contract.VERSION_DATASET_HASH_TAG: tags.get(contract.DATASET_HASH_TAG, ""),
        contract.VERSION_TEST_ACCURACY_TAG: str(run.data.metrics.get("test_accuracy", "")),
        contract.VERSION_PIPELINE_RUN_TAG: parent_run_id or tags.get(contract.PARENT_RUN_TAG, ""),
    }.items():
        c.set_model_version_tag(model_name, version, key, value)
    c.set_tag(run_id, contract.MODEL_NAME_TAG, model_name)
    c.set_tag(run_id, contract.MODEL_VERSION_TAG, version)
    return c.get_run(run_id)


def discard_undecided_versions(model_name: str, parent_run_id: str) -> list[str]:
    """Delete the versions this pipeline run registered that carry no gate verdict (it failed mid-gate).

    It deletes only what its own pipeline run created (the ``pipeline_run`` version tag says so) and never a
    version with an alias or a verdict. Returns the deleted version numbers.
    """
    from mlflow.exceptions import MlflowException

    c = tracking.client()
    try:
        versions = c.search_model_versions(f"name = '{model_name}'")
    except MlflowException:
        return []
    deleted = []
    for mv in versions:
        tags = mv.tags or {}
        if tags.get(contract.VERSION_PIPELINE_RUN_TAG) != parent_run_id or contract.VERSION_GATE_TAG in tags:
            continue
        if getattr(mv, "aliases", None):
            continue
        try:
            c.delete_model_version(model_name, mv.version)
        except MlflowException as exc:  # e.g. a least-privilege user: EDIT on the model does not allow deletes
            warnings.warn(
                f"could not delete undecided version {mv.version} of {model_name} ({one_line(exc, 300)}); it has no "
                "alias and no gate verdict, so nothing serves it: delete it as a user with MANAGE on the model",
                stacklevel=2,
            )
            continue
        deleted.append(str(mv.version))
    return deleted


def _check_owned(c, parent_run_id: str) -> None:
    """Refuse when the pipeline run was stopped or failed meanwhile: only a live pipeline moves an alias."""
    status = c.get_run(parent_run_id).info.status
    if status != "RUNNING":
        raise BakeoffError(
            f"pipeline run {parent_run_id} is {status}, not RUNNING (stopped or failed): its candidates are not "
            "gated; start a new run, or gate a finished one by hand with `bakeoff promote`"
        )


def _recorded_decision(parent, candidate_run_ids: list[str]) -> GateDecision | None:
    """The decision an earlier attempt of this step recorded on the parent run, if it was about these candidates."""
    import mlflow.artifacts

    challenger = parent.data.tags.get(contract.GATE_CHALLENGER_TAG)
    if not challenger or challenger not in candidate_run_ids:
        return None
    try:
        text = mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/{contract.GATE_DECISION_JSON}")
    except Exception:  # tags written, record not: the gate runs again (its alias moves are idempotent)
        return None
    return GateDecision(**json.loads(text))


def promote(
    run_id: str, *, model_name: str | None = None, dataset_dir: str | None = None, gate: GateConfig | None = None
) -> GateDecision:
    """The gate by hand: ``run_id`` is a pipeline (parent) run or one candidate run.

    The model name and dataset default to what the run recorded (``bakeoff.model_name`` tag, parent's
    ``bakeoff.dataset_uri``).
    """
    gate = gate or GateConfig()
    c = tracking.client()
    try:
        run = c.get_run(run_id)
    except Exception as exc:
        raise BakeoffError(f"no MLflow run {run_id!r} at {tracking.ensure_configured()}") from exc
    if run.data.tags.get(contract.KIND_TAG) == contract.KIND_PIPELINE:
        parent = run
        if run.info.status == "FAILED":
            raise BakeoffError(f"pipeline run {run_id} FAILED: its candidates are not gated")
        children = c.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.`{contract.PARENT_RUN_TAG}` = '{run_id}'",
            max_results=1000,
        )
        children = [child for child in children if child.info.status == "FINISHED"]
        if not children:
            raise BakeoffError(f"pipeline run {run_id} has no FINISHED candidate runs")
        challenger = pick_challenger(children)
    else:
        if run.info.status != "FINISHED":
            raise BakeoffError(f"run {run_id} is {run.info.status}, not FINISHED: only finished candidates are gated")
        challenger = run
        parent_id = run.data.tags.get(contract.PARENT_RUN_TAG)
        parent = c.get_run(parent_id) if parent_id else run
    model_name = model_name or challenger.data.tags.get(contract.MODEL_NAME_TAG)
    if not model_name:
        raise BakeoffError(f"run {challenger.info.run_id} names no registered model; pass --model-name")
    dataset_dir = dataset_dir or parent.data.tags.get(contract.DATASET_URI_TAG)
    if not dataset_dir:
        raise BakeoffError(f"run {parent.info.run_id} does not record its dataset; pass --dataset DIR")
    challenger = register_candidate(challenger, model_name, parent.info.run_id)
    decision = gate_challenger(
        challenger,
        model_name=model_name,
        dataset_dir=dataset_dir,
        gate=gate,
        holder=f"bakeoff promote of {_holder(parent)}",
    )
    _log_unless_unchanged(c.get_run(parent.info.run_id), decision)
    return decision


def decision_dict(decision: GateDecision) -> dict:
    """The decision as its JSON record (what ``bakeoff promote`` prints)."""
    return decision.to_dict()


__all__ = [
    "GateConfig",
    "GateDecision",
    "is_unchanged",
    "pick_challenger",
    "promote",
    "registry_lock",
    "select_and_register",
]
