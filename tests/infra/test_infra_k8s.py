"""The kustomize manifests: schema-valid, secrets only referenced, and consistent with the pipeline.

Each overlay is rendered with `kubectl kustomize` and every object is validated against the bundled
Kubernetes 1.37 OpenAPI schemas in strict mode (unknown fields and wrong types fail).
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest
import yaml
from infra_helpers import (
    K8S,
    KUSTOMIZATIONS,
    OVERLAYS,
    ROOT,
    find,
    k8s_executors,
    kustomize,
    pod_specs,
    pod_template,
    schedule_job,
)
from kserve_schema import is_kserve
from kserve_schema import validate as validate_kserve

K8S_VERSION = "1.37.0"
SECRET_LIKE = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE", re.I)


def _validate(doc: dict) -> None:
    """Kubernetes kinds against the bundled 1.37 schemas; KServe kinds (no bundled schema) with kserve_schema."""
    import kubernetes_validate

    if is_kserve(doc):
        validate_kserve(doc)
        return
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_every_kustomization_builds_and_every_object_is_schema_valid(path):
    objects = kustomize(path)
    assert objects, f"{path} renders nothing"
    for obj in objects:
        _validate(obj)


def test_strict_validation_really_rejects_a_broken_manifest(rendered):
    """Guard on the guard: a typo'd field and a wrong type must fail, so the test above can fail."""
    import kubernetes_validate

    [deploy] = find(rendered["dev"], "Deployment", "mlflow")
    typo = yaml.safe_load(yaml.safe_dump(deploy))
    typo["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"tcpSocket": {"port": 5000}}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(typo)
    wrong_type = yaml.safe_load(yaml.safe_dump(deploy))
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(wrong_type)


def test_plain_yaml_outside_kustomizations_is_schema_valid():
    """Any Kubernetes YAML in infra/ (not only kustomize inputs) validates too."""
    checked = 0
    for path in (ROOT / "infra").rglob("*.y*ml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc and doc["kind"] != "Kustomization":
                _validate(doc)
                checked += 1
    assert checked >= 10


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_values_are_committed(rendered, overlay):
    objects = rendered[overlay]
    assert not find(objects, "Secret"), "Secrets must be created with kubectl (docs/infra.md), not committed"
    for obj in find(objects, "ConfigMap"):
        leaked = [k for k in obj.get("data", {}) if SECRET_LIKE.search(k)]
        assert not leaked, f"ConfigMap {obj['metadata']['name']} carries secret-like keys {leaked}"
    for obj, spec in pod_specs(objects):
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            for env in container.get("env", []):
                if SECRET_LIKE.search(env["name"]) and "value" in env:
                    assert env["name"].endswith("_PATH"), (
                        f"{obj['metadata']['name']}: {env['name']} has a literal value; use secretKeyRef"
                    )


def _secret_refs(objects: list[dict]) -> dict[tuple[str, str], set[str]]:
    """(namespace, secret name) -> keys the workloads read (envFrom secretRef reads any key: empty set)."""
    refs: dict[tuple[str, str], set[str]] = {}
    for obj, spec in pod_specs(objects):
        ns = obj["metadata"]["namespace"]
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.setdefault((ns, ref["name"]), set()).add(ref["key"])
            for src in container.get("envFrom", []):
                if "secretRef" in src:
                    refs.setdefault((ns, src["secretRef"]["name"]), set())
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                refs.setdefault((ns, volume["secret"]["secretName"]), set())
    return refs


def documented_secrets() -> dict[tuple[str, str], set[str]]:
    """Parse every `kubectl -n NS create secret generic NAME --from-literal=KEY=...` in docs/infra.md."""
    text = (ROOT / "docs" / "infra.md").read_text().replace("\\\n", " ")
    found: dict[tuple[str, str], set[str]] = {}
    for line in text.splitlines():
        m = re.search(r"kubectl\s+-n\s+(\S+)\s+create\s+secret\s+generic\s+([a-z0-9-]+)(.*)", line)
        if m:
            found[(m.group(1), m.group(2))] = set(re.findall(r"--from-literal=([A-Za-z0-9_]+)=", m.group(3)))
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_referenced_secret_has_a_documented_create_command(rendered, overlay, compiled):
    """The operator creates exactly what the manifests and the compiled pipeline read, keys included."""
    _, platform = compiled
    docs = documented_secrets()
    needed = _secret_refs(rendered[overlay])
    kfp_ns = schedule_job(rendered[overlay])["metadata"]["namespace"]
    for executor in k8s_executors(platform).values():
        for sec in executor.get("secretAsEnv", []):
            needed.setdefault((kfp_ns, sec["secretName"]), set()).update(k["secretKey"] for k in sec["keyToEnv"])
    assert len(needed) >= 5
    for (ns, name), keys in sorted(needed.items()):
        assert (ns, name) in docs, f"docs/infra.md has no `kubectl -n {ns} create secret generic {name} ...`"
        assert keys <= docs[(ns, name)], f"secret {ns}/{name}: docs create {docs[(ns, name)]}, manifests read {keys}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pipeline_config_map_feeds_exactly_what_the_compiled_pipeline_maps(rendered, overlay, compiled):
    _, platform = compiled
    mapped: dict[str, set[str]] = {}
    for executor in k8s_executors(platform).values():
        for cm in executor.get("configMapAsEnv", []):
            mapped.setdefault(cm["configMapName"], set()).update(k["configMapKey"] for k in cm["keyToEnv"])
    assert mapped, "the compiled pipeline maps no ConfigMap"
    for name, keys in mapped.items():
        [cm] = find(rendered[overlay], "ConfigMap", name)
        data = set(cm["data"])
        assert data <= keys, f"{name} keys {data - keys} reach no pipeline pod"
        assert {"MLFLOW_TRACKING_URI", "BAKEOFF_WEIGHTS_URI"} <= data
        assert cm["metadata"]["namespace"] == schedule_job(rendered[overlay])["metadata"]["namespace"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_tracking_uri_points_at_the_mlflow_service(rendered, overlay):
    objects = rendered[overlay]
    [cm] = find(objects, "ConfigMap", "bakeoff-config")
    url = urlparse(cm["data"]["MLFLOW_TRACKING_URI"])
    service, namespace = url.hostname.split(".")[:2]
    [svc] = [s for s in find(objects, "Service", service) if s["metadata"]["namespace"] == namespace]
    assert url.port in [p["port"] for p in svc["spec"]["ports"]]
    # ... and the server accepts that Host header (MLflow's DNS-rebinding guard).
    [mcfg] = find(objects, "ConfigMap", "mlflow-config")
    assert url.netloc in mcfg["data"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_pods_and_target_declared_ports(rendered, overlay):
    objects = rendered[overlay]
    for svc in find(objects, "Service"):
        ns, selector = svc["metadata"]["namespace"], svc["spec"]["selector"]
        pods = [
            (o, s)
            for o, s in pod_specs(objects)
            if o["metadata"]["namespace"] == ns and selector.items() <= pod_template(o)["metadata"]["labels"].items()
        ]
        assert pods, f"Service {svc['metadata']['name']} selects no pod"
        port_names = {p.get("name") for _, s in pods for c in s["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in port_names, f"{svc['metadata']['name']}: targetPort {port['targetPort']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_have_probes_resources_and_run_as_non_root(rendered, overlay):
    for obj, spec in pod_specs(rendered[overlay]):
        assert spec["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
        for c in spec["containers"]:
            where = f"{obj['kind']}/{obj['metadata']['name']}/{c['name']}"
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], where
            assert c["resources"]["limits"]["memory"], where
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            if obj["kind"] in ("Deployment", "StatefulSet"):
                assert "readinessProbe" in c and "livenessProbe" in c, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_postgres_keeps_its_data_on_a_persistent_volume(rendered, overlay):
    [sts] = find(rendered[overlay], "StatefulSet", "mlflow-postgres")
    [claim] = sts["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/var/lib/postgresql/data"
    assert claim["spec"]["resources"]["requests"]["storage"]
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_server_uses_postgres_and_s3_with_proxied_artifacts(rendered, overlay):
    objects = rendered[overlay]
    [deploy] = find(objects, "Deployment", "mlflow")
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    script = container["args"][0]
    assert (
        "postgresql+psycopg2://${POSTGRES_USER}:${POSTGRES_PASSWORD}@${POSTGRES_HOST}:${POSTGRES_PORT}/${POSTGRES_DB}"
        in script
    )
    assert "--serve-artifacts" in script and "--app-name basic-auth" in script
    [cfg] = find(objects, "ConfigMap", "mlflow-config")
    assert cfg["data"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert "CHANGE-ME" not in cfg["data"]["MLFLOW_ARTIFACTS_DESTINATION"], "overlays must set the bucket"
    assert [p["containerPort"] for p in container["ports"]] == [5000]
    [svc] = find(objects, "Service", cfg["data"]["POSTGRES_HOST"])
    assert svc["spec"]["ports"][0]["port"] == 5432


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_run_config_is_valid_and_names_the_overlays_image(rendered, overlay, tmp_path):
    """The schedule's run.yaml loads as a RunConfig, and its image is the one the overlay deploys."""
    from pipelines.settings import load_config

    objects = rendered[overlay]
    job = schedule_job(objects)
    run_cm = [cm for cm in find(objects, "ConfigMap") if cm["metadata"]["name"].startswith("bakeoff-run-")]
    assert len(run_cm) == 1, "bakeoff-run comes from a configMapGenerator (hash-suffixed)"
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["run-config"]["configMap"]["name"] == run_cm[0]["metadata"]["name"]
    path = tmp_path / "run.yaml"
    path.write_text(run_cm[0]["data"]["run.yaml"])
    config = load_config(path)
    assert config.settings.image == job["spec"]["template"]["spec"]["containers"][0]["image"]
    assert "CHANGE-ME" not in config.parameters.data_uri and config.parameters.data_uri.startswith("s3://")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_pods_get_no_service_link_variables(rendered, overlay):
    """Service `mlflow` would inject MLFLOW_PORT=tcp://IP:5000, which `mlflow server` reads as its port."""
    [deploy] = find(rendered[overlay], "Deployment", "mlflow")
    assert deploy["spec"]["template"]["spec"]["enableServiceLinks"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_postgres_policy_admits_the_tracking_server(rendered, overlay):
    objects = rendered[overlay]
    [policy] = find(objects, "NetworkPolicy", "mlflow-postgres")
    [sts] = find(objects, "StatefulSet", "mlflow-postgres")
    [deploy] = find(objects, "Deployment", "mlflow")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    [rule] = policy["spec"]["ingress"]
    [peer] = rule["from"]
    assert peer["podSelector"]["matchLabels"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    assert [p["port"] for p in rule["ports"]] == [5432]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_run_form_weights_resolve_from_the_mirror_the_docs_fill(rendered, overlay, weights_mirror):
    """Each scheduled backbone finds pretrained weights in a mirror made by `bakeoff weights import`
    (docs/infra.md step 5): a cluster without internet must not fall back to a Keras download."""
    from bakeoff.weights import resolve_weights

    [run_cm] = [cm for cm in find(rendered[overlay], "ConfigMap") if cm["metadata"]["name"].startswith("bakeoff-run-")]
    params = yaml.safe_load(run_cm["data"]["run.yaml"])["parameters"]
    for backbone in params["backbones"]:
        resolved = resolve_weights(backbone, params["weights"], mirror=weights_mirror)
        assert resolved.pretrained and resolved.sha256 and str(weights_mirror) in resolved.source, (backbone, resolved)
