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
    top_k: int,
    model: Output[Model],
):
    """``epochs`` 0 or ``top_k`` 0 just assemble backbone + head into one raw-pixels-in model.

    ``top_k``: how many of this backbone's best frozen candidates (on val) to fine-tune; each branch has one
    candidate (the head search's pick), so 0 skips fine-tuning and 1 or more fine-tunes it. A fine-tuned model
    replaces the frozen one only if it beats it on val (``finetune_val_gain`` in the metadata).
    """
    from bakeoff.finetune import finetune as core

    info = core(
        dataset.path,
        head.path,
        model.path,
        blocks=blocks,
        epochs=epochs if top_k > 0 else 0,
        learning_rate=learning_rate,
        batch_size=batch_size,
        seed=seed,
    )
    model.metadata.update(
        {
            "backbone": info.get("backbone"),
            "image_size": info.get("image_size"),
            "cut": info.get("cut"),
            "finetuned": info.get("finetuned"),
            "finetune_val_gain": info.get("finetune_val_gain"),
        }
    )
