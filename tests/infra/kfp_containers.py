"""Run the ONE bakeoff pipeline with every task in the project's image: kfp.local's DockerRunner on podman.

Two things kfp.local needs here that it does not bring:

- a Docker-compatible API: ``podman system service`` on a unix socket (:func:`podman_service`), which the
  ``docker`` SDK reaches through ``DOCKER_HOST``;
- the task's REAL exit code. kfp 2.17.0 starts each container with ``auto_remove=True`` and turns the
  ``NotFound`` from ``container.wait()`` on an already removed container into exit code 0. Podman removes
  a container as it exits, so on podman EVERY failing task is reported as SUCCESS and its log is often
  lost (upstream bug kubeflow/pipelines#13332; fix proposed in PR #13907, in no release yet, and newer kfp
  does not install here). :func:`run_docker_container` is that fix: no auto-remove, stream the log, read
  the exit code, then remove the container. ``test_kfp_still_loses_exit_codes_on_podman`` fails once kfp
  ships the fix, so this replacement can go.

``python tests/infra/kfp_containers.py --config C --result R --pipeline-root DIR`` is the child process the
slow test starts (its output is the run's log): the RunConfig's pipeline from ``pipelines.factory`` run
through ``kfp.local.DockerRunner`` with the host network, so tasks reach S3 and MLflow on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

# What a pod gets from ConfigMap bakeoff-config and Secret bakeoff-s3 (pipelines/factory.py), plus the
# region and the quiet-progress switch: the container's whole environment besides the image's own.
FORWARDED_ENV_EXTRA = ("AWS_DEFAULT_REGION", "BAKEOFF_NO_PROGRESS", "TF_CPP_MIN_LOG_LEVEL")

# Every container a task ran in: {"function", "task_image", "image_id", "exit_code", "seconds"} (test evidence).
CONTAINERS: list[dict] = []


def run_docker_container(client, image: str, command: list[str], volumes: dict, **container_run_args) -> int:
    """kfp.local's ``run_docker_container`` without ``auto_remove``: the exit code is read before removal."""
    from kfp.local.docker_task_handler import add_latest_tag_if_not_present

    image = add_latest_tag_if_not_present(image)
    if not any(image in (i.tags + i.attrs.get("RepoDigests", [])) for i in client.images.list()):
        client.images.pull(image)  # as kfp does; offline this fails loudly for a missing image
    started = time.monotonic()
    container = client.containers.run(
        image=image, command=command, detach=True, stdout=True, stderr=True, volumes=volumes, **container_run_args
    )
    try:
        for line in container.logs(stream=True, follow=True):
            print(line.decode(errors="replace"), end="")
        code = container.wait()["StatusCode"]
        CONTAINERS.append(
            {
                "function": _function_name(command),
                "task_image": image,
                "image_id": container.image.id,
                "exit_code": code,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
        return code
    finally:
        container.remove(force=True)


def _function_name(command: list[str]) -> str:
    """The component function a KFP lightweight-component command executes."""
    flag = "--function_to_execute"
    return command[command.index(flag) + 1] if flag in command else "?"


def use_exit_code_fix() -> None:
    """Make kfp.local's DockerRunner use :func:`run_docker_container` (the module-level name it calls)."""
    from kfp.local import docker_task_handler

    docker_task_handler.run_docker_container = run_docker_container


@contextlib.contextmanager
def podman_service(workdir: Path, env: dict[str, str], timeout: float = 60) -> Iterator[str]:
    """``podman system service`` on ``workdir/podman.sock`` for the docker SDK; yields the DOCKER_HOST value."""
    import docker

    from support import stop_process_group

    socket = workdir / "podman.sock"
    url = f"unix://{socket}"
    log = workdir / "podman-service.log"
    proc = subprocess.Popen(
        ["podman", "system", "service", "--time=0", url],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"podman system service exited: {log.read_text()[-2000:]}")
            try:
                with contextlib.closing(docker.DockerClient(base_url=url)) as client:
                    client.ping()
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"podman system service not answering on {url}: {log.read_text()[-2000:]}"
                    ) from exc
                time.sleep(0.25)
        yield url
    finally:
        stop_process_group(proc)


def container_environment() -> dict[str, str]:
    """The tasks' environment: what the cluster's ConfigMap and Secret would set, taken from this process."""
    from pipelines.factory import CONFIG_MAP_ENV, S3_SECRET_ENV

    keys = (*CONFIG_MAP_ENV, *S3_SECRET_ENV, *FORWARDED_ENV_EXTRA)
    return {key: os.environ[key] for key in keys if key in os.environ}


def run_in_containers(config_json: str, pipeline_root: Path) -> dict:
    """Run the factory's pipeline with every task in ``settings.image``; the leaderboard and decision back."""
    from kfp import local

    from pipelines.factory import create_pipeline
    from pipelines.settings import RunConfig

    config = RunConfig.model_validate_json(config_json)
    use_exit_code_fix()
    local.init(
        runner=local.DockerRunner(network_mode="host", environment=container_environment()),
        pipeline_root=str(pipeline_root.resolve()),
        enable_caching=False,  # every task runs, in a container, every time
        raise_on_error=True,
    )
    pipeline = create_pipeline(config.settings, config.parameters)
    started = time.monotonic()
    task = pipeline(**config.parameters.model_dump())
    return {
        "seconds": round(time.monotonic() - started, 1),
        "decision": json.loads(task.outputs["decision"]),
        "rows": task.outputs["leaderboard"].metadata.get("rows", []),
        "leaderboard": Path(task.outputs["leaderboard"].path).read_text(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/infra/kfp_containers.py")
    parser.add_argument("--config", required=True, help="RunConfig JSON file")
    parser.add_argument("--result", required=True, help="where the result JSON goes")
    parser.add_argument("--pipeline-root", required=True, help="kfp.local pipeline root (bind-mounted into tasks)")
    args = parser.parse_args(argv)
    try:
        result = run_in_containers(Path(args.config).read_text(), Path(args.pipeline_root))
    except RuntimeError as exc:  # kfp.local: "Pipeline ... finished with status FAILURE. Inner task failed: ..."
        result = {"error": str(exc)}
    result["containers"] = CONTAINERS
    Path(args.result).write_text(json.dumps(result, indent=2, default=str))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.path[:0] = [str(Path(__file__).resolve().parents[1])]  # tests/: the shared support package
    sys.exit(main())
