"""A candidate's model in MLflow: logged as the portable serving model, read back and checked, registered later.

The logged model (``bakeoff.serving.log``) has two flavors over one ``artifacts/model.keras``: a models-from-code
pyfunc (encoded image bytes in, ``label``/``probability``/``prob_<class>`` out; what ``mlflow models serve`` and
KServe run) and MLflow's ``tensorflow`` flavor (the Keras network). ``bakeoff.predict.load_keras_model`` and
``model_info`` read the same files. Every candidate becomes a version of ONE registered model, so the promotion
gate (``bakeoff.registry``) only ever moves aliases; versions logged before issue 11 (the pickled
``bakeoff.pyfunc_model`` pyfunc, pixel tensors in) stay readable.

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
REGISTERED_MODEL_DESCRIPTION = (
    "bakeoff image classifier: every version is one candidate (backbone, weights, head) of a bake-off pipeline run, "
    "registered by the promotion gate; the alias `champion` marks the version that won the gate. Input: a column "
    "`image` of encoded image bytes (base64 over REST); output: `label`, `probability`, `prob_<class>`. The source "
    "run of a version holds its metrics, evaluation plots and the gate report."
)


def log_and_register(
    run_id: str,
    keras_path: str,
    json_path: str,
    classes: list[str],
    image_size: int,
    model_name: str | None,
    name: str = contract.MODEL_ARTIFACT,
) -> tuple[str | None, str]:
    """Log model.keras + model.json as the serving model ``name`` on ``run_id``, check the store's copy, and
    register it as a version of ``model_name`` unless that is None (candidates: the gate registers); return
    (version or None, model URI)."""
    model_id, model_uri = log_verified_model(run_id, keras_path, json_path, classes, image_size, name)
    if model_name is None:
        return None, model_uri
    return register_logged_model(model_uri, model_name), model_uri


def log_model_folder(run_id: str, model_dir: str, model_name: str | None) -> tuple[str | None, str]:
    """``log_and_register`` for a model folder (local or s3://) as ``bakeoff finetune`` writes it."""
    from bakeoff import storage
    from bakeoff.tracking.artifacts import local_copy

    info = contract.ModelInfo.read(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        keras_path = local_copy(model_dir, contract.MODEL_KERAS, tmp)
        json_path = local_copy(model_dir, contract.MODEL_JSON, tmp)
        if keras_path is None:
            raise BakeoffError(f"missing {storage.join(model_dir, contract.MODEL_KERAS)}; run `bakeoff finetune` first")
        return log_and_register(run_id, keras_path, json_path, list(info.classes), info.image_size, model_name)


def log_verified_model(
    run_id: str, keras_path: str, json_path: str, classes: list[str], image_size: int, name: str
) -> tuple[str, str]:
    """Log the serving model on ``run_id`` and verify the stored files; (model id, model URI), or a one-line error."""
    import mlflow

    ensure_configured()
    try:
        with mlflow.start_run(run_id=run_id):
            info = _log_or_discard(run_id, keras_path, json_path, classes, image_size, name)
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


def _log_or_discard(run_id: str, keras_path: str, json_path: str, classes: list[str], image_size: int, name: str):
    """``bakeoff.serving.log.log_model`` (no registration); if it fails, the run's partial models are removed first."""
    from bakeoff.serving.log import log_model

    try:
        return log_model(keras_path, json_path, classes, image_size, name)
    except BakeoffError:
        _discard_unfinished(run_id)
        raise
    except Exception as exc:
        _discard_unfinished(run_id)
        raise _upload_error(run_id, exc) from exc


def register_logged_model(model_uri: str, model_name: str) -> str:
    """Register a logged (and verified) model as a new version of ``model_name``; the version number."""
    import mlflow

    mlflow.set_registry_uri(ensure_configured())  # the store the tracking client uses
    version = mlflow.register_model(model_uri, model_name)
    if version is None or version.version is None:
        raise BakeoffError(f"MLflow did not register {model_name}; does the tracking server have a model registry?")
    _describe(model_name)
    return str(version.version)


def _describe(model_name: str) -> None:
    """Give the registered model its description once (a user's own edit in the UI is kept)."""
    c = client()
    if not c.get_registered_model(model_name).description:
        c.update_registered_model(model_name, description=REGISTERED_MODEL_DESCRIPTION)


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
