"""train_head: a classifier head on the cached features (fast: no images are decoded here)."""

from kfp.dsl import Dataset, Input, Model, Output


def train_head(
    features: Input[Dataset],
    kind: str,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    head: Output[Model],
):
    from bakeoff.heads import train_head as core

    info = core(
        features.path,
        head.path,
        kind=kind,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        seed=seed,
    )
    head.metadata.update(
        {
            "kind": kind,
            "backbone": info.get("backbone"),
            "val_accuracy": (info.get("val") or {}).get("accuracy", info.get("val_accuracy")),
        }
    )
