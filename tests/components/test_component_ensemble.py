"""components.ensemble: two real candidates averaged into one more MLflow candidate that competes at the gate.

The red/blue candidates (support.candidates) are exact "redness" models: threshold 100 and threshold 150 each miss
one val image (red 114 and red 141), and their average acts like threshold 125, right on all of val. So the ensemble
is made, wins on val, becomes the challenger and the champion, and is then served like any model.
"""

from __future__ import annotations

import json

from kfp.dsl import Dataset, Markdown, Metrics, Model

from bakeoff import contract, tracking
from components.ensemble import ensemble
from components.select_and_register import select_and_register


def _run_ensemble(artifact, dataset, parent, run_ids, model_name, max_members=3):
    return ensemble(
        Dataset(uri=str(dataset)),
        parent,
        run_ids,
        max_members,
        model_name,
        32,
        0,
        artifact(Model, "ensemble-model"),
        artifact(Dataset, "ensemble-report"),
    )


def _assert_logged_predictions_equal_the_models(run, dataset, tmp_path) -> None:
    import mlflow.artifacts
    import numpy as np
    import pandas as pd

    from bakeoff.evaluate import predict_split
    from bakeoff.predict import load_keras_model, model_info

    uri = run.data.tags[contract.MODEL_URI_TAG]
    info, model = model_info(uri), load_keras_model(uri)
    for split, name in contract.SPLIT_PREDICTIONS.items():
        logged = pd.read_parquet(
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path=f"{contract.EVALUATION_ARTIFACTS}/{name}", dst_path=str(tmp_path)
            )
        )
        fresh = predict_split(model, list(info.classes), info.image_size, str(dataset), split)
        columns = [contract.prob_column(c) for c in info.classes]
        assert logged["sha256"].tolist() == fresh["sha256"].tolist()
        np.testing.assert_allclose(logged[columns].to_numpy(), fresh[columns].to_numpy(), atol=1e-4)


def test_the_ensemble_is_one_more_candidate_with_its_members_and_competes(
    tracking_store, dataset, candidates, artifact, model_name, capsys, tmp_path
):
    from bakeoff.export import export_model
    from bakeoff.predict import predict_source
    from bakeoff.tracking.ensemble_run import ensemble_members, features_subject, logged_probabilities

    experiment = f"components-{model_name}"
    parent = tracking.start_pipeline_run(experiment, str(dataset))
    low = tracking.log_candidate(parent, model_name=model_name, **candidates(100.0).dirs)
    high = tracking.log_candidate(parent, model_name=model_name, **candidates(150.0, backbone="vgg16").dirs)

    out = _run_ensemble(artifact, dataset, parent, [low, high], model_name)

    assert out[:2] == [low, high] and len(out) == 3
    c = tracking.client()
    run, members = c.get_run(out[2]), {r: c.get_run(r) for r in (low, high)}
    assert run.data.tags[contract.PARENT_RUN_TAG] == parent and run.info.status == "FINISHED"
    assert run.data.tags[contract.KIND_TAG] == contract.KIND_CANDIDATE
    assert run.data.tags[contract.ENSEMBLE_MEMBERS_TAG] == run.data.params["ensemble_member_run_ids"]
    assert set(run.data.params["ensemble_member_run_ids"].split(",")) == {low, high}
    assert sorted(run.data.params["ensemble_members"].split(",")) == ["mobilenet_v2", "vgg16"]
    uris = {members[r].data.tags[contract.MODEL_URI_TAG] for r in (low, high)}
    assert set(run.data.params["ensemble_member_model_uris"].split(",")) == uris
    assert run.data.params["ensemble_weights"] == "0.5,0.5"
    assert run.data.tags[contract.BACKBONE_TAG].startswith("ensemble:")
    assert run.data.tags[contract.WEIGHTS_PRETRAINED_TAG] == "true"
    metrics = run.data.metrics
    assert metrics["val_accuracy"] == 1.0 > max(m.data.metrics["val_accuracy"] for m in members.values())
    assert 0.9 < metrics["test_accuracy"] <= 1.0  # the test estimate, read after the choice
    assert "ensemble of" in capsys.readouterr().out
    # its evaluation reused the members' logged val/test probabilities: the numbers equal predicting with the model
    for member in (low, high):
        logged = {f.path for f in c.list_artifacts(member, contract.EVALUATION_ARTIFACTS)}
        assert {f"{contract.EVALUATION_ARTIFACTS}/{n}" for n in contract.SPLIT_PREDICTIONS.values()} <= logged
    assert set(logged_probabilities(ensemble_members([low, high]), str(dataset))) == {low, high}
    _assert_logged_predictions_equal_the_models(run, dataset, tmp_path)
    # insight reads the first member's features (the best single candidate on val)
    assert features_subject(run, run.data.tags[contract.BACKBONE_TAG])[0] in {"mobilenet_v2", "vgg16"}

    result = json.loads(
        select_and_register(
            Dataset(uri=str(dataset)),
            parent,
            out,
            [artifact(Metrics, f"m{i}", backbone=f"b{i}", accuracy=0.9) for i in range(2)],
            experiment,
            model_name,
            "mcnemar",
            0.05,
            artifact(Markdown, "leaderboard"),
            artifact(Metrics, "decision"),
        )
    )

    assert result["challenger_run_id"] == out[2] and result["promoted"] is True  # it competed, and won on val
    board = tracking.leaderboard(experiment, parent_run_id=parent)
    assert list(board["run_id"])[0] == out[2] and set(board["run_id"]) == set(out)
    # the champion is the ensemble: predict serves it like any model (encoded images in, class names out)
    preds = predict_source(f"models:/{model_name}@champion", str(dataset / "images"))
    assert set(preds["predicted"]) == {"blue", "red"} and (preds["error"] == "").all()
    # ... and exports like any model: SavedModel and TFLite, each checked against Keras before it is written
    exported = export_model(f"models:/{model_name}@champion", str(tmp_path / "export"))
    assert (tmp_path / "export" / "model.tflite").exists(), exported


def test_with_one_candidate_or_max_members_below_two_the_list_passes_through(
    tracking_store, dataset, candidates, artifact, model_name, capsys
):
    parent = tracking.start_pipeline_run(f"components-{model_name}", str(dataset))
    low = tracking.log_candidate(parent, model_name=model_name, **candidates(100.0).dirs)
    high = tracking.log_candidate(parent, model_name=model_name, **candidates(150.0, backbone="vgg16").dirs)

    assert _run_ensemble(artifact, dataset, parent, [low], model_name) == [low]
    assert "1 usable candidate(s); an ensemble needs 2 or more" in capsys.readouterr().out
    assert _run_ensemble(artifact, dataset, parent, [low, high], model_name, max_members=1) == [low, high]
    assert "ensemble_max_members is 1: no ensemble" in capsys.readouterr().out
    assert len(tracking.candidate_runs(parent)) == 2  # no ensemble run was made


def test_a_retried_ensemble_step_reuses_its_run(tracking_store, dataset, candidates, artifact, model_name):
    parent = tracking.start_pipeline_run(f"components-{model_name}", str(dataset))
    low = tracking.log_candidate(parent, model_name=model_name, **candidates(100.0).dirs)
    high = tracking.log_candidate(parent, model_name=model_name, **candidates(150.0, backbone="vgg16").dirs)

    first = _run_ensemble(artifact, dataset, parent, [low, high], model_name)
    again = _run_ensemble(artifact, dataset, parent, [low, high], model_name)

    assert first == again and len(first) == 3
    assert len(tracking.candidate_runs(parent)) == 3  # the two members and ONE ensemble
