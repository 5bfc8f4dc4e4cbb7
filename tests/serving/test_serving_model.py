"""The served model without a server: its pixels are training's, its MLflow layout has both flavors, it predicts
class names on real photos, loads where bakeoff cannot be imported, and names every bad image at once."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from support import encode, photo


def _training_pixels(encoded: bytes, size: int, tmp: Path) -> np.ndarray:
    """What training sees for these bytes: ingest's stored copy (original or normalised PNG) through bakeoff.data."""
    import tensorflow as tf

    from bakeoff import data, images

    rgb, info = images.load_image(encoded)
    stored = tmp / f"{len(list(tmp.iterdir()))}.{info.ext}"
    stored.write_bytes(encoded if info.passthrough else images.to_png_bytes(rgb))
    return data.decode_and_resize(tf.constant(str(stored)), size).numpy()


def _odd_images() -> dict[str, bytes]:
    """Modes and formats that ingest normalises (not passthrough), made from a real photo."""
    coffee = photo("coffee").resize((300, 200))
    palette = coffee.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 0
    grey16 = Image.fromarray((np.asarray(coffee.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    return {
        "palette-transparent.png": encode(palette, "PNG", transparency=0),
        "grey-16bit.png": encode(grey16, "PNG"),
        "cmyk.jpg": encode(coffee.convert("CMYK"), "JPEG", quality=90),
        "grey-alpha.png": encode(coffee.convert("LA"), "PNG"),
        "first-frame.gif": encode(coffee.convert("P"), "GIF"),
        "webp.webp": encode(coffee, "WEBP", lossless=True),
    }


@pytest.mark.parametrize("size", [32, 128])
def test_served_pixels_are_exactly_the_training_pixels(photo_files, size, tmp_path):
    """Real photos (PNG, JPEG at DCT scale 1/2 and 1/8, EXIF-rotated, RGBA, grey) and odd modes: bit-identical."""
    from bakeoff.serving.image_classifier import decode_image

    folder, labels = photo_files
    cases = {name: (folder / name).read_bytes() for name in labels} | _odd_images()
    for name, encoded in cases.items():
        served = decode_image(encoded, size)
        assert served.shape == (size, size, 3) and served.dtype == np.float32, name
        np.testing.assert_array_equal(served, _training_pixels(encoded, size, tmp_path), err_msg=name)


def test_exif_orientation_is_applied(photo_files):
    """Guard on the parity test: the sideways-stored photo decodes upright, as the upright photo does."""
    import tensorflow as tf

    from bakeoff.serving.image_classifier import decode_image

    folder, _ = photo_files
    sideways = (folder / "chelsea-exif6.jpg").read_bytes()
    upright = decode_image((folder / "chelsea.png").read_bytes(), 64)
    served = decode_image(sideways, 64)
    ignored = tf.image.resize(tf.io.decode_jpeg(sideways, channels=3), (64, 64), antialias=True).numpy()
    assert np.abs(served - upright).mean() < 3  # JPEG re-encoding only
    assert np.abs(ignored - upright).mean() > 20  # what a decoder ignoring EXIF would feed the model


def test_logged_model_has_the_pyfunc_and_tensorflow_flavors_over_one_network(champion):
    import keras

    import mlflow
    from bakeoff.predict import load_keras_model, model_info
    from bakeoff.serving.log import LAYOUT, LAYOUT_KEY

    local = Path(mlflow.artifacts.download_artifacts(champion.alias_uri))
    meta = mlflow.models.Model.load(str(local / "MLmodel"))
    assert set(meta.flavors) == {"python_function", "tensorflow"}
    assert meta.flavors["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert meta.flavors["tensorflow"]["model_type"] == "keras"
    assert meta.metadata[LAYOUT_KEY] == LAYOUT
    assert [(s.name, str(s.type)) for s in meta.signature.inputs.inputs] == [("image", "DataType.binary")]
    assert meta.signature.outputs.input_names() == [
        "label",
        "probability",
        "prob_cat",
        "prob_coffee",
        "prob_rocket",
        "prob_palace",
    ]
    assert meta.saved_input_example_info is not None
    # one network, at the path older bakeoff models used; the model's code never imports bakeoff
    assert sorted(p.name for p in (local / "artifacts").iterdir()) == ["model.json", "model.keras"]
    code = (local / "image_classifier.py").read_text()
    assert "import bakeoff" not in code and "from bakeoff" not in code
    requirements = (local / "requirements.txt").read_text().split()
    assert {r.split("==")[0] for r in requirements} >= {"mlflow", "keras", "numpy", "pandas", "pillow"}
    assert not [r for r in requirements if "bakeoff" in r]

    # the raw network: MLflow's own tensorflow flavor and bakeoff's reader give the folder's Keras model
    x = np.random.default_rng(0).integers(0, 256, (4, 128, 128, 3)).astype(np.float32)
    expected = keras.models.load_model(champion.model_dir / "model.keras", compile=False).predict(x, verbose=0)
    network = mlflow.tensorflow.load_model(champion.alias_uri, keras_model_kwargs={"compile": False})
    np.testing.assert_allclose(network.predict(x, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(load_keras_model(champion.alias_uri).predict(x, verbose=0), expected, atol=1e-6)
    assert model_info(champion.alias_uri).classes == ("cat", "coffee", "rocket", "palace")


def test_pyfunc_names_the_class_of_real_photos_as_the_network_does(champion, photo_files):
    import keras

    import mlflow
    from bakeoff.serving.image_classifier import decode_image

    folder, labels = photo_files
    names = sorted(labels)
    blobs = [(folder / n).read_bytes() for n in names]
    out = mlflow.pyfunc.load_model(champion.alias_uri).predict(pd.DataFrame({"image": blobs}))
    assert list(out["label"]) == [labels[n] for n in names]
    probs = out[["prob_cat", "prob_coffee", "prob_rocket", "prob_palace"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out["probability"], probs.max(axis=1))
    network = keras.models.load_model(champion.model_dir / "model.keras", compile=False)
    direct = network.predict(np.stack([decode_image(b, 128) for b in blobs]), verbose=0)
    np.testing.assert_allclose(probs, direct, atol=1e-5)
    # a base64 string is an encoded image too (what REST clients send)
    import base64

    again = mlflow.pyfunc.load_model(champion.alias_uri).predict(
        pd.DataFrame({"image": [base64.b64encode(blobs[0]).decode()]})
    )
    assert again["label"].tolist() == [labels[names[0]]]


NO_BAKEOFF = r"""
import json, sys
for name in ("bakeoff", "components", "pipelines"):
    sys.modules[name] = None  # any import of the project now raises ImportError
try:
    import bakeoff  # noqa: F401
    raise SystemExit("guard failed: bakeoff imported")
except ImportError:
    pass
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
paths = sys.argv[2:]
out = model.predict(pd.DataFrame({"image": [open(p, "rb").read() for p in paths]}))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("bakeoff", "components", "pipelines") and sys.modules[m])
print(json.dumps({"labels": out["label"].tolist(), "probability": out["probability"].tolist(), "project": loaded}))
"""


def test_model_loads_and_predicts_where_bakeoff_cannot_be_imported(champion, photo_files, tmp_path):
    """`python -I` (no PYTHONPATH, no cwd on the path) with the project's packages blocked in sys.modules."""
    import mlflow

    folder, labels = photo_files
    names = sorted(labels)
    local = mlflow.artifacts.download_artifacts(champion.alias_uri, dst_path=str(tmp_path / "model"))
    run = subprocess.run(
        [sys.executable, "-I", "-c", NO_BAKEOFF, local, *[str(folder / n) for n in names]],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["project"] == []
    assert result["labels"] == [labels[n] for n in names]
    inproc = mlflow.pyfunc.load_model(local).predict(
        pd.DataFrame({"image": [(folder / n).read_bytes() for n in names]})
    )
    np.testing.assert_allclose(result["probability"], inproc["probability"], atol=1e-6)


def test_every_bad_image_is_named_in_one_error_and_nothing_is_predicted(champion, photo_files):
    from mlflow.exceptions import MlflowException

    import mlflow

    folder, _ = photo_files
    good = (folder / "coffee.jpg").read_bytes()
    buffer = io.BytesIO()
    photo("chelsea").save(buffer, format="JPEG")
    truncated = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    model = mlflow.pyfunc.load_model(champion.alias_uri)
    with pytest.raises(MlflowException) as err:
        model.predict(pd.DataFrame({"image": [good, b"", b"plain text, not an image", truncated]}))
    message = str(err.value)
    assert "image 1: zero-byte" in message and "image 2: not-an-image" in message and "image 3: corrupt" in message
    assert "image 0" not in message
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"


def test_logging_a_folder_without_a_model_fails_in_one_line(tmp_path, mlflow_store):
    from bakeoff.errors import BakeoffError
    from bakeoff.tracking.models import log_model_folder

    (tmp_path / "model.json").write_text(json.dumps({"classes": ["a", "b"], "image_size": 32}))
    with pytest.raises(BakeoffError, match="model.keras"):
        log_model_folder("no-run-needed", str(tmp_path), "never-registered")
