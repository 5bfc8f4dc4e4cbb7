"""Helpers for the infra tests (a uniquely named module: `conftest` names clash across test folders)."""

from __future__ import annotations

import copy
import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
IMAGE = os.environ.get("BAKEOFF_TEST_IMAGE", "localhost/bakeoff:dev")
CONTAINERS_CONF = str(ROOT / "infra" / "image" / "containers.conf")
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def kustomize(path: Path) -> list[dict]:
    """Render one kustomization with `kubectl kustomize` (no cluster needed) into a list of objects."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found: apt-get install -y kubernetes-client (Debian) to render the overlays")
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def compile_ir(tmp_dir: Path, run_config: Path | None = None) -> tuple[dict, dict]:
    """Compile the real pipeline (optionally with an overlay's run.yaml settings) -> (PipelineSpec, PlatformSpec)."""
    from pipelines.compile import compile_pipeline
    from pipelines.settings import load_config

    config = load_config(run_config)
    out = tmp_dir / "pipeline.yaml"
    compile_pipeline(out, config.settings, config.parameters)
    docs = [d for d in yaml.safe_load_all(out.read_text()) if d]
    assert len(docs) == 2, "expected PipelineSpec + Kubernetes PlatformSpec documents"
    return docs[0], docs[1]


def k8s_executors(platform: dict) -> dict[str, dict]:
    """executor name -> its Kubernetes executor config (node selector, tolerations, secrets, config maps)."""
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def schedule_job(objects: list[dict]) -> dict:
    """The Job that `kubectl create job --from=cronjob/bakeoff-schedule NAME` makes from the rendered CronJob."""
    [cron] = find(objects, "CronJob", "bakeoff-schedule")
    template = cron["spec"]["jobTemplate"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "bakeoff-schedule-manual",
            "namespace": cron["metadata"]["namespace"],
            "labels": dict(template.get("metadata", {}).get("labels", {})),
            "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
        },
        "spec": copy.deepcopy(template["spec"]),
    }


def pod_template(obj: dict) -> dict:
    """The pod template (metadata + spec) of a workload, CronJobs included."""
    spec = obj["spec"]
    return spec["jobTemplate"]["spec"]["template"] if obj["kind"] == "CronJob" else spec["template"]


def pod_specs(objects: list[dict]):
    """(object, pod spec) for every workload: Deployment, StatefulSet, Job, CronJob, DaemonSet."""
    for obj in objects:
        kind = obj["kind"]
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield obj, obj["spec"]["template"]["spec"]
        elif kind == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def podman_env() -> dict:
    """The environment for podman/buildah: runc and lowered ulimits (infra/image/containers.conf)."""
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", CONTAINERS_CONF)}


def pg_bin(name: str) -> str:
    """Path of a PostgreSQL server binary (Debian keeps them out of PATH, under /usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail("PostgreSQL server binaries not found: apt-get install -y postgresql")
    return found[-1]
