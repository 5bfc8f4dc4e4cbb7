"""Export a bakeoff model for runtimes without MLflow: TensorFlow SavedModel, TFLite, ONNX, and the MLflow model
folder itself (what the KServe InferenceService in infra/k8s/base/serving loads from S3).

Every numeric format is checked before anything reaches ``out``: the exported file is loaded back with its own
runtime (TensorFlow, the TFLite interpreter, onnxruntime) and run on check images; if any probability differs from
the Keras model's by more than ``TOLERANCE`` the export fails and writes nothing. The measured differences go
into ``export.json`` with the input contract (float32 RGB 0..255 [n, S, S, 3], resized as
``bakeoff.serving.image_classifier.decode_image`` does: the exported networks take pixels, not encoded files).

Why these libraries: Keras 3's ``model.export`` writes the SavedModel (serving signature ``serving_default``,
input ``image``); ``tf.lite.TFLiteConverter`` converts THAT SavedModel (float32, no quantisation, so it matches);
tf2onnx converts the same SavedModel (its ``from_function`` path turns the constants Keras 3 captures into graph
inputs, the SavedModel path does not).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bakeoff import contract, storage
from bakeoff.errors import BakeoffError

FORMATS = ("savedmodel", "tflite", "onnx", "mlflow")
DEFAULT_FORMATS = ("savedmodel", "tflite")
SAVEDMODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
ONNX_FILE = "model.onnx"
MLFLOW_DIR = "mlflow"
EXPORT_JSON = "export.json"
PATHS = {"savedmodel": SAVEDMODEL_DIR, "tflite": TFLITE_FILE, "onnx": ONNX_FILE, "mlflow": MLFLOW_DIR}
TOLERANCE = 1e-4  # max |p_format - p_keras| over every probability of every check image (measured: docs/tracking.md)
ONNX_OPSET = 17
N_CHECK_IMAGES = 8


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What ``export_model`` wrote: the folder, each format's path inside it, and the measured differences."""

    out: str
    files: dict[str, str]
    max_abs_diff: dict[str, float]
    tolerance: float
    classes: tuple[str, ...]
    image_size: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _is_mlflow_uri(source: str) -> bool:
    return source.startswith(("models:/", "runs:/", "mlflow-artifacts:/"))


def check_request(source: str, out: str, formats: list[str] | tuple[str, ...], overwrite: bool) -> tuple[str, ...]:
    """Every problem with the request at once, before a model is loaded or a file written; returns the formats."""
    wanted = tuple(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    problems = []
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown or not wanted:
        problems.append(f"unknown format(s) {unknown or formats}; choose from {', '.join(FORMATS)}")
    if "mlflow" in wanted and not _is_mlflow_uri(source):
        problems.append("--format mlflow needs an MLflow model URI (models:/NAME@ALIAS), not a folder")
    if not _is_mlflow_uri(source) and not storage.exists(storage.join(source, contract.MODEL_KERAS)):
        problems.append(f"{source} is neither a models:/ or runs:/ URI nor a folder with {contract.MODEL_KERAS}")
    if "onnx" in wanted and (
        importlib.util.find_spec("tf2onnx") is None or importlib.util.find_spec("onnxruntime") is None
    ):
        problems.append("--format onnx needs tf2onnx and onnxruntime: pip install 'bakeoff[export]'")
    if not overwrite and _has_content(out):
        problems.append(f"{out} already holds files; choose another --out or pass --overwrite")
    if problems:
        raise BakeoffError("; ".join(problems))
    return wanted


def _has_content(out: str) -> bool:
    if storage.is_s3(out):
        return storage.exists(storage.join(out, EXPORT_JSON))
    return Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir()))


def load_source(source: str):
    """(Keras model, ModelInfo) of a model folder or a logged/registered bakeoff model (either MLflow layout)."""
    if _is_mlflow_uri(source):
        from bakeoff.predict import load_keras_model, model_info

        return load_keras_model(source), model_info(source)
    from bakeoff.heads import load_keras

    return load_keras(storage.join(source, contract.MODEL_KERAS)), contract.ModelInfo.read(source)


def check_images(image_size: int, n: int = N_CHECK_IMAGES, seed: int = 0) -> np.ndarray:
    """Whole-number RGB images in 0..255: smooth gradients plus seeded noise, so every pixel range is exercised."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 255.0, image_size, dtype=np.float32)
    smooth = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 255.0 - ramp[None, :]), axis=-1)
    images = [np.roll(smooth, 7 * i, axis=i % 2) for i in range(n // 2)]
    images += list(rng.integers(0, 256, size=(n - len(images), image_size, image_size, 3)))
    return np.stack(images).astype(np.float32)


# ------------------------------------------------------------------------------------------------- runtimes
def run_savedmodel(path: str, images: np.ndarray) -> np.ndarray:
    """Outputs of an exported SavedModel's ``serving_default`` signature."""
    import tensorflow as tf

    fn = tf.saved_model.load(path).signatures["serving_default"]
    [out] = fn(tf.constant(images, dtype=tf.float32)).values()
    return out.numpy()


def run_tflite(path: str, images: np.ndarray) -> np.ndarray:
    """Outputs of a .tflite file through TensorFlow's TFLite interpreter, batch resized to ``len(images)``."""
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite.Interpreter warns that LiteRT will replace it; it works in TF 2.21
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=path)
    [inp] = interpreter.get_input_details()
    interpreter.resize_tensor_input(inp["index"], list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images.astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def run_onnx(path: str, images: np.ndarray) -> np.ndarray:
    """Outputs of a .onnx file through onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    [inp] = session.get_inputs()
    return session.run(None, {inp.name: images.astype(np.float32)})[0]


RUNNERS = {"savedmodel": run_savedmodel, "tflite": run_tflite, "onnx": run_onnx}


# ------------------------------------------------------------------------------------------------- writers
def _write_savedmodel(model, path: str) -> None:
    model.export(path, format="tf_saved_model", verbose=False)


def _write_tflite(savedmodel: str, path: str) -> None:
    import tensorflow as tf

    Path(path).write_bytes(tf.lite.TFLiteConverter.from_saved_model(savedmodel).convert())


def _write_onnx(savedmodel: str, path: str) -> None:
    import logging

    import tf2onnx
    from tf2onnx import tf_loader

    tf2onnx.logging.set_level(logging.ERROR)  # its INFO lines describe every graph rewrite

    graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
        savedmodel, None, None, signatures=["serving_default"], return_tensors_to_rename=True
    )
    tf2onnx.convert.from_graph_def(
        graph_def,
        name="bakeoff",
        input_names=inputs,
        output_names=outputs,
        opset=ONNX_OPSET,
        tensors_to_rename=renames,
        output_path=path,
    )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnxruntime", "mlflow"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return found


def _build(source: str, staging: Path, formats: tuple[str, ...]) -> ExportResult:
    model, info = load_source(source)
    files: dict[str, str] = {}
    needs_savedmodel = any(f in formats for f in ("savedmodel", "tflite", "onnx"))
    # tflite and onnx convert the SavedModel: made beside the staging folder when it is not itself requested
    savedmodel = str(staging / SAVEDMODEL_DIR) if "savedmodel" in formats else str(staging.parent / SAVEDMODEL_DIR)
    if needs_savedmodel:
        _write_savedmodel(model, savedmodel)
    if "tflite" in formats:
        _write_tflite(savedmodel, str(staging / TFLITE_FILE))
    if "onnx" in formats:
        _write_onnx(savedmodel, str(staging / ONNX_FILE))
    if "mlflow" in formats:
        import mlflow.artifacts

        mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(staging / MLFLOW_DIR))
    images = check_images(info.image_size)
    expected = np.asarray(model.predict(images, verbose=0), dtype=np.float64)
    diffs = {}
    for fmt in formats:
        files[fmt] = PATHS[fmt]
        if fmt in RUNNERS:
            got = np.asarray(RUNNERS[fmt](str(staging / PATHS[fmt]), images), dtype=np.float64)
            diffs[fmt] = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    bad = {f: d for f, d in diffs.items() if not d <= TOLERANCE}
    if bad:
        raise BakeoffError(
            f"exported {sorted(bad)} differ from the Keras model by {bad} > {TOLERANCE}; nothing written"
        )
    result = ExportResult("", files, diffs, TOLERANCE, tuple(info.classes), int(info.image_size))
    single = expected.shape[1] == 1
    manifest = {
        "source": source,
        "classes": list(info.classes),
        "image_size": int(info.image_size),
        "backbone": info.backbone,
        "input": {
            "name": "image",
            "dtype": "float32",
            "shape": [-1, int(info.image_size), int(info.image_size), 3],
            "pixels": "RGB 0..255, resized as bakeoff.serving.image_classifier.decode_image (bilinear, antialias)",
        },
        "output": {
            "shape": [-1, int(expected.shape[1])],
            "meaning": f"sigmoid P({info.classes[1]})" if single else "softmax over classes, in order",
        },
        "files": files,
        "check": {"n_images": len(images), "max_abs_diff": diffs, "tolerance": TOLERANCE},
        "versions": _versions(),
    }
    (staging / EXPORT_JSON).write_text(json.dumps(manifest, indent=2))
    return result


def _publish(staging: Path, out: str) -> None:
    """Move the finished export into place: one rename locally; on S3 every file, export.json LAST (the marker)."""
    if storage.is_s3(out):
        for item in storage.list_files(staging):
            if item.relpath != EXPORT_JSON:
                storage.upload(item.uri, storage.join(out, item.relpath))
        storage.upload(str(staging / EXPORT_JSON), storage.join(out, EXPORT_JSON))
        return
    target = Path(out)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_model(
    source: str, out: str, formats: list[str] | tuple[str, ...] = DEFAULT_FORMATS, *, overwrite: bool = False
) -> ExportResult:
    """Write ``source`` (a model folder or ``models:/...``) to ``out`` (folder or s3:// prefix) in ``formats``.

    Checked up front (every problem in one error); built in a temporary folder beside ``out``; each numeric format
    compared with Keras (``TOLERANCE``); only then moved into place. Returns what was written and measured.
    """
    wanted = check_request(source, out, formats, overwrite)
    local_parent = None if storage.is_s3(out) else Path(out).resolve().parent
    if local_parent is not None:
        local_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=local_parent, prefix=".export-") as tmp:
        staging = Path(tmp) / "out"
        staging.mkdir()
        result = _build(source, staging, wanted)
        _publish(staging, out)
    return dataclasses.replace(result, out=out)
