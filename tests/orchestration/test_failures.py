"""A failed pipeline leaves honest state, end to end through kfp.local (issue 8, items 2 and 3).

The choice for "one backbone fails" (docs/reliability.md, "Pipeline"): everything knowable up front fails the run
before any work (validation); a branch that still fails at run time fails the whole run, and the ExitHandler's task
ends the parent and every candidate run FAILED with the reason; no version is registered, no alias moves, and
`bakeoff compare` and the gate ignore the half-done run. KFP cannot collect a ParallelFor whose iteration failed,
so "finish the others and gate them" would need a gate that runs on partial results: a later issue, if wanted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bakeoff import tracking
from bakeoff.cli import main

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

CLASSES = "sneaker,bag,trouser"


@pytest.fixture
def broken_mirror(tmp_path, weights_mirror) -> Path:
    """The real mirror's MobileNetV2 ImageNet weights, plus `vgg16/broken`: those same MobileNetV2 weights filed
    under vgg16 with a correct sidecar. It resolves (validation passes), then does not fit VGG16 at run time."""
    mirror = tmp_path / "mirror"
    shutil.copytree(Path(weights_mirror) / "mobilenet_v2", mirror / "mobilenet_v2")
    (mirror / "vgg16").mkdir()
    shutil.copy(mirror / "mobilenet_v2" / "imagenet.weights.h5", mirror / "vgg16" / "broken.weights.h5")
    shutil.copy(mirror / "mobilenet_v2" / "imagenet.json", mirror / "vgg16" / "broken.json")
    return mirror


def test_a_branch_that_fails_at_run_time_fails_the_run_honestly(
    tmp_path, monkeypatch, demo_raw, broken_mirror, model_name, capsys
):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("BAKEOFF_WEIGHTS_URI", str(broken_mirror))
    monkeypatch.setenv("BAKEOFF_CACHE_URI", str(tmp_path / "feature-cache"))
    argv = ["run", "--data", demo_raw.raw_dir, "--label-map", demo_raw.label_map, "--classes", CLASSES]
    argv += ["--backbones", "mobilenet_v2,vgg16", "--weights", "mobilenet_v2=imagenet,vgg16=broken"]
    argv += ["--image-size", "32", "--head-epochs", "1", "--finetune-epochs", "0"]
    argv += ["--experiment", "failing", "--model-name", model_name]

    code = main(argv)

    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err  # a failed pipeline: exit 1 (usage errors exit 2)
    assert err.startswith("error: task 'features") and "do not fit vgg16" in err and "pipeline.log" in err
    log = next(tmp_path.glob(".bakeoff/runs/*/pipeline.log")).read_text(errors="replace")
    assert "ended 2 MLflow run(s) FAILED" in log  # the ExitHandler's finalize: the parent + mobilenet_v2's run

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    [experiment] = [e for e in client.search_experiments() if e.name == "failing"]
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("bakeoff.kind") == "pipeline"]
    candidates = [r for r in runs if r.data.tags.get("bakeoff.kind") == "candidate"]
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    assert parents[0].data.tags["bakeoff.failure"].startswith("pipeline FAILED")
    # the healthy branch finished its evaluation: its work is kept (logged model, metrics), marked FAILED with why
    assert [c.data.tags["bakeoff.backbone"] for c in candidates] == ["mobilenet_v2"]
    assert candidates[0].info.status == "FAILED" and "test_accuracy" in candidates[0].data.metrics
    assert client.search_model_versions(f"name = '{model_name}'") == []  # no version without a gate decision
    tracking.reset()
    tracking.configure(uri)
    assert tracking.leaderboard("failing").empty  # `bakeoff compare` shows nothing of the failed run


def test_the_pipelines_own_validate_step_stops_a_bad_form_before_any_work(tmp_path, weights_mirror, demo_raw):
    """What a KFP UI user types reaches no CLI: the pipeline's first step refuses it, every problem listed."""
    from pipelines.settings import Parameters, RunConfig

    form = Parameters(
        data_uri=demo_raw.raw_dir,
        backbones=["mobilenet_v2", "resnet"],
        weights="mobilenet_v2=imagenet,vgg=hed",
        experiment="kfp-ui",
    )
    (tmp_path / "config.json").write_text(RunConfig(parameters=form).model_dump_json())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "BAKEOFF_WEIGHTS_URI": weights_mirror}
    argv = [sys.executable, "-m", "pipelines.local", "--config", str(tmp_path / "config.json")]
    argv += ["--result", str(tmp_path / "result.json"), "--workdir", str(tmp_path / "w"), "--run-key", "ui"]
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)

    assert done.returncode == 1
    assert json.loads((tmp_path / "result.json").read_text())["failed"] is True
    assert "run form: backbones: unknown backbone 'resnet' (did you mean resnet50?)" in done.stdout
    assert "run form: weights: mapping key 'vgg' is not a backbone (did you mean vgg16?)" in done.stdout
    [folder] = (tmp_path / "w" / "kfp").glob("bakeoff-ui-*")
    assert sorted(p.name for p in folder.iterdir()) == ["finalize"]  # validate failed, nothing else ever started
    assert "FAILED before its MLflow run was opened: nothing to end" in done.stdout

    from mlflow import MlflowClient

    assert [e.name for e in MlflowClient(tracking_uri=uri).search_experiments()] == ["Default"]
