"""Ensembles across backbones: the candidates that together do best ON VAL, averaged into ONE servable Keras model.

Why averaged probabilities (not concatenated features): every candidate already is a raw-pixels-in,
probabilities-out model, so their average is one more model of the same kind, made of stock Keras layers
(``Resizing``, ``Average``): it saves, loads, serves and exports like any candidate, and the gate compares it
with the champion like any candidate. Nothing is retrained.

Members are chosen by greedy forward selection on the val split alone (Caruana et al., 2004, without replacement,
so every member weighs the same): start from the best single candidate, add the one that improves the averaged
val accuracy most (ties: the lower val log-loss, then the earlier run id), stop when nothing improves or at
``max_members``. The test split is read only afterwards, by ``bakeoff.evaluate`` on the built model, for the
estimate every candidate gets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bakeoff import storage
from bakeoff.contract import MODEL_JSON, MODEL_KERAS
from bakeoff.errors import BakeoffError

ENSEMBLE_PREFIX = "ensemble:"  # an ensemble's backbone name: ensemble:<member backbones joined by +>
HEAD_KIND = "average"  # what sits on top of the members: the mean of their class probabilities


@dataclass(frozen=True)
class Member:
    """One candidate that may join: its MLflow run, its logged model and what it was made of."""

    run_id: str
    backbone: str
    model_uri: str
    classes: tuple[str, ...]
    image_size: int
    cut: str | None = None
    finetuned: bool = False
    weights: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Selection:
    """The chosen members (in the order they joined) and the averaged val numbers after each addition."""

    members: tuple[str, ...]
    val_accuracy: float
    val_log_loss: float
    steps: tuple[dict, ...]


def val_score(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, log-loss) of class probabilities against integer labels; scikit-learn's definitions."""
    from sklearn.metrics import accuracy_score, log_loss

    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)  # float32 softmax rows can miss 1.0 by a hair
    labels = list(range(probs.shape[1]))
    return float(accuracy_score(y, probs.argmax(axis=1))), float(log_loss(y, probs, labels=labels))


def choose_members(val_probs: Mapping[str, np.ndarray], y_val: np.ndarray, max_members: int) -> Selection:
    """Greedy forward selection on val (see the module doc). ``val_probs``: candidate key -> [n_val, n_classes].

    Only val goes in: the test split cannot influence the choice.
    """
    if max_members < 1:
        raise BakeoffError(f"max_members must be at least 1 (got {max_members})")
    if not val_probs:
        raise BakeoffError("no candidates to choose ensemble members from")
    keys = sorted(val_probs)  # a fixed order: equal scores resolve to the earlier key
    chosen: list[str] = []
    best = (-np.inf, -np.inf)  # (accuracy, -log_loss): higher is better
    steps: list[dict] = []
    while len(chosen) < min(max_members, len(keys)):
        trial_best, trial_key = best, None
        for key in keys:
            if key in chosen:
                continue
            accuracy, loss = val_score(np.mean([val_probs[k] for k in [*chosen, key]], axis=0), y_val)
            if (accuracy, -loss) > trial_best:
                trial_best, trial_key = (accuracy, -loss), key
        if trial_key is None:
            break  # no addition improves val accuracy (or, at equal accuracy, val log-loss)
        chosen.append(trial_key)
        best = trial_best
        steps.append({"added": trial_key, "val_accuracy": best[0], "val_log_loss": -best[1]})
    return Selection(tuple(chosen), best[0], -best[1], tuple(steps))


def two_columns(probs):
    """A binary member's one sigmoid unit p -> [1 - p, p] (stock layers), so it averages with softmax members."""
    import keras

    return keras.layers.Concatenate()([keras.layers.Rescaling(-1.0, offset=1.0)(probs), probs])


def build_model(models: Sequence, image_sizes: Sequence[int], n_classes: int):
    """One image input at the largest member size -> each member (resized in front where its size differs) ->
    ``Average`` -> [n, n_classes] probabilities. Stock Keras layers only: loads with no custom objects."""
    import keras

    size = max(image_sizes)
    inputs = keras.Input((size, size, 3), name="image")
    outputs = []
    for index, (model, own) in enumerate(zip(models, image_sizes, strict=True)):
        model.name = f"member_{index}"  # nested models need unique names within the ensemble
        x = inputs if own == size else keras.layers.Resizing(own, own, name=f"resize_{index}")(inputs)
        probs = model(x)
        if probs.shape[-1] == 1 and n_classes == 2:
            probs = two_columns(probs)
        if probs.shape[-1] != n_classes:
            raise BakeoffError(f"member {index} gives {probs.shape[-1]} outputs for {n_classes} classes")
        outputs.append(probs)
    return keras.Model(inputs, keras.layers.Average(name="probabilities")(outputs), name="ensemble")


def member_probs(
    members: Sequence[Member],
    models: Sequence,
    dataset_dir: str,
    split: str,
    batch_size: int,
    logged: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> dict:
    """run id -> [n, n_classes] probabilities of each member on ``split`` (manifest order): the member's own
    logged evaluation where given (``logged[run_id][split]``), else predicted (``evaluate.predict_split``)."""
    from bakeoff.contract import prob_column
    from bakeoff.evaluate import predict_split

    out = {}
    for member, model in zip(members, models, strict=True):
        known = (logged or {}).get(member.run_id, {}).get(split)
        if known is not None:
            out[member.run_id] = np.asarray(known)
            continue
        preds = predict_split(model, list(member.classes), member.image_size, dataset_dir, split, batch_size)
        out[member.run_id] = preds[[prob_column(c) for c in member.classes]].to_numpy()
    return out


def check_average(model, dataset_dir: str, classes: list[str], size: int, expected: np.ndarray, n: int = 8) -> None:
    """The built model on the first ``n`` test images must give the members' mean probabilities (what the
    ensemble's evaluation reports without predicting again); a difference is a bug, never a silent number."""
    from bakeoff.decoded import image_batches
    from bakeoff.evaluate import split_rows

    df, rows = split_rows(dataset_dir, "test", classes)
    rows = rows.head(n)
    got = model.predict(image_batches(df, rows, size, batch_size=len(rows)), verbose=0)
    if not np.allclose(got, expected[: len(rows)], atol=1e-4):
        worst = float(np.abs(got - expected[: len(rows)]).max())
        raise BakeoffError(f"the ensemble model differs from its members' mean by {worst:.2g} on test images")


def val_labels(dataset_dir: str, classes: Sequence[str]) -> np.ndarray:
    """Integer labels of the val split in manifest order (the order ``predict_split`` keeps)."""
    from bakeoff import manifest

    df = manifest.read_manifest(dataset_dir, resolve=False)
    index = {c: i for i, c in enumerate(classes)}
    return df.loc[df["split"] == "val", "label"].astype(str).map(index).to_numpy()


def usable(members: Sequence[Member], dataset_dir: str) -> str | None:
    """Why no ensemble can be made from these candidates, or None when it can."""
    from bakeoff import manifest

    if len(members) < 2:
        return f"{len(members)} usable candidate(s); an ensemble needs 2 or more"
    if len({m.classes for m in members}) > 1:
        return "the candidates disagree on the classes"
    df = manifest.read_manifest(dataset_dir, resolve=False)
    if not (df["split"] == "val").any():
        return "the dataset has no val split to choose members on"
    return None


def _weights(members: Sequence[Member]) -> dict:
    """The ensemble's weights record: pretrained only if every member is (a random one is never promoted)."""
    names = sorted({str(m.weights.get("name") or "weights") for m in members})
    return {
        "name": "+".join(names),
        "spec": ",".join(f"{m.backbone}={m.weights.get('spec', '')}" for m in members),
        "pretrained": all(bool(m.weights.get("pretrained", True)) for m in members),
        "source": "the members' weights",
    }


def write_ensemble(members: Sequence[Member], models: Sequence, selection: Selection, out_dir: str) -> tuple:
    """Build the averaged model of the chosen members; write model.keras and model.json (with a ``members``
    record) to ``out_dir``; return (model.json's content, the model)."""
    from bakeoff.heads import save_keras

    by_id = {m.run_id: (m, model) for m, model in zip(members, models, strict=True)}
    picked = [by_id[run_id] for run_id in selection.members]
    classes = list(picked[0][0].classes)
    sizes = [m.image_size for m, _ in picked]
    model = build_model([mdl for _, mdl in picked], sizes, len(classes))
    weight = 1.0 / len(picked)
    info = {
        "backbone": ENSEMBLE_PREFIX + "+".join(m.backbone for m, _ in picked),
        "weights": _weights([m for m, _ in picked]),
        "image_size": max(sizes),
        "cut": None,
        "classes": classes,
        "head_kind": HEAD_KIND,
        "finetuned": False,  # nothing was trained here; the members' own fine-tuning is in their runs
        "members": [{**asdict(m), "weight": weight} for m, _ in picked],
        "selection": {"val_accuracy": selection.val_accuracy, "val_log_loss": selection.val_log_loss},
        "selection_steps": list(selection.steps),
    }
    save_keras(model, storage.join(out_dir, MODEL_KERAS))
    storage.write_json(storage.join(out_dir, MODEL_JSON), info)
    return info, model


def mlflow_params(info: dict) -> dict:
    """The members as MLflow params of the ensemble's run (same order as they joined)."""
    members = info["members"]
    return {
        "ensemble_members": ",".join(m["backbone"] for m in members),
        "ensemble_member_run_ids": ",".join(m["run_id"] for m in members),
        "ensemble_member_model_uris": ",".join(m["model_uri"] for m in members),
        "ensemble_member_cuts": ",".join(m["cut"] or "" for m in members),
        "ensemble_weights": ",".join(f"{m['weight']:.6g}" for m in members),
        "ensemble_selection": "greedy forward selection on val accuracy, then val log-loss",
    }


def make_ensemble(
    members: Sequence[Member],
    dataset_dir: str,
    out_dir: str,
    *,
    max_members: int,
    batch_size: int = 32,
    logged: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> tuple[dict | None, str, dict]:
    """Choose members on val, build and write the ensemble to ``out_dir``.

    Returns (model.json content, message, split -> the ensemble's probabilities): the mean of the chosen members'
    val and test probabilities, checked against the built model on a few test images, so its evaluation needs no
    second pass over the images (empty when the members' input sizes differ). (None, why not, {}) when no ensemble is made (too few candidates, no val split,
    one member is best alone). ``logged``: run id -> split -> a member's probabilities from its own evaluation.
    """
    from bakeoff.predict import load_keras_model

    if max_members < 2:
        return None, f"ensemble_max_members is {max_members}: no ensemble", {}
    if reason := usable(members, dataset_dir):
        return None, f"no ensemble: {reason}", {}
    models = [load_keras_model(m.model_uri) for m in members]
    probs = member_probs(members, models, dataset_dir, "val", batch_size, logged)
    selection = choose_members(probs, val_labels(dataset_dir, members[0].classes), max_members)
    if len(selection.members) < 2:
        return None, "no ensemble: no second candidate improves the best one on val", {}
    info, model = write_ensemble(members, models, selection, out_dir)
    chosen = [(m, mdl) for m, mdl in zip(members, models, strict=True) if m.run_id in selection.members]
    known: dict = {}
    if len({m.image_size for m, _ in chosen}) == 1:  # a resized member sees other pixels than in its own run
        test = member_probs(*zip(*chosen), dataset_dir, "test", batch_size, logged)
        known = {
            "val": np.mean([probs[r] for r in selection.members], axis=0),
            "test": np.mean([test[r] for r in selection.members], axis=0),  # read for the estimate, not the choice
        }
        check_average(model, dataset_dir, info["classes"], info["image_size"], known["test"])
    return (
        info,
        (
            f"ensemble of {info['backbone'][len(ENSEMBLE_PREFIX) :]}: val accuracy {selection.val_accuracy:.4f} "
            f"(log-loss {selection.val_log_loss:.4f})"
        ),
        known,
    )
