"""A model version in bakeoff's layout from before issue 11: the pickled ``KerasImageClassifier`` pyfunc with a
pixel-tensor signature, logged the way ``bakeoff.tracking.models`` did then. Registries hold such versions; the
tests check that they still load, predict and take part in the gate next to new-layout versions."""

from __future__ import annotations

from pathlib import Path


def log_legacy_version(run_id: str, model_dir: str | Path, name: str) -> tuple[str, str]:
    """Log ``model_dir`` (model.keras + model.json) on ``run_id`` in the old layout and register it as a version
    of ``name``; returns (version, model URI)."""
    import json

    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    import mlflow
    from bakeoff.pyfunc_model import KERAS_ARTIFACT, MODEL_JSON_ARTIFACT, KerasImageClassifier

    model_dir = Path(model_dir)
    info = json.loads((model_dir / "model.json").read_text())
    size, classes = int(info["image_size"]), list(info["classes"])
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, size, size, 3))]),
        outputs=Schema(
            [ColSpec("string", "label"), ColSpec("double", "probability")]
            + [ColSpec("double", f"prob_{c}") for c in classes]
        ),
    )
    with mlflow.start_run(run_id=run_id):
        logged = mlflow.pyfunc.log_model(
            name="model",
            python_model=KerasImageClassifier(),
            artifacts={
                KERAS_ARTIFACT: str(model_dir / "model.keras"),
                MODEL_JSON_ARTIFACT: str(model_dir / "model.json"),
            },
            signature=signature,
            input_example=np.full((1, size, size, 3), 127.0, dtype=np.float32),
            registered_model_name=name,
        )
    return str(logged.registered_model_version), logged.model_uri
