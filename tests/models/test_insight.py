"""Insight reports on real data: Fashion-MNIST images, real MobileNetV2 features (imported ImageNet weights).

The label-issue test flips the labels of known images and checks confident learning puts them at the top; the
learning curve is checked for its shape and its answer; the error report for its content and its escaping.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bakeoff import manifest
from bakeoff.contract import prob_column

from support import write_dataset

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
KEPT = {1: "trouser", 2: "pullover", 7: "sneaker", 8: "bag"}  # four classes a linear probe tells apart well
FLIPS = {0: "bag", 1: "sneaker", 2: "trouser", 3: "pullover"}  # k-th train image of class k -> a wrong label
HOSTILE = '<img src=x onerror="alert(1)">&.png'  # a file name a user's folder could hold
WITH_SECRET = "https://reader:hunter2-secret@images.example/bag/17.png"  # a source URI with credentials


def _png_sha256(pixels: np.ndarray) -> str:
    """The content id ``write_dataset`` gives these pixels (the sha256 of their PNG file)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return hashlib.sha256(buffer.getvalue()).hexdigest()


@pytest.fixture(scope="module")
def flipped(tmp_path_factory, hfe_mirror_env) -> dict:
    """4 classes x (30 train, 10 val, 10 test) 28 px images; 4 train images carry a wrong label (FLIPS); one of
    them has a hostile original file name. Returns the dataset and features folders and the flipped sha256s."""
    from bakeoff.demo_data import load_fashion_mnist
    from bakeoff.features import extract_features

    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST missing: apt-get install -y dataset-fashion-mnist (make apt-runtime)")
    x, y = load_fashion_mnist(FASHION_DIR)
    images, labels, splits, flipped_at = [], [], [], []
    for k, (digit, name) in enumerate(KEPT.items()):
        for i, j in enumerate(np.flatnonzero(y == digit)[:50]):
            if i == 0:
                flipped_at.append(len(images))
            images.append(x[j])
            labels.append(FLIPS[k] if i == 0 else name)
            splits.append("train" if i < 30 else "val" if i < 40 else "test")
    root = tmp_path_factory.mktemp("insight-fmnist")
    dataset = write_dataset(root / "dataset", images, labels, splits)
    shas = [_png_sha256(images[i]) for i in flipped_at]
    rows = manifest.read_manifest(dataset, resolve=False)  # rows sorted by sha256, not in writing order
    rows.loc[rows["sha256"] == shas[0], "source"] = HOSTILE
    rows.loc[rows["sha256"] == shas[1], "source"] = WITH_SECRET
    manifest.write_manifest(rows, dataset)
    features = root / "features"
    extract_features(
        str(dataset), str(features), "mobilenet_v2", "imagenet", image_size=64, cache_uri=str(root / "cache")
    )
    return {
        "dataset": str(dataset),
        "features": str(features),
        "flipped": set(shas),
        "hostile_sha": shas[0],
    }


def test_flipped_labels_rank_at_the_top_and_nothing_is_removed(flipped, tmp_path):
    from bakeoff.features import load_features
    from bakeoff.insight.label_issues import write_label_issues

    before = manifest.read_manifest(flipped["dataset"], resolve=False)
    arrays, _ = load_features(flipped["features"])
    counts = write_label_issues(arrays, flipped["dataset"], str(tmp_path))

    issues = pd.read_csv(tmp_path / "label_issues.csv")
    assert list(issues.columns) == ["path", "given_label", "suggested_label", "score", "split", "sha256"]
    assert counts == {"label_issues": len(issues), "label_issues_checked": 160}  # train + val, never test
    assert set(issues["split"]) <= {"train", "val"}
    top = issues.head(len(flipped["flipped"]) + 2)  # every flipped image among the top (2 natural errors allowed)
    assert flipped["flipped"] <= set(top["sha256"]), issues.head(8)
    assert issues["score"].is_monotonic_increasing  # most suspicious first
    truth = {FLIPS[k]: name for k, name in enumerate(KEPT.values())}  # flipped label -> its class
    for row in issues[issues["sha256"].isin(flipped["flipped"])].itertuples():
        assert row.suggested_label == truth[row.given_label]  # the true class is suggested
    hostile = issues[issues["sha256"] == flipped["hostile_sha"]]
    assert hostile["path"].tolist() == [HOSTILE]  # the original path, as given
    assert "hunter2" not in (tmp_path / "label_issues.csv").read_text()  # ... minus any credentials in it
    assert "images.example/bag/17.png" in (tmp_path / "label_issues.csv").read_text()

    page = (tmp_path / "label_issues.html").read_text()
    assert HOSTILE not in page and "onerror" in page  # shown, escaped: no element injected
    assert "hunter2" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;.png" in page
    assert page.count('src="data:image/jpeg;base64,') == min(len(issues), 60)  # one thumbnail per card

    after = manifest.read_manifest(flipped["dataset"], resolve=False)
    pd.testing.assert_frame_equal(before, after)  # never removes or relabels anything
    assert all(Path(flipped["dataset"], uri).exists() for uri in after["uri"])


def test_learning_curve_from_cached_features(flipped, tmp_path):
    from PIL import Image

    from bakeoff.features import load_features
    from bakeoff.insight.learning_curve import write_learning_curve

    arrays, _ = load_features(flipped["features"])
    numbers = write_learning_curve(arrays, str(tmp_path), "mobilenet_v2", repeats=3)

    table = pd.read_csv(tmp_path / "learning_curve.csv")
    assert table["fraction"].tolist() == [0.1, 0.25, 0.5, 1.0]
    assert table["images_per_class"].tolist() == [3.0, 8.0, 15.0, 30.0]  # 30 train images per class (7.5 rounds to 8)
    assert table["repeats"].tolist() == [3, 3, 3, 1]  # the full split is one fit: every repeat would see it
    assert table.loc[3, "val_std"] == 0.0 and (table["val_std"][:3] >= 0).all()
    assert table["val_mean"].iloc[-1] > table["val_mean"].iloc[0] > 0.25  # more images help; chance is 0.25
    assert numbers["learning_curve_val_full"] == pytest.approx(table["val_mean"].iloc[-1])
    gain = table["val_mean"].iloc[-1] - table["val_mean"].iloc[-2]
    assert numbers["learning_curve_gain_per_doubling"] == pytest.approx(gain)  # 15 -> 30 is one doubling
    helps = gain > max(0.01, 2 * table["val_std"].iloc[-2])
    assert numbers["learning_curve_more_data_helps"] == float(helps)

    md = (tmp_path / "learning_curve.md").read_text()
    assert "Will labelling more images help?" in md and numbers["verdict"] in md
    with Image.open(tmp_path / "learning_curve.png") as img:
        assert img.format == "PNG" and min(img.size) >= 300
    assert "data:image/png;base64," in (tmp_path / "learning_curve.html").read_text()


def test_verdict_reads_the_last_segment_against_the_spread():
    from bakeoff.insight.learning_curve import verdict

    def summary(val_mean, val_std):
        return pd.DataFrame({"images_per_class": [5, 10, 20], "val_mean": val_mean, "val_std": val_std})

    rising = verdict(summary([0.6, 0.7, 0.8], [0.02, 0.02, 0.0]))
    assert rising.more_data_helps and rising.gain_per_doubling == pytest.approx(0.1)
    assert "likely to help" in rising.text
    noisy = verdict(summary([0.6, 0.7, 0.73], [0.02, 0.02, 0.0]))  # +3 points, but the subsamples vary by ±2
    assert not noisy.more_data_helps and "unlikely to help" in noisy.text
    flat = verdict(summary([0.6, 0.8, 0.805], [0.0, 0.0, 0.0]))  # under a point per doubling
    assert not flat.more_data_helps


def test_error_report_ranks_confident_mistakes_and_escapes_names(tmp_path):
    from sklearn.metrics import classification_report, confusion_matrix

    from bakeoff.insight.error_report import confused_pairs, error_report_html, worst_mistakes

    classes = ["a<b>", "cat", "dog"]
    pixels = [np.full((8, 8, 3), 40 * i, dtype=np.uint8) for i in range(6)]
    labels = ["a<b>", "a<b>", "cat", "cat", "dog", "dog"]
    dataset = write_dataset(tmp_path / "ds", pixels, labels, ["test"] * 6)
    rows = manifest.read_manifest(dataset)
    probs = np.array(
        [[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.05, 0.05, 0.9], [0.1, 0.1, 0.8], [0.1, 0.5, 0.4]]
    )
    predicted = [classes[i] for i in probs.argmax(axis=1)]
    preds = pd.DataFrame({"sha256": rows["sha256"], "label": labels, "predicted": predicted})
    preds["correct"] = preds["label"] == preds["predicted"]
    preds["path"] = [f"<b>{i}</b>.png" for i in range(6)]
    for k, name in enumerate(classes):
        preds[prob_column(name)] = probs[:, k]

    worst = worst_mistakes(preds, classes)
    assert worst["path"].tolist() == ["<b>3</b>.png", "<b>1</b>.png", "<b>5</b>.png"]  # 0.9, 0.7, 0.5
    y = [classes.index(v) for v in labels]
    matrix = confusion_matrix(y, probs.argmax(axis=1), labels=[0, 1, 2])
    pairs = confused_pairs(matrix, classes)
    assert pairs[["true", "predicted", "images"]].values.tolist() == [
        ["a<b>", "cat", 1],
        ["cat", "dog", 1],
        ["dog", "cat", 1],
    ]
    report = classification_report(y, probs.argmax(axis=1), target_names=classes, output_dict=True, zero_division=0)
    page = error_report_html(preds, classes, matrix, report, str(dataset), title="m<x>")
    assert "<b>" not in page and "&lt;b&gt;3&lt;/b&gt;.png" in page and "a&lt;b&gt;" in page
    assert page.count('class="card"') == 3 and page.count("data:image/jpeg;base64,") == 3
    assert "3 of 6 test images wrong" in page


def test_reports_that_cannot_be_made_are_skipped_with_a_reason(flipped, tmp_path):
    from bakeoff.errors import BakeoffError
    from bakeoff.features import load_features
    from bakeoff.insight.label_issues import find_issues
    from bakeoff.insight.run import insight_for_challenger

    # a challenger whose backbone has no features folder (say, an ensemble): recorded, not raised after the gate
    record = insight_for_challenger(flipped["dataset"], [flipped["features"]], "vgg16", None, str(tmp_path))
    assert set(record["skipped"]) == {"learning_curve", "label_issues"}
    assert "no features folder for backbone 'vgg16'" in record["skipped"]["label_issues"]
    assert json.loads((tmp_path / "insight.json").read_text()) == record

    # a class with a single train+val image cannot be cross-validated: one line saying so
    arrays, _ = load_features(flipped["features"])
    lonely = arrays["label"].astype(object)
    lonely[np.flatnonzero(np.isin(arrays["split"], ("train", "val")))[0]] = "unique"
    with pytest.raises(BakeoffError, match="at least two train\\+val images of every class"):
        find_issues({**arrays, "label": lonely.astype(str)})


def test_insight_reads_the_chosen_candidates_own_feature_set(flipped, tmp_path):
    """A candidate chosen on a tap layer (its model's cut) gets its learning curve and label issues from that
    layer's vectors, not the top's; a cut or size the folder lacks falls back to the top features."""
    from bakeoff.features import load_features, size_key, tap_key
    from bakeoff.insight.run import chosen_array, run_insight

    arrays, info = load_features(flipped["features"])
    tap = "block_13_expand_relu"
    assert chosen_array(arrays, info, tap, 64) == tap_key(tap)
    assert chosen_array(arrays, info, None, None) == chosen_array(arrays, info, info["cut"], 64) == "features"
    assert chosen_array(arrays, info, "no_such_layer", 64) == "features"
    assert chosen_array(
        {**arrays, size_key(96, tap_key(tap)): arrays[tap_key(tap)]}, info, tap, 96
    ) == "s96_" + tap_key(tap)
    assert chosen_array(arrays, info, tap, 96) == "features"  # no array at 96 px: the top at the base size

    top = run_insight(flipped["dataset"], flipped["features"], str(tmp_path / "top"))
    own = run_insight(flipped["dataset"], flipped["features"], str(tmp_path / "tap"), cut=tap, image_size=64)
    assert (top["features_array"], own["features_array"]) == ("features", tap_key(tap)) and own["cut"] == tap
    curve = (tmp_path / "tap" / "learning_curve.csv").read_text()
    assert curve != (tmp_path / "top" / "learning_curve.csv").read_text()  # other vectors, other numbers
