"""`bakeoff export`: SavedModel, TFLite and ONNX files whose predictions match the Keras model within
``bakeoff.export.TOLERANCE`` (max abs difference of any probability) on real photos; the MLflow folder for KServe;
S3 output; every request problem reported at once, before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest


def _photo_batch(photo_files, size: int) -> np.ndarray:
    from bakeoff.serving.image_classifier import decode_image

    folder, labels = photo_files
    return np.stack([decode_image((folder / name).read_bytes(), size) for name in sorted(labels)])


def test_exported_files_match_keras_on_real_photos_within_tolerance(photo_model, photo_files, tmp_path, capsys):
    import keras

    from bakeoff import export

    out = tmp_path / "export"
    result = export.export_model(str(photo_model), str(out), ["savedmodel", "tflite", "onnx"])
    assert result.files == {"savedmodel": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["classes"] == ["cat", "coffee", "rocket", "palace"]
    assert manifest["input"]["shape"] == [-1, 128, 128, 3] and manifest["output"]["shape"] == [-1, 4]
    assert all(d <= export.TOLERANCE for d in manifest["check"]["max_abs_diff"].values())

    # independently of the export's own check: each file loaded fresh, on real photos decoded as served
    images = _photo_batch(photo_files, 128)
    expected = keras.models.load_model(photo_model / "model.keras", compile=False).predict(images, verbose=0)
    diffs = {}
    for fmt, run in export.RUNNERS.items():
        got = run(str(out / result.files[fmt]), images)
        diffs[fmt] = float(np.abs(got - expected).max())
        assert diffs[fmt] <= export.TOLERANCE, (fmt, diffs[fmt])
        assert (got.argmax(axis=1) == expected.argmax(axis=1)).all(), fmt
    with capsys.disabled():
        print(f"\nexport max |p - p_keras| on {len(images)} real photos: {diffs} (tolerance {export.TOLERANCE})")
    assert not list(tmp_path.glob(".export-*")), "the staging folder is cleaned up"


@pytest.fixture
def tiny_model(tmp_path):
    """A small real model folder (support.candidates' red-vs-blue classifier) where conversion time is not the point."""
    from support import write_candidate_folders

    return write_candidate_folders(tmp_path / "tiny", 127.5).root / "model"


def test_the_check_can_fail_and_then_nothing_is_written(tiny_model, tmp_path, monkeypatch):
    from bakeoff import export
    from bakeoff.errors import BakeoffError

    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no difference can be that small: the check must refuse
    with pytest.raises(BakeoffError, match="differ from the Keras model"):
        export.export_model(str(tiny_model), str(tmp_path / "out"), ["tflite"])
    assert not (tmp_path / "out").exists()


def test_export_cli_writes_the_champion_with_its_mlflow_folder(champion, photo_files, tmp_path):
    import pandas as pd

    import mlflow
    from bakeoff import export
    from bakeoff.cli import main

    out = tmp_path / "champion"
    code = main(["export", champion.alias_uri, "--out", str(out), "-f", "savedmodel", "-f", "mlflow"])
    assert code == 0
    folder, labels = photo_files
    served = mlflow.pyfunc.load_model(str(out / "mlflow"))  # what KServe's storage initializer puts in /mnt/models
    name = sorted(labels)[0]
    assert served.predict(pd.DataFrame({"image": [(folder / name).read_bytes()]}))["label"].tolist() == [labels[name]]
    images = _photo_batch(photo_files, 128)
    network = mlflow.tensorflow.load_model(champion.alias_uri, keras_model_kwargs={"compile": False})
    got = export.run_savedmodel(str(out / "saved_model"), images)
    assert np.abs(got - network.predict(images, verbose=0)).max() <= export.TOLERANCE
    # a second export to the same place needs --overwrite
    assert main(["export", champion.alias_uri, "--out", str(out), "-f", "savedmodel"]) == 2
    assert main(["export", champion.alias_uri, "--out", str(out), "-f", "mlflow", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "mlflow"]


def test_export_to_s3_writes_the_marker_last_and_only_what_was_asked(tiny_model, s3_server):
    from bakeoff import export, storage

    out = "s3://bakeoff-test/serving/tiny/v1"
    export.export_model(str(tiny_model), out, ["tflite"])
    keys = sorted(item.relpath for item in storage.list_files(out))
    assert keys == ["export.json", "model.tflite"]  # the SavedModel was only an intermediate step
    assert json.loads(storage.read_bytes(f"{out}/export.json"))["files"] == {"tflite": "model.tflite"}
    with pytest.raises(Exception, match="--overwrite"):
        export.export_model(str(tiny_model), out, ["tflite"])


def test_every_request_problem_is_reported_at_once_before_any_work(tmp_path, capsys):
    from bakeoff.cli import main

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "old.txt").write_text("an earlier export")
    code = main(["export", str(tmp_path / "no-model"), "--out", str(taken), "-f", "bogus", "-f", "mlflow"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    for expected in (
        "unknown format(s) ['bogus']",
        "--format mlflow needs an MLflow model URI",
        "no-model",
        "--overwrite",
    ):
        assert expected in err, expected


def test_a_flip_averaged_model_exports_and_serves_as_the_mean_of_both_passes(mlflow_store, tmp_path):
    """The head search's flip TTA ships inside ONE model: MLflow's tensorflow flavor, the pyfunc (image bytes in)
    and every `bakeoff export` format give mean(model(x), model(mirror of x)) with no custom objects anywhere."""
    import io

    import keras
    import pandas as pd
    from PIL import Image

    import mlflow
    from bakeoff import contract, export
    from bakeoff.finetune import flip_averaged
    from bakeoff.serving.log import log_model

    size, classes = 32, ["left", "middle", "right"]
    inputs = keras.Input((size, size, 3), name="image")
    logits = keras.layers.Dense(3, name="head_output", activation="softmax")
    core = keras.Model(inputs, logits(keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))))
    rng = np.random.default_rng(7)
    logits.set_weights([rng.normal(0, 0.05, (size * size * 3, 3)).astype("float32"), np.zeros(3, "float32")])
    folder = tmp_path / "model"
    folder.mkdir()
    flip_averaged(core).save(folder / "model.keras")
    (folder / "model.json").write_text(json.dumps({"classes": classes, "image_size": size, "tta": True}))

    images = rng.integers(0, 256, (6, size, size, 3)).astype("float32")
    expected = (core.predict(images, verbose=0) + core.predict(images[:, :, ::-1], verbose=0)) / 2
    assert np.abs(core.predict(images, verbose=0) - expected).max() > 1e-3  # position-dependent: the mirror matters

    result = export.export_model(str(folder), str(tmp_path / "export"), ["savedmodel", "tflite", "onnx"])
    for fmt, run in export.RUNNERS.items():
        np.testing.assert_allclose(run(str(tmp_path / "export" / result.files[fmt]), images), expected, atol=1e-5)

    where = mlflow.create_experiment("flip-tta", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=where):  # artifacts under tmp_path, never the working directory
        logged = log_model(str(folder / "model.keras"), str(folder / "model.json"), classes, size, "flip-tta")
    network = mlflow.tensorflow.load_model(logged.model_uri, keras_model_kwargs={"compile": False})
    np.testing.assert_allclose(network.predict(images, verbose=0), expected, atol=1e-5)
    pngs = []
    for pixels in images.astype(np.uint8):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    served = mlflow.pyfunc.load_model(logged.model_uri).predict(pd.DataFrame({"image": pngs}))
    got = served[[contract.prob_column(c) for c in classes]].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
