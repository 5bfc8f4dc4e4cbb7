"""Enumerate a raw image dump, whatever its container: a folder, a zip/tar archive, or an s3:// prefix.

Archives are read member by member (never ``extractall``), so a member called ``../../etc/x`` is only a
name here: nothing is written anywhere by this module. Symlinks, devices and other non-regular members
are yielded with a ``skip_reason`` so the caller can report them. The same reader serves ``ingest`` and
batch prediction.

Memory does not depend on what a member expands to: archive members and S3 objects are streamed in chunks into
a spooled file (in memory up to ``SPOOL_BYTES``, then an anonymous temporary file), the size limit is enforced
while reading, and a member whose first bytes cannot begin any image is not read further (a tar.gz of 9 MB that
expands to 2 GB of zeros is rejected after 64 KiB per member). Names are kept as found; ``display_name`` shows a
name that is not UTF-8 (a local or tar name with Latin-1 bytes) with escapes, so it can go in a CSV or a table.
"""

from __future__ import annotations

import contextlib
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
from typing import BinaryIO

from bakeoff import images, storage
from bakeoff.errors import BakeoffError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
MAX_FILE_BYTES = 512 * 1024 * 1024
"""A single file bigger than this is not read at all (no image in a dataset is that big; a zip bomb is)."""
SPOOL_BYTES = 4 * 1024 * 1024
"""An archive member or S3 object up to this size is held in memory; the rest of a bigger one goes to a temp file."""
_CHUNK = 1024 * 1024

_LITTER_NAMES = {"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r"}
_LITTER_DIRS = {"__macosx", "$recycle.bin", "system volume information"}


@dataclass(frozen=True)
class SourceItem:
    """One file of a raw dump.

    ``relpath`` is the normalised '/'-separated path inside the source (no leading '/', no '..'), as found
    (it may hold surrogate escapes of non-UTF-8 bytes: show it with :func:`display_name`); ``origin`` is where it
    really is (a local path, ``s3://bucket/key`` or ``archive.zip!member``), always valid UTF-8;
    ``open()`` returns a seekable binary file of its bytes, which the caller closes (archive members can be opened
    once). ``skip_reason`` is set for members that must not be read (symlinks, devices, oversized files).
    """

    relpath: str
    origin: str
    size: int | None
    open: Callable[[], BinaryIO]
    skip_reason: str | None = None


def display_name(name: str) -> str:
    """``name`` as valid UTF-8 for CSVs, parquet, JSON and terminals: each byte of a file name that is not UTF-8
    (which Python decodes to a surrogate escape) is shown as ``\\xe9``; valid names are returned unchanged."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def is_utf8(name: str) -> bool:
    """Whether ``name`` came from valid UTF-8 (no surrogate escapes): only such names can become class names."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
            origin = display_name(str(path))
            # a local symlink to a file is followed (the user's own disk); archives never follow links
            if not path.is_file():
                kind = "broken symlink" if path.is_symlink() else "device or fifo"
                yield SourceItem(rel, origin, None, _unreadable, f"not-a-regular-file: {kind}")
                continue
            size = path.stat().st_size
            yield SourceItem(rel, origin, size, _file_opener(path, size), _too_big(size))


def _file_opener(path: Path, size: int) -> Callable[[], BinaryIO]:
    """A small local file is read whole in one call (the common case, and the cheapest); a big one is opened in
    place, so the decoder reads its header first and the rest only if it is a real image."""

    def open_file() -> BinaryIO:
        handle = open(path, "rb")
        if size > SPOOL_BYTES:
            return handle
        with handle:
            return io.BytesIO(handle.read())

    return open_file


def _unreadable() -> BinaryIO:
    raise BakeoffError("this item is skipped and has no bytes")


def _read_up_to(stream, n: int) -> bytes:
    """Up to ``n`` bytes (fewer only at the end): a network stream may return short reads."""
    parts, have = [], 0
    while have < n and (chunk := stream.read(n - have)):
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)


def _spool(stream) -> BinaryIO:
    """Copy ``stream`` into a seekable file without ever holding more than ``SPOOL_BYTES`` of it in memory.

    Stops after the first ``images.SNIFF_BYTES`` when they cannot begin any image (the decoder then rejects that
    prefix as ``not-an-image`` or ``zero-byte``), and raises ``ImageRejected('too-large')`` as soon as more than
    ``MAX_FILE_BYTES`` arrive, whatever size the container or the listing declared.
    """
    limit = MAX_FILE_BYTES
    head = _read_up_to(stream, images.SNIFF_BYTES)
    if not images.could_be_image(head):
        return io.BytesIO(head)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    spool.write(head)
    total = len(head)
    while chunk := stream.read(_CHUNK):
        total += len(chunk)
        if total > limit:
            spool.close()
            raise images.ImageRejected("too-large", f"more than {limit} bytes")
        spool.write(chunk)
    spool.seek(0)
    return spool


def _s3_opener(uri: str) -> Callable[[], BinaryIO]:
    def open_object() -> BinaryIO:
        bucket, key = storage.split_s3(uri)
        try:
            body = storage.s3_client().get_object(Bucket=bucket, Key=key)["Body"]
            with contextlib.closing(body):  # closing early drops the rest of a rejected object unread
                return _spool(body)
        except images.ImageRejected:
            raise
        except Exception as exc:  # botocore and network errors come in many types; all mean the same here
            raise BakeoffError(f"cannot read {uri}: {' '.join(str(exc).split())[:160]}") from exc

    return open_object


def _iter_s3(root: str) -> Iterator[SourceItem]:
    for item in storage.list_files(root):
        rel = normalise_relpath(item.relpath)
        yield SourceItem(rel, item.uri, item.size, _s3_opener(item.uri), _too_big(item.size))


def _spooled_member(read_member: Callable[[], BinaryIO]) -> tuple[Callable[[], BinaryIO] | None, str | None]:
    """Spool one archive member now, while the archive is at it; (opener, None) or (None, rejection reason)."""
    try:
        with read_member() as stream:
            spooled = _spool(stream)
    except images.ImageRejected as exc:
        return None, exc.reason
    except Exception as exc:  # bad CRC, unsupported compression method, truncated data, ...
        return None, f"corrupt-archive-member: {' '.join(str(exc).split())[:160]}"
    return _opened(spooled), None


def _opened(spooled: BinaryIO) -> Callable[[], BinaryIO]:
    return lambda: spooled


def _iter_zip(path: str, display: str) -> Iterator[SourceItem]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BakeoffError(f"cannot open zip archive {display_name(display)}: {exc}") from exc
    except UnicodeDecodeError as exc:  # Python's zipfile has no lenient mode for a false UTF-8 flag
        raise BakeoffError(
            f"cannot read zip archive {display_name(display)}: a member name marked UTF-8 is not UTF-8 "
            f"({exc.object[max(exc.start - 20, 0) : exc.end + 20]!r}); re-create the archive, e.g. as .tar.gz"
        ) from exc
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            rel = normalise_relpath(info.filename)
            origin = display_name(f"{display}!{info.filename}")
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
            # read now, in order, while the archive is open; streamed, so a bomb member never sits in memory
            opener, reason = _spooled_member(lambda info=info: archive.open(info))
            yield SourceItem(rel, origin, info.file_size, opener or _unreadable, reason)


def _iter_tar(path: str, display: str) -> Iterator[SourceItem]:
    # Stream mode ('r|*'): one forward pass, so a .tar.gz is decompressed once, not once per member.
    try:
        archive = tarfile.open(path, mode="r|*")
    except (tarfile.TarError, OSError) as exc:
        raise BakeoffError(f"cannot open tar archive {display_name(display)}: {exc}") from exc
    with archive:
        try:
            for member in archive:
                if member.isdir():
                    continue
                rel = normalise_relpath(member.name)
                origin = display_name(f"{display}!{member.name}")
                if not member.isfile():
                    kind = "symlink" if member.issym() else "hardlink" if member.islnk() else "device or fifo"
                    yield SourceItem(rel, origin, None, _unreadable, f"not-a-regular-file: {kind}")
                    continue
                skip = _too_big(member.size)
                if skip:
                    yield SourceItem(rel, origin, member.size, _unreadable, skip)
                    continue
                # streamed in chunks; what is left of a rejected member is skipped by the next read, unbuffered.
                # A read error here means the archive itself ends early: handled below, as before.
                try:
                    spooled = _spool(archive.extractfile(member) or io.BytesIO())
                except images.ImageRejected as exc:
                    yield SourceItem(rel, origin, member.size, _unreadable, exc.reason)
                    continue
                yield SourceItem(rel, origin, member.size, _opened(spooled))
        except (tarfile.TarError, OSError, EOFError) as exc:
            # a truncated archive: everything read so far stays valid
            yield SourceItem("", display_name(f"{display}!<end>"), None, _unreadable, f"corrupt-archive: {exc}")


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
