"""Enumerate a raw image dump, whatever its container: a folder, a zip/tar archive, or an s3:// prefix.

Archives are read member by member (never ``extractall``), so a member called ``../../etc/x`` is only a
name here: nothing is written anywhere by this module. Symlinks, devices and other non-regular members
are yielded with a ``skip_reason`` so the caller can report them. The same reader serves ``ingest`` and
batch prediction.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bakeoff import storage
from bakeoff.errors import BakeoffError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
MAX_FILE_BYTES = 512 * 1024 * 1024
"""A single file bigger than this is not read at all (no image in a dataset is that big; a zip bomb is)."""

_LITTER_NAMES = {"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r"}
_LITTER_DIRS = {"__macosx", "$recycle.bin", "system volume information"}


@dataclass(frozen=True)
class SourceItem:
    """One file of a raw dump.

    ``relpath`` is the normalised '/'-separated path inside the source (no leading '/', no '..'),
    ``origin`` is where it really is (a local path, ``s3://bucket/key`` or ``archive.zip!member``),
    ``read()`` returns its bytes. ``skip_reason`` is set for members that must not be read
    (symlinks, devices, oversized files).
    """

    relpath: str
    origin: str
    size: int | None
    read: Callable[[], bytes]
    skip_reason: str | None = None


def is_archive(source: str) -> bool:
    return str(source).lower().endswith(ARCHIVE_SUFFIXES)


def normalise_relpath(name: str) -> str:
    """Make an archive/S3 name a clean relative path: '\\' -> '/', no leading '/', no '.' or '..' parts."""
    name = name.replace("\\", "/")
    parts = [p for p in posixpath.normpath("/" + name).split("/") if p not in ("", ".", "..")]
    return "/".join(parts)


def is_litter(relpath: str) -> bool:
    """Hidden files and OS litter (.DS_Store, ._x, Thumbs.db, __MACOSX/, desktop.ini): ignored, not rejected."""
    parts = relpath.split("/")
    if any(p.startswith(".") or p.lower() in _LITTER_DIRS for p in parts[:-1]):
        return True
    name = parts[-1]
    return name.startswith(".") or name.lower() in _LITTER_NAMES or name.startswith("~$")


def label_from_relpath(relpath: str) -> str | None:
    """The class is the folder that directly contains the file; files at the top level have none."""
    parts = relpath.split("/")
    return parts[-2] if len(parts) >= 2 else None


def _too_big(size: int | None) -> str | None:
    if size is not None and size > MAX_FILE_BYTES:
        return f"too-large: {size} bytes > {MAX_FILE_BYTES}"
    return None


def _iter_folder(root: str) -> Iterator[SourceItem]:
    base = Path(root)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            rel = path.relative_to(base).as_posix()
            # a local symlink to a file is followed (the user's own disk); archives never follow links
            if not path.is_file():
                kind = "broken symlink" if path.is_symlink() else "device or fifo"
                yield SourceItem(rel, str(path), None, _unreadable, f"not-a-regular-file: {kind}")
                continue
            size = path.stat().st_size
            yield SourceItem(rel, str(path), size, _reader(str(path)), _too_big(size))


def _reader(uri: str) -> Callable[[], bytes]:
    return lambda: storage.read_bytes(uri)


def _unreadable() -> bytes:
    raise BakeoffError("this item is skipped and has no bytes")


def _iter_s3(root: str) -> Iterator[SourceItem]:
    for item in storage.list_files(root):
        yield SourceItem(normalise_relpath(item.relpath), item.uri, item.size, _reader(item.uri), _too_big(item.size))


def _iter_zip(path: str, display: str) -> Iterator[SourceItem]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BakeoffError(f"cannot open zip archive {display}: {exc}") from exc
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            rel = normalise_relpath(info.filename)
            origin = f"{display}!{info.filename}"
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                yield SourceItem(rel, origin, info.file_size, _unreadable, "not-a-regular-file: symlink")
                continue
            if info.flag_bits & 0x1:
                yield SourceItem(rel, origin, info.file_size, _unreadable, "encrypted: zip member needs a password")
                continue
            skip = _too_big(info.file_size)
            if skip:
                yield SourceItem(rel, origin, info.file_size, _unreadable, skip)
                continue
            try:  # read now, in order, while the archive is open; one member in memory at a time
                data = archive.read(info)
            except Exception as exc:  # bad CRC, unsupported compression method, ...
                detail = " ".join(str(exc).split())[:160]
                yield SourceItem(rel, origin, info.file_size, _unreadable, f"corrupt-archive-member: {detail}")
                continue
            yield SourceItem(rel, origin, info.file_size, _const(data))


def _const(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def _iter_tar(path: str, display: str) -> Iterator[SourceItem]:
    # Stream mode ('r|*'): one forward pass, so a .tar.gz is decompressed once, not once per member.
    try:
        archive = tarfile.open(path, mode="r|*")
    except (tarfile.TarError, OSError) as exc:
        raise BakeoffError(f"cannot open tar archive {display}: {exc}") from exc
    with archive:
        try:
            for member in archive:
                if member.isdir():
                    continue
                rel = normalise_relpath(member.name)
                origin = f"{display}!{member.name}"
                if not member.isfile():
                    kind = "symlink" if member.issym() else "hardlink" if member.islnk() else "device or fifo"
                    yield SourceItem(rel, origin, None, _unreadable, f"not-a-regular-file: {kind}")
                    continue
                skip = _too_big(member.size)
                if skip:
                    yield SourceItem(rel, origin, member.size, _unreadable, skip)
                    continue
                handle = archive.extractfile(member)
                data = handle.read() if handle is not None else b""
                yield SourceItem(rel, origin, member.size, _const(data))
        except (tarfile.TarError, OSError, EOFError) as exc:
            # a truncated archive: everything read so far stays valid
            yield SourceItem("", f"{display}!<end>", None, _unreadable, f"corrupt-archive: {exc}")


def _iter_archive(local_path: str, display: str) -> Iterator[SourceItem]:
    if display.lower().endswith(".zip"):
        yield from _iter_zip(local_path, display)
    else:
        yield from _iter_tar(local_path, display)


def iter_source(source: str) -> Iterator[SourceItem]:
    """Yield every file of a folder, archive (local or s3://) or s3:// prefix, in a stable order."""
    source = str(source)
    if storage.is_s3(source):
        if is_archive(source):
            with tempfile.TemporaryDirectory(prefix="bakeoff-src-") as tmp:
                local = storage.download(source, Path(tmp, "archive" + _suffix(source)))
                yield from _iter_archive(local, source)
            return
        yield from _iter_s3(source)
        return
    path = Path(source)
    if not path.exists():
        raise BakeoffError(
            f"source not found: {source}; give a folder, a .zip/.tar/.tar.gz archive or s3://bucket/prefix"
        )
    if path.is_dir():
        yield from _iter_folder(source)
        return
    if is_archive(source):
        yield from _iter_archive(source, source)
        return
    raise BakeoffError(
        f"unsupported source {source}: give a folder, a .zip/.tar/.tar.gz/.tgz archive or s3://bucket/prefix"
    )


def _suffix(name: str) -> str:
    lower = name.lower()
    return next(s for s in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True) if lower.endswith(s))


def read_labels_csv(uri: str) -> dict[str, str]:
    """Read a ``path,label`` CSV (paths relative to SOURCE) into {normalised path: label}."""
    try:
        text = storage.read_bytes(uri).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BakeoffError(f"labels CSV {uri} is not UTF-8 text") from exc
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    if "path" not in fields or "label" not in fields:
        raise BakeoffError(f"labels CSV {uri} needs a header with columns path,label (found {reader.fieldnames})")
    reader.fieldnames = fields
    labels: dict[str, str] = {}
    for line, row in enumerate(reader, start=2):
        path = normalise_relpath((row.get("path") or "").strip())
        label = (row.get("label") or "").strip()
        if not path or not label:
            raise BakeoffError(f"labels CSV {uri} line {line}: empty path or label")
        if labels.get(path, label) != label:
            raise BakeoffError(f"labels CSV {uri} line {line}: {path} has two labels ({labels[path]}, {label})")
        labels[path] = label
    return labels
