"""Fixtures for the infra tests: rendered kustomize overlays and the compiled pipeline they must match.

Everything here runs offline: `kubectl kustomize` (Debian's kubernetes-client) renders the overlays
without a cluster, and the pipeline is compiled with the real KFP compiler.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from infra_helpers import IMAGE, K8S, OVERLAYS, ROOT, compile_ir, kustomize, podman_env


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """{overlay name: rendered objects} for every overlay under infra/k8s/overlays/."""
    assert OVERLAYS, "no overlays under infra/k8s/overlays"
    return {name: kustomize(K8S / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def compiled(tmp_path_factory) -> tuple[dict, dict]:
    """The pipeline compiled with its default settings."""
    return compile_ir(tmp_path_factory.mktemp("compiled"))


@pytest.fixture(scope="session")
def built_image() -> dict:
    """`make image` (idempotent: layer cache), timed; the image's size from podman. For slow tests only."""
    missing = [tool for tool in ("podman", "buildah", "runc", "make") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: apt-get install -y podman buildah runc debootstrap")
    start = time.monotonic()
    out = subprocess.run(
        ["make", "image", f"IMAGE={IMAGE}"], cwd=ROOT, env=podman_env(), capture_output=True, text=True
    )
    seconds = time.monotonic() - start
    assert out.returncode == 0, f"make image failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    size = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", IMAGE],
        env=podman_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"\nmake image: {seconds:.0f} s, {IMAGE} {int(size) / 1e9:.2f} GB")
    return {"seconds": seconds, "bytes": int(size)}
