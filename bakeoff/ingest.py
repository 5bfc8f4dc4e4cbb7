"""Ingest: turn a raw image dump into a clean, deduplicated, leak-free, deterministically split dataset folder.

``ingest(SOURCE, DIR)`` reads every file once (folder, archive or s3:// prefix via ``bakeoff.sources``),
decodes it fully (``bakeoff.images``), and writes into DIR:

* ``images/<label>/<sha256>.<ext>``: each accepted image, named by the hash of its original bytes, so a
  hostile archive member name can never pick a path and DIR is self-contained;
* ``manifest.parquet`` (schema in ``bakeoff.manifest``; ``uri`` relative to DIR), ``rejected.csv``
  (``uri,reason``), ``card.json`` and ``card.md``;
* ``.bakeoff-ingest-written.jsonl``: the record of every file ingest wrote into DIR (``bakeoff.write_record``).
  A re-run replaces and prunes only files listed there, so the user's own files in DIR are never touched; DIR
  may not overlap SOURCE in either direction.

Memory: the loop keeps one small row per image (strings, two ints and a 32-byte perceptual hash) and never
a list of pixels or bytes; at most a handful of files are in flight in the decode pool at once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from collections import Counter, deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bakeoff import card as card_md
from bakeoff import images, manifest, sources, splits, storage, write_record
from bakeoff.errors import BakeoffError

IMAGES_DIR = "images"
RECORD_NAME = write_record.record_name("ingest")
OUTPUT_NAMES = (manifest.MANIFEST_NAME, manifest.REJECTED_NAME, manifest.CARD_JSON_NAME, manifest.CARD_MD_NAME)
_BAD_LABEL_CHARS = set("/\\\0")


@dataclass
class IngestResult:
    """What ``ingest`` wrote and how it went (``card`` is the content of card.json)."""

    out_dir: str
    manifest: str
    rejected: str
    card_json: str
    card_md: str
    n_images: int
    n_rejected: int
    counts: dict[str, dict[str, int]]
    card: dict[str, Any] = field(repr=False)
    seconds: float = 0.0
    images_per_s: float = 0.0


def load_label_map(label_map: dict | str | os.PathLike | None) -> dict[str, str]:
    """A label map from a dict or a JSON/YAML file (old name -> new name)."""
    if label_map is None:
        return {}
    if isinstance(label_map, dict):
        mapping = label_map
        where = "label map"
    else:
        where = f"label map {label_map}"
        try:
            text = storage.read_bytes(label_map).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise BakeoffError(f"{where} is not UTF-8 text") from exc
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError:
            import yaml

            try:
                mapping = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                at = f" (line {mark.line + 1})" if mark else ""
                raise BakeoffError(f"{where} is neither valid JSON nor YAML{at}; write old: new pairs") from exc
    if not isinstance(mapping, dict) or not all(
        isinstance(k, (str, int)) and isinstance(v, (str, int)) for k, v in mapping.items()
    ):
        raise BakeoffError(f"{where} must be a mapping of old class name -> new class name (strings)")
    result = {str(k): str(v) for k, v in mapping.items()}
    for new in result.values():
        check_label(new, where)
    return result


def check_label(label: str, where: str) -> str:
    """Labels become folder names under images/: refuse ones that are not a single safe path part."""
    if not label.strip() or label in (".", "..") or _BAD_LABEL_CHARS & set(label):
        raise BakeoffError(
            f"{where}: class name {label!r} cannot be a folder name; it must not be empty, '.', '..' or contain '/' or '\\'"
        )
    return label


def _parse_classes(classes: Iterable[str] | str | None) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, str):
        classes = classes.split(",")
    wanted = sorted({c.strip() for c in classes if c and c.strip()})
    if not wanted:
        raise BakeoffError("--classes is empty; give class names separated by commas, e.g. --classes dog,horse")
    return wanted


@dataclass
class _Accepted:
    uri: str
    label: str
    sha256: str
    width: int
    height: int
    source: str
    phash: bytes
    folder: str


def _process(
    item: sources.SourceItem, label: str, record: write_record.WriteRecord, max_pixels: int
) -> _Accepted | tuple[str, str]:
    """Decode, hash and materialise one file; return its row or (origin, reason). Runs in a thread.

    Decoding comes first, from the open file: a file that is no image is rejected after its header, unhashed.
    An image already at its content-addressed name is never rewritten (ours from an earlier run, or the user's)."""
    try:
        with item.open() as handle:
            rgb, info = images.load_image(handle, max_pixels=max_pixels)
            handle.seek(0)
            sha = hashlib.file_digest(handle, "sha256").hexdigest()
            rel = f"{IMAGES_DIR}/{label}/{sha}.{info.ext}"
            target = record.folder / rel
            try:  # a decoded image that still cannot be hashed or re-encoded is bad data, not a reason to stop
                phash = images.perceptual_hash(rgb)
                if target.exists():
                    payload = None
                elif info.passthrough:
                    payload = _original(handle)
                else:
                    payload = images.to_png_bytes(rgb)
            except Exception as exc:
                return item.origin, f"corrupt: {' '.join(str(exc).split())[:160] or type(exc).__name__}"
    except images.ImageRejected as exc:
        return item.origin, exc.reason
    except (OSError, BakeoffError) as exc:
        return item.origin, f"unreadable: {' '.join(str(exc).split())[:160]}"
    if payload is not None:
        record.write_bytes(rel, payload)  # disk errors do stop the run: they are not the file's fault
    return _Accepted(rel, label, sha, info.width, info.height, item.origin, phash, item.relpath.rpartition("/")[0])


def _original(handle) -> bytes:
    """The file's own bytes (a passthrough image is stored unchanged)."""
    handle.seek(0)
    return handle.read()


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    class _Rate(TextColumn):
        def __init__(self) -> None:
            super().__init__("")

        def render(self, task):
            speed = task.finished_speed or task.speed
            from rich.text import Text

            return Text(f"{speed:,.0f} files/s" if speed else "", style="progress.data.speed")

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=False,
        console=Console(stderr=True),
    )


def _count_files(source: str) -> int | None:
    """Total for the progress bar where counting is cheap (a local folder)."""
    if storage.is_s3(source) or not Path(source).is_dir():
        return None
    return sum(len(files) for _dirpath, _dirnames, files in os.walk(source))


@dataclass
class _Scan:
    """What one pass over the source found (rows of accepted images, rejections, counters)."""

    accepted: list[_Accepted] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    excluded: Counter = field(default_factory=Counter)
    seen_labels: set[str] = field(default_factory=set)
    folders: set[str] = field(default_factory=set)  # every folder holding a file
    ignored: int = 0
    files_seen: int = 0
    seconds: float = 0.0


def _scan(
    source: str,
    record: write_record.WriteRecord,
    *,
    mapping: dict[str, str],
    wanted: list[str] | None,
    csv_labels: dict[str, str] | None,
    max_pixels: int,
    workers: int,
    progress: bool,
) -> _Scan:
    """Read every file once: ignore litter, label, map, filter, then decode/hash/materialise in a thread pool.

    Bounded in flight (4 per worker), so memory does not depend on how many files the source holds.
    """
    started = time.perf_counter()
    scan = _Scan()

    def collect(future: Future) -> None:
        result = future.result()
        if isinstance(result, _Accepted):
            scan.accepted.append(result)
        else:
            scan.rejected.append(result)

    with _progress(progress) as bar, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
        task = bar.add_task("ingest", total=_count_files(source))
        in_flight: deque[Future] = deque()
        for item in sources.iter_source(source):
            scan.files_seen += 1
            bar.advance(task)
            if item.relpath and sources.is_litter(item.relpath):
                scan.ignored += 1
                continue
            if item.skip_reason:
                scan.rejected.append((item.origin, item.skip_reason))
                continue
            scan.folders.add(item.relpath.rpartition("/")[0])
            if csv_labels is not None:
                label = csv_labels.get(item.relpath)
                why = "unlabelled: not listed in the labels CSV"
            else:
                label = sources.label_from_relpath(item.relpath)
                why = "unlabelled: file at top level (put it in a class folder)"
            if label is None:
                scan.rejected.append((item.origin, why))
                continue
            if not sources.is_utf8(label):  # a class name must be writable in parquet, JSON, MLflow and a terminal
                name = sources.display_name(label)
                scan.rejected.append((item.origin, f"bad-name: folder name {name} is not UTF-8; rename the folder"))
                continue
            scan.seen_labels.add(label)
            label = mapping.get(label, label)
            if wanted is not None and label not in wanted:
                scan.excluded[label] += 1
                continue
            in_flight.append(pool.submit(_process, item, label, record, max_pixels))
            while len(in_flight) >= 4 * workers:
                collect(in_flight.popleft())
        while in_flight:
            collect(in_flight.popleft())
    scan.seconds = time.perf_counter() - started
    return scan


def _drop_files_beside_class_folders(df: pd.DataFrame, folders: set[str], rejected: list) -> pd.DataFrame:
    """raw-img/stray.jpg beside raw-img/cane/ and raw-img/gatto/: raw-img holds classes, it is not one."""
    containers = {f.rsplit("/", k)[0] for f in folders for k in range(1, f.count("/") + 1)}
    beside = df["folder"].isin(containers)
    rejected.extend(
        (origin, "unlabelled: file beside class folders (put it in a class folder)")
        for origin in df.loc[beside, "source"]
    )
    return df[~beside]


def _drop_conflicts_and_duplicates(df: pd.DataFrame, rejected: list) -> tuple[pd.DataFrame, int, pd.DataFrame]:
    """Same bytes under two labels: nobody can say which is right, so no copy is used. Same bytes under one
    label: keep the copy with the smallest source path (a rule that does not depend on listing order).
    Returns the kept rows, how many exact duplicates went, and the conflicting rows (label, sha256)."""
    df = df.sort_values(["sha256", "label", "source"], kind="stable")
    labels_per_sha = df.groupby("sha256")["label"].agg(lambda s: sorted(set(s)))
    conflicts = labels_per_sha[labels_per_sha.map(len) > 1]
    bad = df["sha256"].isin(conflicts.index)
    for origin, sha in zip(df.loc[bad, "source"], df.loc[bad, "sha256"]):
        rejected.append((origin, f"label-conflict: same content labelled {' and '.join(conflicts[sha])}"))
    conflicted = df.loc[bad, ["label", "sha256"]]
    df = df[~bad]
    dup = df.duplicated("sha256", keep="first")
    kept_source = df.drop_duplicates("sha256").set_index("sha256")["source"]
    for origin, sha in zip(df.loc[dup, "source"], df.loc[dup, "sha256"]):
        rejected.append((origin, f"duplicate-of: {kept_source[sha]}"))
    return df[~dup], int(dup.sum()), conflicted


def _check_conflict_losses(df: pd.DataFrame, conflicted: pd.DataFrame, hint: str) -> dict[str, int]:
    """Images each class lost to label conflicts, for the card and the summary; a class left with none is an
    error (it would silently vanish from the dataset), naming the labels its images collide with."""
    lost = conflicted["label"].value_counts().sort_index()
    kept = set(df["label"])
    emptied = []
    for label, n in lost.items():
        if label not in kept:
            shas = set(conflicted.loc[conflicted["label"] == label, "sha256"])
            others = sorted(set(conflicted.loc[conflicted["sha256"].isin(shas), "label"]) - {label})
            emptied.append(
                f"class {label!r} lost all its {n} images to label conflicts "
                f"(the same content also labelled {', '.join(others)})"
            )
    if emptied:
        raise BakeoffError(
            f"{'; '.join(emptied)}: fix the labels, or leave the class out with --classes or --label-map{hint}"
        )
    return {str(label): int(n) for label, n in lost.items()}


@dataclass(frozen=True)
class _Options:
    """The request, checked and parsed: what every step below reads."""

    source: str
    out: Path
    mapping: dict[str, str]
    wanted: list[str] | None
    csv_labels: dict[str, str] | None
    per_class: int | None
    val: float
    test: float
    seed: int
    max_pixels: int
    near_duplicate_distance: int


def _check_options(
    source: str,
    out_dir: str,
    *,
    label_map: dict | str | None,
    classes: list[str] | str | None,
    labels_csv: str | None,
    per_class: int | None,
    val: float,
    test: float,
    seed: int,
    max_pixels: int,
    near_duplicate_distance: int,
) -> _Options:
    """Every usage error before the first file is read, so a bad option never costs a pass over the source."""
    if storage.is_s3(str(out_dir)):
        raise BakeoffError("--out must be a local folder (upload it afterwards, e.g. with storage.upload_tree)")
    splits.check_fractions(val, test)
    write_record.check_apart(source, str(out_dir), "the dataset")
    if max_pixels < 1:
        raise BakeoffError(f"--max-pixels must be positive, got {max_pixels}")
    if per_class is not None and per_class < 1:
        raise BakeoffError(f"--per-class must be at least 1, got {per_class}")
    mapping = load_label_map(label_map)
    wanted = _parse_classes(classes)
    csv_labels = sources.read_labels_csv(labels_csv) if labels_csv else None
    for value in set((csv_labels or {}).values()):
        check_label(value, f"labels CSV {labels_csv}")
    return _Options(
        source,
        Path(out_dir),
        mapping,
        wanted,
        csv_labels,
        per_class,
        val,
        test,
        seed,
        max_pixels,
        near_duplicate_distance,
    )


def _accepted_table(scan: _Scan, opts: _Options) -> tuple[pd.DataFrame, int, pd.DataFrame]:
    """One row per usable image: files beside class folders, label conflicts and exact duplicates go to
    ``scan.rejected``. Returns the table, how many exact duplicates were dropped and the conflicting rows."""
    df = pd.DataFrame([a.__dict__ for a in scan.accepted], columns=list(_Accepted.__dataclass_fields__))
    scan.accepted.clear()  # the table holds the rows now; keep one copy in memory, not two
    if opts.csv_labels is None:  # with a labels CSV the folders mean nothing
        df = _drop_files_beside_class_folders(df, scan.folders, scan.rejected)
    return _drop_conflicts_and_duplicates(df.drop(columns="folder"), scan.rejected)


def _check_wanted_classes(df: pd.DataFrame, opts: _Options, excluded: Counter) -> None:
    """A --classes name with no usable image is a typo or a mapping mistake; say which labels exist instead."""
    if opts.wanted is None:
        return
    missing = [c for c in opts.wanted if c not in set(df["label"])]
    if missing:
        found = sorted(set(df["label"]) | set(excluded))
        raise BakeoffError(f"--classes names {missing} but no usable image has that label; labels found: {found}")


def _cap(df: pd.DataFrame, opts: _Options) -> tuple[pd.DataFrame, dict[str, int]]:
    """--per-class: keep a content-chosen subset per label; returns the rows and how many each label lost."""
    before = df["label"].value_counts()
    df = splits.cap_per_class(df, opts.per_class, opts.seed)
    after = df["label"].value_counts()
    capped = {k: int(before[k] - after.get(k, 0)) for k in sorted(before.index) if before[k] > after.get(k, 0)}
    return df, capped


def _check_enough_classes(df: pd.DataFrame, hint: str) -> list[str]:
    """A classifier needs two classes; fewer usually means a wrong folder layout, so point at it."""
    labels = sorted(set(df["label"]))
    if len(labels) < 2:
        raise BakeoffError(
            f"need at least 2 classes to split, found {len(labels)} {labels}; "
            f"check the folder layout (class folders with images inside), --label-map and --classes{hint}"
        )
    return labels


def _group_and_split(df: pd.DataFrame, opts: _Options) -> pd.DataFrame:
    """Near-duplicate groups first, then the split by group, so copies of one picture never straddle splits.
    Rows are put in sha256 order first: the manifest's order then depends on content only."""
    df = df.sort_values("sha256", kind="stable").reset_index(drop=True)
    df["group"] = splits.near_duplicate_groups(
        df["sha256"].tolist(), df["phash"].tolist(), opts.near_duplicate_distance
    )
    df["split"] = splits.assign_splits(df, val=opts.val, test=opts.test, seed=opts.seed)
    return df.drop(columns="phash")


def _split_counts(df: pd.DataFrame, labels: list[str]) -> dict[str, dict[str, int]]:
    """Images per label and split (plus the label's total), for the card and the result."""
    table = pd.crosstab(df["label"], df["split"]).reindex(index=labels, columns=list(manifest.SPLITS), fill_value=0)
    table["total"] = table.sum(axis=1)
    return {label: {k: int(v) for k, v in row.items()} for label, row in table.iterrows()}


def _card(
    df: pd.DataFrame,
    opts: _Options,
    scan: _Scan,
    *,
    labels: list[str],
    counts: dict[str, dict[str, int]],
    capped: dict[str, int],
    n_duplicates: int,
    lost_to_conflicts: dict[str, int],
) -> dict[str, Any]:
    """card.json: how the dataset was made and what was left out, so a reader can trust (or question) it."""
    group_sizes = df["group"].value_counts()
    merged = group_sizes[group_sizes > 1]
    rejected = scan.rejected
    return {
        "source": sources.display_name(opts.source),
        "seed": opts.seed,
        "fractions": {"train": round(1 - opts.val - opts.test, 6), "val": opts.val, "test": opts.test},
        "label_map": opts.mapping,
        "label_map_unused": sorted(set(opts.mapping) - scan.seen_labels),
        "classes": labels,
        "per_class": opts.per_class,
        "max_pixels": opts.max_pixels,
        "n_images": int(len(df)),
        "counts": counts,
        "splits": {s: int((df["split"] == s).sum()) for s in manifest.SPLITS},
        "files_seen": scan.files_seen,
        "ignored_litter": scan.ignored,
        "excluded_by_classes": dict(sorted(scan.excluded.items())),
        "capped_by_per_class": capped,
        "n_rejected": len(rejected),
        "rejected": dict(sorted(Counter(reason.split(":", 1)[0] for _, reason in rejected).items())),
        "exact_duplicates": n_duplicates,
        "lost_to_label_conflicts": lost_to_conflicts,
        "near_duplicates": {
            "hash": f"phash {images.PHASH_SIZE}x{images.PHASH_SIZE}",
            "max_distance_bits": opts.near_duplicate_distance,
            "groups_merged": int(len(merged)),
            "images_in_merged_groups": int(merged.sum()),
            "groups_with_mixed_labels": int((df.groupby("group")["label"].nunique() > 1).sum()),
        },
        "dataset_hash": manifest.dataset_hash(df),
    }


def _write_card(record: write_record.WriteRecord, card: dict[str, Any]) -> tuple[str, str]:
    """card.json for machines, card.md for people; both atomic."""
    record.add(manifest.CARD_JSON_NAME)
    card_json = str(record.folder / manifest.CARD_JSON_NAME)
    storage.write_json(card_json, card)
    card_md_path = str(record.write_bytes(manifest.CARD_MD_NAME, card_md.to_markdown(card).encode()))
    return card_json, card_md_path


def _open_record(out: Path) -> write_record.WriteRecord:
    """DIR's record of what ingest wrote there; refuse a DIR holding outputs ingest did not write (a dataset folder
    from elsewhere, or the user's own files under those names), before anything is read or written."""
    record = write_record.WriteRecord(out, "ingest")
    names = [*OUTPUT_NAMES] if record.exists else [*OUTPUT_NAMES, IMAGES_DIR]
    record.refuse_foreign(names, "write the dataset to a new --out folder")
    return record


def ingest(
    source: str,
    out_dir: str,
    *,
    label_map: dict | str | None = None,
    classes: list[str] | str | None = None,
    per_class: int | None = None,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    labels_csv: str | None = None,
    progress: bool = True,
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    near_duplicate_distance: int = splits.NEAR_DUPLICATE_MAX_DISTANCE,
) -> IngestResult:
    """Structure + validate + dedupe + group near-duplicates + split ``source`` into the dataset folder ``out_dir``.

    Bad files are rejected with a reason and never stop the run; only usage errors (missing source, bad
    options, a class too small to split, fewer than two classes) raise :class:`BakeoffError`.
    """
    started = time.perf_counter()
    opts = _check_options(
        str(source),
        out_dir,
        label_map=label_map,
        classes=classes,
        labels_csv=labels_csv,
        per_class=per_class,
        val=val,
        test=test,
        seed=seed,
        max_pixels=max_pixels,
        near_duplicate_distance=near_duplicate_distance,
    )
    record = _open_record(opts.out)
    with record.open():  # every file is recorded before it is written, so a failed run is cleaned up by the next
        scan = _scan(
            opts.source,
            record,
            mapping=opts.mapping,
            wanted=opts.wanted,
            csv_labels=opts.csv_labels,
            max_pixels=max_pixels,
            workers=workers or min(4, os.cpu_count() or 1),
            progress=progress,
        )
        if scan.files_seen == 0:
            raise BakeoffError(f"no files found in {opts.source}; check the path (an s3:// prefix is case-sensitive)")
        df, n_duplicates, conflicted = _accepted_table(scan, opts)
        # written now, so a run that stops on a usage error below still shows what was wrong with the files
        scan.rejected.sort()
        rejected_path = _write_rejected(record, scan.rejected)
        hint = f" ({len(scan.rejected)} files rejected, see {rejected_path})" if scan.rejected else ""
        lost_to_conflicts = _check_conflict_losses(df, conflicted, hint)

        _check_wanted_classes(df, opts, scan.excluded)
        df, capped = _cap(df, opts)
        labels = _check_enough_classes(df, hint)
        df = _group_and_split(df, opts)

        record.add(manifest.MANIFEST_NAME)
        manifest_path = manifest.write_manifest(df[list(manifest.COLUMNS)], opts.out)
        counts = _split_counts(df, labels)
        card = _card(
            df,
            opts,
            scan,
            labels=labels,
            counts=counts,
            capped=capped,
            n_duplicates=n_duplicates,
            lost_to_conflicts=lost_to_conflicts,
        )
        card_json, card_md_path = _write_card(record, card)
    # images a previous run wrote that this dataset no longer uses; never a file ingest did not write
    record.prune(set(df["uri"]) | set(OUTPUT_NAMES))
    return IngestResult(
        out_dir=str(opts.out),
        manifest=manifest_path,
        rejected=rejected_path,
        card_json=card_json,
        card_md=card_md_path,
        n_images=int(len(df)),
        n_rejected=len(scan.rejected),
        counts=counts,
        card=card,
        seconds=time.perf_counter() - started,
        images_per_s=scan.files_seen / scan.seconds if scan.seconds > 0 else 0.0,
    )


def _write_rejected(record: write_record.WriteRecord, rejected: list[tuple[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["uri", "reason"])
    writer.writerows(rejected)
    return str(record.write_bytes(manifest.REJECTED_NAME, buffer.getvalue().encode()))
