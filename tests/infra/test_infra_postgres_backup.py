"""The nightly PostgreSQL backup (CronJob mlflow-postgres-backup) and the restore steps in docs/infra.md.

Fast checks read the rendered CronJob. The slow round trip runs its two containers' own scripts: the dump
script with the host's pg_dump against a real PostgreSQL on 127.0.0.1 (Debian's 15 here; the manifest uses
the server's image, 16.9, so pg_dump always matches the server), the upload script in the built image
against a moto S3 server; then it loses data and restores with the documented pg_restore command.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import uuid

import pytest
from infra_helpers import IMAGE, OVERLAYS, ROOT, find, pg_bin, pod_template, podman_env

DOCS = (ROOT / "docs" / "infra.md").read_text()


def _backup(objects: list[dict]) -> tuple[dict, dict, dict]:
    """(CronJob, dump init container, upload container) of the rendered backup."""
    [cron] = find(objects, "CronJob", "mlflow-postgres-backup")
    spec = pod_template(cron)["spec"]
    [dump] = spec["initContainers"]
    [upload] = spec["containers"]
    return cron, dump, upload


def _env(container: dict, objects: list[dict], secrets: dict) -> dict[str, str]:
    """The container's environment as the kubelet builds it from ConfigMaps and (given) Secrets."""
    config_maps = {cm["metadata"]["name"]: cm["data"] for cm in find(objects, "ConfigMap")}
    env = {}
    for item in container.get("env", []):
        ref = item.get("valueFrom", {})
        if "configMapKeyRef" in ref:
            cm = ref["configMapKeyRef"]
            if cm["key"] in config_maps[cm["name"]]:
                env[item["name"]] = config_maps[cm["name"]][cm["key"]]
            else:
                assert cm.get("optional"), f"{item['name']}: {cm['name']} has no key {cm['key']}"
        elif "secretKeyRef" in ref:
            env[item["name"]] = secrets[ref["secretKeyRef"]["name"]][ref["secretKeyRef"]["key"]]
        else:
            env[item["name"]] = item["value"]
    return env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_backup_dumps_both_databases_nightly_with_the_servers_pg_dump(rendered, overlay):
    objects = rendered[overlay]
    cron, dump, upload = _backup(objects)
    assert len(cron["spec"]["schedule"].split()) == 5 and cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert "suspend" not in cron["spec"] or cron["spec"]["suspend"] is False
    [sts] = find(objects, "StatefulSet", "mlflow-postgres")
    assert dump["image"] == sts["spec"]["template"]["spec"]["containers"][0]["image"], "pg_dump must match the server"
    [deploy] = find(objects, "Deployment", "mlflow")
    assert upload["image"] == deploy["spec"]["template"]["spec"]["containers"][0]["image"]
    script = dump["args"][0]
    assert '"$POSTGRES_DB" "$POSTGRES_AUTH_DB"' in script and "pg_dump --format=custom" in script
    env = _env(dump, objects, {"mlflow-postgres": {"POSTGRES_USER": "u", "POSTGRES_PASSWORD": "p"}})
    assert env["PGHOST"] == "mlflow-postgres" and env["POSTGRES_AUTH_DB"] == "mlflow_auth"
    target = _env(upload, objects, {})["BACKUP_URI"]
    assert target.startswith("s3://") and "CHANGE-ME" not in target, target


def test_restore_steps_are_documented():
    for needed in (
        "kubectl -n mlflow create job --from=cronjob/mlflow-postgres-backup",
        "kubectl -n mlflow scale deployment/mlflow --replicas=0",
        "pg_restore --clean --if-exists",
        "-d mlflow_auth",
    ):
        assert needed in DOCS, f"docs/infra.md lacks `{needed}`"


def _restore_flags() -> list[str]:
    """The flags of the documented `pg_restore ... -d DB` command."""
    [flags] = set(re.findall(r"pg_restore ((?:--[a-z-]+ )+)", DOCS))
    return flags.split()


@pytest.mark.slow
def test_backup_and_documented_restore_round_trip(built_image, rendered, postgres, s3_server, tmp_path):
    import boto3

    objects = rendered["dev"]
    _, dump, upload = _backup(objects)
    url = postgres["url"]

    def psql(db: str, sql: str) -> str:
        out = subprocess.run(
            ["psql", f"{url}/{db}", "-v", "ON_ERROR_STOP=1", "-tAc", sql], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    psql(
        "mlflow",
        "CREATE TABLE experiments (id int PRIMARY KEY, name text); INSERT INTO experiments VALUES (1, 'a'), (2, 'b')",
    )
    psql("mlflow_auth", "CREATE TABLE users (name text); INSERT INTO users VALUES ('admin')")

    # 1. the dump container's script, its volume at a temporary folder, the kubelet's environment
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    env = _env(
        dump, objects, {"mlflow-postgres": {"POSTGRES_USER": "mlflow", "POSTGRES_PASSWORD": postgres["password"]}}
    )
    env.update(PGHOST="127.0.0.1", PGPORT=str(postgres["port"]))  # the Service, here on the loopback
    path = f"{os.path.dirname(pg_bin('pg_dump'))}:{os.environ['PATH']}"
    script = dump["args"][0].replace("/backup", str(backup_dir))
    out = subprocess.run([*dump["command"], script], env={**env, "PATH": path}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in backup_dir.iterdir()) == ["mlflow.dump", "mlflow_auth.dump"]

    # 2. the upload container, in the image, read-only root, the dumps mounted read-only as in the pod
    prefix = f"backups-{uuid.uuid4().hex[:8]}/"  # moto keeps objects for the whole test process
    uri = f"s3://bakeoff-test/{prefix}mlflow-postgres"
    aws = {
        k: os.environ[k]
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
    }
    run = subprocess.run(
        ["podman", "run", "--rm", "--network=host", "--read-only", "--tmpfs=/tmp", "--tmpfs=/home/bakeoff"]
        + [f"--volume={backup_dir}:/backup:ro", f"--env=BACKUP_URI={uri}"]
        + [f"--env={k}={v}" for k, v in aws.items()]
        + [IMAGE, *upload["command"], *upload["args"]],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="bakeoff-test", Prefix=prefix)["Contents"]]
    assert len(keys) == 2 and {k.rsplit("/", 1)[1] for k in keys} == {"mlflow.dump", "mlflow_auth.dump"}
    assert re.fullmatch(rf"{prefix}mlflow-postgres/\d{{4}}-\d\d-\d\dT\d{{6}}Z/mlflow.dump", sorted(keys)[0]), keys

    # 3. disaster, then the documented restore from the S3 copies
    psql("mlflow", "DELETE FROM experiments WHERE id = 2; INSERT INTO experiments VALUES (3, 'stray')")
    psql("mlflow_auth", "DROP TABLE users")
    for key in keys:
        local = tmp_path / key.rsplit("/", 1)[1]
        boto3.client("s3").download_file("bakeoff-test", key, str(local))
        db = local.stem
        cmd = [pg_bin("pg_restore"), *_restore_flags(), f"--dbname={url}/{db}"]
        with local.open("rb") as stdin:  # the docs pipe the dump into `kubectl exec -i ... pg_restore`
            out = subprocess.run(cmd, stdin=stdin, capture_output=True, text=True)
        assert out.returncode == 0, f"{shlex.join(cmd)}: {out.stderr}"
    assert psql("mlflow", "SELECT string_agg(name, ',' ORDER BY id) FROM experiments") == "a,b"
    assert psql("mlflow_auth", "SELECT name FROM users") == "admin"
