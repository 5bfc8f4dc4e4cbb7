"""The cluster path as the README writes it (issue 11 item 1): its lines run as written against the loopback KFP
API; images a remote cluster cannot pull are refused before any request; the run form and graph read well."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from kfp_ir import parse_compiled

from bakeoff.cli import main
from pipelines import factory
from pipelines.client import check_images_for, image_problem, is_loopback, package_images
from pipelines.settings import Parameters

from support import free_port

ROOT = Path(__file__).resolve().parents[2]
REMOTE = "https://kubeflow.example.com/pipeline"

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _readme_cluster_block() -> list[str]:
    """The shell lines of the README's "From laptop to cluster" code block."""
    section = (ROOT / "README.md").read_text().split("## From laptop to cluster", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [line for line in block.splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def _no_endpoint(monkeypatch):
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)


def test_readme_cluster_block_runs_as_written(kfp_server, tmp_path, monkeypatch, capsys):
    """Every `bakeoff` and `export` line, as written; only the endpoint's value points at the loopback server."""
    monkeypatch.chdir(tmp_path)
    lines = _readme_cluster_block()
    ran = []
    for line in lines:
        argv = shlex.split(line, comments=True)
        if argv[0] == "export":
            name, value = argv[1].split("=", 1)
            assert (name, value) == ("KF_PIPELINES_ENDPOINT", REMOTE)
            monkeypatch.setenv(name, kfp_server.url)  # the one substitution: no cluster here
        elif argv[0] == "bakeoff":
            code = main(argv[1:])
            assert code == 0, f"{line!r} exited {code}: {capsys.readouterr().err}"
            ran.append(argv[1])
    assert ran == ["compile", "submit", "schedule"]
    # what reached "the cluster": the README's image in every task, a run and a weekly recurring run
    images = package_images(tmp_path / "pipeline.yaml")
    assert images == ["registry.example.com/bakeoff:0.1.0"]
    check_images_for(REMOTE, images)  # the real remote host would accept this package too
    assert all(b"registry.example.com/bakeoff:0.1.0" in upload for upload in kfp_server.uploads)
    [run] = kfp_server.calls("POST", "/runs")
    assert run.json["runtime_config"]["parameters"]["backbones"] == ["mobilenet_v2", "resnet50", "efficientnet_v2_b0"]
    [recurring] = kfp_server.calls("POST", "/recurringruns")
    assert recurring.json["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    # the other lines name files and targets that exist
    for line in lines:
        argv = shlex.split(line, comments=True)
        if argv[0] == "cp":
            assert (ROOT / argv[1]).is_file(), line
        if argv[0] == "terraform":
            assert (ROOT / argv[1].removeprefix("-chdir=")).is_dir(), line
        if argv[:2] == ["kubectl", "apply"]:
            assert (ROOT / argv[3] / "kustomization.yaml").is_file(), line
        if argv[0] == "make":
            assert re.search(rf"^{argv[1]}:", (ROOT / "Makefile").read_text(), re.M), line


@pytest.mark.parametrize(
    "image, problem",
    [
        ("localhost/bakeoff-python:0.1.0", "localhost/"),
        ("localhost:5000/bakeoff:1", "localhost/"),
        ("bakeoff:0.1.0", "no registry host"),
        ("team/bakeoff:0.1.0", "no registry host"),
        ("registry.example.com/bakeoff:0.1.0", None),
        ("registry:5000/team/bakeoff@sha256:" + "0" * 64, None),
    ],
)
def test_image_problem(image, problem):
    found = image_problem(image)
    assert (found is None) if problem is None else (problem in found)


@pytest.mark.parametrize(
    "host, loopback",
    [("http://127.0.0.1:8888", True), ("http://localhost:8080/pipeline", True), ("http://[::1]:80", True),
     (REMOTE, False), ("http://10.0.0.5:8888", False)],
)  # fmt: skip
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_remote_host_refuses_an_unpullable_image_before_any_request(command, tmp_path, capsys):
    """No --image: the default localhost/ image; a host nothing listens on shows no request was tried."""
    remote = f"http://10.255.255.1:{free_port()}/pipeline"  # not loopback; a request would fail "cannot reach"
    extra = ["--cron", "0 3 * * 1"] if command == "schedule" else []
    assert main([command, "--host", remote, "--data", "s3://b/raw", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: image localhost/bakeoff-python:0.1.0 is under localhost/")
    assert "--image REGISTRY/NAME:TAG" in err and "cannot reach" not in err
    # a package compiled with a local image is refused the same way
    assert main(["compile", "--image", "bakeoff:dev", "--out", str(tmp_path / "p.yaml")]) == 0
    capsys.readouterr()
    assert main([command, "--host", remote, "--package", str(tmp_path / "p.yaml"), "--data", "s3://b/raw", *extra]) == 2
    assert "image bakeoff:dev names no registry host" in capsys.readouterr().err


def test_submit_and_schedule_compile_with_the_image_options(kfp_server, tmp_path, capsys):
    """The same --image/--gpu-image/--parallelism as compile; with --package they are a usage error."""
    cpu, gpu = "registry.example.com/bakeoff:0.2.0", "registry.example.com/bakeoff-cuda:0.2.0"
    argv = ["--host", kfp_server.url, "--data", "s3://b/raw", "--image", cpu, "--gpu-image", gpu]
    assert main(["submit", *argv, "--parallelism", "3"]) == 0
    assert main(["schedule", *argv, "--cron", "0 3 * * 1"]) == 0
    for upload in kfp_server.uploads:
        package = tmp_path / "uploaded.yaml"
        package.write_bytes(upload)
        assert package_images(package) == sorted([cpu, gpu])
    assert b"parallelismLimit: 3" in kfp_server.uploads[0]
    capsys.readouterr()
    assert main(["submit", "--host", kfp_server.url, "--package", "p.yaml", "--image", cpu, "--data", "s3://b"]) == 2
    assert "--image apply when compiling" in capsys.readouterr().err
    for opts in (["compile", "--help"], ["submit", "--help"], ["schedule", "--help"]):
        assert main(opts) == 0
        text = capsys.readouterr().out
        assert "--image" in text and "--gpu-image" in text and "--parallelism" in text


def test_compile_warns_about_an_unpullable_image_and_writes_to_stdout(tmp_path, capsys):
    assert main(["compile", "--out", str(tmp_path / "local.yaml")]) == 0
    out = capsys.readouterr()
    warnings = [line for line in out.err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: image localhost/bakeoff-python:0.1.0 is under localhost/, which only this machine has: "
        "no cluster can pull it; pass --image REGISTRY/NAME:TAG"
    ]
    assert main(["compile", "--image", "registry.example.com/bakeoff:1", "--out", "-"]) == 0
    out = capsys.readouterr()
    assert "warning" not in out.err
    docs = list(yaml.safe_load_all(out.out))  # stdout is the pipeline itself, nothing else
    assert len(docs) == 2 and docs[0]["pipelineInfo"]["name"] == "bakeoff"
    package = tmp_path / "stdout.yaml"
    package.write_text(out.out)
    spec, _ = parse_compiled(package)
    assert spec.root.dag.tasks


def test_run_form_descriptions_are_real_and_the_graph_is_readable(tmp_path):
    """Each parameter's description says more than its name; data_uri says it is required; tasks have titles."""
    for name, field in Parameters.model_fields.items():
        words = re.findall(r"[a-z0-9]+", (field.description or "").lower())
        assert len(set(words) - set(name.split("_"))) >= 4, f"{name}: {field.description!r} merely repeats it"
    assert Parameters.model_fields["data_uri"].description.startswith("REQUIRED")
    assert main(["compile", "--out", str(tmp_path / "p.yaml")]) == 0
    spec, _ = parse_compiled(tmp_path / "p.yaml")
    shown = {}

    def walk(dag):
        for key, task in dag.tasks.items():
            shown[key] = task.task_info.name
            component = spec.components[task.component_ref.name]
            if component.HasField("dag"):
                walk(component.dag)

    walk(spec.root.dag)
    for step, title in factory.DISPLAY_NAMES.items():
        key = step.replace("_", "-")
        assert shown[key] == title, (key, shown.get(key))
        assert " " in title and title[0].isupper()
