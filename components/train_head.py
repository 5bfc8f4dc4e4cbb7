"""train_head: a classifier head on the cached features (fast: no images are decoded here)."""

from kfp.dsl import Dataset, Input, Markdown, Model, Output


def train_head(
    features: Input[Dataset],
    kind: str,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    hidden: int,
    dropout: float,
    head: Output[Model],
    search: Output[Markdown],
):
    """``kind`` "search" tries every head on every feature set; ``search`` shows its table in the KFP UI."""
    from bakeoff.contract import HEAD_SEARCH_MD
    from bakeoff.heads import train_head as core
    from bakeoff.storage import exists, read_bytes

    info = core(
        features.path,
        head.path,
        kind=kind,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        seed=seed,
        hidden=hidden,
        dropout=dropout,
    )
    table = f"{head.path}/{HEAD_SEARCH_MD}"
    with open(search.path, "w") as handle:
        handle.write(read_bytes(table).decode() if exists(table) else f"# Head\n\none {kind} head, no search\n")
    head.metadata.update(
        {
            "kind": info.get("kind"),
            "cut": info.get("cut"),
            "backbone": info.get("backbone"),
            "val_accuracy": (info.get("val") or {}).get("accuracy", info.get("val_accuracy")),
        }
    )
