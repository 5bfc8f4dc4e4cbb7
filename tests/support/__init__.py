"""Shared test support: ports, waiting for servers, stopping process groups, real images and dataset folders,
candidate step folders with known accuracies, the MLflow test server's description.

Importable from every test (pytest puts ``tests/`` on ``sys.path``, see ``pythonpath`` in pyproject.toml), so
no test imports another test module's private helpers.
"""

from support.candidates import (
    CLASSES,
    EPOCH_0_MS,
    IMAGE_SIZE,
    Candidate,
    build_candidate,
    build_red_blue_dataset,
    build_val_test_disagree_dataset,
    expected_accuracy,
    red_values,
    threshold_model,
    write_candidate_folders,
)
from support.datasets import build_tiny_dataset, tree_hashes, write_dataset
from support.images import encode, exif_jpeg, photo, write_image
from support.limits import as_unprivileged, call_in_child, limit_file_size, small_filesystem, temp_leftovers
from support.local_runs import local_run_env
from support.mlflow_server import S3_KEY_ID, S3_SECRET, VENV_BIN, Server, server_command, server_sh
from support.net import free_port, wait_http
from support.procs import processes_mentioning, stop_process_group, wait_until_gone

__all__ = [
    "CLASSES",
    "EPOCH_0_MS",
    "IMAGE_SIZE",
    "S3_KEY_ID",
    "S3_SECRET",
    "VENV_BIN",
    "Candidate",
    "Server",
    "as_unprivileged",
    "build_candidate",
    "build_red_blue_dataset",
    "build_val_test_disagree_dataset",
    "build_tiny_dataset",
    "call_in_child",
    "encode",
    "exif_jpeg",
    "expected_accuracy",
    "free_port",
    "limit_file_size",
    "local_run_env",
    "photo",
    "processes_mentioning",
    "red_values",
    "server_command",
    "server_sh",
    "small_filesystem",
    "stop_process_group",
    "temp_leftovers",
    "threshold_model",
    "tree_hashes",
    "wait_http",
    "wait_until_gone",
    "write_candidate_folders",
    "write_dataset",
    "write_image",
]
