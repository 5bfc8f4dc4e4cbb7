"""bakeoff.env is the one module that reads the environment; the README's table lists exactly its variables."""

from __future__ import annotations

import ast
import inspect
import os
import re
from pathlib import Path

import pytest

from bakeoff import env

ROOT = Path(__file__).resolve().parents[1]

# Being split by another helper right now; the lead switches them to bakeoff.env at merge and removes them here.
# os.environ may be WRITTEN for child processes (pipelines/local.py): item assignment, del, setdefault, update.
WRITES = ("setdefault", "update")


def _accessors() -> dict:
    """env's public no-argument functions that return a variable's value."""
    skip = {"snapshot", "reference_table", "quiet_libraries"}  # quiet_libraries sets variables, reads none
    return {
        name: func
        for name, func in inspect.getmembers(env, inspect.isfunction)
        if func.__module__ == env.__name__ and not name.startswith("_") and name not in skip
        if not inspect.signature(func).parameters
    }


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No bakeoff variable set, and a throwaway HOME so `~/.cache` is predictable."""
    for name in env.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


# ---------------------------------------------------------------------------------------- (1) the README


def test_readme_lists_exactly_the_registry():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([A-Z0-9_]+)` \|", section, re.M)
    assert sorted(listed) == sorted(env.VARIABLES)
    assert env.reference_table() in section, "README's table is stale: paste `python -m bakeoff.env`"


def test_every_variable_the_code_wires_or_names_is_registered():
    """Pod env from the ConfigMap/Secrets and the CLI options' envvar= all use registered names."""
    from typer.main import get_command

    from bakeoff.cli import app
    from pipelines import factory

    wired = {*factory.CONFIG_MAP_ENV, *factory.S3_SECRET_ENV, *factory.MLFLOW_SECRET_ENV}
    assert wired <= set(env.VARIABLES)
    group = get_command(app)
    commands = [c for cmd in group.commands.values() for c in getattr(cmd, "commands", {cmd.name: cmd}).values()]
    envvars = {p.envvar for c in commands for p in c.params if p.envvar}
    assert envvars and envvars <= set(env.VARIABLES)
    for variable in env.VARIABLES.values():
        if variable.reader.startswith("CLI option"):
            assert variable.name in envvars, variable.name


# ---------------------------------------------------------------------------------------- (2) nobody else reads


def _environment_reads(path: Path) -> list[str]:
    """`os.getenv`, `from os import environ`, and every use of `os.environ` that is not a write."""
    tree = ast.parse(path.read_text(), str(path))
    label = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        where = f"{label}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"{where} from os import {a.name}" for a in node.names if a.name in ("environ", "getenv")]
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"):
            continue
        if node.attr in ("getenv", "getenvb"):
            found.append(f"{where} os.{node.attr}")
        elif node.attr == "environ":
            parent = parents.get(node)
            written = isinstance(parent, ast.Subscript) and isinstance(parent.ctx, (ast.Store, ast.Del))
            called = isinstance(parent, ast.Attribute) and parent.attr in WRITES
            if not (written or (called and isinstance(parents.get(parent), ast.Call))):
                found.append(f"{where} os.environ read")
    return found


def test_only_bakeoff_env_reads_the_environment():
    files = [p for folder in ("bakeoff", "components", "pipelines") for p in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 20
    offenders = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rel == "bakeoff/env.py":
            continue
        offenders += _environment_reads(path)
    assert offenders == []


def test_the_scanner_sees_reads_and_allows_writes(tmp_path):
    """The guard above can fail: each read form is caught, each write for a child process is not."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nfrom os import getenv\n"
        "a = os.environ.get('X')\nb = os.environ['X']\nc = os.getenv('X')\nd = {**os.environ}\ne = 'X' in os.environ\n"
        "os.environ['X'] = '1'\nos.environ.setdefault('Y', '1')\ndel os.environ['X']\n"
    )
    found = _environment_reads(sample)
    assert sorted(f.split(":")[1].split()[0] for f in found) == ["2", "3", "4", "5", "6", "7"]


# ---------------------------------------------------------------------------------------- (3) the accessors


def test_defaults_when_nothing_is_set(clean_env):
    cache = clean_env / "home" / ".cache" / "bakeoff"
    assert env.cache_dir("x") == cache / "x"
    assert env.feature_cache_uri() == str(cache / "features")
    assert env.decoded_cache_dir() == str(cache / "decoded")
    assert env.image_cache_dir() == cache / "images"
    assert env.weights_cache_dir() == cache / "weights"
    assert env.progress_enabled() is True
    for name in ("weights_mirror_uri", "tracking_uri", "git_commit", "s3_endpoint_url", "aws_region", "kfp_token"):
        assert getattr(env, name)() is None, name


def test_xdg_cache_home_moves_every_cache(clean_env, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(clean_env / "xdg"))
    assert env.feature_cache_uri() == str(clean_env / "xdg" / "bakeoff" / "features")
    assert env.image_cache_dir() == clean_env / "xdg" / "bakeoff" / "images"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # empty counts as unset (XDG spec), not as the current folder
    assert env.weights_cache_dir() == clean_env / "home" / ".cache" / "bakeoff" / "weights"


@pytest.mark.parametrize(
    "variable, value, accessor, expected",
    [
        ("BAKEOFF_WEIGHTS_URI", "s3://b/weights", "weights_mirror_uri", "s3://b/weights"),
        ("BAKEOFF_CACHE_URI", "s3://b/features", "feature_cache_uri", "s3://b/features"),
        ("BAKEOFF_DECODED_CACHE", "/p", "decoded_cache_dir", "/p"),
        ("BAKEOFF_DECODED_CACHE", "off", "decoded_cache_dir", None),
        ("BAKEOFF_DECODED_CACHE", "FALSE", "decoded_cache_dir", None),
        ("BAKEOFF_IMAGE_CACHE", "/i", "image_cache_dir", Path("/i")),
        ("BAKEOFF_WEIGHTS_CACHE", "/w", "weights_cache_dir", Path("/w")),
        ("BAKEOFF_NO_PROGRESS", "1", "progress_enabled", False),
        ("BAKEOFF_NO_PROGRESS", "0", "progress_enabled", True),
        ("BAKEOFF_NO_PROGRESS", "", "progress_enabled", True),
        ("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000", "tracking_uri", "http://127.0.0.1:5000"),
        ("MLFLOW_TRACKING_URI", "", "tracking_uri", None),
        ("BAKEOFF_GIT_COMMIT", "abc123", "git_commit", "abc123"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000", "s3_endpoint_url", "http://127.0.0.1:9000"),
        ("AWS_REGION", "eu-west-1", "aws_region", "eu-west-1"),
        ("KF_PIPELINES_TOKEN", "t0ken", "kfp_token", "t0ken"),
    ],
)
def test_accessors_honour_their_variable(clean_env, monkeypatch, variable, value, accessor, expected):
    monkeypatch.setenv(variable, value)
    assert getattr(env, accessor)() == expected


def test_the_more_specific_aws_variable_wins(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://general:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-only:2")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    assert env.s3_endpoint_url() == "http://s3-only:2" and env.aws_region() == "us-west-2"
    from bakeoff import storage

    client = storage.s3_client()  # the reader really takes them from here
    assert client.meta.endpoint_url == "http://s3-only:2" and client.meta.region_name == "us-west-2"


def test_every_variable_bakeoff_reads_has_an_accessor_that_honours_it(clean_env, monkeypatch):
    """A registered variable that no accessor reads would be a lie in the README."""
    accessors = _accessors()
    baseline = {name: func() for name, func in accessors.items()}
    for variable in env.VARIABLES.values():
        if variable.reader != "bakeoff":
            continue
        with monkeypatch.context() as patch:
            patch.setenv(variable.name, str(clean_env / "set-by-test"))
            changed = [name for name, func in accessors.items() if func() != baseline[name]]
        assert changed, f"no accessor in bakeoff.env reads {variable.name}"


def test_snapshot_survives_another_thread_changing_the_environment():
    """MLflow's telemetry thread sets and removes a variable while a step copies the environment; the copy used to
    raise KeyError now and then (a flaky pipeline step). 20,000 copies against a thread that churns variables:
    with ``dict(os.environ)`` about 1% raise here; the snapshot never does, and never returns a removed key."""
    import threading

    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            os.environ[f"_BAKEOFF_CHURN_{i % 50}"] = "x"
            os.environ.pop(f"_BAKEOFF_CHURN_{(i + 25) % 50}", None)
            i += 1

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        copies = [env.snapshot() for _ in range(20_000)]
    finally:
        stop.set()
        thread.join()
        for i in range(50):
            os.environ.pop(f"_BAKEOFF_CHURN_{i}", None)
    assert all(value == "x" for copy in copies for key, value in copy.items() if key.startswith("_BAKEOFF_CHURN_"))
    assert all("PATH" in copy for copy in copies)
