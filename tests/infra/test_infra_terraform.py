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


# ---------------------------------------------------------------- conventions: fmt, state backend, lock

HCL_FILES = sorted(p for p in TF_DIR.iterdir() if p.is_file() and not p.name.endswith(".md"))


@pytest.mark.parametrize("path", HCL_FILES, ids=lambda p: p.name)
def test_file_is_terraform_fmt_clean(path):
    """What hcl_format.py (a re-implementation of terraform fmt's rules) would write is what is committed."""
    import hcl2
    from hcl_format import format_hcl

    text = path.read_text()
    hcl2.loads(text)  # parses
    assert "\t" not in text and text.endswith("\n") and not text.endswith("\n\n")
    formatted = format_hcl(text)
    diff = [
        f"{i + 1}: {a!r} -> {b!r}" for i, (a, b) in enumerate(zip(text.split("\n"), formatted.split("\n"))) if a != b
    ]
    assert formatted == text, f"{path.name} is not fmt-clean:\n" + "\n".join(diff)


def test_fmt_checker_rewrites_what_terraform_fmt_rewrites():
    """Guard: misaligned `=`, wrong indentation, spaces inside brackets, a lone comment alignment."""
    from hcl_format import format_hcl

    messy = 'locals {\n    a = 1\n  long_name = [ "x" , "y" ]\n  obj = {k=1}\n  b = 2 # two\n  cc = 3   # three\n}\n'
    assert format_hcl(messy) == (
        "locals {\n"
        "  a         = 1\n"
        '  long_name = ["x", "y"]\n'
        "  obj       = { k = 1 }\n"
        "  b         = 2 # two\n"
        "  cc        = 3 # three\n"
        "}\n"
    )
    # a blank line, a comment-only line or a block ends an alignment run
    separate = "x = 1\n\nlonger = 2\n# note\ny = 3\nz {\n  q = 1\n}\n"
    assert format_hcl(separate) == separate
    with pytest.raises(ValueError):
        format_hcl("x = <<EOT\nhello\nEOT\n")


def test_state_lives_in_a_remote_backend_configured_at_init():
    import hcl2

    versions = hcl2.loads((TF_DIR / "versions.tf").read_text())
    [terraform] = versions["terraform"]
    [backend] = terraform["backend"]
    assert list(backend) == ['"s3"'] or list(backend) == ["s3"], backend
    settings = next(iter(backend.values()))
    assert not {k for k in settings if not k.startswith("__")}, "partial configuration: settings go in backend.hcl"
    example = _unquote(hcl2.loads((TF_DIR / "backend.hcl.example").read_text()))
    assert {"bucket", "key", "region"} <= set(example) and example["encrypt"] is True
    assert example["use_lockfile"] is True, "state locking"
    assert re.fullmatch(r">= ?1\.(1\d|[2-9]\d)", _unquote(terraform["required_version"])), "use_lockfile needs >= 1.10"
    assert "-backend-config=backend.hcl" in (ROOT / "docs" / "infra.md").read_text()


def test_providers_are_pinned_exactly_and_locked_with_checksums():
    import hcl2

    [terraform] = hcl2.loads((TF_DIR / "versions.tf").read_text())["terraform"]
    [providers] = terraform["required_providers"]
    lock = _unquote(hcl2.loads((TF_DIR / ".terraform.lock.hcl").read_text()))
    locked = {
        address.rsplit("/", 2)[-2] + "/" + address.rsplit("/", 1)[-1]: body
        for p in lock["provider"]
        for address, body in p.items()
    }
    providers = _unquote(providers)  # also drops the parser's __is_block__ marker
    providers = {k: v for k, v in providers.items() if not k.startswith("__")}
    assert providers
    for name, spec in providers.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", spec["version"]), f"{name}: pin an exact version, not {spec['version']}"
        entry = locked[spec["source"]]
        assert entry["version"] == spec["version"] and entry["constraints"] == spec["version"]
        zh = [h for h in entry["hashes"] if h.startswith("zh:")]
        assert len(zh) >= 10 and all(re.fullmatch(r"zh:[0-9a-f]{64}", h) for h in zh), "registry package checksums"
