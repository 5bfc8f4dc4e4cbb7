"""Shared test support: ports, waiting for servers, stopping process groups, real images and dataset folders.

Importable from every test (pytest puts ``tests/`` on ``sys.path``, see ``pythonpath`` in pyproject.toml), so
no test imports another test module's private helpers.
"""

from support.datasets import build_tiny_dataset, write_dataset
from support.images import encode, exif_jpeg, photo, write_image
from support.net import free_port, wait_http
from support.procs import stop_process_group

__all__ = [
    "build_tiny_dataset",
    "encode",
    "exif_jpeg",
    "free_port",
    "photo",
    "stop_process_group",
    "wait_http",
    "write_dataset",
    "write_image",
]
