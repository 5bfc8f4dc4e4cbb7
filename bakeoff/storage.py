"""Local paths and s3:// URIs behind one small API, so every step reads and writes either.

S3 goes through boto3, which takes its endpoint and credentials from the standard AWS
environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). Writes are atomic: a local file is
written under a temporary name, fsynced, renamed, and its folder fsynced (so after a crash the
name points at the whole new file or the whole old one); an S3 object is a single PUT, so readers
never see half a file. Files get the mode the user's umask allows (tempfile would make them 0600,
unreadable to a team on a shared volume). A write that fails (full disk, read-only folder) raises
a one-line BakeoffError naming the path, the cause and what to do, and leaves no temp file behind.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bakeoff import env
from bakeoff.errors import BakeoffError

S3_SCHEME = "s3://"


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith(S3_SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key/prefix`` into ``("bucket", "key/prefix")``."""
    if not is_s3(uri):
        raise BakeoffError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise BakeoffError(f"s3 URI has no bucket: {uri}")
    return bucket, key


def join(base: str | os.PathLike, *parts: str) -> str:
    """Join path parts onto a local path or an s3:// URI."""
    base = str(base)
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


@functools.cache
def _client_for(endpoint: str | None, region: str | None):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=region or "us-east-1",
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
    )


def s3_client():
    """A boto3 S3 client for the endpoint and region in the environment (``bakeoff.env``; cached per endpoint)."""
    return _client_for(env.s3_endpoint_url(), env.aws_region())


@dataclass(frozen=True)
class StoredFile:
    """One file found under a prefix: ``relpath`` uses '/' and is relative to the listed root."""

    uri: str
    relpath: str
    size: int
    etag: str = ""  # S3 only: the object's ETag, which changes when its content does (even at the same size)


def list_files(root: str | os.PathLike) -> Iterator[StoredFile]:
    """Yield every file under a local folder or an s3:// prefix, in a stable sorted order."""
    root = str(root)
    if is_s3(root):
        bucket, prefix = split_s3(root)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        paginator = s3_client().get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/"):
                        continue
                    yield StoredFile(
                        f"{S3_SCHEME}{bucket}/{key}",
                        key[len(prefix) :],
                        int(obj["Size"]),
                        obj.get("ETag", "").strip('"'),
                    )
        except Exception as exc:  # botocore raises many types; all mean the same to a user
            raise BakeoffError(f"cannot list {root}: {exc}") from exc
        return
    base = Path(root)
    if not base.is_dir():
        raise BakeoffError(f"not a folder: {root}")
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.is_file():
                yield StoredFile(str(path), path.relative_to(base).as_posix(), path.stat().st_size)


def exists(uri: str | os.PathLike) -> bool:
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            s3_client().head_object(Bucket=bucket, Key=key)
            return True
        except Exception:
            return False
    return Path(uri).exists()


def read_bytes(uri: str | os.PathLike) -> bytes:
    uri = str(uri)
    if is_s3(uri):
        return _on_s3("read", uri, lambda s3, bucket, key: s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    try:
        return Path(uri).read_bytes()
    except OSError as exc:
        raise BakeoffError(f"cannot read {uri}: {exc.strerror}") from exc


def write_bytes(uri: str | os.PathLike, data: bytes) -> None:
    """Write a whole file atomically (temp name + rename locally, one PUT on S3)."""
    uri = str(uri)
    if is_s3(uri):
        _on_s3("write", uri, lambda s3, bucket, key: s3.put_object(Bucket=bucket, Key=key, Body=data))
        return
    with atomic_path(uri) as tmp:
        Path(tmp).write_bytes(data)


def remove(uri: str | os.PathLike) -> None:
    """Delete one file or S3 object that bakeoff itself wrote (a corrupt cache entry); absent is fine."""
    uri = str(uri)
    if is_s3(uri):
        _on_s3("delete", uri, lambda s3, bucket, key: s3.delete_object(Bucket=bucket, Key=key))
        return
    try:
        os.unlink(uri)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise write_error(uri, exc, action="delete") from exc


def read_json(uri: str | os.PathLike, missing_ok: bool = False) -> dict:
    """Read a JSON artifact; ``{}`` when absent and ``missing_ok``, else a one-line error naming the fix."""
    uri = str(uri)
    if not exists(uri):
        if missing_ok:
            return {}
        raise BakeoffError(f"missing {uri}; run the step that writes it first (see `bakeoff --help`)")
    try:
        return json.loads(read_bytes(uri))
    except json.JSONDecodeError as exc:
        raise BakeoffError(f"{uri} is not valid JSON ({exc.msg}); re-run the step that wrote it") from exc


def write_json(uri: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (indented, newline-terminated); numpy scalars and arrays become plain values."""
    write_bytes(uri, (json.dumps(data, indent=2, default=_json_default) + "\n").encode())


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# errnos that mean "this location cannot take the file": what to tell the user for each
_WRITE_FIXES = {
    errno.ENOSPC: "free space on that filesystem or write somewhere else",
    errno.EDQUOT: "free space within your quota or write somewhere else",
    errno.EFBIG: "the file is over this process's file-size limit (ulimit -f) or the filesystem's; raise it",
    errno.EACCES: "make the folder writable for uid {uid} or write somewhere else",
    errno.EPERM: "make the folder writable for uid {uid} (check immutable attributes) or write somewhere else",
    errno.EROFS: "the filesystem is read-only; write somewhere else",
}
TEMP_MARK = ".tmp"  # atomic_path's temp files are ".<name>.<random>.tmp[<suffix>]"; a killed writer may leave one


def write_error(path: str | os.PathLike, exc: OSError, action: str = "write") -> BakeoffError:
    """One line for a failed write: the path, the cause with its errno, what to do."""
    cause = exc.strerror or type(exc).__name__
    fix = _WRITE_FIXES.get(exc.errno, "check the path and the filesystem, then re-run").format(uid=os.geteuid())
    return BakeoffError(f"cannot {action} {path}: {cause} (errno {exc.errno}); {fix}")


def is_write_failure(exc: BaseException) -> bool:
    """True for the OSErrors that mean the destination cannot take data (full, read-only, not permitted)."""
    return isinstance(exc, OSError) and exc.errno in _WRITE_FIXES


def _s3_error(action: str, uri: str, exc: Exception) -> BakeoffError:
    from bakeoff.redaction import one_line

    return BakeoffError(f"cannot {action} {uri}: {one_line(exc)}")


def _on_s3(action: str, uri: str, call):
    """``call(client, bucket, key)`` for an s3:// URI; any botocore failure becomes one line naming the URI."""
    bucket, key = split_s3(uri)
    try:
        return call(s3_client(), bucket, key)
    except Exception as exc:  # botocore raises many types; all mean the same to a user
        raise _s3_error(action, uri, exc) from exc


def current_umask() -> int:
    """This process's umask, read without changing it (Linux /proc), else by the set-and-restore idiom."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_path(path: str | os.PathLike, directory: bool = False) -> None:
    """Flush a file's data, or a folder's entries, to the disk (some filesystems cannot fsync a folder)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if not directory or exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, keep_suffix: bool = False, durable: bool = True) -> Iterator[str]:
    """Yield a temporary local path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temp file gets the umask's mode and is fsynced before the rename, the folder after it. ``keep_suffix``
    ends the temp name with the target's suffix (Keras refuses to save a model to a name without ``.keras``).
    ``durable=False`` skips both fsyncs: only for cache entries whose reader checks them anyway (an fsync costs
    ~7-10 ms per file on a VM disk, far more than decoding the image a pixel file saves).
    Any failure to write (in the block too) is a one-line BakeoffError naming ``path``; the temp file is removed.
    """
    target = Path(path)
    suffix = TEMP_MARK + (target.suffix if keep_suffix else "")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    except OSError as exc:
        raise write_error(target, exc) from exc
    try:
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
        finally:
            os.close(fd)
        yield tmp
        if durable:
            _fsync_path(tmp)
        os.replace(tmp, target)
        if durable:
            _fsync_path(target.parent, directory=True)
    except OSError as exc:
        if exc.filename and os.path.abspath(exc.filename) not in (os.path.abspath(tmp), str(target.absolute())):
            raise BakeoffError(f"cannot read {exc.filename}: {exc.strerror or exc}") from exc
        raise write_error(target, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@contextlib.contextmanager
def output_path(uri: str) -> Iterator[str]:
    """A local path for a writer that needs one (Keras ``model.save``): renamed into place locally, uploaded to S3.

    The temp file keeps the target's suffix; locally it lives beside the target, so a full output disk fails here
    and not after a copy from /tmp.
    """
    uri = str(uri)
    if not is_s3(uri):
        with atomic_path(uri, keep_suffix=True) as tmp:
            yield tmp
        return
    with tempfile.TemporaryDirectory(prefix="bakeoff-out-") as folder:
        local = os.path.join(folder, uri.rstrip("/").rsplit("/", 1)[-1])
        try:
            yield local
        except OSError as exc:
            raise write_error(local, exc) from exc
        upload(local, uri)


def download(uri: str | os.PathLike, local_path: str | os.PathLike) -> str:
    """Copy a local or S3 file to ``local_path`` atomically; returns the local path."""
    uri = str(uri)
    with atomic_path(local_path) as tmp:
        if is_s3(uri):
            bucket, key = split_s3(uri)
            try:
                s3_client().download_file(bucket, key, tmp)
            except Exception as exc:
                if is_write_failure(exc):  # the local side is full or read-only: atomic_path names local_path
                    raise
                raise _s3_error("download", uri, exc) from exc
        else:
            _copy(uri, tmp)
    return str(local_path)


def upload(local_path: str | os.PathLike, uri: str | os.PathLike) -> str:
    """Copy a local file to a local path or S3 URI atomically; returns the destination."""
    uri = str(uri)
    if is_s3(uri):
        if not os.path.isfile(local_path):
            raise BakeoffError(f"cannot read {local_path}: no such file")
        _on_s3("upload to", uri, lambda s3, bucket, key: s3.upload_file(str(local_path), bucket, key))
    else:
        with atomic_path(uri) as tmp:
            _copy(local_path, tmp)
    return uri


def _copy(source: str | os.PathLike, tmp: str) -> None:
    """Copy into atomic_path's temp file: a failure to read names the source; one to write goes to atomic_path."""
    try:
        shutil.copyfile(source, tmp)
    except OSError as exc:
        if exc.filename is None or os.path.abspath(exc.filename) == os.path.abspath(tmp):
            raise
        raise BakeoffError(f"cannot read {source}: {exc.strerror or exc}") from exc


def upload_tree(local_dir: str | os.PathLike, uri: str | os.PathLike) -> str:
    """Copy every file under a local folder to a local folder or S3 prefix."""
    for item in list_files(local_dir):
        upload(item.uri, join(uri, item.relpath))
    return str(uri)


def download_tree(uri: str | os.PathLike, local_dir: str | os.PathLike) -> str:
    """Copy every file under a folder or S3 prefix into a local folder."""
    for item in list_files(uri):
        download(item.uri, Path(local_dir, *item.relpath.split("/")))
    return str(local_dir)
