"""The pipeline's MLflow user needs no admin rights (issue 8 item 8): the least privilege of docs/tracking.md, tested.

A real basic-auth server started by mlflow/server.sh (the team server's own command) with `default_permission =
NO_PERMISSIONS`, so a user can do exactly what it was granted. The admin creates the experiment, the registered model
and a user, grants what docs/tracking.md lists, and the tracking + gate path (open the pipeline run, log a candidate,
register and gate it under the promotion lock) runs as that user. With one grant less it fails in one line.

Measured here (2 shared cores, load average about 15): server start 30-46 s, the registry-and-lock test 31-41 s, the
whole path with a real logged model 15-30 s, the two one-grant-less cases 3 s, with the server's password-check
cache on; without it every request paid a PBKDF2 hash and the same tests took 2-7 minutes.
"""

from __future__ import annotations

import os
import uuid

import pytest

from bakeoff import registry, tracking
from bakeoff.cli import main

from support import server_sh

ADMIN, ADMIN_PASSWORD = "admin", "admin-pass-4471"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory) -> str:
    """mlflow/server.sh with basic auth, nothing allowed by default, artifacts proxied to a folder of the server's.

    Its own ini (server.sh takes MLFLOW_AUTH_CONFIG_PATH as is) adds MLflow's password-check cache: without it every
    request pays a PBKDF2 hash (about 1 s each on a loaded 2-core machine). Permissions themselves are not cached.
    """
    work = tmp_path_factory.mktemp("mlflow-auth")
    ini = work / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{work / 'auth.db'}\nadmin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 300\n"
    )
    settings = {
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{work / 'mlflow.db'}",
        "MLFLOW_ARTIFACTS_DESTINATION": str(work / "artifacts"),
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    with server_sh(work, settings) as url:
        yield url


def _as(monkeypatch, url: str, user: str, password: str) -> None:
    for key in [k for k in os.environ if k.startswith("AWS_") or k == "MLFLOW_S3_ENDPOINT_URL"]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    tracking.reset()
    tracking.configure(url)


def _pipeline_user(monkeypatch, url: str, model_name: str, grants: dict[str, str]) -> tuple[str, str, str]:
    """As the admin: the experiment, the registered model and a user with exactly ``grants``
    ({"experiment": permission, "registered_model": permission}); returns (experiment, user, password)."""
    from mlflow.server import get_app_client

    _as(monkeypatch, url, ADMIN, ADMIN_PASSWORD)
    experiment = f"lp-{uuid.uuid4().hex[:8]}"
    experiment_id = tracking.client().create_experiment(experiment)
    tracking.client().create_registered_model(model_name)
    user, password = f"pipeline-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    auth = get_app_client("basic-auth", tracking_uri=url)
    auth.create_user(user, password)
    ids = {"experiment": experiment_id, "registered_model": model_name}
    for resource, permission in grants.items():
        auth.grant_user_permission(user, resource, ids[resource], permission)
    return experiment, user, password


LEAST = {"experiment": "EDIT", "registered_model": "EDIT"}  # = docs/tracking.md, "Least privilege"


def _track_and_gate(dataset, candidates, model_name, experiment):
    parent = tracking.start_pipeline_run(experiment, str(dataset), run_name="least-privilege")
    child = tracking.log_candidate(parent, model_name=model_name, **candidates(127.5).dirs)
    decision = registry.select_and_register(parent, [child], model_name=model_name, dataset_dir=str(dataset))
    return parent, decision


def test_the_documented_grants_cover_the_registry_and_the_lock(auth_server, monkeypatch, dataset, model_name):
    """Fast: every registry and lock call the gate makes, as the user with exactly the documented grants."""
    from mlflow.exceptions import MlflowException

    experiment, user, password = _pipeline_user(monkeypatch, auth_server, model_name, LEAST)
    _as(monkeypatch, auth_server, user, password)
    try:
        parent = tracking.start_pipeline_run(experiment, str(dataset), run_name="least-privilege")  # + artifacts
        c = tracking.client()
        version = c.create_model_version(model_name, f"runs:/{parent}/model", run_id=parent).version
        # a lapsed lock the same user left behind (a dead pipeline): broken, taken, renewed, released
        c.create_registered_model(
            f"{model_name}.lock", tags={"bakeoff.lock_owner": "dead", "bakeoff.lock_expires": "1"}
        )
        with registry.registry_lock(model_name, ttl_s=30, notify=lambda _m: None) as lease:
            lease.renew()
            lease.check()
            c.set_registered_model_alias(model_name, "champion", version)
            c.set_model_version_tag(model_name, version, "gate", "promoted")
        assert lease.lost is None and not c.search_registered_models(f"name = '{model_name}.lock'")
        assert c.get_model_version_by_alias(model_name, "champion").tags["gate"] == "promoted"
        tracking.client().set_terminated(parent)
    finally:
        tracking.reset()
    # one grant less: READ on the model lets the user see it, not add a version or move an alias
    other = f"{model_name}-r"
    experiment, user, password = _pipeline_user(
        monkeypatch, auth_server, other, {"experiment": "EDIT", "registered_model": "READ"}
    )
    _as(monkeypatch, auth_server, user, password)
    try:
        parent = tracking.start_pipeline_run(experiment, str(dataset), run_name="denied")
        with pytest.raises(MlflowException, match="403"):
            tracking.client().create_model_version(other, f"runs:/{parent}/model", run_id=parent)
    finally:
        tracking.reset()


def test_the_documented_grants_are_enough_for_tracking_and_the_gate(
    auth_server, monkeypatch, dataset, candidates, model_name
):
    experiment, user, password = _pipeline_user(monkeypatch, auth_server, model_name, LEAST)
    _as(monkeypatch, auth_server, user, password)
    try:
        parent, decision = _track_and_gate(dataset, candidates, model_name, experiment)
        assert decision["promoted"] and decision["reason"] == "no champion yet"
        c = tracking.client()
        assert c.get_model_version_by_alias(model_name, "champion").version == decision["challenger_version"]
        assert not c.search_registered_models(f"name = '{model_name}.lock'")  # created, held, deleted by the user
        # the gate by hand as the same user: the champion again, nothing to change
        assert registry.promote(parent)["reason"].endswith("nothing changed")
    finally:
        tracking.reset()


@pytest.mark.parametrize(
    "grants, step",
    [
        ({"experiment": "READ", "registered_model": "EDIT"}, "open"),  # cannot create the pipeline run
        ({"experiment": "EDIT", "registered_model": "READ"}, "gate"),  # cannot register or move an alias
    ],
    ids=["experiment-READ", "model-READ"],
)
def test_one_grant_less_fails_in_one_line(
    auth_server, monkeypatch, dataset, candidates, model_name, capsys, grants, step
):
    experiment, user, password = _pipeline_user(monkeypatch, auth_server, model_name, grants)
    _as(monkeypatch, auth_server, user, password)
    try:
        if step == "open":
            argv = ["compare", "--experiment", experiment]  # reading is allowed ...
            assert main(argv) == 0
            from mlflow.exceptions import MlflowException

            with pytest.raises(MlflowException, match="Permission denied|PERMISSION_DENIED"):  # ... writing is not
                tracking.start_pipeline_run(experiment, str(dataset), run_name="denied")
            return
        _as(monkeypatch, auth_server, ADMIN, ADMIN_PASSWORD)  # the runs, logged by someone allowed to
        parent = tracking.start_pipeline_run(experiment, str(dataset), run_name="denied")
        tracking.log_candidate(parent, model_name=model_name, **candidates(127.5).dirs)
        tracking.client().set_terminated(parent)
        _as(monkeypatch, auth_server, user, password)
        capsys.readouterr()
        assert main(["promote", parent, "--dataset", str(dataset), "--model-name", model_name]) == 1
        err = capsys.readouterr().err.strip()  # MLflow itself prints "Registered model ... already exists" first
        [line] = [line for line in err.splitlines() if line.startswith("error")]
        assert line == err.splitlines()[-1] and line.startswith("error: MLflow: ") and "403" in line, err
        assert "'Least privilege'" in line and password not in err
    finally:
        tracking.reset()
