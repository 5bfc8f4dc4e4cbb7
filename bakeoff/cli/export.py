"""CLI command `export`: the champion (or any bakeoff model) as SavedModel, TFLite, ONNX or the MLflow folder.

Its own module so the registration in ``bakeoff.cli`` is one line; TensorFlow and MLflow load inside the command.
"""

from __future__ import annotations

import json

import typer

from bakeoff.cli.helptext import command_help
from bakeoff.cli.tracking import DEFAULTS, TRACKING_URI


def export_cmd(
    model: str = typer.Argument(
        f"models:/{DEFAULTS.model_name}@champion",
        help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, or a model folder (model.keras + model.json).",
    ),
    out: str = typer.Option(..., "--out", "-o", help="Folder or s3:// prefix to write the export to."),
    formats: list[str] = typer.Option(
        None,
        "--format",
        "-f",
        help="savedmodel, tflite, onnx, mlflow; repeat for several (default: savedmodel and tflite).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier export at --out."),
    tracking_uri: str = TRACKING_URI,
) -> None:
    """Export a model for runtimes without MLflow: TensorFlow SavedModel, TFLite, ONNX; or its MLflow folder for KServe.

    Each exported network is loaded back with its own runtime and compared with the Keras model on check images;
    the export fails (and writes nothing) if any probability differs by more than 1e-4. `export.json` records the
    input contract (float32 RGB 0..255, n x S x S x 3), the classes and the measured differences.

    Example: `bakeoff export --out s3://team-bucket/serving/bakeoff-classifier/v7 -f savedmodel -f tflite -f mlflow`
    """
    from bakeoff import export, tracking

    if model.startswith(("models:/", "runs:/")):
        tracking.configure(tracking_uri, read_only=True)  # export reads the registry, never creates a store
    result = export.export_model(model, out, formats or list(export.DEFAULT_FORMATS), overwrite=overwrite)
    typer.echo(json.dumps(result.to_dict(), indent=2))


def register(app: typer.Typer) -> None:
    """Attach this module's command to the root app."""
    app.command("export", help=command_help(export_cmd))(export_cmd)
