"""Fixtures for the infra tests: rendered kustomize overlays and the compiled pipeline they must match.

Everything here runs offline: `kubectl kustomize` (Debian's kubernetes-client) renders the overlays
without a cluster, and the pipeline is compiled with the real KFP compiler.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest
from infra_helpers import IMAGE, K8S, OVERLAYS, ROOT, compile_ir, find, kustomize, pg_bin, podman_env

from support import free_port


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """{overlay name: rendered objects} for every overlay under infra/k8s/overlays/."""
    assert OVERLAYS, "no overlays under infra/k8s/overlays"
    return {name: kustomize(K8S / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def compiled(tmp_path_factory) -> tuple[dict, dict]:
    """The pipeline compiled with its default settings."""
    return compile_ir(tmp_path_factory.mktemp("compiled"))


@pytest.fixture(scope="session")
def built_image() -> dict:
    """`make image` (idempotent: layer cache), timed; the image's size from podman. For slow tests only."""
    missing = [tool for tool in ("podman", "buildah", "runc", "make") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: apt-get install -y podman buildah runc debootstrap")
    start = time.monotonic()
    out = subprocess.run(
        ["make", "image", f"IMAGE={IMAGE}"], cwd=ROOT, env=podman_env(), capture_output=True, text=True
    )
    seconds = time.monotonic() - start
    assert out.returncode == 0, f"make image failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    size = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", IMAGE],
        env=podman_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"\nmake image: {seconds:.0f} s, {IMAGE} {int(size) / 1e9:.2f} GB")
    return {"seconds": seconds, "bytes": int(size)}


PG_PASSWORD = "pg" + uuid.uuid4().hex


@pytest.fixture
def postgres(rendered):
    """A real PostgreSQL on 127.0.0.1 with the `mlflow` database and the manifest's init SQL applied (slow tests:
    apt-get install -y postgresql). Yields port, url (without database) and the password."""
    port = free_port()
    root = tempfile.mkdtemp(prefix="bakeoff-pg-", dir="/tmp")
    shutil.chown(root, "postgres", "postgres")
    pwfile = os.path.join(root, "pw")
    with open(pwfile, "w") as fh:
        fh.write(PG_PASSWORD)
    shutil.chown(pwfile, "postgres", "postgres")
    data = os.path.join(root, "data")
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [
            *as_pg,
            pg_bin("initdb"),
            "-D",
            data,
            "-U",
            "mlflow",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *as_pg,
            pg_bin("pg_ctl"),
            "-D",
            data,
            "-w",
            "-l",
            os.path.join(root, "log"),
            "-o",
            f"-p {port} -c listen_addresses=127.0.0.1 -k {root}",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    url = f"postgresql://mlflow:{PG_PASSWORD}@127.0.0.1:{port}"
    try:
        [cfg] = find(rendered["dev"], "ConfigMap", "mlflow-config")
        subprocess.run(
            ["psql", f"{url}/postgres", "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {cfg['data']['POSTGRES_DB']}"],
            check=True,
            capture_output=True,
        )
        # what the postgres image's entrypoint does with /docker-entrypoint-initdb.d/*.sql on first start
        [init] = find(rendered["dev"], "ConfigMap", "mlflow-postgres-init")
        for _name, sql in sorted(init["data"].items()):
            subprocess.run(
                ["psql", f"{url}/{cfg['data']['POSTGRES_DB']}", "-v", "ON_ERROR_STOP=1", "-c", sql],
                check=True,
                capture_output=True,
            )
        yield {"port": port, "url": url, "password": PG_PASSWORD}
    finally:
        subprocess.run([*as_pg, pg_bin("pg_ctl"), "-D", data, "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
