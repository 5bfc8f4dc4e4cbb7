"""ingest: raw dump (folder, archive, s3:// prefix) -> a self-contained Dataset folder (manifest + images)."""

from kfp.dsl import Dataset, Output


def ingest(
    data_uri: str,
    label_map_uri: str,
    classes: str,
    per_class: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    data_version: str,
    dataset: Output[Dataset],
):
    """Cached in the pipeline: same URI + parameters + ``data_version`` (the fingerprint step's digest) -> no re-ingest."""
    import json

    from bakeoff import ingest as core

    result = core.ingest(
        data_uri,
        dataset.path,
        label_map=label_map_uri or None,
        classes=classes or None,
        per_class=per_class or None,
        val=val_fraction,
        test=test_fraction,
        seed=seed,
        progress=False,
    )
    dataset.metadata.update({k: result.card[k] for k in ("dataset_hash", "classes") if k in result.card})
    dataset.metadata.update({"n_images": result.n_images, "n_rejected": result.n_rejected})
    dataset.metadata["data_version"] = data_version
    print(json.dumps({k: dataset.metadata[k] for k in dataset.metadata}, default=str))
