"""The recurring-run Job, run as the kubelet would run it, against a loopback KFP v2beta1 API.

The Job's command and args are taken from the rendered overlay; `$(VAR)` references are expanded from
the ConfigMaps exactly as Kubernetes does, and the generated run.yaml is placed where the Job mounts it.
Only the KFP API server is a stand-in (no cluster here): tests/orchestration/kfp_api.py, which speaks
the real REST protocol and records every request.
"""

from __future__ import annotations

import importlib.util
import re
import sys

import pytest
import yaml
from infra_helpers import OVERLAYS, ROOT, find, schedule_job


def _kfp_api():
    """The orchestration tests' loopback KFP server module (shared, not copied)."""
    if "kfp_api" not in sys.modules:
        spec = importlib.util.spec_from_file_location("kfp_api", ROOT / "tests" / "orchestration" / "kfp_api.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["kfp_api"] = module
        spec.loader.exec_module(module)
    return sys.modules["kfp_api"]


@pytest.fixture
def kfp_api_server():
    api = _kfp_api().start()
    try:
        yield api
    finally:
        api.server.shutdown()
        api.server.server_close()


def job_invocation(objects: list[dict], tmp_path, kfp_url: str) -> tuple[list[str], dict, dict]:
    """(argv, env, run config) of the Job's container, with the kubelet's $(VAR) expansion."""
    pod = schedule_job(objects)["spec"]["template"]["spec"]
    [container] = pod["containers"]
    config_maps = {cm["metadata"]["name"]: cm["data"] for cm in find(objects, "ConfigMap")}
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = config_maps[ref["name"]][ref["key"]]
    assert env["KFP_HOST"].startswith("http://ml-pipeline.kubeflow.svc.cluster.local:8888")
    env["KFP_HOST"] = kfp_url  # the in-cluster API, here the loopback stand-in
    argv = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["command"] + container["args"]]
    # the ConfigMap volume: /etc/bakeoff/<key>
    mount = next(m for m in container["volumeMounts"] if m["name"] == "run-config")["mountPath"]
    volume = next(v for v in pod["volumes"] if v["name"] == "run-config")["configMap"]["name"]
    files = config_maps[volume]
    for key, text in files.items():
        (tmp_path / key).write_text(text)
    argv = [a.replace(mount, str(tmp_path)) if a.startswith(mount + "/") else a for a in argv]
    return argv, env, yaml.safe_load(files["run.yaml"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_schedule_job_creates_the_recurring_run_through_the_kfp_api(rendered, overlay, tmp_path, kfp_api_server):
    from bakeoff.cli import main

    api = kfp_api_server
    argv, env, run = job_invocation(rendered[overlay], tmp_path, api.url)
    assert argv[0] == "bakeoff", "the Job runs the image's bakeoff CLI"
    assert main(argv[1:]) == 0

    [recurring] = api.recurring.values()
    assert recurring["display_name"] == env["BAKEOFF_RECURRING_RUN"]
    assert recurring["trigger"]["cron_schedule"]["cron"] == env["BAKEOFF_CRON"]
    assert int(recurring["max_concurrency"]) == 1 and recurring["no_catchup"] is True
    assert recurring["runtime_config"]["parameters"]["data_uri"] == run["parameters"]["data_uri"]
    # The uploaded pipeline runs in the overlay's images (GPU steps in the CUDA build where one is set).
    spec = next(yaml.safe_load_all(api.uploads[-1]))
    images = {name: ex["container"]["image"] for name, ex in spec["deploymentSpec"]["executors"].items()}
    gpu_image = run["settings"].get("gpu_image") or run["settings"]["image"]
    for name, image in images.items():
        expected = gpu_image if name in ("exec-features", "exec-finetune") else run["settings"]["image"]
        assert image == expected, f"{name} runs {image}"


def test_rerunning_the_schedule_job_keeps_one_enabled_recurring_run(rendered, tmp_path, kfp_api_server):
    from bakeoff.cli import main

    api = kfp_api_server
    argv, _, _ = job_invocation(rendered["dev"], tmp_path, api.url)
    assert main(argv[1:]) == 0
    assert main(argv[1:]) == 0
    enabled = [
        r for r in api.recurring.values() if r.get("status") == "ENABLED" and r.get("mode", "ENABLE") == "ENABLE"
    ]
    assert len(enabled) == 1
