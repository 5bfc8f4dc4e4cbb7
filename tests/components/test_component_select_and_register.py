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
