"""Fine-tuning: the pretrained backbone plus the trained head, with only the top blocks allowed to move.

Why each choice:

* Start from the trained head (``bakeoff train-head``), not a random one: a random head's large gradients would
  wreck the pretrained features in the first steps.
* Unfreeze only the last N blocks of the registry's fine-tune boundary (``backbones.finetune_layers``); the lower
  blocks hold generic edges/textures worth keeping bit-for-bit.
* EVERY BatchNorm layer stays frozen (``trainable=False``, which in Keras 3 also means inference mode): with small
  batches the batch statistics are noise, and updating them destroys what the head was trained on.
* A very low learning rate (1e-5) on a cosine schedule, early stopping on val with best-weights restore.
* Augmentation (flip, rotation, zoom) sits before the in-model preprocessing; Keras' Random* layers are no-ops at
  inference, so the saved model serves clean pixels.
* Mixed precision (``mixed_float16``, output layer in float32) only when a GPU is visible; the saved model is
  rebuilt in float32 so it serves on any CPU, and loads with plain ``keras.models.load_model``.
* Flip test-time averaging (``tta`` in head.json, chosen by the head search on val): training fits the plain
  model (its random flip already teaches both orientations; training through the average would double the cost),
  and the model compared on val and saved is ``flip_averaged``: what is measured is what is served.
* Fine-tuning must earn its place: the fine-tuned model replaces its frozen starting point (backbone + the trained
  head) only if its VAL accuracy beats the head's; otherwise the frozen model is saved. ``finetune_val_gain``
  (fine-tuned minus frozen val accuracy) records what it gained either way.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bakeoff import manifest, storage
from bakeoff.backbones import gpu_visible
from bakeoff.contract import HEAD_JSON, HEAD_KERAS, MODEL_JSON, MODEL_KERAS, HeadInfo
from bakeoff.errors import BakeoffError
from bakeoff.heads import class_weights, epoch_clock, keras_progress, load_keras, loss_for, save_keras

MIXED_PRECISION_MODES = ("auto", "on", "off")


def use_mixed_precision(mode: str) -> bool:
    """``auto``: mixed_float16 only with a GPU (on CPU float16 is slower, not faster); ``on``/``off`` force it."""
    if mode not in MIXED_PRECISION_MODES:
        raise BakeoffError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION_MODES)}, got {mode!r}")
    return mode == "on" or (mode == "auto" and gpu_visible())


def augmentation_layers(seed: int = 0) -> list:
    """Flip, small rotation and zoom: active only when training, identity at inference."""
    import keras

    return [
        keras.layers.RandomFlip("horizontal", seed=seed, name="augment_flip"),
        keras.layers.RandomRotation(0.08, fill_mode="reflect", seed=seed + 1, name="augment_rotation"),
        keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=seed + 2, name="augment_zoom"),
    ]


def horizontal_flip(size: int, name: str = "flip"):
    """A deterministic left-right mirror of [b, S, S, 3] images from stock Keras layers, so the saved model loads
    with plain ``keras.models.load_model`` (no custom objects) and exports to SavedModel/TFLite/ONNX unchanged.

    Why not RandomFlip: it is a no-op at inference. The mirror is a matmul of the width axis with the exchange
    matrix (ones on the anti-diagonal, frozen): every output is one input times 1.0 plus exact zeros, so it
    reproduces the pixels bit for bit (S^2 * 3 * S multiply-adds: about 1% of MobileNetV2's forward pass at 224)."""
    import keras

    width_last = keras.layers.Permute((1, 3, 2), name=f"{name}_width_last")
    mirror = keras.layers.Dense(size, use_bias=False, trainable=False, dtype="float32", name=f"{name}_mirror")
    width_back = keras.layers.Permute((1, 3, 2), name=f"{name}_width_back")
    inputs = keras.Input((size, size, 3), name="image", dtype="float32")
    model = keras.Model(inputs, width_back(mirror(width_last(inputs))), name=name)
    mirror.set_weights([np.eye(size, dtype=np.float32)[::-1]])
    return model


def flip_averaged(model):
    """``out = mean(model(x), model(flip(x)))`` as ONE model (the same weights, called twice): flip test-time
    averaging that any serving path runs without knowing about it."""
    import keras

    size = int(model.input.shape[1])
    inputs = keras.Input((size, size, 3), name="image", dtype="float32")
    mirrored = horizontal_flip(size)(inputs)
    out = keras.layers.Average(name="flip_average", dtype="float32")([model(inputs), model(mirrored)])
    return keras.Model(inputs, out, name=f"{model.name}_flip_tta")


def _clone_head_layers(head) -> list:
    """Fresh copies of the head's layers (dtype from the current policy; output in float32), weights copied over."""
    import keras

    layers = [layer for layer in head.layers if not isinstance(layer, keras.layers.InputLayer)]
    clones = []
    for i, layer in enumerate(layers):
        config = layer.get_config()
        config["dtype"] = "float32" if i == len(layers) - 1 else None  # None: the global (maybe mixed) policy
        clones.append((type(layer).from_config(config), layer))
    return clones


def assemble(head_info: HeadInfo, head, *, blocks: int, augment: bool, seed: int = 0) -> tuple[Any, list[str]]:
    """Build image -> [augmentation] -> feature extractor -> head, and set what may train.

    Returns the model and the names of the backbone layers left trainable (never a BatchNorm).
    """
    import keras

    from bakeoff.backbones import build_feature_extractor, finetune_layers, get_backbone
    from bakeoff.weights import resolve_weights

    bb = get_backbone(head_info.backbone)
    weights_info = head_info.weights
    resolved = resolve_weights(bb.name, weights_info.get("spec", "imagenet"), sha256=weights_info.get("sha256"))
    if resolved.sha256 and weights_info.get("sha256") and resolved.sha256 != weights_info["sha256"]:
        raise BakeoffError(f"weights for {bb.name} changed since the features were made; re-run `bakeoff features`")
    size = int(head_info.image_size or bb.default_size)
    extractor = build_feature_extractor(bb, resolved, size, head_info.cut)
    if extractor.output.shape[-1] != head.input.shape[-1]:
        raise BakeoffError(
            f"head expects {head.input.shape[-1]} features but {bb.name} gives "
            f"{extractor.output.shape[-1]}; train the head on this backbone's features"
        )

    # Freeze everything in the extractor, then open the chosen blocks of the nested "backbone" minus BatchNorm.
    # Keras 3's `trainable` setter recurses into sublayers, so open the containers first, then close the leaves.
    base = extractor.get_layer("backbone")
    extractor.trainable = True
    for layer in extractor.layers:
        if layer is not base:
            layer.trainable = False  # preprocessing (incl. the frozen RGB->BGR conv) and pooling
    for layer in base.layers:
        layer.trainable = False
    unfrozen = []
    for layer in finetune_layers(bb, base, blocks):
        if isinstance(layer, keras.layers.BatchNormalization) or not layer.weights:
            continue
        layer.trainable = True
        unfrozen.append(layer.name)
    for layer in base.layers:  # belt and braces: whatever a block list says, BatchNorm never trains
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False

    inputs = keras.Input((size, size, 3), name="image", dtype="float32")
    x = inputs
    if augment:
        for layer in augmentation_layers(seed):
            x = layer(x)
    x = extractor(x)
    for clone, original in _clone_head_layers(head):
        x = clone(x)
        clone.set_weights(original.get_weights())
    return keras.Model(inputs, x, name=f"{bb.name}_classifier"), unfrozen


def _datasets(dataset_dir: str, classes: list[str], size: int, batch_size: int, seed: int):
    from bakeoff.decoded import image_batches

    df = manifest.read_manifest(dataset_dir)
    unknown = sorted(set(df["label"]) - set(classes))
    if unknown:
        raise BakeoffError(
            f"dataset labels {unknown} are not among the head's classes {classes}; "
            "train the head on this dataset's features"
        )
    train, val = df[df["split"] == "train"], df[df["split"] == "val"]
    if train.empty or val.empty:
        raise BakeoffError(f"fine-tuning needs train and val images (found {len(train)} train, {len(val)} val)")
    index = {c: i for i, c in enumerate(classes)}
    y_train = train["label"].map(index).to_numpy()
    return (
        # every epoch reads the dataset's decoded tensor (augmentation runs in the model, on these tensors)
        image_batches(df, train, size, batch_size, classes=classes, shuffle=True, seed=seed),
        image_batches(df, val, size, batch_size, classes=classes),
        y_train,
        len(train),
        len(val),
    )


def _val_accuracy(model, classes: list[str], size: int, dataset_dir: str, batch_size: int) -> float:
    """Accuracy on the val images, through the evaluate step's own prediction (one definition of "correct")."""
    from bakeoff.evaluate import predict_split

    return float(predict_split(model, classes, size, dataset_dir, "val", batch_size)["correct"].mean())


def _frozen_val_accuracy(head_dir: str, frozen, classes: list[str], size: int, dataset_dir: str, batch_size: int):
    """The frozen model's val accuracy: the head's own (same extractor, same pixels), measured if it lacks one."""
    recorded = storage.read_json(storage.join(head_dir, HEAD_JSON)).get("val_accuracy")
    if recorded is not None:
        return float(recorded)
    return _val_accuracy(frozen, classes, size, dataset_dir, batch_size)


def finetune(
    dataset_dir: str,
    head_dir: str,
    out_dir: str,
    *,
    blocks: int = 1,
    epochs: int = 5,
    learning_rate: float = 1e-5,
    batch_size: int = 32,
    patience: int = 2,
    augment: bool = True,
    seed: int = 0,
    mixed_precision: str = "auto",
    keep_if_better: bool = True,
) -> dict:
    """Fine-tune backbone + head on the train split (val for early stopping); write model.keras + model.json.

    The fine-tuned model is saved only if it beats the frozen one on val (``finetuned`` says which was saved);
    ``keep_if_better=False`` saves it regardless (to study what training did, never in the pipeline).
    """
    import keras

    if epochs < 0 or batch_size < 1 or patience < 0 or blocks < 0 or learning_rate <= 0:
        raise BakeoffError("need epochs >= 0, batch_size >= 1, patience >= 0, blocks >= 0, learning_rate > 0")
    head_info = HeadInfo.read(head_dir)
    head = load_keras(storage.join(head_dir, HEAD_KERAS))
    classes = list(head_info.classes)
    mixed = use_mixed_precision(mixed_precision) and epochs > 0

    def servable(core):
        """What is compared on val and saved: the plain model, or its flip average when the search chose TTA."""
        return flip_averaged(core) if head_info.tta else core

    previous_policy = keras.mixed_precision.global_policy()

    keras.utils.set_random_seed(seed)
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    extra: dict[str, Any] = {}
    kept = epochs > 0
    try:
        keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
        model, unfrozen = assemble(head_info, head, blocks=blocks, augment=augment, seed=seed)
        size = int(model.input.shape[1])
        if epochs > 0:
            train_ds, val_ds, y_train, n_train, n_val = _datasets(dataset_dir, classes, size, batch_size, seed)
            steps = max(1, math.ceil(n_train / batch_size)) * epochs
            schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps, alpha=0.0)
            model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss_for(len(classes)), metrics=["accuracy"])
            stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
            clock = epoch_clock()
            fit = model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=epochs,
                verbose=0,
                shuffle=False,
                class_weight=class_weights(y_train, len(classes)),
                callbacks=[stop, clock, keras_progress(epochs, f"finetune {head_info.backbone}")],
            )
            history = {k: [float(v) for v in fit.history[k]] for k in history}
            best = int(np.argmin(history["val_loss"]))
            extra = {
                "epoch_end_ms": clock.times,
                "n_train": n_train,
                "n_val": n_val,
                "epochs_run": len(history["loss"]),
                "best_epoch": best + 1,
                "stopped_early": len(history["loss"]) < epochs,
                "val_accuracy": history["val_accuracy"][best],
            }
        if epochs > 0:
            # Save a clean copy: float32 policy (serves on any CPU even after mixed-precision training) and no
            # optimizer state (Adam's moments would double the file). Same architecture, trained variables copied.
            trained = model.get_weights()
            keras.mixed_precision.set_global_policy("float32")
            model, _ = assemble(head_info, head, blocks=blocks, augment=augment, seed=seed)
            frozen = model.get_weights()  # freshly assembled: the pretrained backbone + the trained head
            frozen_acc = _frozen_val_accuracy(head_dir, servable(model), classes, size, dataset_dir, batch_size)
            model.set_weights(trained)
            tuned_acc = _val_accuracy(servable(model), classes, size, dataset_dir, batch_size)
            gain = tuned_acc - frozen_acc
            extra.update(finetune_val_gain=gain, frozen_val_accuracy=frozen_acc, finetuned_val_accuracy=tuned_acc)
            if gain <= 0 and keep_if_better:  # not better on val: the frozen starting point is the candidate
                model.set_weights(frozen)
                kept = False
            extra["val_accuracy"] = tuned_acc if kept else frozen_acc
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    result = {
        "backbone": head_info.backbone,
        "weights": dict(head_info.weights) or None,
        "image_size": size,
        "cut": head_info.cut,
        "classes": classes,
        "head_kind": head_info.kind or None,
        "tta": head_info.tta,
        "head_dir": str(head_dir),
        "dataset_hash": manifest.dataset_hash(manifest.read_manifest(dataset_dir, resolve=False)),
        "unfrozen_layers": unfrozen,
        "trainable_params": int(sum(np.prod(v.shape) for v in model.trainable_weights)),
        "hyperparameters": {
            "blocks": blocks,
            "epochs": epochs,
            "learning_rate": learning_rate,
            "lr_schedule": "cosine",
            "optimizer": "adam",
            "batch_size": batch_size,
            "patience": patience,
            "augment": augment,
            "seed": seed,
            "keep_if_better": keep_if_better,
        },
        "mixed_precision": mixed,
        "finetuned": kept,
        "history": history,
        **extra,
    }
    save_keras(servable(model), storage.join(out_dir, MODEL_KERAS))
    storage.write_json(storage.join(out_dir, MODEL_JSON), result)
    return result
