"""Fixtures for tracking/registry tests: a real `mlflow server` with S3 artifacts, and the client pointed at it.

The red/blue dataset, the candidate folders and ``model_name`` are shared fixtures (tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from support import S3_KEY_ID, S3_SECRET, VENV_BIN, Server, free_port, server_command, stop_process_group, wait_http


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Server:
    """`moto_server` + `mlflow server` processes on 127.0.0.1; the S3 credentials live ONLY in the server's env."""
    work = tmp_path_factory.mktemp("mlflow-server")
    s3_port, port = free_port(), free_port()
    s3_log, ml_log = work / "moto.log", work / "mlflow.log"
    moto = subprocess.Popen(
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
        stdout=s3_log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    procs = [moto]
    try:
        s3_endpoint = f"http://127.0.0.1:{s3_port}"
        wait_http(f"{s3_endpoint}/moto-api/", moto, 30, s3_log)
        server = Server(
            url=f"http://127.0.0.1:{port}",
            s3_endpoint=s3_endpoint,
            bucket="mlflow-artifacts",
            prefix="team",
            workdir=work,
        )
        server.s3().create_bucket(Bucket=server.bucket)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
        env.update(
            {
                "AWS_ACCESS_KEY_ID": S3_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                "AWS_DEFAULT_REGION": "us-east-1",
                "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
            }
        )
        cmd = server_command(port, work, f"s3://{server.bucket}/{server.prefix}")
        ml = subprocess.Popen(
            cmd, env=env, cwd=work, stdout=ml_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        procs.append(ml)
        wait_http(f"{server.url}/health", ml, 300, ml_log)
        yield server
    finally:
        for proc in reversed(procs):
            stop_process_group(proc)


@pytest.fixture
def tracking_env(mlflow_server, monkeypatch) -> Server:
    """Point bakeoff.tracking at the server; the client process has NO S3 credentials (proxied artifacts)."""
    from bakeoff import tracking

    for key in list(os.environ):
        if key.startswith("AWS_") or key == "MLFLOW_S3_ENDPOINT_URL":
            monkeypatch.delenv(key)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    tracking.configure()
    yield mlflow_server
    tracking.reset()
