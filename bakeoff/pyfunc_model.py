"""The pyfunc of versions logged before issue 11 (pixel tensors in, class NAMES out); new versions use
``bakeoff.serving`` (encoded images in, models-from-code).

Kept because those registered versions pickled ``KerasImageClassifier`` BY REFERENCE (as
``bakeoff.pyfunc_model.KerasImageClassifier``, or ``bakeoff.predict.KerasImageClassifier``, still re-exported):
loading them needs this class importable. Its artifacts are the Keras ``model.keras`` (raw RGB 0..255 in,
probabilities out) and ``model.json`` (classes, image size); ``bakeoff.predict`` resizes images for it.
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
