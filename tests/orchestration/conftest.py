"""Fixtures for the orchestration tests: a loopback KFP API server."""

from __future__ import annotations

import pytest


@pytest.fixture
def kfp_server():
    """A loopback KFP v2beta1 REST server (kfp_api.py beside this file) that records every request."""
    import kfp_api

    api = kfp_api.start()
    try:
        yield api
    finally:
        api.server.shutdown()
        api.server.server_close()


DEMO_CLASSES = "sneaker,bag,trouser"


@pytest.fixture(scope="session")
def demo_raw(tmp_path_factory):
    """A small real raw dump (bakeoff.demo_data: Italian class folders + translate.json), 12 images per class."""
    from bakeoff.demo_data import make_demo_data

    root = tmp_path_factory.mktemp("demo-raw")
    return make_demo_data(str(root), per_class=12, classes=DEMO_CLASSES)
