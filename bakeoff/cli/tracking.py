"""CLI commands over MLflow: `compare` (leaderboard), `promote` (the gate by hand), `predict` (batch), `ui`.

MLflow, TensorFlow and the registry are imported inside the commands so `bakeoff --help` stays fast.
"""

from __future__ import annotations

import json
import math
import os
import shlex

import typer

from bakeoff import env
from bakeoff.cli import output
from bakeoff.cli.helptext import command_help
from pipelines.settings import GateTest, Parameters

NOT_PROMOTED_EXIT = 3  # `promote --exit-code`: the gate kept the champion (1 and 2 stay failure and usage error)
DEFAULTS = Parameters()  # the pipeline's defaults: the same experiment, model and gate by hand as in a run

TRACKING_URI = typer.Option(
    None,
    "--tracking-uri",
    envvar=env.MLFLOW_TRACKING_URI.name,  # read by Typer (click), named in bakeoff.env's registry
    show_envvar=True,
    help="MLflow tracking server or DB; default: ./.bakeoff/mlflow/mlflow.db (embedded).",
)


COMPARE_COLUMNS = {  # leaderboard key -> column title, in the order shown
    "backbone": "backbone",
    "weights": "weights",
    "test_accuracy": "accuracy",
    "test_f1_macro": "F1",
    "test_roc_auc": "ROC-AUC",
    "latency_ms_per_image": "ms/img",
    "model_size_mb": "MB",
    "model_version": "version",
    "aliases": "aliases",
    "dataset_hash": "dataset",
    "run_id": "run",
}


def compare(
    experiment: str = typer.Option(
        None, "--experiment", "-e", help="MLflow experiment to read (default: the one of the last pipeline run)."
    ),
    last: int = typer.Option(None, "--last", "-n", min=1, help="Only the candidates of the last N pipeline runs."),
    run: str = typer.Option(None, "--run", help="Only the candidates of this pipeline (parent) run id."),
    csv: str = typer.Option(None, "--csv", help="Also write the full leaderboard to this CSV file; - for stdout."),
    fmt: output.Format = output.OUTPUT,
    tracking_uri: str = TRACKING_URI,
) -> None:
    """Leaderboard of bake-off candidates from MLflow, best test accuracy first (ties: macro F1).

    Reads the nested (per-backbone) runs of the experiment's pipeline runs: backbone, weights, test
    accuracy/F1/ROC-AUC, latency, model size, the registered version and its aliases (champion, challenger),
    and the dataset hash. Candidates of different datasets ranked together get a warning: their test splits
    differ. Never creates a tracking store.

    Example: `bakeoff compare --last 3 --output json`
    """
    from bakeoff import tracking

    tracking.configure(tracking_uri, read_only=True)
    if run:
        experiment = experiment or tracking.pipeline_run_experiment(run)
    experiment = experiment or tracking.last_experiment()
    board = tracking.with_aliases(tracking.leaderboard(experiment, last=last, parent_run_id=run))
    hashes = sorted({h for h in board.get("dataset_hash", []) if h})
    if len(hashes) > 1:
        typer.secho(
            f"warning: these {len(board)} candidates come from {len(hashes)} datasets "
            f"({', '.join(h[:12] for h in hashes)}): accuracies on different test splits do not rank; "
            "narrow with --run or --last",
            err=True,
            fg=typer.colors.YELLOW,
        )
    if csv:
        output.write_text(csv, board.to_csv(index=False))
        if csv == output.STDOUT:
            return
    rows = board.to_dict("records")
    output.print_rows(rows, fmt, lambda rows: _compare_table(experiment, rows))


def _compare_table(experiment: str, rows: list[dict]):
    """The leaderboard's shown columns; random-init weights marked, floats rounded, hashes shortened."""
    from rich.table import Table

    table = Table(title=f"{experiment}: {len(rows)} candidates (best first)")
    for key, title in COMPARE_COLUMNS.items():
        table.add_column(title, justify="left" if key in ("backbone", "weights", "aliases", "run_id") else "right")
    for row in rows:
        cells = []
        for key in COMPARE_COLUMNS:
            value = row.get(key, "")
            if key == "weights" and row.get("pretrained") is False:
                value = f"{value} (random)"
            if key == "dataset_hash":
                value = (value or "")[:12]
            if isinstance(value, float):
                value = "" if math.isnan(value) else f"{value:.4f}" if key.startswith("test_") else f"{value:.2f}"
            cells.append(str(value))
        table.add_row(*cells)
    return table


def promote(
    run_id: str = typer.Argument(..., help="A pipeline (parent) run id, or one candidate run id."),
    model_name: str = typer.Option(None, "--model-name", help="Registered model (default: the run's own)."),
    dataset: str = typer.Option(
        None,
        "--dataset",
        help="Dataset folder/s3 prefix for the paired test (default: the one the pipeline run recorded).",
    ),
    test: GateTest = typer.Option(DEFAULTS.gate_test, "--test", help=Parameters.model_fields["gate_test"].description),
    alpha: float = typer.Option(DEFAULTS.gate_alpha, "--alpha", help="Significance level: promote only if p < alpha."),
    min_delta: float = typer.Option(0.0, "--min-delta", help="Minimum accuracy gain over the champion."),
    n_bootstrap: int = typer.Option(2000, "--n-bootstrap", min=100, help="Resamples for --test bootstrap."),
    exit_code: bool = typer.Option(
        False, "--exit-code", help="Exit 0 when promoted, 3 when not (for CI to branch on); default: 0 either way."
    ),
    tracking_uri: str = TRACKING_URI,
) -> None:
    """Apply the promotion gate by hand to a run's best candidate.

    The current champion is re-evaluated on the SAME test split and compared image by image with a
    paired one-sided test; the alias `champion` moves only if the challenger is significantly better
    (else it gets `challenger`). Random-init (`--weights none`) candidates are never promoted. The
    decision is logged on the pipeline run (tags + gate_report.md) and printed as JSON.

    Example: `bakeoff promote 3f2a... --test bootstrap --alpha 0.01 --exit-code`
    """
    from bakeoff import registry, tracking

    tracking.configure(tracking_uri, read_only=True)
    gate = registry.GateConfig(test=test, alpha=alpha, min_delta=min_delta, n_bootstrap=n_bootstrap)
    decision = registry.promote(run_id, model_name=model_name, dataset_dir=dataset, gate=gate)
    typer.echo(json.dumps(registry.decision_dict(decision), indent=2))
    verdict = "PROMOTED to champion" if decision["promoted"] else "not promoted (alias: challenger)"
    verdict = "unchanged" if registry.is_unchanged(decision) else verdict
    typer.secho(
        f"{decision['model_name']} v{decision['challenger_version']}: {verdict}: {decision['reason']}",
        fg=typer.colors.GREEN if decision["promoted"] else typer.colors.YELLOW,
        err=True,
    )
    if exit_code and not decision["promoted"]:
        raise typer.Exit(NOT_PROMOTED_EXIT)


def predict(
    source: str = typer.Argument(..., help="Folder, .zip/.tar(.gz) archive, or s3:// prefix of images."),
    model: str = typer.Option(
        f"models:/{DEFAULTS.model_name}@champion",
        "--model",
        "-m",
        help="MLflow model URI: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model.",
    ),
    out: str = typer.Option("predictions.csv", "--out", "-o", help="CSV to write (local path or s3://); - for stdout."),
    tracking_uri: str = TRACKING_URI,
) -> None:
    """Batch prediction with a registered model over a folder, archive or s3:// prefix.

    Writes one CSV row per file: `path`, `predicted` (class name), `probability`, `prob_<class>` for
    every class, and `error`: unreadable or non-image files get the reason there (same checks as
    ingest) instead of stopping the batch.

    Example: `bakeoff predict --model models:/bakeoff-classifier@champion ./new-photos --out preds.csv`
    """
    from bakeoff import predict as predict_mod
    from bakeoff import tracking

    if model.startswith(("models:/", "runs:/")):
        tracking.configure(tracking_uri, read_only=True)
    to_stdout = out == output.STDOUT
    df = predict_mod.predict_source(model, source, None if to_stdout else out)
    if to_stdout:
        output.write_text(out, df.to_csv(index=False))
    bad = int((df["error"] != "").sum())
    counts = df.loc[df["error"] == "", "predicted"].value_counts().to_dict()
    where = "stdout" if to_stdout else out
    output.status(f"wrote {where}: {len(df) - bad} predicted {counts}, {bad} with errors", out)


def ui(
    launch: bool = typer.Option(False, "--launch", help="Start the MLflow UI instead of printing the command."),
    port: int = typer.Option(5000, "--port", help="Port for the UI (with --launch)."),
    tracking_uri: str = TRACKING_URI,
) -> None:
    """Print (or --launch) the `mlflow ui` command that opens this project's runs and models.

    Embedded default: the SQLite DB and artifact folder under ./.bakeoff/mlflow. With MLFLOW_TRACKING_URI
    pointing at a server, the server itself is the UI.

    Example: `bakeoff ui --launch --port 5000`
    """
    from bakeoff import tracking

    uri = tracking.configure(tracking_uri, read_only=True)
    command = tracking.ui_command(uri).replace("--port 5000", f"--port {port}")
    if not launch or uri.startswith(("http://", "https://")):
        typer.echo(command)
        return
    import sys

    from bakeoff.cli.logs import give_terminal_back

    argv = [sys.executable, "-m", "mlflow", *shlex.split(command)[1:]]  # the venv's own mlflow
    give_terminal_back()  # the UI's own messages (its address, errors) belong on the terminal
    os.execv(argv[0], argv)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    for name, func in (("compare", compare), ("promote", promote), ("predict", predict), ("ui", ui)):
        app.command(name, help=command_help(func))(func)
