"""Shared fixtures: tiny real images, a real S3-compatible server on 127.0.0.1, the offline weights mirror, and the
red/blue dataset with its candidate step folders of known accuracy (tests/tracking and tests/components use them).

Each area's own fixtures live in its test folder's conftest (tests/ingest/, tests/models/, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support import Candidate, build_candidate, build_red_blue_dataset, free_port, write_image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def make_image():
    """Factory: make_image(path, size=(w, h), color=(r, g, b), fmt=None, seed=0, mode='RGB') -> Path."""
    return write_image


@pytest.fixture
def s3_server(monkeypatch):
    """A real moto S3 server process thread on 127.0.0.1 with the AWS environment pointed at it.

    Yields the endpoint URL; the bucket ``bakeoff-test`` exists.
    """
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing-key-id",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bakeoff-test")
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="session")
def weights_mirror(tmp_path_factory) -> str:
    """A weights mirror with the real offline pretrained weights (MobileNetV2 ImageNet, VGG16 HED).

    Uses BAKEOFF_WEIGHTS_URI when it already holds them (``make weights`` fills it), else imports
    into a session temp folder with ``bakeoff.weights_import.run`` (what `bakeoff weights import` calls).
    """
    from bakeoff import weights_import

    existing = os.environ.get("BAKEOFF_WEIGHTS_URI")
    if existing and Path(existing, ".imported").exists():
        return existing
    mirror = tmp_path_factory.mktemp("weights-mirror")
    for name in ("mobilenet_v2", "vgg16_hed"):
        weights_import.run(name, str(mirror))
    return str(mirror)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    """The red/blue dataset folder (support.candidates): 10 train, 10 val, 100 test images of known redness."""
    return build_red_blue_dataset(tmp_path_factory.mktemp("dataset"))


@pytest.fixture(scope="session")
def candidates(tmp_path_factory, dataset):
    """Factory with a cache: candidates(threshold, pretrained=True) -> Candidate (built once per session)."""
    cache: dict = {}
    base = tmp_path_factory.mktemp("candidates")

    def get(threshold: float, pretrained: bool = True, backbone: str = "mobilenet_v2") -> Candidate:
        key = (threshold, pretrained, backbone)
        if key not in cache:
            cache[key] = build_candidate(
                base / f"{backbone}-{threshold}-{pretrained}",
                dataset,
                threshold,
                pretrained=pretrained,
                backbone=backbone,
            )
        return cache[key]

    return get


@pytest.fixture
def model_name(request) -> str:
    """A registered-model name unique to the test, so tests never see each other's champion."""
    return "bakeoff-" + request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:60]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skip is a failure: a skipped test there means a missing install step, not an optional extra."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every default test must run: {report.longrepr}"
