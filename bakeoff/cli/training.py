"""CLI commands: `train-head`, `finetune`, `evaluate`, each runnable alone on the previous step's output folder.

    bakeoff features DATASET --out FEAT          (bakeoff/cli/models.py)
    bakeoff train-head FEAT --out HEAD
    bakeoff finetune DATASET HEAD --out MODEL
    bakeoff evaluate MODEL DATASET --out EVAL

Heavy imports (TensorFlow, Keras, scikit-learn) stay inside the command bodies so `bakeoff --help` is fast.
"""

from __future__ import annotations

import typer

from bakeoff.cli.helptext import command_help


def _pretrained_flag(weights: dict | None) -> str:
    return "" if (weights or {}).get("pretrained", True) else "  [RANDOM WEIGHTS: smoke test only]"


def train_head_cmd(
    features: str = typer.Argument(..., help="Features folder (or s3:// prefix) from `bakeoff features`."),
    out: str = typer.Option(..., "--out", help="Output folder or s3:// prefix for head.keras + head.json."),
    kind: str = typer.Option(
        "dense",
        "--kind",
        help="dense (Dense+Dropout, the notebooks' head) or logreg (scikit-learn LogisticRegression baseline).",
    ),
    epochs: int = typer.Option(50, "--epochs", help="Ceiling on epochs (dense); early stopping usually ends sooner."),
    learning_rate: float = typer.Option(1e-3, "--learning-rate", help="Adam learning rate (dense)."),
    hidden: int = typer.Option(256, "--hidden", help="Units of the hidden Dense layer (dense)."),
    dropout: float = typer.Option(0.5, "--dropout", help="Dropout rate after the hidden layer (dense)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    patience: int = typer.Option(5, "--patience", help="Epochs without val-loss improvement before stopping."),
    seed: int = typer.Option(0, "--seed", help="Seeds Python, NumPy and the backend: same inputs, same head."),
    balance: bool = typer.Option(
        True,
        "--balance/--no-balance",
        help="Weight classes inversely to their train frequency (scikit-learn 'balanced').",
    ),
) -> None:
    """Train a classifier head on cached bottleneck features (seconds, not minutes: no images are read).

    Reads FEATURES/features.npz + features.json. Trains on the train split, early-stops on the val split with the
    best weights restored; the test split is never read. Writes OUT/head.keras (features in, class probabilities
    out: one sigmoid unit for two classes, softmax otherwise; the logreg baseline is exported as an equivalent
    Dense layer so later steps treat both kinds alike) and OUT/head.json (kind, hyperparameters, classes,
    backbone/weights/image size copied from features.json, val accuracy, per-epoch history).

    Example: bakeoff train-head .bakeoff/feat/mnv2 --out .bakeoff/head/mnv2 --kind dense --epochs 50
    """
    from bakeoff.heads import train_head

    info = train_head(
        features,
        out,
        kind=kind,
        epochs=epochs,
        learning_rate=learning_rate,
        hidden=hidden,
        dropout=dropout,
        batch_size=batch_size,
        patience=patience,
        seed=seed,
        balance_classes=balance,
    )
    typer.echo(
        f"{info['kind']} head on {info['backbone']} features -> {out}: val accuracy {info['val_accuracy']:.4f} "
        f"({info['n_train']} train, {info['n_val']} val"
        f"{', ' + str(info['epochs_run']) + ' epochs' if info['kind'] == 'dense' else ''})"
        f"{_pretrained_flag(info.get('weights'))}"
    )


def finetune_cmd(
    dataset: str = typer.Argument(
        ..., help="Dataset folder (or s3:// prefix) with manifest.parquet from `bakeoff ingest`."
    ),
    head: str = typer.Argument(..., help="Head folder from `bakeoff train-head` (its head.json names the backbone)."),
    out: str = typer.Option(..., "--out", help="Output folder or s3:// prefix for model.keras + model.json."),
    blocks: int = typer.Option(
        1,
        "--blocks",
        help="How many of the backbone's top blocks to unfreeze (see `bakeoff backbones`); 0 trains the head only.",
    ),
    epochs: int = typer.Option(5, "--epochs", help="Ceiling on epochs; 0 only assembles backbone + head."),
    learning_rate: float = typer.Option(1e-5, "--learning-rate", help="Peak learning rate of the cosine schedule."),
    batch_size: int = typer.Option(32, "--batch-size"),
    patience: int = typer.Option(2, "--patience", help="Epochs without val-loss improvement before stopping."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Random flip, rotation and zoom while training."),
    seed: int = typer.Option(0, "--seed"),
    mixed_precision: str = typer.Option(
        "auto", "--mixed-precision", help="auto (mixed_float16 only when a GPU is visible) | on | off."
    ),
) -> None:
    """Fine-tune the pretrained backbone together with its trained head on the images.

    Rebuilds the backbone named in HEAD/head.json with the same weights (resolved through $BAKEOFF_WEIGHTS_URI
    like `bakeoff features`), puts the head on top, unfreezes the last --blocks blocks (every BatchNorm stays frozen,
    in inference mode), and trains on the train split with Adam at a very low, cosine-decayed learning rate,
    augmentation, class weights and early stopping on the val split (best weights restored). Writes OUT/model.keras
    (raw RGB 0..255 in, class probabilities out, preprocessing inside; loads with plain keras.models.load_model)
    and OUT/model.json (backbone, weights, image size, classes, unfrozen layers, hyperparameters, history).

    Example: bakeoff finetune .bakeoff/demo/dataset .bakeoff/head/mnv2 --out .bakeoff/model/mnv2 --blocks 2 --epochs 5
    """
    from bakeoff.finetune import finetune

    info = finetune(
        dataset,
        head,
        out,
        blocks=blocks,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        patience=patience,
        augment=augment,
        seed=seed,
        mixed_precision=mixed_precision,
    )
    what = (
        f"fine-tuned {info['epochs_run']} epochs, best val accuracy {info['val_accuracy']:.4f}"
        if info["finetuned"]
        else "assembled (no training)"
    )
    typer.echo(
        f"{info['backbone']} + {info['head_kind']} head -> {out}: {what}; "
        f"{len(info['unfrozen_layers'])} backbone layers trainable{_pretrained_flag(info.get('weights'))}"
    )


def evaluate_cmd(
    model: str = typer.Argument(..., help="Model folder from `bakeoff finetune` (model.keras + model.json)."),
    dataset: str = typer.Argument(
        ..., help="Dataset folder (or s3:// prefix) with manifest.parquet; only its test split is read."
    ),
    out: str = typer.Option(..., "--out", help="Output folder or s3:// prefix for metrics, predictions and plots."),
    batch_size: int = typer.Option(32, "--batch-size"),
    n_bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the accuracy's 95% CI."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
) -> None:
    """Score a model on the dataset's TEST split only, with scikit-learn metrics, a bootstrap CI and timings.

    Writes OUT/metrics.json (accuracy, balanced accuracy, macro precision/recall/F1, ROC-AUC (one-vs-rest macro
    for many classes), accuracy 95% CI, latency ms/image at batch 1, model size MB, n_test, classes, backbone,
    weights), OUT/classification_report.json (per class), OUT/predictions.parquet (sha256, label, predicted,
    correct, prob_<class>...: the promotion gate's paired test reads it), OUT/confusion_matrix.png and OUT/roc.png.

    Example: bakeoff evaluate .bakeoff/model/mnv2 .bakeoff/demo/dataset --out .bakeoff/eval/mnv2
    """
    from bakeoff.evaluate import evaluate

    m = evaluate(model, dataset, out, batch_size=batch_size, n_bootstrap=n_bootstrap, seed=seed)
    auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.4f}"
    typer.echo(
        f"{m['backbone']} on {m['n_test']} test images -> {out}: accuracy {m['accuracy']:.4f} "
        f"[{m['accuracy_ci_low']:.4f}, {m['accuracy_ci_high']:.4f}], balanced {m['balanced_accuracy']:.4f}, "
        f"macro F1 {m['f1_macro']:.4f}, ROC-AUC {auc}, {m['latency_ms_per_image']:.2f} ms/image, "
        f"{m['model_size_mb']:.1f} MB{_pretrained_flag(m.get('weights'))}"
    )


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("train-head", help=command_help(train_head_cmd))(train_head_cmd)
    app.command("finetune", help=command_help(finetune_cmd))(finetune_cmd)
    app.command("evaluate", help=command_help(evaluate_cmd))(evaluate_cmd)
