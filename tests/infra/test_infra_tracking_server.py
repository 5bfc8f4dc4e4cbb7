"""The MLflow Deployment's own command, run in the built image against real PostgreSQL and S3 servers.

Slow (`make test-slow`). Setup on the host (root), see docs/infra.md:
    apt-get install -y podman buildah runc debootstrap postgresql
What a cluster would provide is replaced by processes on 127.0.0.1: PostgreSQL 15 (Debian's binaries,
started here as the `postgres` user, with the manifest's init SQL) for the StatefulSet, moto for S3.
The container gets exactly the rendered Deployment's command, args and environment (ConfigMap values,
secret values we choose), a read-only root filesystem with tmpfs where the manifest mounts emptyDirs,
and only the host, port and endpoint settings a cluster would differ in are overridden.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest
from infra_helpers import IMAGE, find, podman_env

from support import free_port

ADMIN_PASSWORD = "admin" + uuid.uuid4().hex


def _container_env(objects, overrides: dict, secrets: dict) -> dict:
    """The Deployment container's environment as the kubelet builds it (envFrom, then env)."""
    [deploy] = find(objects, "Deployment", "mlflow")
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    config_maps = {cm["metadata"]["name"]: cm["data"] for cm in find(objects, "ConfigMap")}
    env: dict[str, str] = {}
    for src in container["envFrom"]:
        if "configMapRef" in src:
            env.update(config_maps[src["configMapRef"]["name"]])
        else:
            env.update(secrets[src["secretRef"]["name"]])
    for item in container["env"]:
        ref = item["valueFrom"]["secretKeyRef"]
        env[item["name"]] = secrets[ref["name"]][ref["key"]]
    env.update(overrides)
    return env


def _wait_healthy(url: str, name: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=3) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        state = subprocess.run(
            ["podman", "inspect", "--format", "{{.State.Running}}", name],
            env=podman_env(),
            capture_output=True,
            text=True,
        ).stdout.strip()
        if state != "true":
            break
        time.sleep(1)
    logs = subprocess.run(["podman", "logs", name], env=podman_env(), capture_output=True, text=True)
    pytest.fail(f"MLflow server in the image did not become healthy:\n{logs.stdout[-3000:]}\n{logs.stderr[-3000:]}")


def _admin_call(url: str, method: str, path: str, body: dict) -> dict:
    """What `curl -u admin:PW -X METHOD URL/PATH -H 'Content-Type: application/json' -d BODY` does."""
    import base64
    import json

    req = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode(),
        },
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200, (path, resp.status)
        return json.loads(resp.read() or b"{}")


@pytest.mark.slow
def test_tracking_server_manifest_runs_in_the_image_with_postgres_s3_and_auth(
    built_image, rendered, postgres, s3_server, monkeypatch, tmp_path
):
    import boto3

    import mlflow

    objects = rendered["dev"]
    [deploy] = find(objects, "Deployment", "mlflow")
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    port = free_port()
    key_id, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    [cfg] = find(objects, "ConfigMap", "mlflow-config")
    env = _container_env(
        objects,
        overrides={
            # what differs between the cluster and this host: addresses, bucket, worker count
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(postgres["port"]),
            "MLFLOW_S3_ENDPOINT_URL": s3_server,
            "MLFLOW_ARTIFACTS_DESTINATION": "s3://bakeoff-test/mlflow",
            "MLFLOW_HOST": "127.0.0.1",
            "MLFLOW_PORT": str(port),
            "MLFLOW_WORKERS": "1",
            "MLFLOW_SERVER_ALLOWED_HOSTS": f"{cfg['data']['MLFLOW_SERVER_ALLOWED_HOSTS']},127.0.0.1:{port}",
        },
        secrets={
            "mlflow-postgres": {"POSTGRES_USER": "mlflow", "POSTGRES_PASSWORD": postgres["password"]},
            "mlflow-s3": {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret},
            "mlflow-auth": {
                "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
                "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
            },
        },
    )
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    mounts = [m["mountPath"] for m in container["volumeMounts"]]  # emptyDirs -> tmpfs
    name = f"bakeoff-mlflow-{uuid.uuid4().hex[:8]}"
    run = subprocess.run(
        [
            "podman",
            "run",
            "-d",
            "--name",
            name,
            "--network=host",
            "--read-only",
            "--env-file",
            str(env_file),
            *[f"--tmpfs={m}:rw,mode=1777" for m in mounts],
            IMAGE,
            *container["command"],
            *container["args"],
        ],
        env=podman_env(),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    url = f"http://127.0.0.1:{port}"
    try:
        start = time.monotonic()
        _wait_healthy(url, name)
        print(
            f"\nMLflow server (PostgreSQL, S3, basic auth) healthy in the image after {time.monotonic() - start:.1f} s"
        )

        # Basic auth is on: no credentials, no API.
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
        assert denied.value.code == 401

        # docs/infra.md step 5: the admin creates the pipeline's user and makes it an admin (REST, JSON).
        pipeline_password = uuid.uuid4().hex
        _admin_call(
            url, "POST", "/api/2.0/mlflow/users/create", {"username": "bakeoff-pipeline", "password": pipeline_password}
        )
        _admin_call(
            url, "PATCH", "/api/2.0/mlflow/users/update-admin", {"username": "bakeoff-pipeline", "is_admin": True}
        )

        # The pipeline's client: MLflow credentials (Secret bakeoff-mlflow), NO S3 credentials: the
        # artifacts are proxied by the server.
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bakeoff-pipeline")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", pipeline_password)
        mlflow.set_tracking_uri(url)
        exp_id = mlflow.create_experiment(f"infra-{uuid.uuid4().hex[:6]}")
        with mlflow.start_run(experiment_id=exp_id) as active:
            mlflow.log_param("backbone", "mobilenet_v2")
            mlflow.log_metric("accuracy", 0.875)
            mlflow.log_text("leaderboard", "reports/leaderboard.md")
        run_id = active.info.run_id
        got = mlflow.get_run(run_id)
        assert got.data.metrics["accuracy"] == 0.875 and got.data.params["backbone"] == "mobilenet_v2"
        assert mlflow.artifacts.load_text(f"runs:/{run_id}/reports/leaderboard.md") == "leaderboard"
    finally:
        subprocess.run(["podman", "rm", "-f", name], env=podman_env(), capture_output=True)
        mlflow.set_tracking_uri(None)

    # The run lives in PostgreSQL, the artifact in S3, the admin user in the auth database.
    def psql(db: str, sql: str) -> str:
        return subprocess.run(
            ["psql", f"{postgres['url']}/{db}", "-tAc", sql], check=True, capture_output=True, text=True
        ).stdout.strip()

    assert psql("mlflow", f"SELECT count(*) FROM runs WHERE run_uuid = '{run_id}'") == "1"
    assert psql("mlflow_auth", "SELECT username FROM users WHERE is_admin ORDER BY username").split() == [
        "admin",
        "bakeoff-pipeline",
    ]
    assert psql("mlflow", f"SELECT user_id FROM runs WHERE run_uuid = '{run_id}'") == "bakeoff-pipeline"
    s3 = boto3.client(
        "s3", endpoint_url=s3_server, aws_access_key_id=key_id, aws_secret_access_key=secret, region_name="us-east-1"
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="bakeoff-test", Prefix="mlflow/")["Contents"]]
    assert any(k.endswith(f"{run_id}/artifacts/reports/leaderboard.md") for k in keys), keys
