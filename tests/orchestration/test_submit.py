"""`bakeoff submit` / `bakeoff schedule` against a loopback server speaking KFP's v2beta1 REST API."""

from __future__ import annotations

from pathlib import Path

import pytest
from kfp_ir import parse_compiled

from bakeoff.cli import main

from support import free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "do-not-send-this-secret-anywhere"

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)


def _assert_no_secret(api):
    for req in api.requests:
        assert SECRET.encode() not in req.body
        assert all(SECRET.encode() not in data for data in req.files.values())


def test_submit_uploads_a_version_and_starts_a_run(kfp_server, tmp_path, capsys):
    api = kfp_server
    code = main(
        [
            "submit",
            "--host",
            api.url,
            "--config",
            str(ROOT / "configs" / "demo.yaml"),
            "--data",
            "s3://team-bucket/raw/animals",
            "--backbones",
            "mobilenet_v2,vgg16,resnet50",
            "--finetune-epochs",
            "3",
            "--kfp-experiment",
            "bakeoff-ci",
            "--run-name",
            "nightly",
        ]
    )
    assert code == 0
    assert api.calls("GET", "/healthz")
    [upload] = api.calls("POST", "/pipelines/upload")
    assert upload.query["name"] == ["bakeoff"]
    [version] = api.calls("POST", "/pipelines/upload_version")
    pipeline_id = next(iter(api.pipelines))
    assert version.query["pipelineid"] == [pipeline_id]
    # what was uploaded is the real compiled pipeline: two YAML documents that parse into KFP's protobufs
    package = tmp_path / "uploaded.yaml"
    package.write_bytes(api.uploads[-1])
    spec, k8s = parse_compiled(package)
    assert spec.pipeline_info.name == "bakeoff" and "exec-features" in k8s
    [exp] = api.calls("POST", "/experiments")
    assert exp.json["display_name"] == "bakeoff-ci"
    [run] = api.calls("POST", "/runs")
    assert run.json["display_name"] == "nightly"
    assert run.json["experiment_id"] == next(iter(api.experiments))
    ref = run.json["pipeline_version_reference"]
    assert ref["pipeline_id"] == pipeline_id
    assert ref["pipeline_version_id"] in api.versions
    assert api.versions[ref["pipeline_version_id"]]["display_name"] == version.query["name"][0]
    params = run.json["runtime_config"]["parameters"]
    assert params["data_uri"] == "s3://team-bucket/raw/animals"
    assert params["backbones"] == ["mobilenet_v2", "vgg16", "resnet50"]
    assert params["finetune_epochs"] == 3
    assert params["weights"] == "mobilenet_v2=imagenet,vgg16=hed"  # from the config
    _assert_no_secret(api)
    assert next(iter(api.runs)) in capsys.readouterr().out


@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_every_parameter_is_sent_with_defaults_config_command_line_precedence(kfp_server, command):
    """The run's parameters are the whole run form: Parameters defaults < the config file < the options."""
    import yaml

    from pipelines.settings import Parameters

    api = kfp_server
    demo = ROOT / "configs" / "demo.yaml"
    extra = ["--cron", "0 3 * * 1"] if command == "schedule" else []
    cli = ["--data-uri", "s3://b/raw", "--val-fraction", "0.2", "--data-version", "2026-11", "--batch-size", "16"]
    assert main([command, "--host", api.url, "--config", str(demo), *extra, *cli, "--gate-test", "mcnemar-midp"]) == 0
    [created] = api.calls("POST", "/recurringruns" if command == "schedule" else "/runs")
    expected = {
        **Parameters().model_dump(),
        **yaml.safe_load(demo.read_text())["parameters"],
        "data_uri": "s3://b/raw",
        "val_fraction": 0.2,
        "data_version": "2026-11",
        "batch_size": 16,
        "gate_test": "mcnemar-midp",
    }
    assert created.json["runtime_config"]["parameters"] == expected


def test_second_submit_reuses_pipeline_and_experiment(kfp_server):
    api = kfp_server
    args = ["submit", "--host", api.url, "--data", "s3://b/raw"]
    assert main(args) == 0 and main(args) == 0
    assert len(api.calls("POST", "/pipelines/upload")) == 1  # the pipeline once, then versions
    assert len(api.calls("POST", "/pipelines/upload_version")) == 2
    assert len(api.calls("POST", "/experiments")) == 1
    runs = api.calls("POST", "/runs")
    assert len(runs) == 2
    assert (
        runs[0].json["pipeline_version_reference"]["pipeline_version_id"]
        != runs[1].json["pipeline_version_reference"]["pipeline_version_id"]
    )


def test_schedule_creates_recurring_run_one_at_a_time_no_catchup(kfp_server, tmp_path):
    api = kfp_server
    package = tmp_path / "pipeline.yaml"
    assert main(["compile", "--out", str(package)]) == 0
    code = main(
        [
            "schedule",
            "--host",
            api.url,
            "--package",
            str(package),
            "--data",
            "s3://b/raw",
            "--cron",
            "0 3 * * 1",
            "--name",
            "weekly-retrain",
        ]
    )
    assert code == 0
    assert api.uploads[-1] == package.read_bytes()
    [job] = api.calls("POST", "/recurringruns")
    body = job.json
    assert body["display_name"] == "weekly-retrain"
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"  # 6 fields, seconds first
    assert int(body["max_concurrency"]) == 1
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["runtime_config"]["parameters"]["data_uri"] == "s3://b/raw"
    assert body["pipeline_version_reference"]["pipeline_version_id"] in api.versions
    _assert_no_secret(api)


def test_rescheduling_replaces_the_recurring_run_of_that_name(kfp_server, tmp_path):
    api = kfp_server
    package = tmp_path / "pipeline.yaml"
    assert main(["compile", "--out", str(package)]) == 0
    base = ["schedule", "--host", api.url, "--package", str(package), "--data", "s3://b/raw"]
    assert main([*base, "--cron", "0 3 * * 1", "--name", "weekly-retrain"]) == 0
    assert main([*base, "--cron", "0 4 * * 1", "--name", "other-schedule"]) == 0
    [first] = [k for k, v in api.recurring.items() if v["display_name"] == "weekly-retrain"]
    assert main([*base, "--cron", "0 5 * * 1", "--name", "weekly-retrain"]) == 0
    weekly = [v for v in api.recurring.values() if v["display_name"] == "weekly-retrain"]
    assert len(weekly) == 1 and weekly[0]["recurring_run_id"] != first
    assert weekly[0]["trigger"]["cron_schedule"]["cron"] == "0 0 5 * * 1"  # the new schedule won
    assert [r.path for r in api.calls("DELETE", f"/recurringruns/{first}")]  # the old one was deleted
    assert any(v["display_name"] == "other-schedule" for v in api.recurring.values())  # others untouched


@pytest.mark.parametrize("cron", ["* * *", "0 0 0 3 * * 1 2"])
def test_schedule_rejects_bad_cron_before_any_request(kfp_server, cron, capsys):
    assert main(["schedule", "--host", kfp_server.url, "--data", "s3://b/raw", "--cron", cron]) == 2
    assert "6 fields" in capsys.readouterr().err
    assert kfp_server.requests == []


def test_unreachable_endpoint_is_one_line_error(capsys):
    port = free_port()  # free a moment ago: nothing listens there
    assert main(["submit", "--host", f"http://127.0.0.1:{port}", "--data", "s3://b/raw"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach Kubeflow Pipelines") and "\n" not in err


def test_submit_needs_data(kfp_server, capsys):
    assert main(["submit", "--host", kfp_server.url]) == 2
    assert "--data" in capsys.readouterr().err
