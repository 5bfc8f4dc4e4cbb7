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
from pipelines.settings import GateTest, Parameters

DEFAULTS = Parameters()  # the pipeline's defaults: the same experiment, model and gate by hand as in a run

TRACKING_URI = typer.Option(
    None,
    "--tracking-uri",
    envvar=env.MLFLOW_TRACKING_URI.name,  # read by Typer (click), named in bakeoff.env's registry
    show_envvar=True,
    help="MLflow tracking server or DB; default: ./.bakeoff/mlflow/mlflow.db (embedded).",
)


def compare(
    experiment: str = typer.Option(DEFAULTS.experiment, "--experiment", "-e", help="MLflow experiment to read."),
    last: int = typer.Option(None, "--last", "-n", min=1, help="Only the candidates of the last N pipeline runs."),
    run: str = typer.Option(None, "--run", help="Only the candidates of this pipeline (parent) run id."),
    csv: str = typer.Option(None, "--csv", help="Also write the full leaderboard to this CSV file."),
    tracking_uri: str = TRACKING_URI,
) -> None:
    """Leaderboard of bake-off candidates from MLflow, best test accuracy first (ties: macro F1).

    Reads the nested (per-backbone) runs of the experiment's pipeline runs: backbone, weights, test
    accuracy/F1/ROC-AUC, latency, model size and the registered model version.

    Example: `bakeoff compare --experiment bakeoff --last 3`
    """
    from rich.console import Console
    from rich.table import Table

    from bakeoff import tracking

    tracking.configure(tracking_uri)
    board = tracking.leaderboard(experiment, last=last, parent_run_id=run)
    if csv:
        board.to_csv(csv, index=False)
    table = Table(title=f"{experiment}: {len(board)} candidates (best first)")
    columns = [
        ("backbone", "backbone"),
        ("weights", "weights"),
        ("val_accuracy", "val acc"),
        ("test_accuracy", "test acc"),
        ("test_f1_macro", "test F1"),
        ("test_roc_auc", "ROC-AUC"),
        ("latency_ms_per_image", "ms/img"),
        ("model_size_mb", "MB"),
        ("model_version", "version"),
        ("run_id", "run"),
    ]
    for _, title in columns:
        table.add_column(title, justify="right" if title not in ("backbone", "weights", "run") else "left")
    for _, row in board.iterrows():
        cells = []
        for key, _ in columns:
            value = row.get(key, "")
            if key == "weights" and row.get("pretrained") is False:
                value = f"{value} (random)"
            if isinstance(value, float):
                value = (
                    "" if math.isnan(value) else f"{value:.4f}" if key.startswith(("test_", "val_")) else f"{value:.2f}"
                )
            cells.append(str(value))
        table.add_row(*cells)
    import sys

    # piped output (CI logs, files) gets full-width rows instead of ellipsised run ids
    Console(width=None if sys.stdout.isatty() else 220).print(table)


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
    tracking_uri: str = TRACKING_URI,
) -> None:
    """Apply the promotion gate by hand to a run's best candidate.

    The current champion is re-evaluated on the SAME test split and compared image by image with a
    paired one-sided test; the alias `champion` moves only if the challenger is significantly better
    (else it gets `challenger`). Random-init (`--weights none`) candidates are never promoted. The
    decision is logged on the pipeline run (tags + gate_report.md) and printed as JSON.

    Example: `bakeoff promote 3f2a... --test bootstrap --alpha 0.01`
    """
    from bakeoff import registry, tracking

    tracking.configure(tracking_uri)
    gate = registry.GateConfig(test=test, alpha=alpha, min_delta=min_delta, n_bootstrap=n_bootstrap)
    decision = registry.promote(run_id, model_name=model_name, dataset_dir=dataset, gate=gate)
    typer.echo(json.dumps(registry.decision_dict(decision), indent=2))
    verdict = "PROMOTED to champion" if decision["promoted"] else "not promoted (alias: challenger)"
    typer.secho(
        f"{decision['model_name']} v{decision['challenger_version']}: {verdict}: {decision['reason']}",
        fg=typer.colors.GREEN if decision["promoted"] else typer.colors.YELLOW,
        err=True,
    )


def predict(
    source: str = typer.Argument(..., help="Folder, .zip/.tar(.gz) archive, or s3:// prefix of images."),
    model: str = typer.Option(
        f"models:/{DEFAULTS.model_name}@champion",
        "--model",
        "-m",
        help="MLflow model URI: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model.",
    ),
    out: str = typer.Option("predictions.csv", "--out", "-o", help="CSV to write (local path or s3://)."),
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

    tracking.configure(tracking_uri)
    df = predict_mod.predict_source(model, source, out)
    bad = int((df["error"] != "").sum())
    counts = df.loc[df["error"] == "", "predicted"].value_counts().to_dict()
    typer.echo(f"wrote {out}: {len(df) - bad} predicted {counts}, {bad} with errors")


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

    uri = tracking.configure(tracking_uri)
    command = tracking.ui_command(uri).replace("--port 5000", f"--port {port}")
    if not launch or uri.startswith(("http://", "https://")):
        typer.echo(command)
        return
    import sys

    argv = [sys.executable, "-m", "mlflow", *shlex.split(command)[1:]]  # the venv's own mlflow
    os.execv(argv[0], argv)


def _help(func) -> str:
    """Docstring paragraphs as single lines, so rich wraps them to the terminal instead of at 110 columns."""
    import inspect

    paragraphs = inspect.cleandoc(func.__doc__ or "").split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    for name, func in (("compare", compare), ("promote", promote), ("predict", predict), ("ui", ui)):
        app.command(name, help=_help(func))(func)
