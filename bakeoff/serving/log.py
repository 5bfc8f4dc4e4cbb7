"""Log a bakeoff model folder (model.keras + model.json) as ONE portable MLflow model: what every candidate is.

Only the logging: ``bakeoff.tracking.models`` calls it, verifies the upload and registers (the gate decides when).

The logged model has two flavors over one copy of the network:

* ``python_function``: models-from-code (``bakeoff/serving/image_classifier.py`` is copied into the model), encoded
  image bytes in, ``label``/``probability``/``prob_<class>`` out; what ``mlflow models serve``, KServe and
  ``mlflow.pyfunc.load_model`` use. Loading it needs no bakeoff (no pickled bakeoff class);
* ``tensorflow`` (MLflow's Keras/TensorFlow flavor, Keras 3): ``mlflow.tensorflow.load_model(uri)`` returns the
  Keras network itself (raw RGB 0..255 in, probabilities out), for the gate's re-evaluation and for export.

Layout (``<artifact root>/<experiment>/models/m-<id>/artifacts/``): ``MLmodel``, ``image_classifier.py``,
``artifacts/model.keras``, ``artifacts/model.json``, ``requirements.txt``, ``input_example.json``,
``serving_input_example.json``. The network keeps the path older bakeoff models had (``artifacts/model.keras``),
so ``bakeoff.predict.load_keras_model``/``model_info`` read new and old versions alike.

Why not ``mlflow.tensorflow.log_model`` alone: its pyfunc takes pixel tensors and returns bare probabilities.
Why not a pickled PythonModel (bakeoff's previous layout): loading needed ``bakeoff`` importable at the same path.
Versions logged that way before issue 11 stay readable (``bakeoff.pyfunc_model``, ``bakeoff.predict``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from bakeoff import contract
from bakeoff.errors import BakeoffError

MODEL_CODE = Path(__file__).with_name("image_classifier.py")
LAYOUT_KEY = "bakeoff_layout"  # MLmodel metadata: which bakeoff model layout this is
LAYOUT = "encoded-image-pyfunc+keras/1"
TENSORFLOW_FLAVOR = "tensorflow"
KERAS_DATA = "artifacts"  # the tensorflow flavor's data folder: MLflow loads <data>/model.keras from it


def serving_signature(classes: list[str]):
    """One ``binary`` column ``image`` in; ``label`` (string), ``probability`` and ``prob_<class>`` (double) out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    from bakeoff.serving import image_classifier as served

    return ModelSignature(
        inputs=Schema([ColSpec(DataType.binary, served.INPUT_COLUMN)]),
        outputs=Schema(
            [ColSpec(DataType.string, served.LABEL_COLUMN), ColSpec(DataType.double, served.PROBABILITY_COLUMN)]
            + [ColSpec(DataType.double, contract.prob_column(c)) for c in classes]
        ),
    )


def example_image() -> bytes:
    """A small real PNG (a colour gradient): the logged input example, also the self-check's input."""
    import io

    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, 48, dtype=np.float32)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 255 - ramp[None, :]), axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def pip_requirements() -> list[str]:
    """Exactly what the served model imports, pinned to this environment (skips MLflow's ~6 s inference)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("mlflow", "keras", "numpy", "pandas", "pillow"):
        reqs.append(f"{dist}=={version(dist)}")
    for dist in ("tensorflow-cpu", "tensorflow"):  # whichever build is installed (CPU image or CUDA image)
        try:
            reqs.append(f"{dist}=={version(dist)}")
            break
        except PackageNotFoundError:
            continue
    return reqs


def _self_check(path: str, classes: list[str]) -> None:
    """Load the saved model as MLflow will (pyfunc and tensorflow flavors) and predict the example, or fail."""
    import pandas as pd

    import mlflow

    try:
        served = mlflow.pyfunc.load_model(path)
        out = served.predict(pd.DataFrame({"image": [example_image()]}))
        network = mlflow.tensorflow.load_model(path, keras_model_kwargs={"compile": False})
    except Exception as exc:
        raise BakeoffError(f"the MLflow model does not load back: {str(exc).splitlines()[0][:200]}") from exc
    expected = ["label", "probability"] + [contract.prob_column(c) for c in classes]
    if list(out.columns) != expected or out["label"].iloc[0] not in classes or network.output.shape[-1] < 1:
        raise BakeoffError(f"the MLflow model answers {list(out.columns)}, expected {expected}")


class _ServingFlavor:
    """``mlflow.models.Model.log``'s flavor: the models-from-code pyfunc, then MLflow's tensorflow flavor added
    on the same ``artifacts/model.keras``, then a load-and-predict check (before anything is uploaded)."""

    __name__ = "python_function"

    @staticmethod
    def save_model(path: str, mlflow_model, classes: list[str], **kwargs) -> None:
        import keras
        import tensorflow as tf

        import mlflow

        kwargs.pop("validate_serving_input", None)  # our own stricter check below replaces MLflow's warning
        mlflow.pyfunc.save_model(path, mlflow_model=mlflow_model, **kwargs)
        mlflow_model.add_flavor(
            TENSORFLOW_FLAVOR,
            code=None,
            data=KERAS_DATA,
            model_type="keras",
            keras_module="keras",
            keras_version=tf.__version__,
            save_format="keras",
            keras_package_version=keras.__version__,
        )
        mlflow_model.save(os.path.join(path, "MLmodel"))
        _self_check(path, classes)


def log_model(keras_path: str, json_path: str, classes: list[str], image_size: int, name: str):
    """Log model.keras + model.json as the serving model on the ACTIVE run, unregistered; MLflow's ``ModelInfo``.

    ``name`` is the logged model's name (the candidate's name). Checking the stored copy and registering a version
    are ``bakeoff.tracking.models``' job: a version exists only once the upload is verified and the gate decided.
    """
    import pandas as pd

    import mlflow
    from bakeoff.serving import image_classifier as served

    if not classes or image_size < 1:
        raise BakeoffError(f"{json_path}: needs classes and a positive image_size to log a serving model")
    with tempfile.TemporaryDirectory() as tmp:
        # the names inside the model are fixed whatever the caller's temp files are called
        keras_copy = shutil.copyfile(keras_path, os.path.join(tmp, contract.MODEL_KERAS))
        json_copy = shutil.copyfile(json_path, os.path.join(tmp, contract.MODEL_JSON))
        return mlflow.models.Model.log(
            artifact_path=None,
            name=name,
            flavor=_ServingFlavor,
            python_model=str(MODEL_CODE),
            artifacts={served.KERAS_ARTIFACT: keras_copy, served.MODEL_JSON_ARTIFACT: json_copy},
            signature=serving_signature(classes),
            input_example=pd.DataFrame({served.INPUT_COLUMN: [example_image()]}),
            pip_requirements=pip_requirements(),
            metadata={LAYOUT_KEY: LAYOUT, "classes": list(classes), "image_size": int(image_size)},
            classes=list(classes),
            validate_serving_input=False,
        )
