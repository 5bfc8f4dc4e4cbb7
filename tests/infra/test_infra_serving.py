"""The KServe manifests (infra/k8s/base/serving + overlays/*/serving): schema-valid offline, consistent with each
other and with the docs, and the runtime's own command line really serves a bakeoff MLflow model."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import urllib.request

import jsonschema
import kubernetes_validate
import pytest
from infra_helpers import K8S, find, kustomize
from kserve_schema import validate as validate_kserve
from test_infra_image_pins import pin_problem
from test_infra_k8s import documented_secrets

from support import VENV_BIN, free_port, stop_process_group, wait_http

SERVING_OVERLAYS = sorted(p.parent.parent.name for p in (K8S / "overlays").glob("*/serving/kustomization.yaml"))


@pytest.fixture(scope="module")
def serving() -> dict[str, list[dict]]:
    assert SERVING_OVERLAYS == ["dev", "prod"]
    return {name: kustomize(K8S / "overlays" / name / "serving") for name in SERVING_OVERLAYS}


def _the(objects: list[dict], kind: str) -> dict:
    [obj] = find(objects, kind)
    return obj


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_inference_service_and_runtime_fit_together(serving, overlay):
    objects = serving[overlay]
    isvc, runtime = _the(objects, "InferenceService"), _the(objects, "ServingRuntime")
    for obj in (isvc, runtime):
        validate_kserve(obj)
    namespace = _the(objects, "Namespace")["metadata"]["name"]
    assert {o["metadata"]["namespace"] for o in objects if o["kind"] != "Namespace"} == {namespace}
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"] in [
        {k: f[k] for k in ("name", "version") if k in f} for f in runtime["spec"]["supportedModelFormats"]
    ]
    assert model["storageUri"].startswith("s3://") and "CHANGE-ME" not in model["storageUri"]
    assert model["storageUri"].endswith("/mlflow"), "the folder `bakeoff export -f mlflow --out PREFIX` writes"
    for part in ("requests", "limits"):
        assert model["resources"][part]["cpu"] and model["resources"][part]["memory"], part
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    [container] = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"  # the name KServe merges the model's resources into
    assert not pin_problem(container["image"]) and container["image"] != "bakeoff", container["image"]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    account = _the(objects, "ServiceAccount")
    assert predictor["serviceAccountName"] == account["metadata"]["name"]
    docs = documented_secrets()
    for secret in account["secrets"]:
        created = docs.get((namespace, secret["name"]))
        assert created is not None, f"docs/infra.md has no `kubectl -n {namespace} create secret generic ...`"
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= created


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_the_serving_namespace_denies_by_default_and_admits_only_the_predictor_port(serving, overlay):
    objects = serving[overlay]
    policies = {p["metadata"]["name"]: p["spec"] for p in find(objects, "NetworkPolicy")}
    deny = policies["default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert not deny.get("ingress") and not deny.get("egress")
    ingress = [p for p in policies.values() if p.get("ingress")]
    assert [[port["port"] for rule in p["ingress"] for port in rule["ports"]] for p in ingress] == [[8080]]
    isvc = _the(objects, "InferenceService")
    for policy in policies.values():  # every non-global policy selects the predictor's pods by KServe's label
        if policy["podSelector"]:
            labels = policy["podSelector"]["matchLabels"]
            assert labels == {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
    s3 = [p for name, p in policies.items() if name.endswith("-egress")]
    assert len(s3) == 1, "each overlay opens exactly one S3 path for the storage initializer"


def test_kserve_check_rejects_typos_wrong_types_and_bad_containers(serving):
    """Guard on the guard: the API server would prune these silently; the offline check must not."""
    isvc, runtime = _the(serving["dev"], "InferenceService"), _the(serving["dev"], "ServingRuntime")
    typo = copy.deepcopy(isvc)
    typo["spec"]["predictor"]["model"]["storageURI"] = typo["spec"]["predictor"]["model"].pop("storageUri")
    wrong_enum = copy.deepcopy(isvc)
    wrong_enum["spec"]["predictor"]["scaleMetric"] = "gpu"
    wrong_type = copy.deepcopy(isvc)
    wrong_type["spec"]["predictor"]["minReplicas"] = "one"
    bad_uri = copy.deepcopy(isvc)
    bad_uri["spec"]["predictor"]["model"]["storageUri"] = "/models/champion"
    for broken in (typo, wrong_enum, wrong_type, bad_uri):
        with pytest.raises(jsonschema.ValidationError):
            validate_kserve(broken)
    bad_resources = copy.deepcopy(isvc)
    bad_resources["spec"]["predictor"]["model"]["resources"]["requests"]["cpuu"] = "1"
    bad_resources["spec"]["predictor"]["model"]["resources"]["limit"] = {}
    container_typo = copy.deepcopy(runtime)
    container_typo["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/ping", "port": 8080}}
    for broken in (bad_resources, container_typo):
        with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
            validate_kserve(broken)


def test_the_runtimes_command_line_serves_a_bakeoff_model(serving, tmp_path, monkeypatch):
    """Run the ServingRuntime's container command (with /mnt/models = an exported MLflow folder, on 127.0.0.1)
    and use its probe path and port the way kubelet and a client would."""
    from bakeoff import tracking
    from bakeoff.export import export_model
    from bakeoff.serving.log import example_image
    from bakeoff.tracking.models import log_model_folder

    from support import write_candidate_folders

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.reset()
    tracking.configure(uri)
    try:
        model_dir = write_candidate_folders(tmp_path / "tiny", 127.5).root / "model"
        run_id = tracking.client().create_run(tracking.ensure_experiment("kserve")).info.run_id
        version, _ = log_model_folder(run_id, str(model_dir), "bakeoff-kserve")
        export_model(f"models:/bakeoff-kserve/{version}", str(tmp_path / "export"), ["mlflow"])
    finally:
        tracking.reset()
    [container] = _the(serving["dev"], "ServingRuntime")["spec"]["containers"]
    port = free_port()
    mapping = {"/mnt/models": str(tmp_path / "export" / "mlflow"), "0.0.0.0": "127.0.0.1", "8080": str(port)}
    argv = [str(VENV_BIN / container["command"][0])] + [mapping.get(a, a) for a in container["args"]]
    assert argv[1:3] == ["models", "serve"] and str(port) in argv
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}  # a pod has no tracking server
    env.update({e["name"]: e["value"] for e in container["env"]})
    env.update({"HOME": str(tmp_path), "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
    log = tmp_path / "runtime.log"
    proc = subprocess.Popen(
        argv, env=env, cwd=tmp_path, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        probe = container["readinessProbe"]["httpGet"]
        assert probe["port"] == container["ports"][0]["containerPort"] == 8080
        wait_http(f"http://127.0.0.1:{port}{probe['path']}", proc, 300, log)
        import base64

        body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(example_image()).decode()]]}}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as resp:
            [row] = json.loads(resp.read())["predictions"]
        assert row["label"] in ("blue", "red") and set(row) == {"label", "probability", "prob_blue", "prob_red"}
    finally:
        stop_process_group(proc)
