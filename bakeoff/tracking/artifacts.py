"""Step output files -> MLflow run artifacts, from local folders or s3:// prefixes alike.

MLflow's ``log_artifact`` takes a local path, so a file in S3 is downloaded to a temporary folder first.
"""

from __future__ import annotations

from pathlib import Path

from bakeoff import storage


def local_copy(folder: str, name: str, tmp: str) -> str | None:
    """A local path for folder/name (downloaded into ``tmp`` when the folder is on S3); None when absent."""
    uri = storage.join(folder, name)
    if not storage.exists(uri):
        return None
    if storage.is_s3(uri):
        return storage.download(uri, Path(tmp, name))
    return uri


def log_files(c, run_id: str, folder: str, names: tuple[str, ...], artifact_path: str | None, tmp: str) -> None:
    """Log every ``names`` file present in ``folder`` under ``artifact_path``; absent ones are skipped."""
    for name in names:
        path = local_copy(folder, name, tmp)
        if path:
            c.log_artifact(run_id, path, artifact_path)
