"""The served bakeoff model: encoded image bytes in, class name and per-class probabilities out.

This file IS the model's code. It is logged with MLflow's models-from-code (``python_model=<this file>``), copied
into every logged model and executed from there by ``mlflow.pyfunc.load_model`` and ``mlflow models serve``. So it
imports only mlflow, numpy, pandas, Pillow, TensorFlow and Keras, never ``bakeoff``: a registered model loads and
serves where bakeoff is not installed, and keeps the decoding it was logged with when bakeoff changes later.

Input: a DataFrame with one column ``image`` of encoded image bytes (JPEG, PNG, GIF, BMP, WebP, TIFF: whatever
Pillow reads); over REST MLflow's JSON conventions apply (``dataframe_split``/``dataframe_records`` with base64
strings, decoded by the scoring server because the signature types the column ``binary``); a base64 ``str`` is
accepted in Python too. Output: ``label``, ``probability`` (of that label) and ``prob_<class>`` for every class.

The pixels are the ones training saw. Training reads what ``bakeoff ingest`` stored and decodes it with TensorFlow
(``bakeoff.data``); ingest stores a plain RGB/grey JPEG or PNG without EXIF rotation unchanged ("passthrough") and
everything else as the PNG of the normalised RGB image. So here:

* passthrough bytes are decoded by TensorFlow exactly as ``bakeoff.data`` does (large JPEGs at 1/2, 1/4 or 1/8
  scale by libjpeg's DCT scaling, the same rule);
* anything else is decoded by Pillow with ingest's rules: EXIF orientation applied, palette/grey/CMYK/16-bit to
  8-bit RGB, transparency flattened onto white;
* then the same resize: bilinear with antialiasing to the model's square input, clipped and rounded to whole
  numbers.

``tests/serving`` pins these pixels to ``bakeoff.data``'s on real photos and odd modes (bit-identical), and the
served labels to ``bakeoff predict``'s.
"""

from __future__ import annotations

import base64
import binascii
import io
import json

import numpy as np
import pandas as pd

import mlflow

INPUT_COLUMN = "image"
LABEL_COLUMN = "label"
PROBABILITY_COLUMN = "probability"
PROB_PREFIX = "prob_"
KERAS_ARTIFACT = "keras_model"  # keys of the pyfunc's artifacts: model.keras and model.json of the model folder
MODEL_JSON_ARTIFACT = "model_json"
MAX_PIXELS = 40_000_000  # ingest's decompression-bomb limit (bakeoff.images.DEFAULT_MAX_PIXELS)
BATCH = 32
MAX_REPORTED = 5  # bad images named in one error message

_EXIF_ORIENTATION = 0x0112
_PASSTHROUGH_FORMATS = {"JPEG", "PNG"}
_PASSTHROUGH_MODES = {"RGB", "L"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


class BadImage(ValueError):
    """One input that cannot be classified; ``predict`` reports all of them in one error."""


def _as_bytes(value) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=False)
        except (binascii.Error, ValueError):
            raise BadImage("not base64-encoded bytes") from None
    raise BadImage(f"expected encoded image bytes, got {type(value).__name__}")


def _to_rgb(img):
    """Any Pillow mode as 8-bit RGB: 16-bit scaled to 8, transparency flattened onto white (ingest's rules)."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT_MODES or mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        peak = float(arr.max(initial=0))
        top = 65535.0 if mode != "F" and peak > 255 else max(peak, 255.0)
        return Image.fromarray(np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("PA", "La", "RGBa", "LA"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB")


def _is_16bit_png(data: bytes, fmt: str) -> bool:
    return fmt == "PNG" and len(data) > 24 and data[12:16] == b"IHDR" and data[24] != 8


def _jpeg_ratio(width: int, height: int, size: int) -> int:
    """libjpeg's DCT downscale that training used: the largest of 1, 2, 4, 8 keeping the short side >= size."""
    short = min(width, height)
    return max(r for r in (1, 2, 4, 8) if r == 1 or short >= r * size)


def decode_image(data: bytes, size: int) -> np.ndarray:
    """Encoded bytes -> float32 [size, size, 3] RGB, whole numbers 0..255, as training saw them; or BadImage."""
    import tensorflow as tf
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise BadImage("zero-byte")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadImage("not-an-image") from None
    except Exception as exc:
        raise BadImage(f"corrupt: {' '.join(str(exc).split())[:120]}") from None
    width, height = img.size
    if width <= 0 or height <= 0 or width * height > MAX_PIXELS:
        raise BadImage(f"decompression-bomb or empty: {width}x{height} px (limit {MAX_PIXELS})")
    try:
        orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:
        orientation = 1
    fmt = img.format or ""
    passthrough = (
        fmt in _PASSTHROUGH_FORMATS
        and img.mode in _PASSTHROUGH_MODES
        and orientation == 1
        and not _is_16bit_png(data, fmt)
        and "transparency" not in img.info
    )
    try:
        if passthrough and fmt == "JPEG":
            pixels = tf.io.decode_jpeg(data, channels=3, ratio=_jpeg_ratio(width, height, size))
        elif passthrough:
            pixels = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
        else:
            img.load()
            oriented = ImageOps.exif_transpose(img) if orientation != 1 else img
            pixels = np.asarray(_to_rgb(oriented), dtype=np.uint8)
    except Exception as exc:  # truncated or corrupt data surfaces as many exception types
        raise BadImage(f"corrupt: {' '.join(str(exc).split())[:120] or type(exc).__name__}") from None
    resized = tf.image.resize(pixels, (size, size), method="bilinear", antialias=True)
    return tf.round(tf.clip_by_value(resized, 0.0, 255.0)).numpy().astype(np.float32)


def probabilities(raw: np.ndarray, n_classes: int) -> np.ndarray:
    """Network outputs -> one column per class; a binary head's single sigmoid unit p becomes [1 - p, p]."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 1:
        raw = raw[:, None]
    if n_classes == 2 and raw.shape[1] == 1:
        return np.concatenate([1.0 - raw, raw], axis=1)
    if raw.shape[1] != n_classes:
        raise ValueError(f"the network gives {raw.shape[1]} outputs for {n_classes} classes")
    return raw


def _images(model_input) -> list:
    """The encoded images of a request: the ``image`` column (or the only column), a Series, a list or one value."""
    if isinstance(model_input, dict):
        model_input = pd.DataFrame({k: list(np.atleast_1d(v)) for k, v in model_input.items()})
    if isinstance(model_input, pd.DataFrame):
        if INPUT_COLUMN in model_input.columns:
            return list(model_input[INPUT_COLUMN])
        if len(model_input.columns) == 1:
            return list(model_input.iloc[:, 0])
        raise BadImage(f"expected a column {INPUT_COLUMN!r} of encoded images, got columns {list(model_input.columns)}")
    if isinstance(model_input, (bytes, bytearray, memoryview, str)):
        return [model_input]
    return list(model_input)


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """pyfunc: encoded images -> label, probability, prob_<class> (classes and input size from model.json)."""

    def load_context(self, context) -> None:
        import keras

        self.network = keras.models.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)
        with open(context.artifacts[MODEL_JSON_ARTIFACT]) as fh:
            info = json.load(fh)
        self.classes = [str(c) for c in info["classes"]]
        self.image_size = int(info["image_size"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            values = _images(model_input)
        except BadImage as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        pixels, problems = [], []
        for i, value in enumerate(values):
            try:
                pixels.append(decode_image(_as_bytes(value), self.image_size))
            except BadImage as exc:
                problems.append(f"image {i}: {exc}")
        if problems:  # every bad image named at once, nothing predicted: HTTP 400 from the scoring server
            more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
            raise MlflowException("; ".join(problems[:MAX_REPORTED]) + more, error_code=INVALID_PARAMETER_VALUE)
        columns = [LABEL_COLUMN, PROBABILITY_COLUMN] + [PROB_PREFIX + c for c in self.classes]
        if not pixels:
            return pd.DataFrame({c: pd.Series(dtype=object if c == LABEL_COLUMN else float) for c in columns})
        # predict_on_batch per chunk: Keras' predict() builds a data pipeline per call, ~10x slower for one image
        batch = np.stack(pixels)
        raw = np.concatenate([self.network.predict_on_batch(batch[i : i + BATCH]) for i in range(0, len(batch), BATCH)])
        probs = probabilities(raw, len(self.classes))
        best = probs.argmax(axis=1)
        out = pd.DataFrame(
            {LABEL_COLUMN: [self.classes[i] for i in best], PROBABILITY_COLUMN: probs[np.arange(len(best)), best]}
        )
        for j, name in enumerate(self.classes):
            out[PROB_PREFIX + name] = probs[:, j]
        return out[columns]


mlflow.models.set_model(ImageClassifier())
