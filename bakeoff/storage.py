"""Local paths and s3:// URIs behind one small API, so every step reads and writes either.

S3 goes through boto3, which takes its endpoint and credentials from the standard AWS
environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). Writes are atomic: a local file is
written under a temporary name and renamed; an S3 object is a single PUT, so readers never
see half a file.
"""

from __future__ import annotations

import contextlib
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
                    yield StoredFile(f"{S3_SCHEME}{bucket}/{key}", key[len(prefix) :], int(obj["Size"]))
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
        bucket, key = split_s3(uri)
        try:
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise BakeoffError(f"cannot read {uri}: {exc}") from exc
    try:
        return Path(uri).read_bytes()
    except OSError as exc:
        raise BakeoffError(f"cannot read {uri}: {exc.strerror}") from exc


def write_bytes(uri: str | os.PathLike, data: bytes) -> None:
    """Write a whole file atomically (temp name + rename locally, one PUT on S3)."""
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        return
    with atomic_path(uri) as tmp:
        Path(tmp).write_bytes(data)


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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary local path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def download(uri: str | os.PathLike, local_path: str | os.PathLike) -> str:
    """Copy a local or S3 file to ``local_path`` atomically; returns the local path."""
    uri = str(uri)
    with atomic_path(local_path) as tmp:
        if is_s3(uri):
            bucket, key = split_s3(uri)
            try:
                s3_client().download_file(bucket, key, tmp)
            except Exception as exc:
                raise BakeoffError(f"cannot download {uri}: {exc}") from exc
        else:
            try:
                shutil.copyfile(uri, tmp)
            except OSError as exc:
                raise BakeoffError(f"cannot copy {uri}: {exc.strerror}") from exc
    return str(local_path)


def upload(local_path: str | os.PathLike, uri: str | os.PathLike) -> str:
    """Copy a local file to a local path or S3 URI atomically; returns the destination."""
    uri = str(uri)
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3_client().upload_file(str(local_path), bucket, key)
    else:
        with atomic_path(uri) as tmp:
            shutil.copyfile(local_path, tmp)
    return uri


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
