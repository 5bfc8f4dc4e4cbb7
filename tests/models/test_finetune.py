"""Fine-tuning on real photos with the real imported MobileNetV2 weights at 64 px.

The central promise: only the chosen top blocks (minus BatchNorm) and the head move; every other weight, and every
BatchNorm's gamma/beta/moving mean/moving variance, is bit-identical before and after.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from bakeoff.errors import BakeoffError


@functools.lru_cache(maxsize=4)
def _load(folder: str):
    """Load once per folder (a MobileNetV2 .keras takes seconds to deserialise on a busy 2-core box)."""
    import keras

    return keras.models.load_model(Path(folder) / "model.keras")  # plain load: no custom objects


def _backbone(model):
    extractor = next(layer for layer in model.layers if layer.name.endswith("_features"))
    return extractor.get_layer("backbone")


def test_finetune_moves_only_the_unfrozen_blocks_and_never_batchnorm(hfe_faces_finetuned):
    import keras

    before_dir, after_dir = hfe_faces_finetuned
    info = json.loads((Path(after_dir) / "model.json").read_text())
    unfrozen = set(info["unfrozen_layers"])
    assert info["finetuned"] and info["hyperparameters"]["blocks"] == 2
    assert unfrozen and all(name.startswith(("block_16", "Conv_1")) for name in unfrozen)

    before, after = _backbone(_load(before_dir)), _backbone(_load(after_dir))
    n_bn = n_frozen = 0
    for old, new in zip(before.layers, after.layers):
        old_w, new_w = old.get_weights(), new.get_weights()
        if not old_w:
            continue
        assert old.name == new.name
        same = all(np.array_equal(a, b) for a, b in zip(old_w, new_w))
        if isinstance(old, keras.layers.BatchNormalization):
            assert old.name not in unfrozen
            assert same, f"BatchNorm {old.name} changed (gamma/beta/moving stats must stay put)"
            assert not new.trainable
            n_bn += 1
        elif old.name in unfrozen:
            assert not same, f"unfrozen layer {old.name} did not move"
        else:
            assert same, f"frozen layer {old.name} changed"
            n_frozen += 1
    assert n_bn == 52 and n_frozen > 40  # MobileNetV2 has 52 BatchNorm layers; the lower blocks stay frozen
    # the head trained too
    head_before = _load(before_dir).get_layer("head_output").get_weights()[0]
    head_after = _load(after_dir).get_layer("head_output").get_weights()[0]
    assert not np.array_equal(head_before, head_after)


def test_assembled_model_is_backbone_plus_the_trained_head(hfe_faces_finetuned, hfe_faces_head):
    import keras

    before_dir, _ = hfe_faces_finetuned
    head = keras.models.load_model(Path(hfe_faces_head) / "head.keras")
    model = _load(before_dir)
    for name in ("head_hidden", "head_output"):
        for a, b in zip(head.get_layer(name).get_weights(), model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    info = json.loads((Path(before_dir) / "model.json").read_text())
    assert info["finetuned"] is False and info["history"]["loss"] == []
    assert info["image_size"] == 64 and info["classes"] == ["face", "other"]


def test_saved_model_takes_raw_pixels_and_serves_deterministically(hfe_faces_finetuned, hfe_faces_dataset):
    from bakeoff import manifest
    from bakeoff.data import image_dataset

    _, after_dir = hfe_faces_finetuned
    model = _load(after_dir)
    info = json.loads((Path(after_dir) / "model.json").read_text())
    assert model.input.shape[1:] == (64, 64, 3) and model.output.dtype == "float32"
    assert any(layer.name.startswith("augment_") for layer in model.layers)  # present, but inert at inference
    rows = manifest.read_manifest(hfe_faces_dataset)
    images = next(iter(image_dataset(rows[rows["split"] == "val"], 64, batch_size=16))).numpy()
    first, second = model.predict(images, verbose=0), model.predict(images, verbose=0)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (16, 1) and ((first >= 0) & (first <= 1)).all()
    assert {len(v) for v in info["history"].values()} == {info["epochs_run"]}
    assert len(info["epoch_end_ms"]) == info["epochs_run"] and info["epoch_end_ms"] == sorted(info["epoch_end_ms"])
    assert info["mixed_precision"] is False  # auto on a CPU-only machine
    # saved without optimizer state: the same size as the never-compiled assembled model, not ~2x
    before_size = (Path(hfe_faces_finetuned[0]) / "model.keras").stat().st_size
    assert (Path(after_dir) / "model.keras").stat().st_size < 1.05 * before_size
    assert info["val_accuracy"] == info["history"]["val_accuracy"][info["best_epoch"] - 1]


@pytest.mark.slow  # ~40 s: float16 on a CPU is emulated and slow; on a GPU box this path is the default
def test_mixed_precision_trains_in_float16_and_saves_float32(hfe_faces_dataset, hfe_faces_head, tmp_path):
    """Forced on (no GPU here): training runs under mixed_float16; the saved model is plain float32 for serving."""
    import keras

    from bakeoff.finetune import finetune

    info = finetune(
        hfe_faces_dataset,
        hfe_faces_head,
        str(tmp_path / "m"),
        epochs=1,
        blocks=1,
        batch_size=32,
        augment=False,
        mixed_precision="on",
    )
    assert info["mixed_precision"] is True and np.isfinite(info["history"]["loss"]).all()
    assert keras.mixed_precision.global_policy().name == "float32"  # the caller's policy is restored
    model = _load(str(tmp_path / "m"))
    policies = {layer.dtype_policy.name for layer in model.layers}
    assert policies == {"float32"}
    assert not any(layer.name.startswith("augment_") for layer in model.layers)


def test_finetune_rejects_bad_settings(hfe_faces_dataset, hfe_faces_head, tmp_path):
    from bakeoff.finetune import finetune

    with pytest.raises(BakeoffError, match="--blocks must be 0..19"):
        finetune(hfe_faces_dataset, hfe_faces_head, str(tmp_path / "m"), blocks=40, epochs=0)
    with pytest.raises(BakeoffError, match="mixed-precision"):
        finetune(hfe_faces_dataset, hfe_faces_head, str(tmp_path / "m"), mixed_precision="maybe")
    with pytest.raises(BakeoffError, match="missing"):
        finetune(hfe_faces_dataset, str(tmp_path / "no-head"), str(tmp_path / "m"))


def test_cli_finetune(hfe_faces_dataset, hfe_faces_head, tmp_path, capsys):
    from bakeoff.cli import main

    assert main(["finetune", "--help"]) == 0
    assert "BatchNorm" in capsys.readouterr().out
    out = tmp_path / "cli-model"
    assert main(["finetune", hfe_faces_dataset, hfe_faces_head, "--out", str(out), "--epochs", "0"]) == 0
    assert "assembled" in capsys.readouterr().out
    assert json.loads((out / "model.json").read_text())["backbone"] == "mobilenet_v2"
    assert main(["finetune", hfe_faces_dataset, str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "error: missing" in capsys.readouterr().err


def test_a_finetune_made_worse_never_replaces_the_frozen_model(
    hfe_faces_dataset, hfe_faces_head, hfe_faces_finetuned, tmp_path
):
    """A huge learning rate wrecks the network; val says so, and the frozen starting point is what is saved."""
    from bakeoff.finetune import finetune

    out = tmp_path / "m"
    info = finetune(hfe_faces_dataset, hfe_faces_head, str(out), epochs=2, blocks=2, learning_rate=5.0, batch_size=16)
    head_val = json.loads((Path(hfe_faces_head) / "head.json").read_text())["val_accuracy"]
    assert info["finetuned"] is False and info["frozen_val_accuracy"] == pytest.approx(head_val)
    assert info["finetune_val_gain"] == pytest.approx(info["finetuned_val_accuracy"] - head_val)
    assert info["finetune_val_gain"] <= 0 and info["val_accuracy"] == pytest.approx(head_val)
    assert json.loads((out / "model.json").read_text())["finetune_val_gain"] == info["finetune_val_gain"]
    frozen, saved = _load(hfe_faces_finetuned[0]), _load(str(out))  # the epochs=0 assembly vs what was saved
    for a, b in zip(frozen.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_finetune_that_gains_on_val_replaces_the_frozen_model(hfe_faces_dataset, hfe_faces_features, tmp_path):
    """From a barely trained head, a few epochs of fine-tuning gain on val: then the fine-tuned model is saved."""
    from bakeoff.finetune import finetune
    from bakeoff.heads import train_head

    weak = train_head(hfe_faces_features, str(tmp_path / "h"), epochs=1, hidden=32, learning_rate=1e-7, patience=0)
    info = finetune(
        hfe_faces_dataset,
        str(tmp_path / "h"),
        str(tmp_path / "m"),
        epochs=5,
        blocks=0,
        learning_rate=1e-2,
        batch_size=8,
    )
    assert info["frozen_val_accuracy"] == pytest.approx(weak["val_accuracy"])
    assert info["finetuned"] is True and info["finetune_val_gain"] > 0
    assert info["val_accuracy"] == pytest.approx(info["finetuned_val_accuracy"])


def test_a_tta_head_becomes_one_model_that_averages_image_and_mirror(
    hfe_faces_dataset, hfe_faces_head, hfe_faces_finetuned, tmp_path
):
    """A head the search chose with flip test-time averaging: the saved model (plain load, no custom objects) is
    mean(model(x), model(mirror of x)) of the plain assembled model, exactly mirror-symmetric, and stays so after
    fine-tuning (training fits the plain model; the average is what is compared on val and saved)."""
    import shutil

    from bakeoff import manifest
    from bakeoff.data import image_dataset
    from bakeoff.finetune import finetune

    head = tmp_path / "head"
    shutil.copytree(hfe_faces_head, head)
    info = json.loads((head / "head.json").read_text())
    (head / "head.json").write_text(json.dumps({**info, "tta": True}))
    finetune(hfe_faces_dataset, str(head), str(tmp_path / "m0"), epochs=0, blocks=2)
    tuned = finetune(hfe_faces_dataset, str(head), str(tmp_path / "m1"), epochs=1, blocks=2, batch_size=16)

    rows = manifest.read_manifest(hfe_faces_dataset)
    images = next(iter(image_dataset(rows[rows["split"] == "val"], 64, batch_size=16))).numpy()
    mirrored = images[:, :, ::-1]
    plain = _load(hfe_faces_finetuned[0])  # the same head assembled without TTA (epochs=0, blocks=2)
    expected = (plain.predict(images, verbose=0) + plain.predict(mirrored, verbose=0)) / 2
    assert np.abs(plain.predict(images, verbose=0) - expected).max() > 1e-4  # the mirror matters to this model
    tta = _load(str(tmp_path / "m0"))
    np.testing.assert_allclose(tta.predict(images, verbose=0), expected, atol=1e-5)
    assert json.loads((tmp_path / "m0" / "model.json").read_text())["tta"] is True
    assert tuned["tta"] is True and "finetune_val_gain" in tuned
    after = _load(str(tmp_path / "m1"))
    np.testing.assert_allclose(after.predict(images, verbose=0), after.predict(mirrored, verbose=0), atol=1e-5)


def test_a_search_over_two_sizes_records_both_and_serves_the_chosen_one(make_tiny_dataset, tmp_path, mirror_env):
    """Features at 32 px and (extra) 48 px; the 32 px vectors are replaced by noise, so val must choose 48: both
    sizes are in search.md, head.json says 48, and the assembled model takes 48 px images."""
    from bakeoff.features import extract_features
    from bakeoff.finetune import finetune
    from bakeoff.heads import train_head

    dataset = make_tiny_dataset(tmp_path / "d", per_class=10)
    feats = tmp_path / "f"
    extract_features(str(dataset), str(feats), "mobilenet_v2", image_size=32, extra_sizes=[48], taps=False)
    data = dict(np.load(feats / "features.npz"))
    data["features"] = np.random.default_rng(0).normal(size=data["features"].shape).astype(np.float32)
    np.savez(feats / "features.npz", **data)

    info = train_head(str(feats), str(tmp_path / "h"), kind="search", epochs=5, hidden=8)
    assert {r["size"] for r in info["search"]} == {32, 48}
    kept = next(r for r in info["search"] if r["kept"])
    assert kept["size"] == 48 == info["image_size"]
    table = (tmp_path / "h" / "search.md").read_text()
    assert "| top | 32 |" in table and "| top | 48 |" in table
    model = finetune(str(dataset), str(tmp_path / "h"), str(tmp_path / "m"), epochs=0)
    assert model["image_size"] == 48 and _load(str(tmp_path / "m")).input.shape[1:] == (48, 48, 3)
