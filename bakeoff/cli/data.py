"""CLI commands for data: ``bakeoff ingest`` (raw dump -> dataset folder) and ``bakeoff demo-data``.

Only light imports at module level: the core modules are imported inside the commands.
"""

from __future__ import annotations

import typer

from bakeoff.cli.helptext import command_help

INGEST_HELP = """Turn a raw image dump into a clean, split dataset folder.

[bold]Reads[/bold] SOURCE: a folder, a .zip / .tar / .tar.gz / .tgz archive, or s3://bucket/prefix (endpoint and
credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). The label of a file is the name of the folder that
directly contains it (raw-img/cane/x.jpeg -> cane), or comes from --labels-csv.

Every file is decoded in full: EXIF rotation is applied, grey/palette/CMYK/RGBA/16-bit images become RGB;
zero-byte, non-image, corrupt, truncated and oversized (decompression bomb) files are rejected with a reason;
.DS_Store, Thumbs.db, __MACOSX/ and hidden files are ignored. Exact duplicates are kept once; the same content
under two labels is rejected. Near-duplicates (resized / re-encoded copies) form groups that never straddle
splits. The split is stratified and deterministic: same images + same --seed = same split, on any machine.

[bold]Writes[/bold] into DIR: images/<label>/<sha256>.<ext>, manifest.parquet (uri, label, split, sha256, width,
height, group, source), rejected.csv (uri, reason), card.json and card.md, and lists every file it writes in
DIR/.bakeoff-ingest-written.jsonl. Re-running into DIR is safe: it replaces and prunes only files listed there,
never your own. DIR must not overlap SOURCE (neither inside the other).

[bold]Example[/bold]:
  bakeoff demo-data --out demo
  bakeoff ingest demo/raw-img --out data --label-map demo/translate.json --classes tshirt,trouser,bag --per-class 150
"""

DEMO_HELP = """Write real demo images (Fashion-MNIST) as a messy raw dump to try ingest on.

[bold]Reads[/bold] Debian's dataset-fashion-mnist files (/usr/share/datasets/fashion-mnist; install with
`apt-get install -y dataset-fashion-mnist`). [bold]Writes[/bold] DIR/raw-img/<Italian class name>/<file> (JPEG
and PNG, grey and RGB, some upscaled), DIR/translate.json (Italian -> English label map) and a few deliberately
broken files (zero-byte, truncated, text named .jpg, .DS_Store, an unlabelled top-level image, one exact and one
near duplicate). Same --seed, same files. A re-run replaces only the files demo-data wrote (listed in
DIR/.bakeoff-demo-data-written.jsonl); a folder it did not make is refused.

[bold]--source digits[/bold] writes a second, independent task instead: scikit-learn's bundled handwritten
digits (1,797 real 8x8 UCI scans; at most 174 per class), dark ink on white, upscaled to 64 px, JPEG and PNG,
folders zero, uno, .. nove with the same kind of label map; no broken files (record:
DIR/.bakeoff-digits-data-written.jsonl).

[bold]Example[/bold]:
  bakeoff demo-data --out demo --per-class 100
  bakeoff ingest demo/raw-img --out data --label-map demo/translate.json
  bakeoff demo-data --source digits --out digits --per-class 100
"""


def ingest_command(
    source: str = typer.Argument(
        ..., help="Folder, .zip/.tar/.tar.gz archive, or s3://bucket/prefix with the raw images."
    ),
    out: str = typer.Option(
        ..., "--out", "-o", help="Dataset folder to write (created; safe to re-run into; outside SOURCE)."
    ),
    label_map: str | None = typer.Option(None, "--label-map", help="JSON or YAML file: old class name -> new name."),
    classes: str | None = typer.Option(
        None, "--classes", help="Keep only these classes (after the label map), comma-separated."
    ),
    per_class: int | None = typer.Option(
        None, "--per-class", help="At most N images per class (deterministic choice by content and seed)."
    ),
    val: float = typer.Option(0.15, "--val", help="Fraction of each class for validation."),
    test: float = typer.Option(0.15, "--test", help="Fraction of each class for the test split."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and of the --per-class choice."),
    labels_csv: str | None = typer.Option(
        None, "--labels-csv", help="CSV with columns path,label (paths relative to SOURCE) instead of folder names."
    ),
    max_pixels: int = typer.Option(
        40_000_000, "--max-pixels", help="Reject images with more pixels than this (decompression bombs)."
    ),
    workers: int | None = typer.Option(None, "--workers", help="Decode threads (default: up to 4)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    from bakeoff.ingest import ingest
    from bakeoff.sources import display_name

    result = ingest(
        source,
        out,
        label_map=label_map,
        classes=classes,
        per_class=per_class,
        val=val,
        test=test,
        seed=seed,
        labels_csv=labels_csv,
        progress=progress,
        max_pixels=max_pixels,
        workers=workers,
    )
    card = result.card
    splits = card["splits"]
    lost = card.get("lost_to_label_conflicts") or {}
    conflicts = f"; lost to label conflicts: {', '.join(f'{k} {v}' for k, v in lost.items())}" if lost else ""
    typer.echo(
        f"ingested {result.n_images} images in {len(result.counts)} classes "
        f"(train {splits['train']}, val {splits['val']}, test {splits['test']}); "
        f"rejected {result.n_rejected}, exact duplicates {card['exact_duplicates']}, "
        f"near-duplicate groups {card['near_duplicates']['groups_merged']}, ignored {card['ignored_litter']}"
        f"{conflicts}; {result.images_per_s:.0f} files/s"
    )
    typer.echo(f"wrote {display_name(result.manifest)} (+ rejected.csv, card.json, card.md)")


def demo_data_command(
    out: str = typer.Option(..., "--out", "-o", help="Folder to write raw-img/ and translate.json into."),
    per_class: int | None = typer.Option(
        None,
        "--per-class",
        help="Images per class (10 classes): 200 if not given (digits: 100); at most 6000 (digits: 174).",
    ),
    classes: str | None = typer.Option(
        None, "--classes", help="Only these classes (Italian or English names), comma-separated."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for which images are picked and how they are encoded."),
    source: str = typer.Option(
        "fashion", "--source", help="fashion (Fashion-MNIST, the demo) or digits (scikit-learn's digits)."
    ),
) -> None:
    from bakeoff.demo_data import make_demo_data
    from bakeoff.errors import BakeoffError
    from bakeoff.sources import display_name
    from bakeoff.task_data import make_digits_data

    makers = {"fashion": make_demo_data, "digits": make_digits_data}
    if source not in makers:
        raise BakeoffError(f"unknown --source {source!r}; choose fashion or digits")
    sized = {} if per_class is None else {"per_class": per_class}
    result = makers[source](out, classes=classes, seed=seed, **sized)
    raw_dir, label_map = display_name(result.raw_dir), display_name(result.label_map)
    typer.echo(
        f"wrote {result.n_images} images in {len(result.classes)} classes to {raw_dir} "
        f"(+ {len(result.broken)} deliberately broken files), label map {label_map}"
    )
    typer.echo(f"next: bakeoff ingest {raw_dir} --out DIR --label-map {label_map}")


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("ingest", help=command_help(INGEST_HELP, markup=True))(ingest_command)
    app.command("demo-data", help=command_help(DEMO_HELP, markup=True))(demo_data_command)
