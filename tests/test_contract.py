"""bakeoff.contract: the step JSON readers' one-line errors, and every GateDecision rendering from one declaration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bakeoff import contract
from bakeoff.contract import FeaturesInfo, GateDecision, HeadInfo, MetricsInfo, ModelInfo
from bakeoff.errors import BakeoffError

ROOT = Path(__file__).resolve().parents[1]


def _write(folder: Path, name: str, data) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(data))
    return str(folder)


def test_contract_imports_no_heavy_library():
    code = "import sys, bakeoff.contract; print(sorted(m for m in ('tensorflow', 'mlflow', 'kfp') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_readers_read_what_the_steps_write(tmp_path):
    model = ModelInfo.read(
        _write(
            tmp_path / "m",
            contract.MODEL_JSON,
            {"classes": ["cat", "dog"], "image_size": "64", "backbone": "vgg16", "cut": None, "finetuned": 1, "x": 1},
        )
    )
    assert model.classes == ("cat", "dog") and model.image_size == 64 and model.finetuned is True
    assert model.cut is None and model.weights == {} and model.history == {}  # null and absent keys: defaults
    head = HeadInfo.read(_write(tmp_path / "h", contract.HEAD_JSON, {"backbone": "vgg16", "classes": ["a", "b"]}))
    assert head.kind == "" and head.image_size is None
    metrics = MetricsInfo.read(
        _write(tmp_path / "e", contract.METRICS_JSON, {"accuracy": 0.75, "classes": ["a", "b"], "n_test": 4})
    )
    assert metrics.accuracy == 0.75 and metrics.values["n_test"] == 4 and metrics.confusion_matrix == ()
    assert FeaturesInfo.read_if_present(str(tmp_path / "nothing")) is None


@pytest.mark.parametrize(
    "reader, data, message",
    [
        (ModelInfo, {"image_size": 32}, "model.json lacks 'classes'; re-run `bakeoff finetune`"),
        (ModelInfo, {"classes": ["a", "b"], "image_size": None}, "model.json lacks 'image_size'"),
        (ModelInfo, {"classes": ["a"], "image_size": 32}, "model.json lists fewer than two classes"),
        (ModelInfo, {"classes": ["a", "b"], "image_size": "big"}, "model.json has a malformed value"),
        (HeadInfo, {"classes": ["a", "b"]}, "head.json lacks 'backbone'; re-run `bakeoff train-head`"),
        (FeaturesInfo, {"backbone": "vgg16"}, "features.json lacks 'image_size'; re-run `bakeoff features`"),
        (MetricsInfo, {"classes": ["a", "b"]}, "metrics.json lacks 'accuracy'; re-run `bakeoff evaluate`"),
        (MetricsInfo, [1, 2], "metrics.json is not a JSON object"),
    ],
)
def test_readers_fail_with_one_line_naming_file_and_key(tmp_path, reader, data, message):
    folder = _write(tmp_path / "step", reader.FILE, data)
    with pytest.raises(BakeoffError) as err:
        reader.read(folder)
    text = str(err.value)
    assert message in text and str(tmp_path / "step") in text and "\n" not in text


def test_missing_file_names_the_step_to_run(tmp_path):
    with pytest.raises(BakeoffError, match=r"missing .*metrics\.json; run `bakeoff evaluate` first"):
        MetricsInfo.read(str(tmp_path))


def _decision(**fields) -> GateDecision:
    base = dict(
        model_name="m",
        challenger_run_id="run-1",
        challenger_version="3",
        challenger_backbone="vgg16",
        test="mcnemar",
        alpha=0.05,
        dataset_hash="abc",
    )
    return GateDecision(**{**base, **fields})


def test_decision_without_comparison_leaves_comparison_fields_out():
    d = _decision(promoted=True, reason="no champion yet")
    record = d.to_dict()
    assert record == {
        "promoted": True,
        "reason": "no champion yet",
        "model_name": "m",
        "challenger_run_id": "run-1",
        "challenger_backbone": "vgg16",
        "challenger_version": "3",
        "champion_version_before": None,
        "champion_version_after": None,
        "test": "mcnemar",
        "alpha": 0.05,
        "min_delta": 0.0,
        "delta": None,
        "p_value": None,
        "dataset_hash": "abc",
    }
    assert json.loads(d.to_json()) == record
    tags = d.tags()
    assert set(tags) == {f"bakeoff.gate.{key}" for key in record}
    assert tags["bakeoff.gate.promoted"] == "True" and tags["bakeoff.gate.p_value"] == ""
    assert d["promoted"] is True and d["reason"] == "no champion yet"
    with pytest.raises(KeyError):
        d["nope"]


def test_decision_with_comparison_renders_every_field():
    d = _decision(
        reason="beats champion v2",
        promoted=True,
        champion_version_before="2",
        champion_version_after="3",
        n=100,
        accuracy_challenger=0.9,
        accuracy_champion=0.8,
        delta=0.1,
        challenger_only=12,
        champion_only=2,
        p_value=0.00646972656,
        n_excluded_seen_by_champion=0,
    )
    record = d.to_dict()
    assert record["n"] == 100 and record["n_excluded_seen_by_champion"] == 0 and len(record) == 20
    assert d.tags()["bakeoff.gate.challenger_only"] == "12"
    report = d.to_markdown()
    assert report.startswith("# Promotion gate: m\n\n**PROMOTED**: beats champion v2\n")
    assert "| p_value | 0.00646973 |" in report and "| n_excluded_seen_by_champion | 0 |" in report
    rows = [line for line in report.splitlines() if line.startswith("| ") and not line.startswith("| field")]
    assert len(rows) == 17  # every field but the headline (promoted, reason, model_name)
