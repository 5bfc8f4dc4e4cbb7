"""The MLflow pyfunc every candidate is logged with: Keras model in, class NAMES out.

``KerasImageClassifier``'s artifacts are the Keras ``model.keras`` (raw RGB 0..255 in, probabilities out) and
``model.json`` (classes, image size), so ``mlflow.pyfunc.load_model("models:/NAME@champion").predict(images)``
returns a DataFrame with the class name, its probability and every class's probability, while
``bakeoff.predict.load_keras_model`` returns the very same Keras model for fine-grained use.

Its own module so that model logging (``bakeoff.tracking.models``) and batch prediction (``bakeoff.predict``)
both depend on it and not on each other. The class is pickled by reference: loading needs ``bakeoff``
importable (it is, in the bakeoff image and venv).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from bakeoff.contract import prob_column
from bakeoff.heads import probabilities

BATCH = 32
KERAS_ARTIFACT = "keras_model"  # keys of the pyfunc's ``artifacts``: model.keras and model.json
MODEL_JSON_ARTIFACT = "model_json"


class KerasImageClassifier(mlflow.pyfunc.PythonModel):
    """pyfunc: float32 images [n, S, S, 3] in 0..255 -> label, probability, prob_<class> columns."""

    def load_context(self, context) -> None:
        import keras

        self.keras_model = keras.models.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)
        info = json.loads(Path(context.artifacts[MODEL_JSON_ARTIFACT]).read_text())
        self.classes = list(info["classes"])
        self.image_size = int(info["image_size"])

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        x = np.asarray(model_input, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        probs = probabilities(self.keras_model.predict(x, batch_size=BATCH, verbose=0), len(self.classes))
        best = probs.argmax(axis=1)
        out = pd.DataFrame({"label": [self.classes[i] for i in best], "probability": probs[np.arange(len(best)), best]})
        for j, name in enumerate(self.classes):
            out[prob_column(name)] = probs[:, j]
        return out


def pip_requirements() -> list[str]:
    """Pinned requirements for the logged model (passing them skips MLflow's slow inference)."""
    import keras

    reqs = [
        f"mlflow=={mlflow.__version__}",
        f"keras=={keras.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
    ]
    try:
        from importlib.metadata import version

        reqs.append(f"tensorflow-cpu=={version('tensorflow-cpu')}")
    except Exception:
        pass
    return reqs
