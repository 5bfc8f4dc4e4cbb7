"""Every image the infra deploys or builds from is pinned: an explicit version tag (never `latest`, never a
major-only tag such as `postgres:16`, which moves with every minor release) or a sha256 digest.

Scanned: every container and init container of every rendered kustomization, every `image:` in the raw
manifests under infra/ (the base's placeholder `bakeoff` only where every overlay maps it to a tag or
digest), each overlay's `images:` entries, and the Dockerfile's base image default.
"""

from __future__ import annotations

import re

import pytest
import yaml
from infra_helpers import K8S, KUSTOMIZATIONS, OVERLAYS, ROOT, kustomize, pod_specs

PLACEHOLDER = "bakeoff"  # the base manifests' image name; each overlay's `images:` sets the real one
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
VERSION = re.compile(r"\d+\.\d+")  # at least major.minor in the tag


def pin_problem(ref: str) -> str | None:
    """Why ``ref`` is not pinned, or None."""
    name, _, digest = ref.partition("@")
    if digest and not DIGEST.search(ref):
        return f"{ref}: malformed digest"
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    if tag == "latest":
        return f"{ref}: `latest` moves"
    if digest:
        return None
    if not tag:
        return f"{ref}: no tag (means latest)"
    if not VERSION.search(tag):
        return f"{ref}: tag {tag!r} names no major.minor version"
    return None


def _images(objects: list[dict]):
    for obj, spec in pod_specs(objects):
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}", container["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_container_image_is_pinned(overlay):
    found = list(_images(kustomize(K8S / "overlays" / overlay)))
    assert len(found) >= 5
    problems = [f"{where}: {problem}" for where, image in found if (problem := pin_problem(image))]
    assert not problems, problems


def test_raw_manifests_use_pinned_images_or_the_overlay_mapped_placeholder():
    for path in sorted((ROOT / "infra").rglob("*.y*ml")):
        for line in path.read_text().splitlines():
            m = re.match(r"\s*(?:-\s*)?image:\s*(\S+)", line)
            if m and m.group(1) != PLACEHOLDER:
                assert not pin_problem(m.group(1)), f"{path.relative_to(ROOT)}: {pin_problem(m.group(1))}"
    for path in KUSTOMIZATIONS:
        for entry in yaml.safe_load((path / "kustomization.yaml").read_text()).get("images", []):
            ref = f"{entry.get('newName', entry['name'])}:{entry['newTag']}" if "newTag" in entry else entry["name"]
            if "digest" in entry:
                ref = f"{entry.get('newName', entry['name'])}@{entry['digest']}"
            assert not pin_problem(ref), f"{path.relative_to(ROOT)} images: {pin_problem(ref)}"
    for overlay in OVERLAYS:
        rendered = [image for _, image in _images(kustomize(K8S / "overlays" / overlay))]
        assert PLACEHOLDER not in rendered, f"overlay {overlay} leaves the placeholder image unmapped"


def test_dockerfile_base_image_default_is_pinned():
    [default] = re.findall(r"^ARG BASE_IMAGE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert not pin_problem(default), pin_problem(default)


def test_pin_rule_rejects_floating_references():
    """Guard: the rule can fail."""
    for ref in ("postgres", "postgres:latest", "postgres:16-bookworm", "python:3-slim", "x:latest@sha256:" + "a" * 64):
        assert pin_problem(ref), ref
    for ref in ("postgres:16.9-bookworm", "reg.io:5000/team/bakeoff:0.1.0-cpu", "postgres@sha256:" + "0" * 64):
        assert pin_problem(ref) is None, ref
