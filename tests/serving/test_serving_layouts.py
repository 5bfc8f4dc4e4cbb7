"""Both model layouts side by side in one registry: versions logged before issue 11 (pickled pyfunc, pixel tensors
in) and the serving layout (models-from-code, encoded images in). `bakeoff predict`, the Keras/model.json readers
and the promotion gate handle each, in both directions; bad files stay per-file error rows in the new layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bakeoff import contract, registry, tracking

from support import IMAGE_SIZE
from support.legacy_model import log_legacy_version


@pytest.fixture(scope="module")
def two_layouts(mlflow_store, dataset, candidates):
    """A pipeline run with two candidates: 160.46 as a version from before issue 11 (its run points at an old-layout
    model, registered and aliased champion the old way), 127.5 logged the new way (not registered yet)."""
    name = "bakeoff-two-layouts"
    c = tracking.client()
    parent = tracking.start_pipeline_run("layouts", str(dataset), kfp_run_id="kfp-layouts")
    old_run = tracking.log_candidate(parent, model_name=name, **candidates(160.46).dirs)
    old_version, old_uri = log_legacy_version(old_run, candidates(160.46).root / "model", name)
    for key, value in {
        contract.MODEL_URI_TAG: old_uri,
        contract.MODEL_VERSION_TAG: old_version,
        contract.MODEL_NAME_TAG: name,
    }.items():
        c.set_tag(old_run, key, value)
    c.set_registered_model_alias(name, "champion", old_version)
    new_run = tracking.log_candidate(parent, model_name=name, **candidates(127.5).dirs)
    return name, old_run, old_version, new_run


def _colour_files(folder, reds):
    """Real PNG files of flat colour fields (red value r, green 60, blue 90) at the candidates' size."""
    from PIL import Image

    folder.mkdir(parents=True)
    for i, red in enumerate(reds):
        Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (int(red), 60, 90)).save(folder / f"{i:03d}-{int(red)}.png")
    return folder


def test_which_layout_a_model_has(two_layouts):
    from bakeoff.predict import _takes_encoded_images, load_pyfunc

    name, old_run, old_version, new_run = two_layouts
    new_uri = tracking.client().get_run(new_run).data.tags[contract.MODEL_URI_TAG]
    assert _takes_encoded_images(load_pyfunc(new_uri))
    assert not _takes_encoded_images(load_pyfunc(f"models:/{name}/{old_version}"))


def test_old_versions_still_predict_and_read_back(two_layouts, tmp_path):
    from bakeoff.predict import load_keras_model, model_info, predict_source

    name, _, old_version, _ = two_layouts
    uri = f"models:/{name}/{old_version}"
    reds = [20, 100, 150, 170, 240]
    folder = _colour_files(tmp_path / "fields", reds)
    (folder / "empty.png").write_bytes(b"")
    out = predict_source(uri, str(folder), str(tmp_path / "p.csv")).set_index("path")
    assert out.loc["empty.png", "error"] == "zero-byte"
    good = out.drop(index="empty.png")
    assert list(good["predicted"]) == ["red" if r > 160.46 else "blue" for r in reds]
    assert model_info(uri).classes == ("blue", "red") and model_info(uri).image_size == IMAGE_SIZE
    pixels = np.stack([np.full((IMAGE_SIZE, IMAGE_SIZE, 3), (r, 60, 90), dtype=np.float32) for r in reds])
    np.testing.assert_allclose(load_keras_model(uri).predict(pixels, verbose=0)[:, 1], good["prob_red"], rtol=1e-5)


def test_the_gate_compares_old_and_new_layouts_in_both_directions(two_layouts, dataset):
    """Old champion re-scored against a new challenger (which wins), then the old run as challenger against the new
    champion (which stays): the gate reads both layouts through the same Keras/model.json readers."""
    name, old_run, old_version, new_run = two_layouts
    c = tracking.client()
    up = registry.promote(new_run, model_name=name, dataset_dir=str(dataset))
    assert up.promoted and up.champion_version_before == old_version, up.reason
    assert up.p_value is not None and up.p_value < 0.05  # a real paired comparison with the old champion ran
    new_version = c.get_model_version_by_alias(name, "champion").version
    assert str(new_version) == up.challenger_version != old_version
    down = registry.promote(old_run, model_name=name, dataset_dir=str(dataset))
    assert not down.promoted and "not better than champion" in down.reason, down.reason
    assert c.get_model_version_by_alias(name, "champion").version == new_version


def test_predict_with_a_new_layout_model_keeps_bad_files_as_error_rows(two_layouts, tmp_path):
    """The served pyfunc refuses a whole batch with one bad image; `bakeoff predict` vets each file first, so the
    good files are predicted (their original bytes sent) and each bad one is a row with its reason."""
    from bakeoff.predict import predict_source

    _, _, _, new_run = two_layouts
    uri = tracking.client().get_run(new_run).data.tags[contract.MODEL_URI_TAG]
    reds = [10, 120, 140, 250]
    folder = _colour_files(tmp_path / "fields", reds)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("not an image")
    (folder / "cut.png").write_bytes((folder / "000-10.png").read_bytes()[:60])
    out = predict_source(uri, str(folder)).set_index("path")
    assert out.loc["empty.png", "error"] == "zero-byte"
    assert out.loc["notes.png", "error"] == "not-an-image"
    assert out.loc["cut.png", "error"] and out.loc["cut.png", "predicted"] == ""
    good = out[out["error"] == ""]
    assert list(good["predicted"]) == ["red" if r > 127.5 else "blue" for r in reds]
    assert list(good.columns) == ["predicted", "probability", "error", "prob_blue", "prob_red"]
    assert pd.Series(good["prob_red"] + good["prob_blue"]).round(6).eq(1.0).all()
