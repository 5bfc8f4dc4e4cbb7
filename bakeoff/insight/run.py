"""The after-selection insight step: learning curve and label issues on the chosen candidate's cached features.

Why best-effort: the gate has already decided when this runs, so a report that cannot be made (a class with one
image, no val split) must not fail the pipeline run; it is recorded as skipped with its one-line reason instead.
"""

from __future__ import annotations

import time

from bakeoff import storage
from bakeoff.contract import INSIGHT_JSON, FeaturesInfo
from bakeoff.errors import BakeoffError
from bakeoff.features import array_key, load_features
from bakeoff.insight.label_issues import write_label_issues
from bakeoff.insight.learning_curve import write_learning_curve

REPORTS = ("learning_curve", "label_issues")


def pick_features(features_dirs: list[str], backbone: str, cut: str | None = None) -> str:
    """The features folder of the chosen candidate: same backbone (and cut, when the candidate names one)."""
    matches = [d for d in features_dirs if FeaturesInfo.read(d).backbone == backbone]
    if cut:
        matches = [d for d in matches if (FeaturesInfo.read(d).cut or "") == cut] or matches
    if not matches:
        raise BakeoffError(f"no features folder for backbone {backbone!r} among {len(features_dirs)}")
    return matches[0]


def insight_for_challenger(
    dataset_dir: str,
    features_dirs: list[str],
    backbone: str,
    cut: str | None,
    out_dir: str,
    *,
    seed: int = 0,
    image_size: int | None = None,
) -> dict:
    """:func:`run_insight` on the challenger's features; when none match (say, a candidate that is not one
    backbone's), both reports are recorded as skipped with the reason instead of failing after the gate."""
    try:
        features_dir = pick_features(features_dirs, backbone, cut)
    except BakeoffError as exc:
        record = {"backbone": backbone, "cut": cut, "skipped": dict.fromkeys(REPORTS, str(exc))}
        storage.write_json(storage.join(out_dir, INSIGHT_JSON), record)
        return record
    return run_insight(dataset_dir, features_dir, out_dir, seed=seed, cut=cut, image_size=image_size)


def chosen_array(arrays: dict, info: dict, cut: str | None, image_size: int | None) -> str:
    """The features.npz array of the candidate's own feature set: its tap layer (the chosen tap is the model's
    cut) at its input size; ``features`` (the top, at the base size) when the folder has no such array."""
    name = array_key(info, cut, image_size)
    return name if name in arrays else "features"


def run_insight(
    dataset_dir: str,
    features_dir: str,
    out_dir: str,
    *,
    seed: int = 0,
    cut: str | None = None,
    image_size: int | None = None,
) -> dict:
    """Write the learning curve and label-issue files to ``out_dir`` and ``insight.json`` (numbers, verdict,
    seconds, which feature array, and the reason for any report skipped); returns that record. ``cut`` and
    ``image_size`` name the candidate's feature set (:func:`chosen_array`)."""
    arrays, info = load_features(features_dir)
    name = chosen_array(arrays, info, cut, image_size)
    arrays = {**arrays, "features": arrays[name]}
    record: dict = {
        "backbone": info.get("backbone"),
        "cut": cut if name != "features" else info.get("cut"),
        "features_array": name,
        "skipped": {},
    }
    makers = {
        "learning_curve": lambda: write_learning_curve(arrays, out_dir, str(info.get("backbone")), seed=seed),
        "label_issues": lambda: write_label_issues(arrays, dataset_dir, out_dir, seed=seed),
    }
    for name, make in makers.items():
        started = time.perf_counter()
        try:
            record.update(make())
        except BakeoffError as exc:
            record["skipped"][name] = str(exc)
        record[f"{name}_seconds"] = round(time.perf_counter() - started, 3)
    storage.write_json(storage.join(out_dir, INSIGHT_JSON), record)
    return record
