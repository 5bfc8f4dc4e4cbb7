"""A candidate's model in MLflow: logged as the class-names pyfunc, read back and checked, registered as a new version.

One logged model serves both readers: ``mlflow.pyfunc.load_model`` returns class names and probabilities;
``bakeoff.predict.load_keras_model`` returns the Keras model from the same artifacts. Every candidate becomes a
version of ONE registered model, so the promotion gate (``bakeoff.registry``) only ever moves aliases.

Why the read-back: an artifact store that fills up (or a proxy that drops a connection) can leave a model.keras cut
short; served later, it fails to load or, worse, loads wrong. So the upload is trusted only once the store's copy
of model.keras and model.json has the local copies' sizes and sha256, and only then is a version registered. A
failed or mismatched upload deletes what it stored of that model (the run's own logged models, never another's),
marks the logged model FAILED and raises one line; the caller ends the run FAILED.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from bakeoff import contract
from bakeoff.errors import BakeoffError
from bakeoff.tracking.store import client, ensure_configured

ARTIFACTS_DIR = "artifacts"  # where MLflow puts a pyfunc's ``artifacts={...}`` files inside the logged model


def log_and_register(
    run_id: str, keras_path: str, json_path: str, classes: list[str], image_size: int, model_name: str | None
) -> tuple[str | None, str]:
    """Log model.keras + model.json as a pyfunc on ``run_id``, check the store's copy, and register it as a version of
    ``model_name`` unless that is None (candidates: the gate registers); return (version or None, model URI)."""
    model_id, model_uri = log_verified_model(run_id, keras_path, json_path, classes, image_size)
    if model_name is None:
        return None, model_uri
    return register_logged_model(model_uri, model_name), model_uri


def log_verified_model(
    run_id: str, keras_path: str, json_path: str, classes: list[str], image_size: int
) -> tuple[str, str]:
    """Log the pyfunc on ``run_id`` and verify the stored files; (model id, model URI), or a one-line error."""
    import mlflow

    ensure_configured()
    try:
        with mlflow.start_run(run_id=run_id):
            info = _log_or_discard(run_id, keras_path, json_path, classes, image_size)
    except BakeoffError:
        raise
    except Exception as exc:  # ending the run failed too (e.g. its database is on the same full disk)
        if isinstance(exc.__context__, BakeoffError):
            raise exc.__context__ from exc
        raise _upload_error(run_id, exc) from exc
    local = {f"{ARTIFACTS_DIR}/{Path(p).name}": p for p in (keras_path, json_path)}
    try:
        verify_logged_model(info.model_id, local)
    except BakeoffError:
        _discard_unfinished(run_id, also=info.model_id)
        raise
    return info.model_id, info.model_uri


def _log_or_discard(run_id: str, keras_path: str, json_path: str, classes: list[str], image_size: int):
    """``mlflow.pyfunc.log_model`` (no registration); if it fails, the run's partial models are removed first."""
    import mlflow
    from bakeoff.pyfunc_model import KERAS_ARTIFACT, MODEL_JSON_ARTIFACT, KerasImageClassifier, pip_requirements

    try:
        return mlflow.pyfunc.log_model(
            name=contract.MODEL_ARTIFACT,
            python_model=KerasImageClassifier(),
            artifacts={KERAS_ARTIFACT: keras_path, MODEL_JSON_ARTIFACT: json_path},
            signature=_signature(classes, image_size),
            input_example=_input_example(image_size),
            pip_requirements=pip_requirements(),
        )
    except Exception as exc:
        _discard_unfinished(run_id)
        raise _upload_error(run_id, exc) from exc


def _signature(classes: list[str], image_size: int):
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, image_size, image_size, 3))]),
        outputs=Schema(
            [ColSpec("string", "label"), ColSpec("double", "probability")]
            + [ColSpec("double", contract.prob_column(c)) for c in classes]
        ),
    )


def _input_example(image_size: int):
    """A real-looking input: a mid-grey RGB image in the model's 0..255 pixel range."""
    import numpy as np

    return np.full((1, image_size, image_size, 3), 127.0, dtype=np.float32)


def register_logged_model(model_uri: str, model_name: str) -> str:
    """Register a logged (and verified) model as a new version of ``model_name``; the version number."""
    import mlflow

    mlflow.set_registry_uri(ensure_configured())  # the store the tracking client uses
    version = mlflow.register_model(model_uri, model_name)
    if version is None or version.version is None:
        raise BakeoffError(f"MLflow did not register {model_name}; does the tracking server have a model registry?")
    return str(version.version)


def verify_logged_model(model_id: str, local_files: dict[str, str | os.PathLike]) -> None:
    """Check the artifact store's copy of each ``relpath -> local file`` against the local file: size from the
    store's listing, then sha256 of a read-back. One line naming every file that differs."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    location = client().get_logged_model(model_id).artifact_location
    repo = get_artifact_repository(location)
    stored = _stored_sizes(repo)
    problems = []
    for relpath, local in local_files.items():
        want = os.path.getsize(local)
        got = stored.get(relpath)
        if got != want:
            problems.append(f"{relpath}: {got or 0} of {want} bytes")
    if not problems:
        with tempfile.TemporaryDirectory(prefix="bakeoff-verify-") as tmp:
            for relpath, local in local_files.items():
                copy = repo.download_artifacts(relpath, dst_path=tmp)
                if _sha256(copy) != _sha256(local):
                    problems.append(f"{relpath}: sha256 of the stored copy differs from the local copy")
    if problems:
        raise BakeoffError(
            f"logged model {model_id} does not read back as uploaded ({'; '.join(problems)}); "
            "check the artifact store (full disk, proxy) and re-run; nothing was registered"
        )


def _stored_sizes(repo, path: str | None = None) -> dict[str, int]:
    """relpath -> size of every file the artifact repository holds under ``path`` (recursively)."""
    sizes: dict[str, int] = {}
    for item in repo.list_artifacts(path):
        if item.is_dir:
            sizes.update(_stored_sizes(repo, item.path))
        else:
            sizes[item.path] = int(item.file_size or 0)
    return sizes


def _sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _discard_unfinished(run_id: str, also: str | None = None) -> None:
    """Delete the stored files of this run's logged models that are not READY (plus ``also``) and mark them FAILED.

    Only models whose source run is ``run_id``: the caller created that run, so these are its own uploads.
    Best effort: the store may be unreachable or full; what cannot be removed is left marked FAILED if possible.
    """
    from mlflow.entities import LoggedModelStatus
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    c = client()
    try:
        experiment_id = c.get_run(run_id).info.experiment_id
        models = c.search_logged_models(experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'")
    except Exception:
        return
    for model in models:
        if model.status == LoggedModelStatus.READY and model.model_id != also:
            continue
        try:
            get_artifact_repository(model.artifact_location).delete_artifacts()
        except Exception:
            pass  # e.g. an unreachable store: the model stays FAILED, so it is never registered
        try:
            c.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        except Exception:
            pass


def _upload_error(run_id: str, exc: BaseException) -> BakeoffError:
    """One line: the cause (an OSError's path and errno when there is one, else MLflow's message), what to check."""
    from bakeoff.redaction import redact

    cause = _root_os_error(exc)
    if cause is not None:
        where = f"{cause.filename}: " if cause.filename else ""
        reason = f"{where}{cause.strerror} (errno {cause.errno})"
    else:
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
    return BakeoffError(
        f"cannot log the model of run {run_id} to MLflow: {redact(reason)}; check free space and permissions of the "
        "artifact store (and the tracking server's log); the run ends FAILED and nothing was registered"
    )


def _root_os_error(exc: BaseException) -> OSError | None:
    """The OSError with an errno behind ``exc`` (following causes and contexts), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None
