"""components.select_and_register: the gate over the candidates, the leaderboard, the decision, the run finished."""

from __future__ import annotations

import json

from kfp.dsl import Dataset, Markdown, Metrics

from bakeoff import contract, tracking
from components.select_and_register import select_and_register


def _candidate_metrics(artifact, accuracies: dict[str, float]) -> list:
    return [artifact(Metrics, f"metrics-{name}", backbone=name, accuracy=acc) for name, acc in accuracies.items()]


def test_select_and_register_promotes_the_best_and_finishes_the_run(
    tracking_store, dataset, candidates, artifact, model_name, capsys
):
    experiment = f"components-{model_name}"
    parent = tracking.start_pipeline_run(experiment, str(dataset))
    worse = tracking.log_candidate(parent, model_name=model_name, **candidates(160.46, backbone="vgg16").dirs)
    best = tracking.log_candidate(parent, model_name=model_name, **candidates(127.5).dirs)
    leaderboard, decision = artifact(Markdown, "leaderboard"), artifact(Metrics, "decision")

    out = select_and_register(
        Dataset(uri=str(dataset)),
        parent,
        [worse, best],
        _candidate_metrics(artifact, {"vgg16": 0.87, "mobilenet_v2": 1.0}),
        experiment,
        model_name,
        "mcnemar",
        0.05,
        leaderboard,
        decision,
    )

    result = json.loads(out)
    assert result["promoted"] is True and result["reason"] == "no champion yet"
    assert result["challenger_run_id"] == best and result["challenger_backbone"] == "mobilenet_v2"
    assert "n" not in result  # no champion to compare with: no comparison fields
    assert "candidate vgg16: accuracy 0.87" in capsys.readouterr().out

    text = open(leaderboard.path).read()
    assert text.startswith("# Bake-off leaderboard\n\n| backbone | weights | pretrained | image_size |")
    assert text.index("mobilenet_v2") < text.index("vgg16")  # best first
    assert f"**Gate (mcnemar):** challenger {best} promoted to champion: no champion yet" in text
    rows = leaderboard.metadata["rows"]
    assert [r["run_id"] for r in rows] == [best, worse] and rows[0]["test_accuracy"] == 1.0
    assert list(rows[0]) == list(tracking.LEADERBOARD_COLUMNS)

    assert decision.metadata["promoted"] == 1.0  # log_metric overwrote the flag with its number
    assert decision.metadata["challenger_version"] == result["challenger_version"]
    assert "p_value" not in decision.metadata  # None fields are left out

    c = tracking.client()
    run = c.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.tags["bakeoff.gate.promoted"] == "True"
    assert run.data.tags[contract.BEST_BACKBONE_TAG] == "mobilenet_v2"
    assert {contract.LEADERBOARD_MD, contract.GATE_REPORT_MD, contract.GATE_DECISION_JSON} <= {
        a.path for a in c.list_artifacts(parent)
    }
    assert str(c.get_model_version_by_alias(model_name, "champion").version) == result["challenger_version"]


def test_the_challenger_is_chosen_on_val_even_where_test_would_choose_another(
    tracking_store, tmp_path, artifact, model_name
):
    from support import build_candidate, build_val_test_disagree_dataset

    data = build_val_test_disagree_dataset(tmp_path / "data")
    experiment = f"honest-{model_name}"
    parent = tracking.start_pipeline_run(experiment, str(data))
    val_best = build_candidate(tmp_path / "t100", data, 100.0)  # right on val's reds 128..150
    test_best = build_candidate(tmp_path / "t150", data, 150.0, backbone="vgg16")  # right on test's reds 100..128
    runs = {t.threshold: tracking.log_candidate(parent, model_name=model_name, **t.dirs) for t in (val_best, test_best)}
    metrics = {t: tracking.client().get_run(r).data.metrics for t, r in runs.items()}
    assert metrics[100.0]["val_accuracy"] == 1.0 and metrics[150.0]["val_accuracy"] < 1.0
    assert metrics[150.0]["test_accuracy"] == 1.0 and metrics[100.0]["test_accuracy"] < 1.0  # test disagrees
    assert {"val_f1_macro", "val_n"} <= set(metrics[100.0])

    out = select_and_register(
        Dataset(uri=str(data)),
        parent,
        [runs[150.0], runs[100.0]],
        _candidate_metrics(artifact, {"vgg16": 1.0, "mobilenet_v2": 0.5}),
        experiment,
        model_name,
        "mcnemar",
        0.05,
        artifact(Markdown, "leaderboard"),
        artifact(Metrics, "decision"),
    )

    assert json.loads(out)["challenger_run_id"] == runs[100.0]  # chosen on val, not on test
    rows = tracking.leaderboard(experiment, parent_run_id=parent)
    assert list(rows["run_id"]) == [runs[100.0], runs[150.0]]  # the leaderboard ranks as the gate chooses
