"""Fixtures for the infra tests: rendered kustomize overlays and the compiled pipeline they must match.

Everything here runs offline: `kubectl kustomize` (Debian's kubernetes-client) renders the overlays
without a cluster, and the pipeline is compiled with the real KFP compiler.
"""

from __future__ import annotations

import pytest

from infra_helpers import K8S, OVERLAYS, compile_ir, kustomize


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """{overlay name: rendered objects} for every overlay under infra/k8s/overlays/."""
    assert OVERLAYS, "no overlays under infra/k8s/overlays"
    return {name: kustomize(K8S / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def compiled(tmp_path_factory) -> tuple[dict, dict]:
    """The pipeline compiled with its default settings."""
    return compile_ir(tmp_path_factory.mktemp("compiled"))
