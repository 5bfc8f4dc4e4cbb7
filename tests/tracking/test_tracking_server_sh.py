"""mlflow/server.sh, the team server command, really starts: basic auth on, artifacts proxied to S3.

Slow (one more server start, ~10-60 s depending on load): `make test-slow`.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import pytest

from support import S3_KEY_ID, S3_SECRET, server_sh


@pytest.mark.slow
def test_server_sh_runs_basic_auth_with_proxied_s3(mlflow_server, tmp_path, monkeypatch):
    settings = {
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{mlflow_server.bucket}/authed",
        "MLFLOW_S3_ENDPOINT_URL": mlflow_server.s3_endpoint,
        "AWS_ACCESS_KEY_ID": S3_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{tmp_path / 'auth.db'}",
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-pass-123",
    }
    with server_sh(tmp_path, settings) as url:
        # anonymous API calls are refused
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
        assert refused.value.code == 401
        # the rendered ini is private and the admin password is not in it
        inis = list(tmp_path.glob("basic_auth.*.ini"))
        assert len(inis) == 1 and (inis[0].stat().st_mode & 0o777) == 0o600
        assert "admin-pass-123" not in inis[0].read_text()

        from mlflow.tracking import MlflowClient

        import mlflow

        for key in [k for k in os.environ if k.startswith("AWS_")]:
            monkeypatch.delenv(key)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "admin-pass-123")
        client = MlflowClient(tracking_uri=url)
        exp = client.create_experiment("authed")
        run = client.create_run(exp)
        note = tmp_path / "note.txt"
        note.write_text("proxied")
        client.log_artifact(run.info.run_id, str(note))
        keys = [
            o["Key"]
            for o in mlflow_server.s3()
            .list_objects_v2(Bucket=mlflow_server.bucket, Prefix="authed/")
            .get("Contents", [])
        ]
        assert any(k.endswith("/artifacts/note.txt") for k in keys)

        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        with pytest.raises(mlflow.exceptions.MlflowException):
            MlflowClient(tracking_uri=url).search_experiments()
