"""features: one frozen backbone over the whole Dataset -> pooled bottleneck vectors (content-addressed cache)."""

from typing import List

from kfp.dsl import Dataset, Input, Output


def features(
    dataset: Input[Dataset],
    backbone: str,
    weights: str,
    image_size: int,
    batch_size: int,
    precision: str,
    flip: str,
    extra_image_sizes: List[int],
    features: Output[Dataset],
):
    """``weights`` may be a per-backbone mapping; ``image_size`` 0 means the backbone's default size;
    ``precision`` auto|float32|bfloat16 (auto: bfloat16 on CPUs with AVX512-BF16 or AMX); ``flip`` on|off: a
    second pass over the mirrored images for the head search's flip variants; ``extra_image_sizes``: more input
    sizes whose features the head search also tries."""
    from bakeoff.features import extract_features

    # the per-image feature cache lives where $BAKEOFF_CACHE_URI says (a shared S3 prefix on a cluster)
    info = extract_features(
        dataset.path,
        features.path,
        backbone,
        weights,
        image_size=image_size or None,
        batch_size=batch_size,
        precision=precision,
        flip=flip == "on",
        extra_sizes=list(extra_image_sizes),
    )
    features.metadata.update(
        {
            k: info.get(k)
            for k in (
                "backbone",
                "image_size",
                "feature_dim",
                "n_images",
                "images_per_s",
                "cache_hits",
                "cache_misses",
                "precision",
                "flip",
                "extra_image_sizes",
            )
        }
    )
    features.metadata["weights"] = (info.get("weights") or {}).get("name")
