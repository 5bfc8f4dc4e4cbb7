"""bakeoff.ensemble: members chosen on val only, and ONE stock-Keras model that outputs the members' mean."""

from __future__ import annotations

import numpy as np
import pytest

from bakeoff.ensemble import build_model, choose_members, val_score
from bakeoff.errors import BakeoffError

# val: A and B each miss one image (different ones), their average gets all four; C is poor on val
VAL_LABELS = np.array([0, 1, 0, 1])
VAL = {
    "A": np.array([[0.9, 0.1], [0.2, 0.8], [0.8, 0.2], [0.6, 0.4]]),
    "B": np.array([[0.7, 0.3], [0.45, 0.55], [0.3, 0.7], [0.1, 0.9]]),
    "C": np.array([[0.4, 0.6], [0.6, 0.4], [0.9, 0.1], [0.55, 0.45]]),
}
# test: the other way round, C alone is right everywhere and A + B is not
TEST_LABELS = np.array([0, 1])
TEST = {
    "A": np.array([[0.6, 0.4], [0.55, 0.45]]),
    "B": np.array([[0.2, 0.8], [0.6, 0.4]]),
    "C": np.array([[0.7, 0.3], [0.2, 0.8]]),
}


def test_members_are_chosen_on_val_even_where_test_would_choose_others():
    chosen = choose_members(VAL, VAL_LABELS, max_members=3)

    assert chosen.members == ("A", "B")  # A first (ties B on accuracy, lower log-loss), B fixes A's miss; C hurts
    assert chosen.val_accuracy == 1.0
    assert [step["added"] for step in chosen.steps] == ["A", "B"]
    assert chosen.steps[0]["val_accuracy"] == 0.75
    # test would have chosen C alone, and the val choice is worse there: the choice did not look at test
    assert choose_members(TEST, TEST_LABELS, max_members=3).members == ("C",)
    assert val_score((TEST["A"] + TEST["B"]) / 2, TEST_LABELS)[0] < val_score(TEST["C"], TEST_LABELS)[0]


def test_selection_stops_at_max_members_and_ties_resolve_by_key():
    assert choose_members(VAL, VAL_LABELS, max_members=1).members == ("A",)
    same = {"z": VAL["A"], "y": VAL["A"].copy()}
    assert choose_members(same, VAL_LABELS, max_members=2).members == ("y",)  # the twin adds nothing
    with pytest.raises(BakeoffError, match="at least 1"):
        choose_members(VAL, VAL_LABELS, max_members=0)


def _sigmoid_model(size: int):
    """A real binary model with ONE sigmoid unit (as the notebooks' InceptionV3 head) at its own input size."""
    import keras

    inputs = keras.Input((size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    out = keras.layers.Dense(1, activation="sigmoid", name="unit")(pooled)
    model = keras.Model(inputs, out)
    model.get_layer("unit").set_weights([np.array([[0.05], [0.0], [-0.02]], np.float32), np.array([-3.0], np.float32)])
    return model


def test_the_model_outputs_the_mean_of_its_members_and_reloads_without_custom_objects(tmp_path):
    import keras

    from support.candidates import IMAGE_SIZE, threshold_model

    x = np.random.default_rng(0).uniform(40, 90, size=(6, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    x[..., 0] = np.linspace(90, 160, 6)[:, None, None]  # reds around both thresholds: the members disagree
    low, high, small = threshold_model(100.0), threshold_model(150.0), _sigmoid_model(16)
    p_small = np.asarray(small(keras.layers.Resizing(16, 16)(x)))
    expected = np.mean(
        [np.asarray(low(x)), np.asarray(high(x)), np.concatenate([1 - p_small, p_small], axis=1)], axis=0
    )

    model = build_model([low, high, small], [IMAGE_SIZE, IMAGE_SIZE, 16], n_classes=2)

    assert model.input_shape == (None, IMAGE_SIZE, IMAGE_SIZE, 3)  # the largest member size; the small one resized
    got = np.asarray(model.predict(x, verbose=0))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    for member in (low(x), high(x)):  # a real average, not one member passed through
        assert np.abs(got - np.asarray(member)).max() > 0.1
    path = tmp_path / "ensemble.keras"
    model.save(path)
    again = keras.models.load_model(path)  # stock layers only: no custom_objects
    np.testing.assert_allclose(np.asarray(again.predict(x, verbose=0)), got, atol=1e-6)


def test_a_member_with_the_wrong_number_of_outputs_is_refused():
    from support.candidates import threshold_model

    with pytest.raises(BakeoffError, match="member 0 gives 2 outputs for 3 classes"):
        build_model([threshold_model(100.0)], [32], n_classes=3)


def test_the_average_check_refuses_a_model_that_is_not_its_members_mean(tiny_dataset, tmp_path, monkeypatch):
    """The ensemble's evaluation reports the members' mean probabilities without predicting again; the built model
    is checked against them on test images first, so a wiring bug is an error, never a silent number."""
    from bakeoff import manifest
    from bakeoff.ensemble import check_average
    from bakeoff.evaluate import predict_split

    monkeypatch.setenv("BAKEOFF_DECODED_CACHE", str(tmp_path / "decoded"))
    classes = sorted(set(manifest.read_manifest(tiny_dataset)["label"]))
    model = build_model([_sigmoid_model(24), _sigmoid_model(24)], [24, 24], n_classes=2)
    own = predict_split(model, classes, 24, str(tiny_dataset), "test")
    probs = own[[f"prob_{c}" for c in classes]].to_numpy()
    check_average(model, str(tiny_dataset), classes, 24, probs)  # its own predictions pass
    with pytest.raises(BakeoffError, match="differs from its members' mean by 0.1"):
        check_average(model, str(tiny_dataset), classes, 24, np.clip(probs + [[0.1, -0.1]], 0, 1))
