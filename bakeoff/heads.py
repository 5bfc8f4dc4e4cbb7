"""Classifier heads trained on cached bottleneck features (fast: many heads per feature extraction).

Two kinds, one artifact shape, so fine-tuning and evaluation never care which was picked, and a search over them:

* ``dense``: the notebooks' head, ``Dense(hidden, relu) -> Dropout -> Dense(out)``; sigmoid with one unit for two
  classes, softmax otherwise. Class weights balance skewed labels; early stopping watches the val split and
  restores the best weights, so ``epochs`` is a ceiling, not a guess.
* ``logreg``: a scikit-learn ``LogisticRegression`` baseline (standardised inputs, balanced class weights,
  ``C`` picked on the val split). It is exported as ONE equivalent Keras ``Dense`` layer (the scaler folded into
  the kernel), so ``head.keras`` gives the same probabilities as ``predict_proba``.

* ``search`` (the pipeline's default): logreg (its C on val) on every feature set the features folder holds (the
  top and each tap of ``Backbone.taps``), then the dense head on the feature set logreg ranked first; the best
  on VAL accuracy is kept (ties: lower val log-loss, then the simpler logreg). Why dense only once: it is the
  costly fit (tens of seconds on a busy CPU), and logreg ranks feature sets well for seconds. The table of every
  try is written as ``search.md`` and in ``head.json`` (``search``). The winner's ``cut`` is its tap, so the servable
  model is the backbone cut there + pooling + this head, and fine-tuning, evaluation and serving need no change.
  When the features folder also holds the flipped images' vectors (``features --flip``), each feature set is tried
  four ways: plain, ``flip-aug`` (trained on the plain and the flipped train vectors), ``flip-tta`` (val scored on
  the mean of the plain and the flipped probabilities) and both; a flip variant is kept only when it beats plain on
  val. ``tta`` in ``head.json`` makes the servable model average itself over the image and its mirror
  (``bakeoff.finetune.flip_averaged``). Features made at extra input sizes (``features --extra-sizes``) are more
  feature sets (size x layer); the kept one's size is ``head.json``'s ``image_size``, the served model's input.

Only the train and val splits are read here; the test split is left for ``bakeoff evaluate``.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bakeoff import env, storage
from bakeoff.contract import HEAD_JSON, HEAD_KERAS, HEAD_SEARCH_MD
from bakeoff.errors import BakeoffError
from bakeoff.features import array_key, load_features

SEARCH = "search"
HEAD_KINDS = ("dense", "logreg", SEARCH)
LOGREG_C_GRID = (0.01, 0.1, 1.0, 10.0)


# ---------------------------------------------------------------------------------------------- small shared helpers
def save_keras(model, uri: str) -> None:
    """Save a Keras model as ``.keras`` to a local path or s3:// atomically (Keras itself writes non-atomically)."""
    with storage.output_path(uri) as local:
        model.save(local)


def load_keras(uri: str):
    """Load a ``.keras`` model from a local path or s3:// with plain ``keras.models.load_model`` (no custom objects)."""
    import keras

    if not storage.exists(uri):
        raise BakeoffError(f"no model at {uri}; run the step that writes it first")
    if not storage.is_s3(uri):
        return keras.models.load_model(uri)
    with tempfile.TemporaryDirectory(prefix="bakeoff-load-") as tmp:
        local = storage.download(uri, os.path.join(tmp, uri.rsplit("/", 1)[-1]))
        return keras.models.load_model(local)


def epoch_clock():
    """A Keras callback recording each epoch's wall-clock end in ms (``.times``): the JSONs keep it beside the
    history, so MLflow shows the curves at the time each epoch finished, not at the time they were logged."""
    import time

    import keras

    class _EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: list[int] = []

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(int(time.time() * 1000))

    return _EpochClock()


def keras_progress(total_epochs: int, description: str):
    """A Keras callback that shows a rich progress bar over epochs with the latest loss/val numbers."""
    import keras
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    class _RichEpochs(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                transient=False,
                disable=not env.progress_enabled(),
            )
            self._progress.start()
            self._task = self._progress.add_task(description, total=total_epochs, info="")

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            info = " ".join(
                f"{k}={v:.4f}" for k, v in logs.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")
            )
            self._progress.update(self._task, advance=1, info=info)

        def on_train_end(self, logs=None):
            self._progress.stop()

    return _RichEpochs()


def probabilities(raw: np.ndarray, n_classes: int) -> np.ndarray:
    """Model outputs -> one column per class: a binary head's [n, 1] sigmoid becomes [1 - p, p]."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 1:
        raw = raw[:, None]
    if n_classes == 2 and raw.shape[1] == 1:
        return np.concatenate([1.0 - raw, raw], axis=1)
    if raw.shape[1] != n_classes:
        raise BakeoffError(
            f"model gives {raw.shape[1]} outputs but there are {n_classes} classes; was it trained on another dataset?"
        )
    return raw


# ---------------------------------------------------------------------------------------------- features input
def _split_xy(
    arrays: dict[str, np.ndarray], classes: list[str], split: str, x_all: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    mask = arrays["split"] == split
    x = np.asarray((arrays["features"] if x_all is None else x_all)[mask], dtype=np.float32)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[str(label)] for label in arrays["label"][mask]], dtype=np.int64)
    return x, y


# ---------------------------------------------------------------------------------------------- the head models
def build_dense_head(feature_dim: int, n_classes: int, hidden: int = 256, dropout: float = 0.5):
    """The notebooks' head as a small functional Keras model: features in, class probabilities out."""
    import keras

    inputs = keras.Input(shape=(feature_dim,), name="features")
    x = keras.layers.Dense(hidden, activation="relu", name="head_hidden")(inputs)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = _output_layer(n_classes)(x)
    return keras.Model(inputs, outputs, name="head")


def _output_layer(n_classes: int, dtype: str | None = None):
    import keras

    if n_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", name="head_output", dtype=dtype)
    return keras.layers.Dense(n_classes, activation="softmax", name="head_output", dtype=dtype)


def loss_for(n_classes: int) -> str:
    """Binary heads have one sigmoid unit; many-class heads softmax with integer labels."""
    return "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Balanced class weights (scikit-learn's formula) for the classes present in ``y``."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(y)
    weights = compute_class_weight("balanced", classes=present, y=y)
    return {int(c): float(w) for c, w in zip(present, weights)}


def _fit_dense(
    x_train,
    y_train,
    x_val,
    y_val,
    n_classes: int,
    *,
    epochs: int,
    learning_rate: float,
    hidden: int,
    dropout: float,
    batch_size: int,
    patience: int,
    weights: dict[int, float] | None,
) -> tuple[Any, dict]:
    import keras

    model = build_dense_head(x_train.shape[1], n_classes, hidden, dropout)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss_for(n_classes), metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    clock = epoch_clock()
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        class_weight=weights,
        callbacks=[stop, clock, keras_progress(epochs, "head (dense)")],
        verbose=0,
    )
    hist = {k: [float(v) for v in history.history[k]] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
    best_epoch = int(np.argmin(hist["val_loss"]))
    extra = {"epochs_run": len(hist["loss"]), "best_epoch": best_epoch + 1, "stopped_early": len(hist["loss"]) < epochs}
    extra["epoch_end_ms"] = clock.times
    return model, {"history": hist, **extra}


def _fit_logreg(
    x_train, y_train, x_val, y_val, n_classes: int, *, seed: int, balanced: bool, x_val_flip=None
) -> tuple[Any, dict]:
    """Fit scikit-learn's LogisticRegression over a small C grid (picked by val log-loss), export as a Dense head.

    With ``x_val_flip`` the val probabilities are the mean over the plain and the flipped images (flip test-time
    averaging), so C is picked for the model that will be served."""
    import keras
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, log_loss
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    scaler = StandardScaler().fit(x_train)
    xs_train, xs_val = scaler.transform(x_train), scaler.transform(x_val)
    xs_flip = None if x_val_flip is None else scaler.transform(x_val_flip)

    def val_proba(clf):
        prob = clf.predict_proba(xs_val)
        return prob if xs_flip is None else (prob + clf.predict_proba(xs_flip)) / 2.0

    labels = list(range(n_classes))
    search = []
    best = None
    for c in LOGREG_C_GRID:
        clf = LogisticRegression(C=c, class_weight="balanced" if balanced else None, max_iter=2000, random_state=seed)
        # lbfgs on a few thousand rows is BLAS-call bound: one BLAS thread avoids oversubscription (measured on a
        # busy 2-core box: 0.5 s single-threaded vs 40 s with the default thread pool for 400 x 1280 features).
        with threadpool_limits(limits=1, user_api="blas"):
            clf.fit(xs_train, y_train)
        prob = val_proba(clf)
        val_loss = float(log_loss(y_val, prob, labels=labels))
        search.append({"C": c, "val_loss": val_loss, "val_accuracy": float(accuracy_score(y_val, prob.argmax(1)))})
        if best is None or val_loss < best[0]:
            best = (val_loss, c, clf)
    _, best_c, clf = best
    if list(clf.classes_) != labels:
        raise BakeoffError("the train split lacks some classes; logreg needs every class in train")
    # Fold the standardisation into the linear layer: w' = w / scale, b' = b - sum(w * mean / scale).
    scale = np.where(scaler.scale_ == 0, 1.0, scaler.scale_)
    kernel = (clf.coef_ / scale).T.astype(np.float32)  # [d, 1] binary, [d, k] multinomial
    bias = (clf.intercept_ - (clf.coef_ * (scaler.mean_ / scale)).sum(axis=1)).astype(np.float32)
    inputs = keras.Input(shape=(x_train.shape[1],), name="features")
    out_layer = _output_layer(n_classes)
    model = keras.Model(inputs, out_layer(inputs), name="head")
    out_layer.set_weights([kernel, bias])
    train_p, val_p = clf.predict_proba(xs_train), val_proba(clf)
    hist = {
        "loss": [float(log_loss(y_train, train_p, labels=labels))],
        "accuracy": [float(accuracy_score(y_train, train_p.argmax(1)))],
        "val_loss": [float(log_loss(y_val, val_p, labels=labels))],
        "val_accuracy": [float(accuracy_score(y_val, val_p.argmax(1)))],
    }
    return model, {
        "history": hist,
        "epoch_end_ms": [int(time.time() * 1000)],  # the one "epoch": the fit of the chosen C
        "C": best_c,
        "c_search": search,
        "epochs_run": 1,
        "best_epoch": 1,
        "stopped_early": False,
    }


def feature_sets(
    arrays: dict[str, np.ndarray], meta: dict, flipped: bool = False
) -> dict[tuple[int | None, str | None], np.ndarray]:
    """(input size, cut layer (None: the top)) -> the vectors of every image: the features' own output plus each
    tap's, at the features' size and at each extra size. ``flipped``: the same sets on the mirrored images
    (``features --flip``), empty when they were not made."""
    sets = {}
    for at in [meta.get("image_size"), *(meta.get("extra_image_sizes") or [])]:
        for cut in [meta.get("cut"), *(meta.get("taps") or {})]:
            found = arrays.get(array_key(meta, cut, at, flipped))
            if found is not None:
                sets[(at, cut)] = found
    return sets


# (flip augmentation, flip test-time averaging): plain first, so a tie keeps the cheaper, simpler model
FLIP_VARIANTS = ((False, False), (True, False), (False, True), (True, True))


def variant_name(augment: bool, tta: bool) -> str:
    """How a search-table row used the flipped features."""
    return {(False, False): "plain", (True, False): "flip-aug", (False, True): "flip-tta"}.get(
        (augment, tta), "flip-aug+tta"
    )


@dataclass
class _Fit:
    """One head fitted on one feature set, with its val score (accuracy, then minus log-loss: higher is better)."""

    cut: str | None
    kind: str
    model: Any
    info: dict
    weights: dict[int, float] | None
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    score: tuple[float, float]
    size: int | None = None  # the input size of the feature set (the served model's input size if kept)
    augment: bool = False  # trained on plain + flipped train features
    tta: bool = False  # val probabilities averaged over the plain and the flipped image
    x_val_flip: np.ndarray | None = None

    def predict(self, n_classes: int) -> np.ndarray:
        """Val probabilities as the served model gives them (the flip mean when ``tta``)."""
        prob = probabilities(self.model.predict(self.x_val, batch_size=256, verbose=0), n_classes)
        if self.tta:
            prob = (prob + probabilities(self.model.predict(self.x_val_flip, batch_size=256, verbose=0), n_classes)) / 2
        return prob

    def rows(self) -> list[dict]:
        """Search-table rows: one per C of a logreg (the kept C marked), one for a dense head."""
        name = self.cut or "top"
        variant = variant_name(self.augment, self.tta)
        if self.kind == "logreg":
            return [
                {
                    "feature_set": name,
                    "size": self.size,
                    "variant": variant,
                    "head": "logreg",
                    "C": r["C"],
                    "val_accuracy": r["val_accuracy"],
                    "val_loss": r["val_loss"],
                    "kept": False,
                    "best_of_kind": r["C"] == self.info["C"],
                }
                for r in self.info["c_search"]
            ]
        return [
            {
                "feature_set": name,
                "size": self.size,
                "variant": variant,
                "head": "dense",
                "C": None,
                "val_accuracy": self.score[0],
                "val_loss": -self.score[1],
                "kept": False,
                "best_of_kind": True,
            }
        ]


def _fit_one(
    arrays,
    classes: list[str],
    key: tuple[int | None, str | None],
    x_all: np.ndarray,
    kind: str,
    where: str,
    flip_all: np.ndarray | None = None,
    augment: bool = False,
    tta: bool = False,
    **hp,
) -> _Fit:
    """Fit one head kind on one feature set (``key``: input size, cut) train rows and score it on its val rows.

    ``flip_all`` (the set's vectors of the flipped images) enables ``augment`` (train on the plain and the flipped
    train rows) and ``tta`` (score the mean of the plain and the flipped val probabilities)."""
    import keras
    from sklearn.metrics import accuracy_score, log_loss

    x_train, y_train = _split_xy(arrays, classes, "train", x_all)
    x_val, y_val = _split_xy(arrays, classes, "val", x_all)
    x_val_flip = _split_xy(arrays, classes, "val", flip_all)[0] if tta else None
    if augment:
        x_train = np.concatenate([x_train, _split_xy(arrays, classes, "train", flip_all)[0]])
        y_train = np.concatenate([y_train, y_train])
    if len(x_train) == 0 or len(x_val) == 0:
        raise BakeoffError(
            f"features in {where} need train and val rows (found {len(x_train)} train, "
            f"{len(x_val)} val); re-run `bakeoff ingest` with a val split"
        )
    if len(np.unique(y_train)) < 2:
        raise BakeoffError("the train split holds a single class; a head cannot learn from that")
    keras.utils.set_random_seed(hp["seed"])
    weights = class_weights(y_train, len(classes)) if hp["balance_classes"] else None
    if kind == "dense":
        dense = {k: hp[k] for k in ("epochs", "learning_rate", "hidden", "dropout", "batch_size", "patience")}
        model, info = _fit_dense(x_train, y_train, x_val, y_val, len(classes), **dense, weights=weights)
    else:
        model, info = _fit_logreg(
            x_train,
            y_train,
            x_val,
            y_val,
            len(classes),
            seed=hp["seed"],
            balanced=hp["balance_classes"],
            x_val_flip=x_val_flip,
        )
    score = (0.0, 0.0)
    fit = _Fit(key[1], kind, model, info, weights, y_train, x_val, y_val, score, key[0], augment, tta, x_val_flip)
    prob = fit.predict(len(classes))
    clipped = np.clip(prob, 1e-7, 1.0)  # float32 outputs: keep log-loss finite and rows summing to one
    loss = log_loss(y_val, clipped / clipped.sum(axis=1, keepdims=True), labels=list(range(len(classes))))
    fit.score = (float(accuracy_score(y_val, prob.argmax(axis=1))), -float(loss))
    return fit


def search_markdown(rows: list[dict]) -> str:
    """The search table (one row per fit, every C of a logreg) with the kept fit marked."""
    lines = [
        "# Head search (chosen on val)\n",
        "| feature set | size | flip | head | C | val accuracy | val log-loss | kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        c = "" if row.get("C") is None else f"{row['C']:g}"
        kept = "**yes**" if row["kept"] else ""
        size = row.get("size") or ""
        lines.append(
            f"| {row['feature_set']} | {size} | {row['variant']} | {row['head']} | {c} "
            f"| {row['val_accuracy']:.4f} | {row['val_loss']:.4f} | {kept} |"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- the step
def train_head(
    features_dir: str,
    out_dir: str,
    *,
    kind: str = "dense",
    epochs: int = 50,
    learning_rate: float = 1e-3,
    hidden: int = 256,
    dropout: float = 0.5,
    batch_size: int = 32,
    patience: int = 5,
    seed: int = 0,
    balance_classes: bool = True,
) -> dict:
    """Train a head on the train split's cached features, early-stopped on val; write head.keras + head.json.

    ``kind="search"`` fits both kinds on every feature set (top and taps) and keeps the best on val (see the
    module docstring); the others fit one kind on the features' own output. ``balance_classes`` weights each
    class inversely to its train frequency (scikit-learn's "balanced"), so a rare class is not simply ignored;
    turn it off only to see what imbalance does.
    """
    from sklearn.metrics import balanced_accuracy_score

    if kind not in HEAD_KINDS:
        raise BakeoffError(f"unknown head kind {kind!r}; choose one of {', '.join(HEAD_KINDS)}")
    if epochs < 1 or batch_size < 1 or patience < 0 or not 0.0 <= dropout < 1.0 or hidden < 1 or learning_rate <= 0:
        raise BakeoffError(
            "need epochs >= 1, batch_size >= 1, patience >= 0, hidden >= 1, 0 <= dropout < 1, learning_rate > 0"
        )
    arrays, meta = load_features(features_dir)
    classes = list(meta.get("classes") or sorted({str(v) for v in arrays["label"]}))
    if len(classes) < 2:
        raise BakeoffError(f"need at least two classes to train a head, found {classes}")
    hp = {
        "epochs": epochs,
        "learning_rate": learning_rate,
        "hidden": hidden,
        "dropout": dropout,
        "batch_size": batch_size,
        "patience": patience,
        "seed": seed,
        "balance_classes": balance_classes,
    }
    where = str(features_dir)
    flips: dict[str | None, np.ndarray] = {}
    if kind == SEARCH:
        # logreg (seconds) on every feature set ranks them; the dense head (the costly fit) joins on the best one
        sets, flips = feature_sets(arrays, meta), feature_sets(arrays, meta, flipped=True)
        fits = [
            _fit_one(arrays, classes, key, x, "logreg", where, flips.get(key), aug, tta, **hp)
            for key, x in sets.items()
            for aug, tta in (FLIP_VARIANTS if key in flips else FLIP_VARIANTS[:1])
        ]
        lead = max(fits, key=lambda f: f.score)
        key = (lead.size, lead.cut)
        fits.append(
            _fit_one(arrays, classes, key, sets[key], "dense", where, flips.get(key), lead.augment, lead.tta, **hp)
        )
    else:
        key = (meta.get("image_size"), meta.get("cut"))
        fits = [_fit_one(arrays, classes, key, arrays["features"], kind, where, **hp)]
    # the first of equals: the features' own size before extra sizes, the top before taps, logreg before dense
    best = max(fits, key=lambda f: f.score)
    rows = []
    for fit in fits:
        for row in fit.rows():
            best_of_kind = row.pop("best_of_kind")
            row["kept"] = fit is best and best_of_kind
            rows.append(row)

    val_pred = best.predict(len(classes)).argmax(axis=1)
    hyper = dict(hp)
    if best.kind == "logreg":
        hyper = {"C": best.info["C"], "C_grid": list(LOGREG_C_GRID), "balance_classes": balance_classes, "seed": seed}
    hyper["search"] = kind == SEARCH
    if flips:  # MLflow shows them as head_flip_augment / head_tta: the flip choice made on val
        hyper.update(flip_augment=best.augment, tta=best.tta)
    result = {
        "kind": best.kind,
        "hyperparameters": hyper,
        "classes": classes,
        "feature_dim": int(best.x_val.shape[1]),
        "backbone": meta.get("backbone"),
        "weights": meta.get("weights"),
        "image_size": best.size,  # the kept feature set's input size: the served model's
        "cut": best.cut,
        "flip_augment": best.augment,
        "tta": best.tta,
        "dataset_hash": meta.get("dataset_hash"),
        "features_dir": str(features_dir),
        "n_train": int(len(best.y_train) // (2 if best.augment else 1)),  # images, not the augmented rows
        "n_val": int(len(best.y_val)),
        "class_weights": {classes[i]: w for i, w in best.weights.items()} if best.weights else None,
        "val_accuracy": best.score[0],
        "val_balanced_accuracy": float(balanced_accuracy_score(best.y_val, val_pred)),
        "epochs_run": best.info["epochs_run"],
        "best_epoch": best.info["best_epoch"],
        "stopped_early": best.info["stopped_early"],
        "history": best.info["history"],
        "epoch_end_ms": best.info["epoch_end_ms"],
    }
    if best.kind == "logreg":
        result["c_search"] = best.info["c_search"]
    if kind == SEARCH:
        result["search"] = rows
        storage.write_bytes(storage.join(out_dir, HEAD_SEARCH_MD), search_markdown(rows).encode())
    save_keras(best.model, storage.join(out_dir, HEAD_KERAS))
    storage.write_json(storage.join(out_dir, HEAD_JSON), result)
    return result
