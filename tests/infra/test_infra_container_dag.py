"""The WHOLE pipeline with every task inside the built image: kfp.local's DockerRunner on podman's API.

Slow (`make test-slow`; setup in docs/infra.md section 1). The same factory (`pipelines.factory.create_pipeline`)
as `bakeoff run` and the cluster; each of the 13 tasks runs `python3 -m kfp.dsl.executor_main` in a container
of the image `make image` builds, as uid 1000, with the host network and exactly the environment a pod gets
from ConfigMap bakeoff-config and Secret bakeoff-s3. Raw images, the weights mirror and the feature cache
are on a moto S3 server on 127.0.0.1; the MLflow tracking server runs from the same image on 127.0.0.1
(SQLite backend, proxied S3 artifacts). Tiny data (3 Fashion-MNIST classes x 12 images, 32 px), both
backbones, 2 head epochs, 1 fine-tune epoch: the point is where things run, not accuracy.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from infra_helpers import IMAGE, ROOT, podman_env

from support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

HERE = Path(__file__).resolve().parent
BUCKET = "bakeoff-test"  # made by the s3_server fixture; moto keeps its objects for the whole process,
MLFLOW_BUCKET = "mlflow-artifacts"  # so every test writes under a prefix of its own (RUN)
RUN = f"container-dag-{uuid.uuid4().hex[:8]}"
CLASSES = "sneaker,bag,trouser"
PER_CLASS = 12
BACKBONES = ["mobilenet_v2", "vgg16"]
# fingerprint, ingest, open_run; features, train_head, finetune, evaluate per backbone; ensemble,
# select_and_register, insight
TASKS = 3 + 4 * len(BACKBONES) + 3


def _image_facts() -> dict:
    """Id, user and environment of the built image, from podman."""
    out = subprocess.run(
        ["podman", "image", "inspect", IMAGE], env=podman_env(), capture_output=True, text=True, check=True
    )
    [info] = json.loads(out.stdout)
    env = dict(item.split("=", 1) for item in info["Config"].get("Env", []))
    uid, _, gid = info["Config"]["User"].partition(":")
    return {"id": info["Id"], "uid": int(uid), "gid": int(gid or uid), "env": env}


@pytest.fixture
def podman_socket(tmp_path) -> str:
    """DOCKER_HOST of a `podman system service` started for this test."""
    from kfp_containers import podman_service

    with podman_service(tmp_path, podman_env()) as url:
        yield url


@pytest.fixture
def mlflow_in_image(built_image, s3_server, tmp_path) -> str:
    """`mlflow server` from the image on 127.0.0.1 (host network); artifacts proxied to the moto bucket."""
    import boto3

    boto3.client("s3").create_bucket(Bucket=MLFLOW_BUCKET)
    port, name = free_port(), f"bakeoff-dag-mlflow-{uuid.uuid4().hex[:8]}"
    env = {
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
        "AWS_DEFAULT_REGION": os.environ["AWS_DEFAULT_REGION"],
        "MLFLOW_S3_ENDPOINT_URL": s3_server,
    }
    subprocess.run(
        ["podman", "run", "--detach", f"--name={name}", "--network=host"]
        + [f"--env={k}={v}" for k, v in env.items()]
        + [IMAGE, "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
        + ["--backend-store-uri", "sqlite:////tmp/mlflow.db", "--workers", "1"]
        + ["--artifacts-destination", f"s3://{MLFLOW_BUCKET}/{RUN}"],
        env=podman_env(),
        check=True,
        capture_output=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            if time.monotonic() > deadline:
                logs = subprocess.run(["podman", "logs", name], env=podman_env(), capture_output=True, text=True)
                pytest.fail(f"MLflow server in the image did not answer: {logs.stdout[-2000:]}{logs.stderr[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        subprocess.run(["podman", "rm", "--force", name], env=podman_env(), capture_output=True)


def _data_on_s3(tmp_path, weights_mirror: str) -> dict[str, str]:
    """Demo images and label map, the weights mirror: uploaded to the moto bucket like an operator would."""
    from bakeoff import storage
    from bakeoff.demo_data import make_demo_data

    make_demo_data(str(tmp_path / "raw"), per_class=PER_CLASS, classes=CLASSES)
    storage.upload_tree(tmp_path / "raw", f"s3://{BUCKET}/{RUN}/raw")
    storage.upload_tree(weights_mirror, f"s3://{BUCKET}/{RUN}/weights")
    return {
        "data_uri": f"s3://{BUCKET}/{RUN}/raw/raw-img/",
        "label_map_uri": f"s3://{BUCKET}/{RUN}/raw/translate.json",
        "weights_uri": f"s3://{BUCKET}/{RUN}/weights",
    }


def _run_in_containers(tmp_path, docker_host: str, parameters: dict, env: dict) -> tuple[int, dict, str, Path]:
    """The child process that runs the pipeline (tests/infra/kfp_containers.py); (rc, result, log, root)."""
    from pipelines.settings import Parameters, RunConfig, Settings

    facts = _image_facts()
    root = tmp_path / "pipeline-root"
    root.mkdir()
    os.chown(root, facts["uid"], facts["gid"])  # bind-mounted at the same path; tasks write as the image's user
    config = RunConfig(parameters=Parameters(**parameters), settings=Settings(image=IMAGE, retries=0))
    (tmp_path / "config.json").write_text(config.model_dump_json())
    log = tmp_path / "pipeline.log"
    child_env = {
        **os.environ,
        **podman_env(),
        **env,
        "DOCKER_HOST": docker_host,
        "BAKEOFF_NO_PROGRESS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, str(HERE / "kfp_containers.py"), "--config", str(tmp_path / "config.json")]
            + ["--result", str(tmp_path / "result.json"), "--pipeline-root", str(root)],
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1800,
        )
    print(f"\ncontainer DAG run: {time.monotonic() - started:.0f} s wall (child process, {TASKS} tasks at most)")
    result = json.loads((tmp_path / "result.json").read_text()) if (tmp_path / "result.json").exists() else {}
    return proc.returncode, result, log.read_text(), root


def test_whole_pipeline_runs_every_task_inside_the_image(
    built_image, s3_server, mlflow_in_image, podman_socket, weights_mirror, tmp_path
):
    from mlflow import MlflowClient

    s3 = _data_on_s3(tmp_path, weights_mirror)
    parameters = {
        "data_uri": s3["data_uri"],
        "label_map_uri": s3["label_map_uri"],
        "classes": CLASSES,
        "backbones": BACKBONES,
        "weights": "mobilenet_v2=imagenet,vgg16=hed",
        "image_size": 32,
        "head_epochs": 2,
        "finetune_epochs": 1,
        "experiment": "container-dag",
        "model_name": "container-dag-classifier",
    }
    env = {
        "MLFLOW_TRACKING_URI": mlflow_in_image,
        "BAKEOFF_WEIGHTS_URI": s3["weights_uri"],
        "BAKEOFF_CACHE_URI": f"s3://{BUCKET}/{RUN}/feature-cache",
    }
    code, result, log, root = _run_in_containers(tmp_path, podman_socket, parameters, env)
    assert code == 0, f"pipeline failed: {result.get('error')}\n{log[-5000:]}"
    for record in result["containers"]:
        print(f"  {record['function']:<20} {record['seconds']:6.1f} s  exit {record['exit_code']}")
    print(f"kfp.local pipeline time: {result['seconds']} s")

    # The run's outcome: both backbones trained and evaluated, the first candidate promoted (no champion yet).
    assert result["decision"]["promoted"] is True, result["decision"]
    singles = [row for row in result["rows"] if not row["backbone"].startswith("ensemble:")]
    assert {row["backbone"] for row in singles} == set(BACKBONES)  # (+ the ensemble's row when one was made)
    assert all(0.0 <= row["test_accuracy"] <= 1.0 for row in result["rows"])

    # Every task ran in a container of THIS image and succeeded there ...
    facts = _image_facts()
    containers = result["containers"]
    assert len(containers) == TASKS, [c["function"] for c in containers]
    assert sorted(c["function"] for c in containers) == sorted(
        ["fingerprint", "ingest", "open_run", "ensemble", "select_and_register", "insight"]
        + ["features", "train_head", "finetune", "evaluate"] * len(BACKBONES)
    )
    assert {c["image_id"].removeprefix("sha256:") for c in containers} == {facts["id"]}
    assert all(c["exit_code"] == 0 for c in containers)
    # ... and wrote its outputs as the image's user: this test process is root, so no task ran on the host.
    assert os.geteuid() != facts["uid"], "run the test as another user than the image's, or this proves nothing"
    outputs = sorted(root.rglob("executor_output.json"))
    assert len(outputs) == TASKS, [str(p.relative_to(root)) for p in outputs]
    assert {p.stat().st_uid for p in outputs} == {facts["uid"]}

    # MLflow got the runs from inside the image: its build's code version on every run, the champion alias,
    # and the model files in the S3 bucket behind the server (the tasks had no MLflow S3 credentials).
    client = MlflowClient(tracking_uri=mlflow_in_image, registry_uri=mlflow_in_image)
    experiment = client.get_experiment_by_name("container-dag")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {r.data.params.get("backbone") for r in children} - {None} >= set(BACKBONES)
    commit = facts["env"]["BAKEOFF_GIT_COMMIT"]
    assert commit not in ("", "unknown"), "build.sh must pass the git commit into the image"
    assert {r.data.tags.get("bakeoff.git_commit") for r in runs} == {commit}
    champion = client.get_model_version_by_alias("container-dag-classifier", "champion")
    assert str(champion.version) == str(result["decision"]["champion_version_after"])
    import boto3

    stored = boto3.client("s3").list_objects_v2(Bucket=MLFLOW_BUCKET, Prefix=f"{RUN}/")
    assert stored.get("KeyCount", 0) > 0, "no MLflow artifact reached the S3 bucket"


def test_a_failing_task_inside_the_image_fails_the_run_with_its_error(built_image, s3_server, podman_socket, tmp_path):
    """Bad input fails in the container; the run reports THAT task and its one-line error (not a SUCCESS)."""
    parameters = {"data_uri": f"s3://{BUCKET}/{RUN}/nothing-here/", "backbones": ["mobilenet_v2"]}
    code, result, log, _ = _run_in_containers(tmp_path, podman_socket, parameters, {})
    assert code == 1, log[-3000:]
    assert "Inner task failed" in result["error"] and "fingerprint" in result["error"], result["error"]
    [container] = result["containers"]
    assert container["function"] == "fingerprint" and container["exit_code"] != 0
    assert f"no data at s3://{BUCKET}/{RUN}/nothing-here/; pass a folder" in log, log[-3000:]
    assert "/opt/bakeoff/lib/python3.11/site-packages/kfp/dsl/executor_main.py" in log, "the image's interpreter"


def test_kfp_still_loses_exit_codes_on_podman(built_image, podman_socket):
    """Tripwire for the fix in kfp_containers.py: kfp 2.17.0's own runner reports `exit 3` as 0 on podman
    (20 of 20 tries here). When this fails, kfp handles it (kubeflow/pipelines#13332): drop the replacement."""
    import docker
    from kfp.local import docker_task_handler
    from kfp_containers import run_docker_container

    assert docker_task_handler.run_docker_container is not run_docker_container, "kfp's own function, unpatched"
    client = docker.DockerClient(base_url=podman_socket)
    try:
        command = ["sh", "-c", "exit 3"]
        assert docker_task_handler.run_docker_container(client, IMAGE, command, {}, network_mode="host") == 0
        assert run_docker_container(client, IMAGE, command, {}, network_mode="host") == 3
    finally:
        client.close()
