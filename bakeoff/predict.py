"""Batch prediction from a registered model, and reading a logged bakeoff model back (Keras model, model.json).

Every candidate is logged by ``bakeoff.serving.log`` (encoded images in: the model decodes and resizes them itself,
exactly as training did): ``predict_source`` sends each good file's original bytes. Versions logged before issue
11 (the pickled ``bakeoff.pyfunc_model`` pyfunc, pixel tensors in) still predict through the old path (resized
here). Both layouts keep ``artifacts/model.keras`` and ``artifacts/model.json``: ``load_keras_model`` returns the
Keras model for fine-grained use, ``model_info`` its ``model.json``.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from bakeoff import storage, tracking, write_record
from bakeoff.contract import MODEL_JSON, MODEL_KERAS, PROB_PREFIX, ModelInfo
from bakeoff.errors import BakeoffError

# Models logged before the pyfunc moved to bakeoff.pyfunc_model pickled it as bakeoff.predict.KerasImageClassifier
# (by reference): keep that name importable so those registered versions still load.
from bakeoff.pyfunc_model import BATCH, KerasImageClassifier  # noqa: F401

CSV_HEADER = "path,predicted,probability,error"
"""The first columns of every predictions CSV: how predict knows a file at --out is one it wrote."""


def _model_artifact(model_uri: str, name: str, dst: str) -> str:
    """``name`` under the model's ``artifacts/``. A logged model's own URI (``models:/m-<id>``, a candidate's
    ``bakeoff.model_uri``) takes no sub-path in MLflow (it would be read as a registered model's name), so its
    files are read from its artifact location; registered ones (``models:/NAME/1``, ``models:/NAME@alias``) as
    they are."""
    import mlflow.artifacts

    root = model_uri.rstrip("/")
    logged = root.removeprefix("models:/")
    if root.startswith("models:/m-") and "/" not in logged and "@" not in logged:
        root = tracking.client().get_logged_model(logged).artifact_location.rstrip("/")
    return mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/artifacts/{name}", dst_path=dst)


def _read_model_file(model_uri: str, name: str, read):
    """Download one file of a logged/registered bakeoff model and ``read`` it before the temp copy goes."""
    import tempfile

    tracking.ensure_configured()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = _model_artifact(model_uri, name, tmp)
        except Exception as exc:
            raise BakeoffError(f"cannot read {name} of {model_uri}: {str(exc).splitlines()[0][:200]}") from exc
        return read(path)


def load_keras_model(model_uri: str):
    """The Keras model behind a logged/registered bakeoff model (e.g. ``models:/NAME@champion``)."""
    import keras

    return _read_model_file(model_uri, MODEL_KERAS, lambda path: keras.models.load_model(path, compile=False))


def model_info(model_uri: str) -> ModelInfo:
    """``model.json`` (classes, image_size, backbone, weights) of a logged/registered bakeoff model."""
    source = f"{MODEL_JSON} of {model_uri}"
    return _read_model_file(
        model_uri, MODEL_JSON, lambda path: ModelInfo.from_dict(json.loads(Path(path).read_text()), source=source)
    )


def load_pyfunc(model_uri: str):
    """The class-names pyfunc of a logged/registered bakeoff model; one-line error when it cannot load."""
    tracking.ensure_configured()
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:
        raise BakeoffError(
            f"cannot load {model_uri}: {str(exc).splitlines()[0][:200]}; "
            "check the name/alias with `bakeoff compare` or the MLflow UI"
        ) from exc


def _takes_encoded_images(model) -> bool:
    """True for the serving layout (one column ``image`` of encoded bytes), False for a pixel-tensor signature."""
    schema = model.metadata.get_input_schema()
    return schema is not None and not schema.is_tensor_spec() and schema.input_names() == ["image"]


def _input_size(model) -> int:
    schema = model.metadata.get_input_schema()
    shape = schema.inputs[0].shape if schema is not None else None
    if not shape or len(shape) != 4:
        raise BakeoffError("the model has no image signature [-1, S, S, 3]; was it logged by bakeoff?")
    return int(shape[1])


def _iter_images(source: str):
    """Yield (path, encoded bytes, RGB PIL image or None, reason) for every file of a folder, archive or s3:// prefix.

    Uses ingest's reader and decoder, so prediction sees images exactly as training did (EXIF
    orientation, mode conversion, decompression-bomb guard) and rejects the same files for the same reasons.
    """
    from bakeoff import images, sources

    for item in sources.iter_source(source):
        if sources.is_litter(item.relpath):
            continue
        path = sources.display_name(item.relpath)  # a non-UTF-8 name is shown escaped, so the CSV can hold it
        if item.skip_reason:
            yield path, b"", None, item.skip_reason
            continue
        try:
            with item.open() as handle:
                image, _ = images.load_image(handle)  # rejects a non-image before reading all of it
                handle.seek(0)
                data = handle.read()
        except images.ImageRejected as exc:
            yield path, b"", None, exc.reason
            continue
        except Exception as exc:  # one unreadable file must not stop the batch
            yield path, b"", None, f"unreadable: {type(exc).__name__}: {exc}".splitlines()[0][:200]
            continue
        yield path, data, image, ""


def _pixels(image, size: int) -> np.ndarray:
    """The old layout's input: the RGB image resized here (bilinear) to float32 [size, size, 3]."""
    from PIL import Image

    return np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32)


def check_out(source: str, out: str | None) -> None:
    """Refuse, before the model loads, an ``out`` that overlaps the source or would replace a file that is not a
    predictions CSV (the user's own data): predict replaces only what it wrote."""
    if not out:
        return
    write_record.check_apart(source, out, "the predictions")
    if not storage.is_s3(out) and Path(out).is_dir():
        raise BakeoffError(
            f"--out {out} is a folder; give the CSV file to write, e.g. --out {Path(out) / 'predictions.csv'}"
        )
    if storage.exists(out) and not storage.read_bytes(out).startswith(CSV_HEADER.encode()):
        raise BakeoffError(
            f"--out {out} exists and was not written by bakeoff predict (it does not start with {CSV_HEADER}); "
            "choose another --out or move the file away"
        )


def predict_source(model_uri: str, source: str, out: str | None = None) -> pd.DataFrame:
    """Predict every image of ``source`` with ``model_uri``; write a CSV (path, predicted, probability, error).

    Bad files become rows with an ``error`` reason and empty prediction, never a crash: every file is vetted with
    ingest's reader first (the serving pyfunc would refuse a whole batch for one bad image).
    """
    from rich.console import Console
    from rich.progress import Progress

    check_out(source, out)
    model = load_pyfunc(model_uri)
    encoded = _takes_encoded_images(model)
    size = None if encoded else _input_size(model)
    rows: list[dict] = []
    batch_paths: list[str] = []
    batch: list = []

    def flush() -> None:
        if not batch:
            return
        inputs = pd.DataFrame({"image": batch}) if encoded else np.stack(batch).astype(np.float32)
        preds = model.predict(inputs)
        for path, (_, pred) in zip(batch_paths, preds.iterrows()):
            row = {"path": path, "predicted": pred["label"], "probability": float(pred["probability"]), "error": ""}
            row.update({k: float(v) for k, v in pred.items() if str(k).startswith(PROB_PREFIX)})
            rows.append(row)
        batch.clear()
        batch_paths.clear()

    with Progress(transient=True, console=Console(stderr=True)) as progress:  # stdout may carry the CSV
        task = progress.add_task("predicting", total=None)
        for path, data, image, reason in _iter_images(source):
            progress.advance(task)
            if image is None:
                rows.append({"path": path, "predicted": "", "probability": float("nan"), "error": reason})
                continue
            batch.append(data if encoded else _pixels(image, size))
            batch_paths.append(path)
            if len(batch) >= BATCH:
                flush()
        flush()
    if not rows:
        raise BakeoffError(f"no files found in {source}")
    df = pd.DataFrame(rows).sort_values("path", kind="stable").reset_index(drop=True)
    if out:
        buffer = io.StringIO()
        df.to_csv(buffer, index=False)
        storage.write_bytes(out if storage.is_s3(out) else os.path.abspath(out), buffer.getvalue().encode())
    return df
