"""Where runs and models go: the MLflow tracking/registry URI, the client on it, experiments, the UI command.

Configuration: ``MLFLOW_TRACKING_URI`` if set (a team server, artifacts proxied to S3), else an embedded SQLite
database + artifact folder under ``./.bakeoff/mlflow``, so a laptop run needs no server. The chosen store is
remembered per process (KFP components call several functions in a row; each must hit the same store).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bakeoff import env
from bakeoff.errors import BakeoffError

EMBEDDED_DIR = Path(".bakeoff") / "mlflow"
SQLITE_PREFIX = "sqlite:///"


@dataclass
class _Store:
    """The configured store: its URI and, for SQLite, the artifact folder beside the database."""

    uri: str | None = None
    artifacts: str | None = None


_store = _Store()


def configure(tracking_uri: str | None = None, *, read_only: bool = False) -> str:
    """Point MLflow at ``tracking_uri``, ``$MLFLOW_TRACKING_URI`` or the embedded SQLite default; return the URI.

    The embedded default keeps everything under ``./.bakeoff/mlflow`` (``mlflow.db`` + ``artifacts/``) so
    a laptop run needs no server, and ``ui_command`` prints the one line that opens it. ``read_only``
    commands (compare, ui, predict, promote) refuse a local store that does not exist instead of creating
    an empty one (MLflow creates a SQLite file or ``mlruns`` folder on first contact).
    """
    import mlflow

    uri = tracking_uri or env.tracking_uri()
    if read_only:
        _check_exists(uri)
    artifacts = None
    if not uri:
        base = (Path.cwd() / EMBEDDED_DIR).resolve()
        base.mkdir(parents=True, exist_ok=True)
        uri = f"{SQLITE_PREFIX}{base / 'mlflow.db'}"
        artifacts = str(base / "artifacts")
    elif uri.startswith(SQLITE_PREFIX):
        db = Path(uri[len(SQLITE_PREFIX) :])
        artifacts = str(db.resolve().parent / "artifacts")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    _store.uri, _store.artifacts = uri, artifacts
    return uri


def local_store_path(uri: str | None) -> Path | None:
    """The file or folder a local store lives in (embedded default, ``sqlite:///``, ``file:`` or a bare path);
    None for a server or database URI, which exists or not on its own side."""
    if not uri:
        return Path.cwd() / EMBEDDED_DIR / "mlflow.db"
    if uri.startswith(SQLITE_PREFIX):
        return Path(uri[len(SQLITE_PREFIX) :])
    if uri.startswith("file:"):
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        return Path(url2pathname(urlparse(uri).path))
    return None if "://" in uri else Path(uri)


def _check_exists(uri: str | None) -> None:
    path = local_store_path(uri)
    if path is not None and not path.exists():
        where = uri or f"{SQLITE_PREFIX}{path} (the embedded default)"
        raise BakeoffError(
            f"no MLflow store at {where}; run a pipeline first (bakeoff run) or point --tracking-uri / "
            "MLFLOW_TRACKING_URI at an existing one"
        )


def ensure_configured() -> str:
    """The configured URI, configuring first when nothing is yet (or ``$MLFLOW_TRACKING_URI`` changed since)."""
    import mlflow

    wanted = env.tracking_uri()
    if _store.uri is None or (wanted and wanted != _store.uri):
        return configure()
    mlflow.set_tracking_uri(_store.uri)
    return _store.uri


def reset() -> None:
    """Forget the configured store; the next call configures again (tests switch stores between cases)."""
    _store.uri, _store.artifacts = None, None


def ui_command(tracking_uri: str) -> str:
    """The exact command that opens the MLflow UI on these runs (for a server: its URL is the UI)."""
    if tracking_uri.startswith(("http://", "https://")):
        from bakeoff.redaction import redact

        return f"open {redact(tracking_uri)} in a browser (the tracking server serves the MLflow UI)"
    artifacts = _store.artifacts if tracking_uri == _store.uri else None
    if artifacts is None and tracking_uri.startswith(SQLITE_PREFIX):
        artifacts = str(Path(tracking_uri[len(SQLITE_PREFIX) :]).parent / "artifacts")
    cmd = f"mlflow ui --backend-store-uri {tracking_uri}"
    if artifacts:
        cmd += f" --default-artifact-root {artifacts}"
    return cmd + " --host 127.0.0.1 --port 5000"


def client():
    """An ``MlflowClient`` on the configured tracking URI (and the same registry URI)."""
    from mlflow.tracking import MlflowClient

    uri = ensure_configured()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(name: str) -> str:
    """Experiment id for ``name``, creating it (embedded: with an absolute artifact folder) if needed."""
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise BakeoffError(f"experiment {name!r} is deleted; restore it in the MLflow UI or pick another name")
        return exp.experiment_id
    location = Path(_store.artifacts).as_uri() if _store.artifacts else None
    try:
        return c.create_experiment(name, artifact_location=location)
    except Exception:  # a concurrent pipeline created it first
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id
