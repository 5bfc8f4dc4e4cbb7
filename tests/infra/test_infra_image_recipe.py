"""Fast checks of the image recipe (the slow tests build and run it): build args, user, build.sh errors."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib

from infra_helpers import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
BUILD_SH = ROOT / "infra" / "image" / "build.sh"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    return [
        (line.split()[0].upper(), line.split(None, 1)[1])
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_base_image_and_tensorflow_are_build_args():
    steps = _instructions()
    assert steps[0] == (
        "ARG",
        "BASE_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1",
    )
    assert steps[1] == ("FROM", "${BASE_IMAGE}")
    assert ("ARG", "TF_PACKAGE=tensorflow-cpu==2.21.0") in steps
    assert any(kind == "RUN" and '"$TF_PACKAGE"' in body for kind, body in steps)


def test_runs_as_numeric_non_root_user_without_entrypoint():
    steps = _instructions()
    users = [body for kind, body in steps if kind == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    # KFP sets the container command; an ENTRYPOINT would be prepended to it.
    assert not [kind for kind, _ in steps if kind == "ENTRYPOINT"]


def test_build_context_keeps_every_installed_package_and_nothing_else():
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "**", "deny by default"
    kept = {line[1:] for line in ignore if line.startswith("!")}
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in include:
        assert pattern.rstrip("*") in kept, f"{pattern} is installed by pip but ignored in the build context"
    copied = {body.split()[0] for kind, body in _instructions() if kind == "COPY"}
    assert {p.rstrip("*") for p in include} <= copied


def test_build_script_needs_two_arguments():
    out = subprocess.run(["bash", str(BUILD_SH)], capture_output=True, text=True)
    assert out.returncode == 2 and "usage: bash infra/image/build.sh IMAGE BASE_IMAGE" in out.stderr


def test_build_script_says_what_to_install_when_buildah_is_missing(tmp_path):
    (tmp_path / "dirname").symlink_to("/usr/bin/dirname")
    out = subprocess.run(
        ["/bin/bash", str(BUILD_SH), "bakeoff:x", "python:3.11-slim-bookworm"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(tmp_path)},
    )
    assert out.returncode == 1
    assert (
        out.stderr.strip()
        == "error: buildah not found: apt-get install -y buildah podman runc debootstrap (see docs/infra.md)"
    )
