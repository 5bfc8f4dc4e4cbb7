"""A candidate's model in MLflow: logged as the class-names pyfunc and registered as a new version.

One logged model serves both readers: ``mlflow.pyfunc.load_model`` returns class names and probabilities;
``bakeoff.predict.load_keras_model`` returns the Keras model from the same artifacts. Every candidate becomes a
version of ONE registered model, so the promotion gate (``bakeoff.registry``) only ever moves aliases.
"""

from __future__ import annotations

from bakeoff import contract
from bakeoff.errors import BakeoffError
from bakeoff.tracking.store import ensure_configured


def log_and_register(
    run_id: str, keras_path: str, json_path: str, classes: list[str], image_size: int, model_name: str | None
) -> tuple[str | None, str]:
    """Log model.keras + model.json as a pyfunc on ``run_id``, register it as a version of ``model_name`` unless
    that is None (candidates: the gate registers); return (version or None, model URI)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    import mlflow
    from bakeoff.pyfunc_model import KERAS_ARTIFACT, MODEL_JSON_ARTIFACT, KerasImageClassifier, pip_requirements

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, image_size, image_size, 3))]),
        outputs=Schema(
            [ColSpec("string", "label"), ColSpec("double", "probability")]
            + [ColSpec("double", contract.prob_column(c)) for c in classes]
        ),
    )
    # a real-looking input: a mid-grey RGB image in the model's 0..255 pixel range
    example = np.full((1, image_size, image_size, 3), 127.0, dtype=np.float32)
    ensure_configured()
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=contract.MODEL_ARTIFACT,
            python_model=KerasImageClassifier(),
            artifacts={KERAS_ARTIFACT: keras_path, MODEL_JSON_ARTIFACT: json_path},
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            registered_model_name=model_name,
        )
    version = info.registered_model_version
    if model_name is None:
        return None, info.model_uri
    if version is None:
        raise BakeoffError(f"MLflow did not register {model_name}; does the tracking server have a model registry?")
    return str(version), info.model_uri
