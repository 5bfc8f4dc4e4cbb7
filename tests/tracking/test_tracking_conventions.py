"""MLflow the way its users read it, against a real MLflow store (SQLite + artifact folder): meaningful run
names, the dataset as an input of every candidate, logged models named after the candidate, a described
registered model, each number logged once and no settings as metrics, per-epoch curves at their own time."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from bakeoff import manifest, registry, tracking
from bakeoff.tracking.parent_run import pipeline_run_name

from support import EPOCH_0_MS


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh embedded tracking/registry store for the test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.reset()
    tracking.configure(uri)
    yield uri
    tracking.reset()


@pytest.fixture
def bakeoff_run(store, dataset, candidates, model_name):
    """One pipeline run (KFP run id a UUID) with a pretrained and a random-init candidate, through the gate."""
    kfp_run_id = "3f9a1c2e-77b0-4d7e-9a51-0c2d4e6f8a10"
    before = datetime.now(UTC)
    parent = tracking.start_pipeline_run("conventions", str(dataset), kfp_run_id=kfp_run_id)
    children = [
        tracking.log_candidate(parent, model_name=model_name, **candidates(127.5).dirs),
        tracking.log_candidate(parent, model_name=model_name, **candidates(160.46, pretrained=False).dirs),
    ]
    registry.select_and_register(parent, children, model_name=model_name, dataset_dir=str(dataset))
    return parent, children, before


def test_parent_and_candidate_runs_have_meaningful_names(bakeoff_run, dataset):
    parent, children, before = bakeoff_run
    c = tracking.client()
    name = c.get_run(parent).info.run_name
    match = re.fullmatch(r"conventions-(\d{8}-\d{4})-3f9a1c2e", name)
    assert match, name
    when = datetime.strptime(match.group(1), "%Y%m%d-%H%M").replace(tzinfo=UTC)
    assert abs((when - before).total_seconds()) < 120
    names = [c.get_run(child).info.run_name for child in children]
    assert names == ["mobilenet_v2-imagenet-dense-finetuned", "mobilenet_v2-none-dense-finetuned"]
    # an explicit name still wins, and a run without a KFP id is named without one
    assert c.get_run(tracking.start_pipeline_run("x", str(dataset), run_name="mine")).info.run_name == "mine"
    assert re.fullmatch(r"x-\d{8}-\d{4}", pipeline_run_name("x", None))


def test_candidates_have_the_dataset_as_input(bakeoff_run, dataset):
    parent, children, _ = bakeoff_run
    c = tracking.client()
    digest = manifest.dataset_hash(manifest.read_manifest(dataset, resolve=False))[:16]
    (parent_input,) = c.get_run(parent).inputs.dataset_inputs
    assert parent_input.dataset.digest == digest
    for child in children:
        (candidate_input,) = c.get_run(child).inputs.dataset_inputs
        assert candidate_input.dataset.digest == digest
        assert candidate_input.dataset.name == parent_input.dataset.name
        assert {t.key: t.value for t in candidate_input.tags}["mlflow.data.context"] == "training"


def test_logged_models_are_named_after_the_candidate_and_the_registered_model_is_described(bakeoff_run, model_name):
    parent, children, _ = bakeoff_run
    c = tracking.client()
    for child in children:
        run = c.get_run(child)
        model_id = run.data.tags["bakeoff.model_uri"].removeprefix("models:/")
        assert c.get_logged_model(model_id).name == run.info.run_name
    description = c.get_registered_model(model_name).description
    assert "candidate" in description and "champion" in description and "`image`" in description
    # a description edited by a user is kept when the gate registers the next version
    c.update_registered_model(model_name, description="ours")
    from bakeoff.tracking.models import register_logged_model

    register_logged_model(c.get_run(children[1]).data.tags["bakeoff.model_uri"], model_name)
    assert c.get_registered_model(model_name).description == "ours"


def test_each_number_is_logged_once_and_settings_are_params(bakeoff_run):
    _, children, _ = bakeoff_run
    run = tracking.client().get_run(children[0])
    metrics, params = run.data.metrics, run.data.params
    assert "latency_ms_per_image" in metrics and "model_size_mb" in metrics
    for twice in ("test_latency_ms_per_image", "test_model_size_mb", "test_image_size"):
        assert twice not in metrics
    assert "test_n_bootstrap" not in metrics and "test_ci_level" not in metrics
    assert params["test_n_bootstrap"] == "100" and params["test_ci_level"] == "0.95"
    # no metric repeats another under a second name
    bare = [key.removeprefix("test_") for key in metrics]
    assert len(bare) == len(set(bare)), sorted(metrics)


def test_per_epoch_curves_keep_the_epochs_wall_clock_time(bakeoff_run):
    _, children, _ = bakeoff_run
    c = tracking.client()
    head = c.get_metric_history(children[0], "head_val_accuracy")
    assert [(m.step, m.timestamp) for m in head] == [(k, EPOCH_0_MS + 1000 * k) for k in range(3)]
    finetune = c.get_metric_history(children[0], "finetune_loss")
    assert [(m.step, m.timestamp) for m in finetune] == [(k, EPOCH_0_MS + 60_000 + 1000 * k) for k in range(2)]
    # a test metric has no epoch: it is at the run's start
    (accuracy,) = c.get_metric_history(children[0], "test_accuracy")
    assert accuracy.timestamp == c.get_run(children[0]).info.start_time


def test_history_without_epoch_times_falls_back_to_the_given_time():
    from bakeoff.tracking.batching import history_metrics

    points = history_metrics({"loss": [0.5, 0.4, 0.3]}, "head", [111, 222], 999)
    assert [(p.key, p.step, p.timestamp) for p in points] == [
        ("head_loss", 0, 111),
        ("head_loss", 1, 222),
        ("head_loss", 2, 999),
    ]
