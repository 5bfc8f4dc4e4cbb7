"""A real `mlflow server` for tests: where it listens, its S3 artifact store (a moto server), the S3 keys that
only the server's environment holds (clients reach artifacts through the server's proxy)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
S3_KEY_ID = "AKIAMOTOTESTKEY00001"
S3_SECRET = "moto-test-secret-3f9a1c7e5b"


@dataclass
class Server:
    url: str
    s3_endpoint: str
    bucket: str
    prefix: str
    workdir: Path

    def s3(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET,
        )

    def s3_keys(self) -> list[str]:
        keys = []
        for page in self.s3().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys


def server_command(port: int, workdir: Path, artifacts_destination: str) -> list[str]:
    """The `mlflow server` command line tests start: loopback, SQLite in ``workdir``, one worker."""
    return [
        str(VENV_BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination",
        artifacts_destination,
        "--workers",
        "1",
    ]


@contextmanager
def server_sh(workdir: Path, settings: dict[str, str]) -> Iterator[str]:
    """``mlflow/server.sh`` (the tracking server's own entry point) on a free loopback port with ``settings`` on top
    of a clean environment (no AWS_/MLFLOW_ variables of the caller's); yields its URL once /health answers."""
    from support.net import free_port, wait_http
    from support.procs import stop_process_group

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env.update(
        {
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-key",
            "MLFLOW_HOST": "127.0.0.1",
            "MLFLOW_PORT": str(port),
            "MLFLOW_WORKERS": "1",
            "MLFLOW_SERVER_ALLOWED_HOSTS": f"127.0.0.1:{port},localhost:{port}",
            "MLFLOW_BIN": str(VENV_BIN / "mlflow"),
            "TMPDIR": str(workdir),
            **settings,
        }
    )
    log = workdir / "server.log"
    proc = subprocess.Popen(
        ["sh", str(REPO / "mlflow" / "server.sh")],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc, 300, log)
        yield url
    finally:
        stop_process_group(proc)
