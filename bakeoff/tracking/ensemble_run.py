"""The ensemble candidate in MLflow: members read from the candidate runs, the ensemble logged as one more
candidate under the same pipeline run (``bakeoff.ensemble`` builds it; ``bakeoff.evaluate`` scores it).

Why one more candidate run, not a special record: the leaderboard, the val-based challenger pick and the promotion
gate then treat it exactly like a single backbone; its members (run ids, backbones, model URIs, weights of the
average) are its params and the ``bakeoff.ensemble_members`` tag, so a served ensemble is traceable to the runs
that made it.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np

from bakeoff import contract
from bakeoff.ensemble import ENSEMBLE_PREFIX, Member, make_ensemble, mlflow_params
from bakeoff.tracking.candidate_run import log_candidate
from bakeoff.tracking.store import client

TASK_KEY = "ensemble"  # the ensemble's key within its pipeline run: a retry reuses its run


def ensemble_members(run_ids: list[str]) -> list[Member]:
    """The FINISHED candidate runs with a logged model, as possible members (earlier ensembles left out)."""
    from bakeoff.predict import model_info

    c, out = client(), []
    for run_id in run_ids:
        run = c.get_run(run_id)
        uri = run.data.tags.get(contract.MODEL_URI_TAG)
        backbone = run.data.tags.get(contract.BACKBONE_TAG, "")
        if run.info.status != "FINISHED" or not uri or backbone.startswith(ENSEMBLE_PREFIX):
            print(f"ensemble: candidate {run_id} left out (status {run.info.status}, model {uri or 'none'})")
            continue
        info = model_info(uri)
        out.append(
            Member(
                run_id=run_id,
                backbone=info.backbone or backbone,
                model_uri=uri,
                classes=tuple(info.classes),
                image_size=info.image_size,
                cut=info.cut,
                finetuned=info.finetuned,
                weights=dict(info.weights),
            )
        )
    return out


def logged_probabilities(members: list[Member], dataset_dir: str) -> dict[str, dict[str, np.ndarray]]:
    """run id -> split -> the member's probabilities from its own evaluation artifacts, for the splits whose
    logged rows are exactly this dataset's (same images, same order); what is missing is predicted again."""
    import mlflow.artifacts
    import pandas as pd

    from bakeoff import manifest
    from bakeoff.contract import prob_column

    df = manifest.read_manifest(dataset_dir, resolve=False)  # once: each split's images in manifest order
    expected = {
        split: df.loc[df["split"] == split, "sha256"].astype(str).tolist() for split in contract.SPLIT_PREDICTIONS
    }
    out: dict[str, dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for member in members:
            for split, name in contract.SPLIT_PREDICTIONS.items():
                try:
                    path = mlflow.artifacts.download_artifacts(
                        run_id=member.run_id, artifact_path=f"{contract.EVALUATION_ARTIFACTS}/{name}", dst_path=tmp
                    )
                    preds = pd.read_parquet(path)
                except Exception:  # an older run without the file, or an unreadable one: predict instead
                    continue
                if expected[split] and preds["sha256"].astype(str).tolist() == expected[split]:
                    out.setdefault(member.run_id, {})[split] = preds[
                        [prob_column(c) for c in member.classes]
                    ].to_numpy()
    return out


def log_ensemble(
    parent_run_id: str,
    candidate_run_ids: list[str],
    *,
    dataset_dir: str,
    model_dir: str,
    eval_dir: str,
    model_name: str,
    max_members: int,
    batch_size: int = 32,
    seed: int = 0,
) -> tuple[str | None, str]:
    """Choose members on val, build, evaluate and log the ensemble candidate; (its run id, a message), or
    (None, why no ensemble was made)."""
    from bakeoff.evaluate import evaluate

    started = time.perf_counter()
    members = ensemble_members(candidate_run_ids)
    logged = logged_probabilities(members, dataset_dir)
    info, message, known = make_ensemble(
        members, dataset_dir, model_dir, max_members=max_members, batch_size=batch_size, logged=logged
    )
    if info is None:
        return None, message
    evaluate(model_dir, dataset_dir, eval_dir, batch_size=batch_size, seed=seed, known=known)
    params = {**mlflow_params(info), "ensemble_build_seconds": round(time.perf_counter() - started, 1)}
    run_id = log_candidate(
        parent_run_id,
        features_dir=None,
        head_dir=None,
        model_dir=model_dir,
        eval_dir=eval_dir,
        model_name=model_name,
        params=params,
        task_key=TASK_KEY,
    )
    client().set_tag(run_id, contract.ENSEMBLE_MEMBERS_TAG, params["ensemble_member_run_ids"])
    return run_id, message


def features_subject(run, backbone: str | None = None) -> tuple[str, str | None, int | None]:
    """(backbone, cut, input size) whose cached features describe a candidate run (of ``backbone``; default: its
    tag): its own, or an ensemble's first member's (the best single candidate on val; at its base size), so the
    learning curve and label issues read the feature set the candidate was chosen with."""
    params = run.data.params
    if members := params.get("ensemble_members"):
        return members.split(",")[0], (params.get("ensemble_member_cuts") or "").split(",")[0] or None, None
    size = params.get("image_size", "")
    return (
        backbone or run.data.tags.get(contract.BACKBONE_TAG, ""),
        params.get("cut") or None,
        int(size) if size.isdigit() else None,
    )
