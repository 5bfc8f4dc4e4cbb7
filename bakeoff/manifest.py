"""The manifest: the one table every step after ingest reads.

``manifest.parquet`` has one row per accepted image:

=========  =======  ==============================================================
column     type     meaning
=========  =======  ==============================================================
uri        str      where the image bytes are; relative URIs are relative to the
                    manifest's own folder (ingest materialises images there, so the
                    folder is self-contained and can move between machines/pods)
label      str      class name after the label map
split      str      ``train`` | ``val`` | ``test``
sha256     str      hex digest of the file's bytes (content identity, cache key)
width      int64    decoded width in pixels (after EXIF orientation)
height     int64    decoded height in pixels (after EXIF orientation)
group      str      near-duplicate group id; a group never straddles two splits
source     str      where the image came from in the raw dump (for humans)
=========  =======  ==============================================================
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pandas as pd

from bakeoff import storage
from bakeoff.contract import CARD_JSON_NAME as CARD_JSON_NAME  # re-exported: the dataset folder's file names
from bakeoff.contract import CARD_MD_NAME as CARD_MD_NAME
from bakeoff.contract import MANIFEST_NAME
from bakeoff.contract import REJECTED_NAME as REJECTED_NAME
from bakeoff.errors import BakeoffError

SPLITS = ("train", "val", "test")
COLUMNS = {
    "uri": "string",
    "label": "string",
    "split": "string",
    "sha256": "string",
    "width": "int64",
    "height": "int64",
    "group": "string",
    "source": "string",
}


def manifest_uri(dataset_dir: str | os.PathLike) -> str:
    """Accept either a dataset folder or the manifest file itself."""
    text = str(dataset_dir)
    return text if text.endswith(".parquet") else storage.join(text, MANIFEST_NAME)


def validate(df: pd.DataFrame, where: str = "manifest") -> pd.DataFrame:
    """Check columns and values; return the frame with canonical dtypes.

    Every problem is reported at once, in one line that starts with ``where`` (the file, when read from one): a
    null label or a text width would otherwise surface steps later as a ``TypeError`` deep in pandas or sklearn.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise BakeoffError(f"{where} lacks columns {missing}; re-run `bakeoff ingest`")
    problems = []
    for column, dtype in COLUMNS.items():
        empty = int(df[column].isna().sum())
        if empty:
            problems.append(f"column {column} is empty in {empty} row(s)")
            continue
        try:
            df[column].astype(dtype)
        except (ValueError, TypeError) as exc:
            problems.append(f"column {column} must be {dtype} ({' '.join(str(exc).split())[:120]})")
    if not problems:
        bad_splits = sorted(set(df["split"].astype(str)) - set(SPLITS))
        if bad_splits:
            problems.append(f"unknown splits {bad_splits}; expected {list(SPLITS)}")
    if problems:
        raise BakeoffError(f"{where}: {'; '.join(problems)}; re-run `bakeoff ingest`")
    return df.astype(COLUMNS)


def write_manifest(df: pd.DataFrame, dataset_dir: str | os.PathLike) -> str:
    """Write ``manifest.parquet`` atomically, rows in a stable order (by sha256)."""
    df = validate(df).sort_values("sha256", kind="stable").reset_index(drop=True)
    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    uri = manifest_uri(dataset_dir)
    storage.write_bytes(uri, buffer.getvalue())
    return uri


def read_manifest(dataset_dir: str | os.PathLike, resolve: bool = True) -> pd.DataFrame:
    """Read a manifest; with ``resolve`` relative URIs become absolute (local path or s3://)."""
    uri = manifest_uri(dataset_dir)
    if not storage.exists(uri):
        raise BakeoffError(f"no manifest at {uri}; run `bakeoff ingest SOURCE --out DIR` first")
    try:
        table = pd.read_parquet(io.BytesIO(storage.read_bytes(uri)))
    except BakeoffError:
        raise
    except Exception as exc:  # pyarrow's ArrowInvalid / OSError for a truncated or foreign file, among others
        detail = " ".join(str(exc).split())[:160]
        raise BakeoffError(
            f"{uri} is not a readable manifest ({detail}); re-run `bakeoff ingest` to write it again"
        ) from exc
    df = validate(table, where=uri)
    if resolve:
        base = uri.rsplit("/", 1)[0] if storage.is_s3(uri) else str(Path(uri).resolve().parent)
        df["uri"] = [u if storage.is_s3(u) or os.path.isabs(u) else storage.join(base, u) for u in df["uri"]]
    return df


def class_names(df: pd.DataFrame) -> list[str]:
    """Class names in the one order every model output uses: sorted."""
    return sorted(df["label"].unique().tolist())


def dataset_hash(df: pd.DataFrame) -> str:
    """Content hash of the dataset: images, labels and splits, independent of paths and row order."""
    rows = sorted(zip(df["sha256"], df["label"], df["split"]))
    digest = hashlib.sha256()
    for sha, label, split in rows:
        digest.update(f"{sha}\t{label}\t{split}\n".encode())
    return digest.hexdigest()
