"""The GPU node pool (Terraform, parsed with python-hcl2: no terraform binary offline) against the pipeline.

The pool is only useful if the pods the pipeline compiles for its GPU steps select its label and
tolerate its taint, and if it costs nothing when idle (min 0) yet can still scale up from zero.
"""

from __future__ import annotations

import re

import pytest
from infra_helpers import K8S, ROOT, compile_ir, k8s_executors

TF_DIR = ROOT / "infra" / "terraform" / "eks-gpu-node-pool"
EKS_EFFECT = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}


def _unquote(value):
    """python-hcl2 keeps HCL string quotes ('"gpu"'); strip them, recursively."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    return value


@pytest.fixture(scope="module")
def tf() -> dict:
    """All .tf files merged: {"resource": [...], "locals": {...}, "variable": {...}}."""
    import hcl2

    merged: dict = {"resource": [], "locals": {}, "variable": {}}
    files = sorted(TF_DIR.glob("*.tf"))
    assert files, f"no Terraform files in {TF_DIR}"
    for path in files:
        with path.open() as fh:
            doc = _unquote(hcl2.load(fh))
        merged["resource"] += doc.get("resource", [])
        for block in doc.get("locals", []):
            merged["locals"].update(block)
        for block in doc.get("variable", []):
            merged["variable"].update(block)
    return merged


def _resolve(value, tf: dict):
    """Resolve a whole-string `${local.x}` / `${local.x.y}` / `${var.x}` (default) reference."""
    m = re.fullmatch(r"\$\{(local|var)\.([\w.]+)\}", value) if isinstance(value, str) else None
    if not m:
        return value
    kind, path = m.group(1), m.group(2).split(".")
    node = tf["locals"] if kind == "local" else {k: v.get("default") for k, v in tf["variable"].items()}
    for part in path:
        node = node[part]
    return _resolve(node, tf)


def _node_group(tf: dict) -> dict:
    groups = [body for res in tf["resource"] for body in res.get("aws_eks_node_group", {}).values()]
    assert len(groups) == 1, "expected exactly one aws_eks_node_group"
    return groups[0]


def _pool(tf: dict) -> tuple[dict, list[dict]]:
    group = _node_group(tf)
    labels = _resolve(group["labels"], tf)
    taints = [{k: _resolve(v, tf) for k, v in t.items()} for t in group["taint"]]
    return labels, taints


def _gpu_pod_settings(platform: dict) -> dict[str, tuple[dict, list]]:
    return {
        name: (ex.get("nodeSelector", {}).get("labels", {}), ex.get("tolerations", []))
        for name, ex in k8s_executors(platform).items()
    }


def _tolerates(toleration: dict, taint: dict) -> bool:
    """Kubernetes' rule: same key, effect empty or equal, Exists or Equal with the same value."""
    if toleration.get("key") != taint["key"]:
        return False
    if toleration.get("effect") and toleration["effect"] != EKS_EFFECT[taint["effect"]]:
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return True
    return toleration.get("value") == taint["value"]


def test_pool_autoscales_from_zero(tf):
    scaling = _node_group(tf)["scaling_config"][0]
    assert _resolve(scaling["min_size"], tf) == 0
    assert _resolve(scaling["desired_size"], tf) == 0
    assert _resolve(scaling["max_size"], tf) >= 1
    assert "scaling_config[0].desired_size" in str(_node_group(tf)["lifecycle"]), (
        "Terraform must not reset the autoscaler's desired size"
    )


def test_pool_is_tainted_for_nvidia_gpus_only(tf):
    _, taints = _pool(tf)
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"} in taints
    assert "NVIDIA" in _node_group(tf)["ami_type"]


@pytest.mark.parametrize("config", [None, "prod"], ids=["default-settings", "prod-run.yaml"])
def test_gpu_steps_select_the_pool_and_tolerate_its_taint(tf, config, tmp_path):
    run_config = K8S / "overlays" / config / "pipeline" / "run.yaml" if config else None
    _, platform = compile_ir(tmp_path, run_config)
    labels, taints = _pool(tf)
    settings = _gpu_pod_settings(platform)
    gpu_steps = {name for name, (selector, _) in settings.items() if selector}
    assert gpu_steps == {"exec-features", "exec-finetune"}, gpu_steps
    for name in gpu_steps:
        selector, tolerations = settings[name]
        assert selector.items() <= labels.items(), f"{name} selects {selector}, pool has labels {labels}"
        for taint in taints:
            assert any(_tolerates(t, taint) for t in tolerations), f"{name} does not tolerate {taint}"
    for name, (selector, tolerations) in settings.items():
        if name not in gpu_steps:  # CPU steps must never be scheduled onto (or wait for) GPU nodes
            assert not selector and not tolerations, name


def test_cpu_only_steps_would_not_tolerate_the_taint(tf):
    """Guard on the matcher: a toleration for another key or effect does not pass."""
    _, [taint] = _pool(tf)
    assert not _tolerates({"key": "other", "operator": "Exists"}, taint)
    assert not _tolerates({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}, taint)
    assert not _tolerates({"key": "nvidia.com/gpu", "operator": "Equal", "value": "absent"}, taint)
    assert _tolerates({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, taint)


def test_autoscaler_knows_labels_taint_and_gpu_of_a_node_it_has_not_started(tf):
    labels, [taint] = _pool(tf)
    tags = tf["locals"]["autoscaler_tags"]
    prefix = "k8s.io/cluster-autoscaler/node-template"
    for key, value in labels.items():
        assert tags[f"{prefix}/label/{key}"] == value
    assert tags[f"{prefix}/taint/{taint['key']}"] == f"{taint['value']}:{EKS_EFFECT[taint['effect']]}"
    assert int(tags[f"{prefix}/resources/nvidia.com/gpu"]) >= 1
    tag_resources = [body for res in tf["resource"] for body in res.get("aws_autoscaling_group_tag", {}).values()]
    assert tag_resources and tag_resources[0]["for_each"] == "${local.autoscaler_tags}"


def test_variables_have_descriptions_and_the_example_sets_every_required_one(tf):
    required = {name for name, body in tf["variable"].items() if "default" not in body}
    assert required == {"region", "cluster_name", "subnet_ids"}
    assert all(body.get("description") for body in tf["variable"].values())
    example = (TF_DIR / "terraform.tfvars.example").read_text()
    for name in required:
        assert re.search(rf"^{name}\s*=", example, re.M), name
