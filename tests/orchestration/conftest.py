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
