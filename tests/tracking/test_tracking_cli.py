"""CLI (compare, promote, predict, ui) against the real server, and the embedded SQLite default."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import boto3
import pandas as pd
import pytest

from bakeoff import manifest, registry, tracking
from bakeoff.cli import main
from bakeoff.redaction import redact, safe_params

from support import S3_KEY_ID, S3_SECRET


def _pipeline(dataset, candidates, model_name, thresholds, experiment):
    parent = tracking.start_pipeline_run(experiment, str(dataset), run_name="cli")
    children = [tracking.log_candidate(parent, model_name=model_name, **candidates(t).dirs) for t in thresholds]
    decision = registry.select_and_register(parent, children, model_name=model_name, dataset_dir=str(dataset))
    tracking.finish_pipeline_run(parent, tracking.leaderboard(experiment, parent_run_id=parent), decision)
    return parent, children, decision


def _raw_source(dataset: Path, root: Path) -> tuple[Path, dict]:
    """A raw folder: 6 real test images in nested folders + a corrupt, a zero-byte and a text file."""
    df = manifest.read_manifest(dataset)
    test = df[df["split"] == "test"].iloc[::17].head(6)
    expected = {}
    for i, row in enumerate(test.itertuples()):
        rel = f"batch{i % 2}/img{i}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(row.uri, root / rel)
        expected[rel] = row.label
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    return root, expected


def _check_predictions(csv: Path, expected: dict) -> None:
    out = pd.read_csv(csv, keep_default_na=False)
    assert {"path", "predicted", "probability", "error", "prob_blue", "prob_red"} <= set(out.columns)
    good = out[out["error"] == ""]
    assert dict(zip(good["path"], good["predicted"])) == expected  # the champion is a perfect model here
    assert (good["probability"].astype(float) > 0.5).all()
    bad = out[out["error"] != ""].set_index("path")
    assert set(bad.index) == {"broken.jpg", "empty.png", "notes.txt"}
    assert bad.loc["empty.png", "error"] == "zero-byte"
    assert (bad["predicted"] == "").all()


def test_cli_compare_promote_predict(tracking_env, dataset, candidates, model_name, tmp_path, capsys, monkeypatch):
    experiment = f"cli-{model_name}"
    parent, children, decision = _pipeline(dataset, candidates, model_name, [160.46, 127.5], experiment)
    assert decision["promoted"] and decision["challenger_run_id"] == children[1]
    capsys.readouterr()

    # compare: rich table, best first
    assert main(["compare", "--experiment", experiment, "--last", "1", "--csv", str(tmp_path / "board.csv")]) == 0
    table = capsys.readouterr().out
    assert "mobilenet_v2" in table and "1.0000" in table and "0.8700" in table
    assert table.index("1.0000") < table.index("0.8700")
    board = pd.read_csv(tmp_path / "board.csv")
    assert list(board["run_id"]) == [children[1], children[0]]
    assert main(["compare", "--experiment", "no-such-experiment"]) == 2
    assert "error: no MLflow experiment" in capsys.readouterr().err

    # promote by hand: the champion is already this run's best -> not moved, decision printed
    assert main(["promote", parent]) == 0
    out = capsys.readouterr()
    assert '"promoted": false' in out.out and "already is the champion" in out.err
    assert main(["promote", parent, "--test", "nope"]) == 2

    # predict over a folder and a zip archive: class names per image, reasons for bad files
    source, expected = _raw_source(dataset, tmp_path / "raw")
    csv = tmp_path / "preds.csv"
    assert main(["predict", "--model", f"models:/{model_name}@champion", str(source), "--out", str(csv)]) == 0
    printed = capsys.readouterr().out
    assert "6 predicted" in printed and "3 with errors" in printed
    _check_predictions(csv, expected)
    archive = tmp_path / "raw.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in source.rglob("*"):
            if path.is_file():
                zf.write(path, path.relative_to(source).as_posix())
    assert main(["predict", "-m", f"models:/{model_name}@champion", str(archive), "-o", str(tmp_path / "z.csv")]) == 0
    _check_predictions(tmp_path / "z.csv", expected)

    # ... and over an s3:// prefix (the client reads the SOURCE with its own S3 credentials)
    monkeypatch.setenv("AWS_ENDPOINT_URL", tracking_env.s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = boto3.client(
        "s3",
        endpoint_url=tracking_env.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_KEY_ID,
        aws_secret_access_key=S3_SECRET,
    )
    s3.create_bucket(Bucket="incoming")
    for path in source.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), "incoming", f"drop/{path.relative_to(source).as_posix()}")
    assert (
        main(["predict", "-m", f"models:/{model_name}@champion", "s3://incoming/drop", "-o", str(tmp_path / "s3.csv")])
        == 0
    )
    _check_predictions(tmp_path / "s3.csv", expected)

    # a model that does not exist: one-line error, exit 2
    assert main(["predict", "-m", "models:/no-such-model@champion", str(source), "-o", str(tmp_path / "x.csv")]) == 2
    assert "error: cannot load models:/no-such-model@champion" in capsys.readouterr().err


def test_ui_command_for_a_server(tracking_env, capsys):
    assert main(["ui"]) == 0
    assert tracking_env.url in capsys.readouterr().out


def test_embedded_default_sqlite_and_artifact_folder(dataset, candidates, tmp_path, monkeypatch, capsys):
    """No configuration: everything lands in ./.bakeoff/mlflow and the run ends by printing `mlflow ui ...`."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    tracking.reset()
    try:
        uri = tracking.configure()
        db = tmp_path / ".bakeoff" / "mlflow" / "mlflow.db"
        assert uri == f"sqlite:///{db}"
        parent, children, decision = _pipeline(dataset, candidates, "embedded-model", [127.5], "embedded")
        assert decision["promoted"] and db.exists()
        printed = capsys.readouterr().out
        expected = (
            f"mlflow ui --backend-store-uri sqlite:///{db} --default-artifact-root "
            f"{tmp_path / '.bakeoff' / 'mlflow' / 'artifacts'}"
        )
        assert expected in printed
        artifacts = tmp_path / ".bakeoff" / "mlflow" / "artifacts"
        assert list(artifacts.glob("models/m-*/artifacts/artifacts/model.keras")) or list(
            artifacts.rglob("model.keras")
        )
        assert list(artifacts.rglob("predictions.parquet"))
        model = mlflow.pyfunc.load_model("models:/embedded-model@champion")
        assert [c.name for c in model.metadata.get_input_schema().inputs] == ["image"]
        assert model.metadata.metadata["image_size"] == 32
        assert main(["ui"]) == 0
        assert expected in capsys.readouterr().out
    finally:
        tracking.reset()


@pytest.mark.parametrize("uri", ["postgresql://bakeoff:hunter2@db:5432/mlflow", "s3://AKIAABCDEFGHIJKLMNOP@x/y"])
def test_redact_removes_credentials(uri):
    assert "hunter2" not in redact(uri) and "AKIAABCDEFGHIJKLMNOP" not in redact(uri)
    assert safe_params({"db_password": "x" * 10, "nested": {"api_token": "y" * 10, "lr": 0.1}}) == {"nested.lr": "0.1"}


@pytest.fixture
def embedded(tmp_path, monkeypatch):
    """The embedded SQLite store in a fresh working folder (no MLFLOW_TRACKING_URI)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    tracking.reset()
    tracking.configure()
    yield tmp_path
    tracking.reset()


def _other_dataset(dataset: Path, root: Path) -> Path:
    """The same images with one test image left out: another dataset hash."""
    copy = root / "other-dataset"
    shutil.copytree(dataset, copy)
    df = manifest.read_manifest(copy, resolve=False)
    manifest.write_manifest(df.drop(index=df[df["split"] == "test"].index[0]).reset_index(drop=True), copy)
    return copy


def test_compare_defaults_to_the_last_runs_experiment_with_aliases_and_dataset(
    embedded, dataset, candidates, model_name, capsys
):
    import json

    _pipeline(dataset, candidates, model_name, [160.46], "older-experiment")
    parent, children, decision = _pipeline(dataset, candidates, model_name, [160.46, 127.5], "demo-experiment")
    assert decision["promoted"] and decision["challenger_run_id"] == children[1]
    capsys.readouterr()

    assert main(["compare", "--output", "json"]) == 0  # no --experiment: the last pipeline run's
    out = capsys.readouterr()
    rows = json.loads(out.out)
    assert [r["run_id"] for r in rows] == [children[1], children[0]]
    expected_hash = manifest.dataset_hash(manifest.read_manifest(dataset))
    assert {r["dataset_hash"] for r in rows} == {expected_hash}
    assert rows[0]["aliases"] == "champion" and rows[0]["model_version"]
    assert "warning" not in out.err  # one dataset: nothing to warn about

    assert main(["compare"]) == 0  # the table (piped: full width) shows the same
    table = capsys.readouterr().out
    assert "demo-experiment: 2 candidates" in table and "champion" in table and expected_hash[:12] in table
    assert children[1] in table  # whole run ids, not ellipsised

    # a pipeline run on other data, in the same experiment: ranked together only with a warning
    other = tracking.start_pipeline_run("demo-experiment", str(_other_dataset(dataset, embedded)), run_name="other")
    tracking.log_candidate(other, model_name=model_name, **candidates(127.5).dirs)
    assert main(["compare", "--output", "json"]) == 0
    out = capsys.readouterr()
    assert len(json.loads(out.out)) == 3
    [warning] = [line for line in out.err.splitlines() if line.startswith("warning:")]
    assert "3 candidates come from 2 datasets" in warning

    # --run: its own experiment; an unknown id or a candidate's id is a one-line usage error
    assert main(["compare", "--run", parent, "--output", "json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [children[1], children[0]]
    assert main(["compare", "--run", "0123456789abcdef0123456789abcdef"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no MLflow run '0123456789abcdef0123456789abcdef'") and "\n" not in err
    assert main(["compare", "--run", children[0]]) == 2
    assert f"is not a pipeline run (its pipeline run is {parent})" in capsys.readouterr().err
    # --csv -: the whole leaderboard as CSV on stdout, nothing else there
    assert main(["compare", "--run", parent, "--csv", "-"]) == 0
    import io

    board = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(board["run_id"]) == [children[1], children[0]] and "dataset_hash" in board


def test_promote_exit_code_and_predict_to_stdout(embedded, dataset, candidates, model_name, capsys):
    import io

    first, _, decision = _pipeline(dataset, candidates, model_name, [160.46], "gate-by-hand")
    assert decision["promoted"]
    capsys.readouterr()
    assert main(["promote", first, "--exit-code"]) == 3  # nothing to do: the champion already is this run's best
    assert '"promoted": false' in capsys.readouterr().out
    better = tracking.start_pipeline_run("gate-by-hand", str(dataset), run_name="better")
    tracking.log_candidate(better, model_name=model_name, **candidates(127.5).dirs)
    assert main(["promote", better, "--exit-code"]) == 0  # 1.00 vs 0.87 on the same 100 test images
    assert '"promoted": true' in capsys.readouterr().out

    source, expected = _raw_source(dataset, embedded / "raw")
    assert main(["predict", "--model", f"models:/{model_name}@champion", str(source), "--out", "-"]) == 0
    out = capsys.readouterr()
    csv = embedded / "from-stdout.csv"
    csv.write_text(out.out)
    _check_predictions(csv, expected)  # stdout held exactly the CSV
    assert "wrote stdout: 6 predicted" in out.err
    assert pd.read_csv(io.StringIO(out.out)).shape[0] == 9


@pytest.mark.parametrize("store", ["embedded", "sqlite", "folder"])
def test_read_only_commands_never_create_a_store(store, tmp_path, monkeypatch, capsys):
    """compare, ui, predict, promote and export read a store; pointed at none, they say so and create nothing."""
    work, source = tmp_path / "work", tmp_path / "photos"
    work.mkdir()
    source.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = {"embedded": None, "sqlite": f"sqlite:///{work / 'sub' / 'mlflow.db'}", "folder": str(work / "mlruns")}
    option = ["--tracking-uri", uri[store]] if uri[store] else []
    tracking.reset()
    try:
        for argv in (
            ["compare"],
            ["compare", "--run", "0123456789abcdef"],
            ["ui"],
            ["ui", "--launch"],
            ["predict", str(source), "--out", "preds.csv"],
            ["promote", "0123456789abcdef"],
            ["export", "--out", "exported"],
        ):
            assert main([*argv, *option]) == 2, argv
            err = capsys.readouterr().err.strip()
            assert err.startswith("error: no MLflow store at ") and "\n" not in err, (argv, err)
            assert list(work.rglob("*")) == [], (argv, list(work.rglob("*")))
    finally:
        tracking.reset()
