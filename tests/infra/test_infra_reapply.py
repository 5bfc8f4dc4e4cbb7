"""`kubectl apply -k` again after a change must work without deleting anything by hand.

Each case copies infra/k8s, changes one setting an operator changes (the cron, the run form, the image
tag), renders both trees with `kubectl kustomize` and compares every object that keeps its kind,
namespace and name: a change to a field the API server refuses to update (a Job's pod template, a
selector, a StatefulSet's volume claims, ...) would make the second apply fail. The recurring run is a
suspended CronJob (mutable template) for exactly this reason; a guard shows the old plain Job fails.
"""

from __future__ import annotations

import shutil

import pytest
import yaml
from infra_helpers import K8S, find, kustomize, schedule_job

# Fields `kubectl apply` cannot change in place, per kind (paths under .spec).
IMMUTABLE = {
    "Job": [("selector",), ("template",), ("completionMode",)],
    "Deployment": [("selector",)],
    "DaemonSet": [("selector",)],
    "StatefulSet": [("selector",), ("serviceName",), ("volumeClaimTemplates",), ("podManagementPolicy",)],
    "Service": [("clusterIP",), ("type",)],
    "PersistentVolumeClaim": [("accessModes",), ("storageClassName",), ("volumeName",)],
}


def _get(obj: dict, path: tuple[str, ...]):
    node = obj.get("spec", {})
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def immutable_changes(before: list[dict], after: list[dict]) -> list[str]:
    """'Kind ns/name .spec.field' for every update the API server would refuse."""
    key = lambda o: (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])  # noqa: E731
    old = {key(o): o for o in before}
    problems = []
    for obj in after:
        prev = old.get(key(obj))
        if prev is None:
            continue  # a new name (e.g. a hash-suffixed ConfigMap) is a create, not an update
        if obj["kind"] in ("ConfigMap", "Secret") and prev.get("immutable") and prev.get("data") != obj.get("data"):
            problems.append(f"{obj['kind']} {key(obj)[1]}/{key(obj)[2]} .data (immutable: true)")
        for path in IMMUTABLE.get(obj["kind"], []):
            if _get(prev, path) != _get(obj, path):
                problems.append(f"{obj['kind']} {key(obj)[1]}/{key(obj)[2]} .spec.{'.'.join(path)}")
    return problems


def _edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


CHANGES = {
    "cron": [("overlays/prod/pipeline/kustomization.yaml", 'value: "0 0 2 * * *"', 'value: "0 30 4 * * *"')],
    "run-form": [("overlays/prod/pipeline/run.yaml", "head_epochs: 50", "head_epochs: 60")],
    "image-tag": [
        ("overlays/prod/pipeline/kustomization.yaml", "newTag: 0.1.0-cpu", "newTag: 0.1.1-cpu"),
        ("overlays/prod/pipeline/run.yaml", "bakeoff:0.1.0-cpu", "bakeoff:0.1.1-cpu"),
        ("overlays/prod/tracking/kustomization.yaml", "newTag: 0.1.0-cpu", "newTag: 0.1.1-cpu"),
    ],
    "backup-bucket": [("overlays/prod/tracking/kustomization.yaml", "acme-bakeoff-prod/backups", "acme-dr/backups")],
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_reapplying_a_changed_overlay_updates_in_place(change, tmp_path, rendered):
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    for rel, old, new in CHANGES[change]:
        _edit(tree / rel, old, new)
    after = kustomize(tree / "overlays" / "prod")
    before = rendered["prod"]
    assert yaml.safe_dump_all(after) != yaml.safe_dump_all(before), "the change changed nothing: a vacuous test"
    assert not immutable_changes(before, after)
    # and the scheduling Job made from the updated CronJob carries the change
    if change in ("run-form", "image-tag"):
        assert schedule_job(after)["spec"]["template"] != schedule_job(before)["spec"]["template"]


def test_the_schedule_is_a_suspended_cronjob_whose_jobs_are_valid():
    import kubernetes_validate

    for overlay in ("dev", "prod"):
        objects = kustomize(K8S / "overlays" / overlay)
        [cron] = find(objects, "CronJob", "bakeoff-schedule")
        assert cron["spec"]["suspend"] is True, "it must never fire by itself: only `kubectl create job --from`"
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        assert not find(objects, "Job"), "no plain Job: its pod template could not be re-applied"
        kubernetes_validate.validate(schedule_job(objects), "1.37.0", strict=True)


def test_the_check_catches_a_plain_job_whose_template_changed(tmp_path):
    """Guard: the previous design (a plain Job `bakeoff-schedule` mounting the hash-named run ConfigMap)."""
    job = schedule_job(kustomize(K8S / "overlays" / "prod"))
    job["metadata"] = {"name": "bakeoff-schedule"}
    for volume in job["spec"]["template"]["spec"]["volumes"]:
        if volume["name"] == "run-config":
            volume["configMap"]["name"] = "bakeoff-run"  # as in the base, before kustomize adds the hash
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    (tmp_path / "run.yaml").write_text("parameters: {head_epochs: 50}\n")
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [job.yaml]\nconfigMapGenerator:\n  - name: bakeoff-run\n    files: [run.yaml]\n"
    )
    before = kustomize(tmp_path)
    (tmp_path / "run.yaml").write_text("parameters: {head_epochs: 60}\n")
    after = kustomize(tmp_path)
    assert immutable_changes(before, after) == ["Job /bakeoff-schedule .spec.template"]
