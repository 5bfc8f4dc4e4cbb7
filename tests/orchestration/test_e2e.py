"""A REAL end-to-end local pipeline run: `bakeoff run` through kfp.local on real images with real pretrained weights.

Two backbones (MobileNetV2 ImageNet and VGG16 HED from the offline mirror), tiny images, one fine-tune epoch.
Then a second, "scheduled" run on the unchanged data: ingest and features come from the cache and the
champion alias does not move.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bakeoff.cli import main

from support import local_run_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

CLASSES = "sneaker,bag,trouser"
MODEL = "e2e-classifier"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, weights_mirror):
    """An isolated cwd (embedded MLflow store lives under it), feature cache and demo data."""
    from bakeoff.demo_data import make_demo_data

    root = tmp_path_factory.mktemp("e2e")
    make_demo_data(str(root / "raw"), per_class=12, classes=CLASSES)
    mp = local_run_env(root, weights_mirror)
    yield root
    mp.undo()


def _run(root: Path, backbones: str) -> tuple[int, str, dict, Path]:
    """`bakeoff run` as a user types it; returns exit code, terminal output, result.json and the run folder."""
    import contextlib
    import io

    runs = root / ".bakeoff" / "runs"
    before = set(runs.glob("*")) if runs.exists() else set()
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(
            [
                "run",
                "--data",
                str(root / "raw" / "raw-img"),
                "--label-map",
                str(root / "raw" / "translate.json"),
                "--classes",
                CLASSES,
                "--backbones",
                backbones,
                "--weights",
                "mobilenet_v2=imagenet,vgg16=hed",
                "--image-size",
                "32",
                "--head-epochs",
                "3",
                "--finetune-epochs",
                "1",
                "--ensemble-max-members",  # opt-in (off by default): the e2e run exercises the ensemble step's work
                "3",
                "--experiment",
                "e2e",
                "--model-name",
                MODEL,
            ]
        )
    [run_dir] = set(runs.glob("*")) - before
    result = json.loads((run_dir / "result.json").read_text())
    return code, buffer.getvalue(), result, run_dir


@pytest.fixture(scope="module")
def first_run(workspace):
    return _run(workspace, "mobilenet_v2,vgg16")


def test_first_run_trains_both_backbones_and_promotes_a_champion(workspace, first_run, capsys):
    from mlflow import MlflowClient

    code, out, result, run_dir = first_run
    assert code == 0, (run_dir / "pipeline.log").read_text()[-3000:]
    for expected in (
        "done    fingerprint",
        "done    ingest",
        "done    features #2",
        "done    evaluate #2",
        "done    ensemble",
        "select-and-register",
        "leaderboard",
        "gate (mcnemar)",
        "done    insight",
        "learning curve: From ",
        "suspected label errors: ",
        "mlflow ui",
    ):
        assert expected in out, expected
    decision = result["decision"]
    assert decision["promoted"] is True  # no champion yet
    singles = {row["backbone"] for row in result["rows"] if not row["backbone"].startswith("ensemble:")}
    assert singles == {"mobilenet_v2", "vgg16"}
    # the ensemble candidate (when a second member helped on val) is one more row, ranked like the others
    assert len(result["rows"]) - len(singles) in (0, 1)
    assert all(0.0 <= row["test_accuracy"] <= 1.0 for row in result["rows"])
    assert "| backbone" in result["leaderboard"] and "vgg16" in result["leaderboard"]

    # both URIs explicitly: an earlier test in this process may have left MLflow's registry URI elsewhere
    client = MlflowClient(tracking_uri=result["tracking_uri"], registry_uri=result["tracking_uri"])
    assert result["tracking_uri"].startswith(f"sqlite:///{workspace}")  # the embedded default under the cwd
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == str(decision["champion_version_after"])
    [experiment] = [e for e in client.search_experiments() if e.name == "e2e"]
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    everyone = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    children = [r for r in everyone if "bakeoff.ensemble_members" not in r.data.tags]
    for ensemble in [r for r in everyone if r not in children]:  # its members are this run's two candidates
        assert set(ensemble.data.tags["bakeoff.ensemble_members"].split(",")) == {r.info.run_id for r in children}
        assert ensemble.data.metrics["val_accuracy"] >= max(r.data.metrics["val_accuracy"] for r in children)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.data.params.get("backbone") for r in children} == {"mobilenet_v2", "vgg16"}
    # named for people reading MLflow: experiment-date-KFP run; candidate = backbone, weights, variant; each
    # candidate's logged model is the portable serving model (encoded images in), named like its run
    assert parents[0].info.run_name.startswith("e2e-") and len(parents[0].info.run_name.split("-")) == 4
    names = {r.info.run_name for r in children}
    assert {n.rsplit("-", 2)[0] for n in names} == {"mobilenet_v2-imagenet", "vgg16-hed"}, names
    for child in children:  # the variant says whether the fine-tune was kept: only when it gained on val
        gain = child.data.metrics.get("finetune_val_gain")
        kept = "finetuned" if gain is not None and gain > 0 else "frozen"
        assert child.info.run_name.endswith(f"-{kept}"), (child.info.run_name, gain)
    for child in children:
        logged = client.get_logged_model(child.data.tags["bakeoff.model_uri"].removeprefix("models:/"))
        assert logged.name == child.info.run_name
        assert child.inputs.dataset_inputs[0].dataset.digest == parents[0].inputs.dataset_inputs[0].dataset.digest

    # KFP's own artifacts: ClassificationMetrics for the UI (confusion matrix + ROC) on every branch
    outputs = list(
        Path(result["pipeline_root"]).glob(
            f"bakeoff-{run_dir.name}-*/for-loop-*-iteration-*/evaluate/executor_output.json"
        )
    )
    assert len(outputs) == 2
    for path in outputs:
        artifacts = json.loads(path.read_text())["artifacts"]
        meta = artifacts["classification"]["artifacts"][0]["metadata"]
        assert len(meta["confusionMatrix"]["rows"]) == 3
        assert meta["confidenceMetrics"]
        errors = Path(artifacts["errors"]["artifacts"][0]["uri"]).read_text()  # the error analysis (HTML)
        assert "Worst mistakes" in errors and "Per class" in errors

    # insight after the gate: the challenger's learning curve and suspected label errors, in KFP and MLflow
    insight = result["insight"]
    # (an ensemble's insight reads its first member's features: the best single candidate on val)
    assert insight["backbone"] == decision["challenger_backbone"].removeprefix("ensemble:").split("+")[0]
    assert insight["skipped"] == {}
    assert "Learning curve" in Path(insight["learning_curve_html"]).read_text()
    assert "Suspected label errors" in Path(insight["label_issues_html"]).read_text()
    parent = parents[0].info.run_id
    logged = {f.path.rsplit("/", 1)[-1] for f in client.list_artifacts(parent, "insight")}
    assert {"learning_curve.png", "learning_curve.csv", "label_issues.csv", "label_issues.html"} <= logged
    assert parents[0].data.metrics["insight_label_issues"] == insight["label_issues"]

    # the README's next line, as written: `compare` finds the run's experiment ("e2e", not the default) itself
    capsys.readouterr()
    assert main(["compare", "--last", "5", "--output", "json"]) == 0
    board = json.loads(capsys.readouterr().out)
    assert {row["backbone"] for row in board} >= {"mobilenet_v2", "vgg16"}
    assert "champion" in {row["aliases"] for row in board}


def test_scheduled_rerun_on_unchanged_data_reuses_cache_and_keeps_champion(workspace, first_run):
    """One backbone this time (keeps CI short): its features and the ingest are cache hits."""
    from mlflow import MlflowClient

    assert first_run[0] == 0
    uri = first_run[2]["tracking_uri"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    before = client.get_model_version_by_alias(MODEL, "champion").version
    code, out, result, run_dir = _run(workspace, "mobilenet_v2")
    assert code == 0, (run_dir / "pipeline.log").read_text()[-3000:]
    assert "done    fingerprint" in out and "cached  ingest" in out  # the data was listed again: unchanged
    assert out.count("cached  features") == 1
    assert "done    ingest" not in out and "done    features" not in out
    assert result["decision"]["promoted"] is False
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == str(before)


def test_failing_task_is_one_line_error_naming_task_and_log(workspace, capsys):
    """A class typo is now refused before the pipeline starts (issue 8: the run form is validated first); data that
    passes every up-front check but holds no image still fails in a task: one line naming the task and the log."""
    argv = [
        "run",
        "--data",
        str(workspace / "raw" / "raw-img"),
        "--label-map",
        str(workspace / "raw" / "translate.json"),
    ]
    code = main([*argv, "--classes", "unicorn,dragon", "--experiment", "e2e-bad"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: config (options): ") and "no class 'unicorn'" in err
    assert "\n" not in err

    for name in ("cat", "dog"):  # class folders holding no image: only ingest can tell
        (workspace / "junk" / name).mkdir(parents=True, exist_ok=True)
        (workspace / "junk" / name / "notes.txt").write_text("not an image")
    code = main(["run", "--data", str(workspace / "junk"), "--backbones", "mobilenet_v2", "--experiment", "e2e-bad"])
    err = capsys.readouterr().err.strip()
    assert code == 1  # the form was valid, the pipeline ran and failed: exit 1, not the usage error's 2
    assert err.startswith("error: task 'ingest' failed:") and "classes" in err and "pipeline.log" in err
    assert "\n" not in err


def test_kfp_ui_and_mlflow_show_the_candidates_the_val_choice_the_curve_and_the_label_issues(first_run):
    """Issue 10's last "done means": what a person opens (the KFP task artifacts, the MLflow runs) shows every
    candidate head tried, that the challenger is the val winner, the learning curve and the label-issue report."""
    from mlflow import MlflowClient

    code, _, result, run_dir = first_run
    assert code == 0, (run_dir / "pipeline.log").read_text()[-3000:]
    root = Path(result["pipeline_root"])
    decision = result["decision"]

    # KFP UI: each branch's train-head shows its search table (every head tried on val, exactly one kept)
    # this run's tasks only: other tests of the module run more pipelines into the same root
    heads = sorted(root.glob(f"bakeoff-{run_dir.name}-*/for-loop-*-iteration-*/train-head/executor_output.json"))
    assert len(heads) == 2
    for path in heads:
        table = Path(json.loads(path.read_text())["artifacts"]["search"]["artifacts"][0]["uri"]).read_text()
        assert table.startswith("# Head search (chosen on val)") and table.count("**yes**") == 1
    # ... and select-and-register's leaderboard: val beside test, best val first, and that row is the challenger
    board = result["leaderboard"]
    header = next(line for line in board.splitlines() if line.startswith("| backbone"))
    assert header.index("val_accuracy") < header.index("test_accuracy")
    ranks = [(row["val_accuracy"], row["val_f1_macro"]) for row in result["rows"]]
    assert ranks == sorted(ranks, reverse=True)
    assert result["rows"][0]["run_id"] == decision["challenger_run_id"]  # ties on val: both break them by run id
    assert f"challenger {decision['challenger_run_id']}" in board
    # ... and the insight task's two reports
    assert "Learning curve" in Path(result["insight"]["learning_curve_html"]).read_text()
    assert "Suspected label errors" in Path(result["insight"]["label_issues_html"]).read_text()

    # MLflow: every candidate run carries its search table; the parent the leaderboard (val column), the gate's
    # report and the insight files, learning curve and label issues as pages a browser shows
    client = MlflowClient(tracking_uri=result["tracking_uri"], registry_uri=result["tracking_uri"])
    for row in result["rows"]:
        configs = {f.path for f in client.list_artifacts(row["run_id"], "config")}
        assert "config/search.md" in configs, configs
    parent = client.get_run(decision["challenger_run_id"]).data.tags["mlflow.parentRunId"]
    top = {f.path for f in client.list_artifacts(parent)}
    assert {"leaderboard.md", "gate_report.md"} <= top, top
    leaderboard = Path(client.download_artifacts(parent, "leaderboard.md")).read_text()
    assert "val_accuracy" in leaderboard and decision["challenger_run_id"] in leaderboard
    insight = {f.path.rsplit("/", 1)[-1] for f in client.list_artifacts(parent, "insight")}
    assert {"learning_curve.html", "learning_curve.md", "label_issues.html", "label_issues.csv"} <= insight
