"""kfp.local's task cache, made to check what it serves: a cached output whose files changed is a miss, not a hit.

kfp.local 2.17 keeps one JSON entry per cached task in ``<pipeline_root>/.kfp_cache/<key>.json`` naming the output
artifacts' local paths. It treats an unreadable entry or a deleted artifact path as a miss, but serves an entry whose
files are truncated, emptied or partly deleted (a crash, a full disk, a careless cleanup): every later run then
fails downstream of the cached step (a ``BadZipFile`` on ``features.npz``) until someone finds and deletes the entry.

``VerifiedLocalCache`` records the size and sha256 of every file under each local output artifact beside the entry
(``<key>.files.json``, written before the entry) and checks them before a hit: a missing record or any difference
is logged as a warning naming the file, the task runs again and its fresh outputs replace the entry.
``init(pipeline_root)`` is how bakeoff's local runner starts kfp.local with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from bakeoff import storage

log = logging.getLogger(__name__)
RECORD_SUFFIX = ".files.json"


def init(pipeline_root: str | os.PathLike) -> None:
    """``kfp.local.init`` for bakeoff (subprocess runner without a venv per task, caching on, errors raised) with the
    verifying cache in place of kfp.local's own."""
    from kfp import local

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        enable_caching=True,
        raise_on_error=True,
    )
    install()


def install() -> str:
    """Make kfp.local use ``VerifiedLocalCache`` under its configured cache root; returns that root.

    kfp.local has no public hook for its cache class, so this replaces its module-level singleton (kfp is pinned;
    a test fails if these internals move).
    """
    from kfp.local import cache, config

    settings = config.LocalExecutionConfig.instance
    if settings is None or not getattr(settings, "enable_caching", False):
        raise RuntimeError("kfp.local is not initialised with enable_caching=True")
    root = getattr(settings, "cache_root", None) or os.path.join(settings.pipeline_root, ".kfp_cache")
    with cache._cache_singleton_lock:
        cache._cache_singleton = _verified_cache_class()(root)
        cache._cache_singleton_root = root
    return root


def _verified_cache_class():
    """The subclass is made on first use: kfp is imported only when a pipeline runs."""
    from kfp.local.cache import LocalCache

    class VerifiedLocalCache(LocalCache):
        """kfp.local's cache plus a record of every output file, checked before a cached output is served."""

        def get(self, key: str) -> dict[str, Any] | None:
            outputs = super().get(key)
            if outputs is None:
                return None
            problem = _check(self._record_path(key), _local_files(outputs))
            if problem:
                log.warning("kfp.local cache entry %s is not served: %s; running the task again", key[:12], problem)
                return None
            return outputs

        def put(self, key: str, outputs: dict[str, Any]) -> None:
            record = {path: _fingerprint(path) for path in _local_files(outputs)}
            storage.write_json(self._record_path(key), record)  # before the entry: an entry never lacks its record
            super().put(key, outputs)

        def _record_path(self, key: str) -> str:
            return os.path.join(self.cache_root, key + RECORD_SUFFIX)

    return VerifiedLocalCache


def _local_files(outputs: dict[str, Any]) -> list[str]:
    """Every file under the local output artifacts (a path may be one file or a folder), sorted."""
    from kfp import dsl

    artifacts: list[Any] = []
    for value in outputs.values():
        artifacts += value if isinstance(value, list) else [value]
    files: list[str] = []
    for artifact in artifacts:
        if not isinstance(artifact, dsl.Artifact) or not artifact.uri or storage.is_s3(artifact.uri):
            continue
        if os.path.isdir(artifact.uri):
            files += [item.uri for item in storage.list_files(artifact.uri)]
        elif os.path.exists(artifact.uri):
            files.append(artifact.uri)
    return sorted(files)


def _fingerprint(path: str) -> list:
    with open(path, "rb") as handle:
        return [os.fstat(handle.fileno()).st_size, hashlib.file_digest(handle, "sha256").hexdigest()]


def _check(record_path: str, files: list[str]) -> str | None:
    """Why the outputs no longer match their record, or None when they do."""
    try:
        record = json.loads(Path(record_path).read_text())
    except FileNotFoundError:
        return f"no file record {record_path} (an entry from before bakeoff checked its cache, or a crash)"
    except (OSError, ValueError) as exc:
        return f"its file record {record_path} is unreadable ({exc})"
    missing = sorted(set(record) - set(files))
    if missing:
        return f"{missing[0]} is missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    for path, (size, digest) in record.items():
        try:
            actual = _fingerprint(path)
        except OSError as exc:
            return f"{path} is unreadable ({exc.strerror})"
        if actual[0] != size:
            return f"{path} has {actual[0]} bytes, {size} when cached"
        if actual[1] != digest:
            return f"{path} changed since it was cached (sha256 differs)"
    return None
