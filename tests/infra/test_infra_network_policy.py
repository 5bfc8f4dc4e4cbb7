"""Default deny with explicit allows: every rendered NetworkPolicy, evaluated for every flow that matters.

Our pods come from the rendered overlays (MLflow, PostgreSQL, the backup and scheduling CronJobs) and from
the compiled pipeline (the step pods' labels); the pods we do not deploy (kube-dns, KFP's API server,
MLMD and MinIO, an ingress controller, KFP's own driver pods, a stranger in `default`) carry the labels
of their upstream manifests; S3, the Kubernetes API endpoint and an Internet host are addresses. For
every pair with one of our pods on either side and every port the destination serves, the evaluator in
netpol.py must allow EXACTLY the expected flows: what must talk is allowed, everything else denied.
"""

from __future__ import annotations

import pytest
from infra_helpers import OVERLAYS, find, k8s_executors, pod_template
from netpol import Endpoint, allowed, namespace_labels, selects

DNS = {"dns": (53, "UDP"), "dns-tcp": (53, "TCP")}
ANY_PORT = {"any": (8080, "TCP")}  # pods that serve nothing: a port to prove nothing gets in
OURS = ("mlflow", "postgres", "backup", "scheduler", "pipeline")

THEIRS = [
    Endpoint("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, DNS),
    Endpoint("ml-pipeline", "kubeflow", {"app": "ml-pipeline"}, {"http": (8888, "TCP"), "grpc": (8887, "TCP")}),
    Endpoint("mlmd", "kubeflow", {"component": "metadata-grpc-server"}, {"grpc-api": (8080, "TCP")}),
    Endpoint("kfp-minio", "kubeflow", {"app": "minio"}, {"http": (9000, "TCP")}),
    Endpoint("kfp-driver", "kubeflow", {"pipelines.kubeflow.org/v2_component": "true"}, ANY_PORT),
    Endpoint("kfp-ui", "kubeflow", {"app": "ml-pipeline-ui"}, {"http": (3000, "TCP")}),
    Endpoint("ingress", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}, {"http": (80, "TCP")}),
    Endpoint("stranger", "default", {"app": "anything"}, ANY_PORT),
    Endpoint("minio", "minio", {"app": "minio"}, {"api": (9000, "TCP")}),
    Endpoint("s3", ip="52.218.1.10", ports={"https": (443, "TCP")}),
    Endpoint("apiserver", ip="10.0.12.34", ports={"https": (443, "TCP"), "alt": (6443, "TCP")}),
    Endpoint("internet", ip="93.184.216.34", ports={"ssh": (22, "TCP"), "http": (80, "TCP"), "https": (443, "TCP")}),
]


def _dns(src: str) -> set:
    return {(src, "kube-dns", 53, "UDP"), (src, "kube-dns", 53, "TCP")}


COMMON = (
    {
        ("pipeline", "mlflow", 5000, "TCP"),
        ("pipeline", "ml-pipeline", 8887, "TCP"),
        ("pipeline", "ml-pipeline", 8888, "TCP"),
        ("pipeline", "mlmd", 8080, "TCP"),
        ("pipeline", "kfp-minio", 9000, "TCP"),
        ("pipeline", "apiserver", 443, "TCP"),
        ("pipeline", "apiserver", 6443, "TCP"),
        ("pipeline", "s3", 443, "TCP"),
        ("pipeline", "internet", 443, "TCP"),  # the API server and S3 have no selector: 443 to any address
        ("scheduler", "ml-pipeline", 8888, "TCP"),
        ("ingress", "mlflow", 5000, "TCP"),
        ("mlflow", "postgres", 5432, "TCP"),
        ("backup", "postgres", 5432, "TCP"),
    }
    | _dns("pipeline")
    | _dns("scheduler")
    | _dns("mlflow")
    | _dns("postgres")
    | _dns("backup")
)
BY_OVERLAY = {
    # AWS S3: HTTPS to public addresses only (not the API endpoint's private address)
    "prod": {("mlflow", "s3", 443, "TCP"), ("mlflow", "internet", 443, "TCP")}
    | {("backup", "s3", 443, "TCP"), ("backup", "internet", 443, "TCP")},
    # MinIO in namespace minio
    "dev": {("mlflow", "minio", 9000, "TCP"), ("backup", "minio", 9000, "TCP"), ("pipeline", "minio", 9000, "TCP")},
}


def _ours(objects: list[dict], platform: dict) -> dict[str, Endpoint]:
    def pod(name: str, kind: str, obj_name: str) -> Endpoint:
        [obj] = find(objects, kind, obj_name)
        template = pod_template(obj)
        ports = {
            p.get("name", str(p["containerPort"])): (p["containerPort"], p.get("protocol", "TCP"))
            for c in template["spec"]["containers"]
            for p in c.get("ports", [])
        }
        return Endpoint(name, obj["metadata"]["namespace"], template["metadata"]["labels"], ports or ANY_PORT)

    [config] = find(objects, "ConfigMap", "bakeoff-config")  # pipeline pods run where their ConfigMap is
    step_labels = [ex.get("podMetadata", {}).get("labels", {}) for ex in k8s_executors(platform).values()]
    assert step_labels and all(labels == step_labels[0] for labels in step_labels), step_labels
    return {
        "mlflow": pod("mlflow", "Deployment", "mlflow"),
        "postgres": pod("postgres", "StatefulSet", "mlflow-postgres"),
        "backup": pod("backup", "CronJob", "mlflow-postgres-backup"),
        "scheduler": pod("scheduler", "CronJob", "bakeoff-schedule"),
        # KFP adds its own v2_component label to every pipeline pod
        "pipeline": Endpoint(
            "pipeline",
            config["metadata"]["namespace"],
            {**step_labels[0], "pipelines.kubeflow.org/v2_component": "true"},
            ANY_PORT,
        ),
    }


def allowed_flows(objects: list[dict], platform: dict) -> set[tuple[str, str, int, str]]:
    """Every (source, destination, port, protocol) the policies allow with one of our pods on a side."""
    ours = _ours(objects, platform)
    endpoints = [*ours.values(), *THEIRS]
    policies = find(objects, "NetworkPolicy")
    namespaces = namespace_labels(objects, {e.namespace for e in endpoints if e.namespace})
    flows = set()
    for src in endpoints:
        for dst in endpoints:
            if src is dst or not (src.name in OURS or dst.name in OURS):
                continue
            for port, protocol in set(dst.ports.values()):
                if allowed(policies, src, dst, port, protocol, namespaces):
                    flows.add((src.name, dst.name, port, protocol))
    return flows


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_exactly_the_needed_flows_are_allowed(rendered, compiled, overlay):
    flows = allowed_flows(rendered[overlay], compiled[1])
    expected = COMMON | BY_OVERLAY[overlay]
    assert not flows - expected, f"allowed but not needed: {sorted(flows - expected)}"
    assert not expected - flows, f"needed but denied: {sorted(expected - flows)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_namespace_we_manage_denies_by_default(rendered, overlay):
    """`mlflow` is ours: every pod there is isolated both ways. KFP's namespace is Kubeflow's: our pods only."""
    objects = rendered[overlay]
    policies = find(objects, "NetworkPolicy")
    [ns] = find(objects, "Namespace")
    deny_all = [
        p
        for p in policies
        if p["metadata"]["namespace"] == ns["metadata"]["name"]
        and p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert deny_all, f"no default-deny NetworkPolicy in namespace {ns['metadata']['name']}"
    kfp_ns = find(objects, "ConfigMap", "bakeoff-config")[0]["metadata"]["namespace"]
    [ours] = [p for p in policies if p["metadata"]["name"] == "bakeoff-default-deny"]
    assert ours["metadata"]["namespace"] == kfp_ns and set(ours["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    for name in ("pipeline", "scheduler"):
        labels = {"pipeline": {"app.kubernetes.io/name": "bakeoff-pipeline"}}.get(name) or pod_template(
            find(objects, "CronJob", "bakeoff-schedule")[0]
        )["metadata"]["labels"]
        assert selects(ours["spec"]["podSelector"], labels), name
    assert not selects(ours["spec"]["podSelector"], {"app": "ml-pipeline"}), "KFP's own pods are not ours to isolate"


def test_every_pipeline_step_carries_the_label_the_policies_select(compiled):
    for name, executor in k8s_executors(compiled[1]).items():
        labels = executor.get("podMetadata", {}).get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "bakeoff-pipeline", f"{name}: {labels}"


def test_the_matrix_catches_a_missing_default_deny(rendered, compiled):
    """Guard: without the namespace's default deny, any pod could connect to the backup job; the matrix notices."""
    objects = [
        o for o in rendered["prod"] if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "default-deny")
    ]
    extra = allowed_flows(objects, compiled[1]) - (COMMON | BY_OVERLAY["prod"])
    assert ("stranger", "backup", 8080, "TCP") in extra and ("kfp-ui", "backup", 8080, "TCP") in extra


def test_evaluator_semantics():
    """Guard on the evaluator itself: isolation, additive policies, named ports, ipBlock except, expressions."""
    a = Endpoint("a", "ns", {"app": "a"}, {"http": (80, "TCP")})
    b = Endpoint("b", "ns", {"app": "b"}, {"http": (8080, "TCP")})
    out = Endpoint("out", ip="10.1.2.3", ports={"https": (443, "TCP")})
    ns = namespace_labels([], ["ns"])

    def policy(name, selector, types, **rules):
        return {
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"podSelector": selector, "policyTypes": types, **rules},
        }

    assert allowed([], a, b, 8080, "TCP", ns), "no policy: not isolated"
    deny = policy("deny", {}, ["Ingress", "Egress"])
    assert not allowed([deny], a, b, 8080, "TCP", ns)
    egress = policy(
        "a-out",
        {"matchLabels": {"app": "a"}},
        ["Egress"],
        egress=[{"to": [{"podSelector": {"matchLabels": {"app": "b"}}}], "ports": [{"port": "http"}]}],
    )
    ingress = policy(
        "b-in",
        {"matchExpressions": [{"key": "app", "operator": "In", "values": ["b"]}]},
        ["Ingress"],
        ingress=[{"from": [{"podSelector": {}}]}],
    )
    assert not allowed([deny, egress], a, b, 8080, "TCP", ns), "the destination's ingress is still closed"
    assert allowed([deny, egress, ingress], a, b, 8080, "TCP", ns), "named port resolved on the destination"
    assert not allowed([deny, egress, ingress], a, b, 8080, "UDP", ns)
    assert not allowed([deny, egress, ingress], b, a, 80, "TCP", ns)
    block = policy(
        "a-ip",
        {"matchLabels": {"app": "a"}},
        ["Egress"],
        egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}],
    )
    assert not allowed([deny, block], a, out, 443, "TCP", ns)
    assert allowed([deny, block], a, Endpoint("pub", ip="52.0.0.1", ports={"https": (443, "TCP")}), 443, "TCP", ns)
    assert selects({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, {"app": "a"})
    assert not selects({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]}, {"app": "a"})
