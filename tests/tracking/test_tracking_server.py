"""Tracking against a real `mlflow server` process with proxied artifacts on a real moto S3 server."""

from __future__ import annotations

import json
import math
import uuid

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bakeoff import manifest, registry, tracking

from support import CLASSES, IMAGE_SIZE, S3_KEY_ID, S3_SECRET, expected_accuracy, red_values


def _pipeline(
    dataset, candidates, model_name, thresholds, experiment, *, pretrained=True, params=None, gate=None, kfp_run_id=None
):
    # one KFP run id per pipeline run: start_pipeline_run reuses the parent of a KFP run id it has seen (retries)
    kfp_run_id = kfp_run_id or f"kfp-{uuid.uuid4().hex[:12]}"
    parent = tracking.start_pipeline_run(
        experiment,
        str(dataset),
        run_name="pipeline",
        kfp_run_id=kfp_run_id,
        params=params or {"backbones": "mobilenet_v2", "epochs": 2},
    )
    children = []
    for t in thresholds:
        cand = candidates(t, pretrained=pretrained)
        children.append(tracking.log_candidate(parent, model_name=model_name, **cand.dirs))
    decision = registry.select_and_register(
        parent, children, model_name=model_name, dataset_dir=str(dataset), gate=gate or registry.GateConfig()
    )
    board = tracking.leaderboard(experiment, parent_run_id=parent)
    tracking.finish_pipeline_run(parent, board, decision)
    return parent, children, decision, board


def test_run_is_tracked_registered_aliased_and_loads_back_by_alias(
    tracking_env, dataset, candidates, model_name, capsys
):
    import mlflow

    experiment = "tracking-roundtrip"
    parent, children, decision, board = _pipeline(
        dataset, candidates, model_name, [127.5, 160.46], experiment, kfp_run_id="kfp-123"
    )
    c = tracking.client()

    # parent run: tags, params, dataset input, card, leaderboard, finished
    run = c.get_run(parent)
    df = manifest.read_manifest(dataset, resolve=False)
    assert run.data.tags["bakeoff.dataset_hash"] == manifest.dataset_hash(df)
    assert run.data.tags["bakeoff.kfp_run_id"] == "kfp-123"
    assert run.data.tags["bakeoff.version"]
    assert len(run.data.tags["bakeoff.git_commit"]) >= 7
    assert run.data.tags["bakeoff.manifest_uri"].endswith("manifest.parquet")
    assert run.data.params["n_test"] == "100" and run.data.params["epochs"] == "2"
    assert run.info.status == "FINISHED"
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.digest == manifest.dataset_hash(df)[:16]
    top = {a.path for a in c.list_artifacts(parent)}
    assert {"dataset", "leaderboard.csv", "leaderboard.md", "gate_report.md", "gate_decision.json"} <= top
    assert {a.path for a in c.list_artifacts(parent, "dataset")} == {
        "dataset/card.md",
        "dataset/card.json",
        "dataset/splits.parquet",
    }
    assert f"MLflow: open {tracking_env.url}" in capsys.readouterr().out

    # nested candidate runs: params, per-epoch metrics, test metrics, artifacts, model version
    best = c.get_run(children[0])
    assert best.data.tags["mlflow.parentRunId"] == parent
    p = best.data.params
    assert p["backbone"] == "mobilenet_v2" and p["weights_name"] == "imagenet"
    assert p["weights_sha256"] == "ab" * 32 and p["weights_pretrained"] == "True"
    assert p["image_size"] == str(IMAGE_SIZE) and p["head_learning_rate"] == "0.001"
    assert p["finetune_blocks"] == "1"
    assert best.data.metrics["test_accuracy"] == pytest.approx(expected_accuracy(127.5))
    assert best.data.metrics["features_images_per_s"] == pytest.approx(812.5)
    assert "latency_ms_per_image" in best.data.metrics and "model_size_mb" in best.data.metrics
    history = c.get_metric_history(children[0], "head_val_accuracy")
    assert [(m.step, m.value) for m in history] == [(0, 0.6), (1, 0.7), (2, 0.8)]
    assert [m.step for m in c.get_metric_history(children[0], "finetune_loss")] == [0, 1]
    evaluation = {a.path.split("/")[-1] for a in c.list_artifacts(children[0], "evaluation")}
    assert {
        "confusion_matrix.png",
        "roc.png",
        "classification_report.json",
        "metrics.json",
        "predictions.parquet",
    } <= evaluation

    # leaderboard best first; the gate promoted the best (no champion before)
    assert list(board["run_id"]) == children
    assert board["test_accuracy"].is_monotonic_decreasing
    assert decision["promoted"] and decision["champion_version_before"] is None
    version = best.data.tags["bakeoff.model_version"]
    assert decision["challenger_version"] == version == decision["champion_version_after"]
    mv = c.get_model_version_by_alias(model_name, "champion")
    assert mv.version == version and mv.tags["run"] == children[0] and mv.tags["weights_pretrained"] == "true"
    assert c.get_run(parent).data.tags["bakeoff.gate.promoted"] == "True"

    # the artifacts really are in S3 (the client has no S3 credentials: the server proxied them)
    keys = tracking_env.s3_keys()
    assert any(k.endswith("evaluation/predictions.parquet") for k in keys)
    assert any("/models/" in k and k.endswith("model.keras") for k in keys)

    # load by alias: as a Keras model (bakeoff's reader and MLflow's tensorflow flavor) and through the pyfunc,
    # which takes encoded images (PNG of each colour field) and predicts class names
    from mlflow.types import DataType

    from bakeoff.predict import load_keras_model

    from support import encode

    reds = red_values()
    # whole-number pixels: what a PNG holds, so the encoded images and the arrays are the same pictures
    images = np.stack([np.full((IMAGE_SIZE, IMAGE_SIZE, 3), (round(r), 60, 90), dtype=np.float32) for r in reds])
    alias = f"models:/{model_name}@champion"
    keras_model = load_keras_model(alias)
    probs = keras_model.predict(images, verbose=0)
    assert probs.shape == (len(reds), 2)
    network = mlflow.tensorflow.load_model(alias, keras_model_kwargs={"compile": False})
    np.testing.assert_allclose(network.predict(images, verbose=0), probs, rtol=1e-6)
    pyfunc = mlflow.pyfunc.load_model(alias)
    blobs = [encode(Image.fromarray(image.astype(np.uint8)), "PNG") for image in images]
    out = pyfunc.predict(pd.DataFrame({"image": blobs}))
    assert list(out.columns) == ["label", "probability", "prob_blue", "prob_red"]
    assert set(out["label"]) == set(CLASSES)
    assert (out["label"] == np.where(np.round(reds) > 127.5, "red", "blue")).all()
    np.testing.assert_allclose(out["prob_red"], probs[:, 1], rtol=1e-5)
    assert [(c.name, c.type) for c in pyfunc.metadata.get_input_schema().inputs] == [("image", DataType.binary)]
    assert pyfunc.metadata.get_output_schema().input_names() == ["label", "probability", "prob_blue", "prob_red"]
    # the input example was logged with the model
    info = mlflow.models.get_model_info(alias)
    assert info.saved_input_example_info is not None and info.signature is not None


def test_no_secret_reaches_params_tags_or_artifacts(
    tracking_env, dataset, candidates, model_name, monkeypatch, tmp_path
):
    """Client-side secrets (tokens, DB passwords, AWS keys in URIs) and the server's S3 keys never get logged."""
    import mlflow

    token = "ghp_SuperSecretToken1234567890"
    password = "pg-password-9d8c7b6a"
    monkeypatch.setenv("GITHUB_TOKEN", token)
    monkeypatch.setenv("PGPASSWORD", password)
    params = {
        "db_password": password,
        "api_token": token,
        "backbones": "mobilenet_v2",
        "registry_uri": f"postgresql://bakeoff:{password}@db:5432/mlflow",
        "note": f"uses {token} and AKIAABCDEFGHIJKLMNOP",
    }
    parent, children, _, _ = _pipeline(dataset, candidates, model_name, [160.46], "tracking-secrets", params=params)
    c = tracking.client()
    blobs = []
    for run_id in [parent, *children]:
        run = c.get_run(run_id)
        blobs += [json.dumps(run.data.params), json.dumps(run.data.tags)]
        local = mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / run_id))
        blobs += [p.read_bytes().decode("latin-1") for p in __import__("pathlib").Path(local).rglob("*") if p.is_file()]
    model_uri = c.get_run(children[0]).data.tags["bakeoff.model_uri"]
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(tmp_path / "model"))
    blobs += [p.read_bytes().decode("latin-1") for p in __import__("pathlib").Path(local).rglob("*") if p.is_file()]
    text = "\n".join(blobs)
    assert "registry_uri" in text and "backbones" in text  # the scan did see the params
    for secret in (token, password, "AKIAABCDEFGHIJKLMNOP", S3_KEY_ID, S3_SECRET):
        assert secret not in text, secret
    assert "db_password" not in text and "api_token" not in text


def test_leaderboard_across_pipeline_runs(tracking_env, dataset, candidates, model_name):
    experiment = "tracking-leaderboard"
    _pipeline(dataset, candidates, model_name, [201.03], experiment)
    parent2, children2, _, _ = _pipeline(dataset, candidates, model_name, [127.5, 160.46], experiment)
    board = tracking.leaderboard(experiment)
    assert len(board) == 3
    assert board.iloc[0]["run_id"] == children2[0]
    assert list(board["test_accuracy"]) == sorted(board["test_accuracy"], reverse=True)
    last = tracking.leaderboard(experiment, last=1)
    assert set(last["parent_run_id"]) == {parent2} and len(last) == 2
    assert not math.isnan(board.iloc[0]["test_f1_macro"])
    assert isinstance(board, pd.DataFrame)


def test_log_candidate_checks_inputs_first_and_never_leaves_a_run_running(
    tracking_env, dataset, candidates, model_name, tmp_path
):
    import shutil

    from mlflow.exceptions import MlflowException

    from bakeoff import contract
    from bakeoff.errors import BakeoffError

    c = tracking.client()
    parent = tracking.start_pipeline_run("tracking-bad-input", str(dataset))

    def children() -> list:
        exp = c.get_experiment_by_name("tracking-bad-input").experiment_id
        return c.search_runs([exp], filter_string=f"tags.`{contract.PARENT_RUN_TAG}` = '{parent}'")

    good = candidates(160.46)
    broken = tmp_path / "broken"
    shutil.copytree(good.root, broken)
    dirs = {f"{k}_dir": str(broken / k) for k in ("features", "head", "model", "eval")}
    (broken / "eval" / "metrics.json").unlink()
    with pytest.raises(BakeoffError, match=r"missing .*metrics\.json; run `bakeoff evaluate` first"):
        tracking.log_candidate(parent, model_name=model_name, **dirs)
    (broken / "model" / "model.json").write_text(json.dumps({"classes": ["blue"], "image_size": IMAGE_SIZE}))
    with pytest.raises(BakeoffError, match=r"model\.json lists fewer than two classes"):
        tracking.log_candidate(parent, model_name=model_name, **dirs)
    (broken / "model" / "model.keras").unlink()
    with pytest.raises(BakeoffError, match=r"missing .*model\.keras; run finetune first"):
        tracking.log_candidate(parent, model_name=model_name, **dirs)
    assert children() == []  # bad step folders: refused before any run exists

    # a model name MLflow would refuse at registration is refused before any run exists too (issue 8: validation)
    with pytest.raises(BakeoffError, match="model name 'bad/name': MLflow model names cannot contain"):
        tracking.log_candidate(parent, model_name="bad/name", **good.dirs)
    assert children() == []

    # MLflow refuses a param name only once the run exists: the run ends FAILED, not RUNNING
    with pytest.raises(MlflowException, match="Invalid value"):
        tracking.log_candidate(parent, model_name=model_name, params={"bad?key": 1}, **good.dirs)
    assert [run.info.status for run in children()] == ["FAILED"]


def test_leaderboard_breaks_val_ties_as_the_gate_does_never_by_test(tracking_env, dataset, candidates, model_name):
    """Candidates tied on val accuracy and val F1: the first row is the challenger the gate would pick (by run id),
    whichever has the better test score (test is never read for a choice, the order included)."""
    from mlflow import MlflowClient

    experiment = "tracking-leaderboard-ties"
    parent, children, _, _ = _pipeline(dataset, candidates, model_name, [127.5, 160.46, 201.03], experiment)
    client = MlflowClient()
    by_id = sorted(children)
    for rank, run_id in enumerate(by_id):  # the smallest run id gets the best test score
        for key, value in {"val_accuracy": 0.9, "val_f1_macro": 0.8, "test_accuracy": 1.0 - rank / 10}.items():
            client.log_metric(run_id, key, value)
    board = tracking.leaderboard(experiment, parent_run_id=parent)
    assert list(board["run_id"]) == by_id[::-1]
    assert board.iloc[0]["run_id"] == registry.pick_challenger([client.get_run(r) for r in children]).info.run_id
