"""finetune: backbone + head, the last blocks unfrozen (BatchNorm stays frozen), low learning rate."""

from kfp.dsl import Dataset, Input, Model, Output


def finetune(
    dataset: Input[Dataset],
    head: Input[Model],
    blocks: int,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    model: Output[Model],
):
    """``epochs`` 0 just assembles backbone + head into one raw-pixels-in model."""
    from bakeoff.finetune import finetune as core

    info = core(
        dataset.path,
        head.path,
        model.path,
        blocks=blocks,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        seed=seed,
    )
    model.metadata.update(
        {"backbone": info.get("backbone"), "image_size": info.get("image_size"), "finetuned": info.get("finetuned")}
    )
