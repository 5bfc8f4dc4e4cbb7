"""The image, built for real (`make image`), runs a pipeline component the way KFP's launcher does.

Slow (a cold build takes minutes): `make test-slow`. Setup on the host (root), see docs/infra.md:
    apt-get install -y podman buildah runc debootstrap
The component reads its raw images from, and its output Dataset goes to, a real moto S3 server on
127.0.0.1 (the container shares the host network); nothing is mocked but the launcher's upload,
which the container performs with bakeoff.storage right after the executor, as the launcher would.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import time

import pytest
import yaml
from infra_helpers import IMAGE, podman_env

CLASSES = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}
PER_CLASS = 10
BUCKET = "bakeoff-test"
DATASET_URI = f"s3://{BUCKET}/pipeline-root/bakeoff/run-1/ingest/dataset"


def _raw_dump_on_s3(make_image, tmp_path) -> str:
    """Distinct tiny PNGs per class, uploaded to s3://bakeoff-test/raw/<label>/."""
    import boto3

    s3 = boto3.client("s3")
    for k, (label, colour) in enumerate(CLASSES.items()):
        for i in range(PER_CLASS):
            seed = 100 * k + i
            shade = tuple(min(255, c + 3 * i) for c in colour)
            path = make_image(tmp_path / "raw" / label / f"{i:03d}.png", size=(32, 32), color=shade, seed=seed)
            s3.upload_file(str(path), BUCKET, f"raw/{label}/{path.name}")
    return f"s3://{BUCKET}/raw/"


def _executor(image: str, tmp_path) -> tuple[dict, dict]:
    """The ingest executor (container spec) and component definition from the REAL compiled pipeline."""
    from pipelines.compile import compile_pipeline
    from pipelines.settings import Settings

    out = tmp_path / "pipeline.yaml"
    compile_pipeline(out, Settings(image=image))
    spec = next(yaml.safe_load_all(out.read_text()))
    component = spec["components"]["comp-ingest"]
    return spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"], component


@pytest.mark.slow
def test_ingest_component_runs_inside_the_image_against_s3(built_image, s3_server, make_image, tmp_path):
    data_uri = _raw_dump_on_s3(make_image, tmp_path)
    container, component = _executor(IMAGE, tmp_path)
    assert container["image"] == IMAGE

    values = {
        "data_uri": data_uri,
        "label_map_uri": "",
        "classes": "",
        "per_class": 0,
        "val_fraction": 0.2,
        "test_fraction": 0.2,
        "seed": 0,
        "data_version": "",
    }
    params = component["inputDefinitions"]["parameters"]
    assert set(params) == set(values), f"ingest's inputs changed: {sorted(params)}"
    executor_input = {
        "inputs": {"parameterValues": values},
        "outputs": {
            "artifacts": {
                "dataset": {
                    "artifacts": [
                        {
                            "name": "dataset",
                            "type": {"schemaTitle": "system.Dataset", "schemaVersion": "0.0.1"},
                            "uri": DATASET_URI,
                            "metadata": {},
                        }
                    ]
                }
            },
            "outputFile": "/kfp-out/executor_output.json",
        },
    }
    # KFP's launcher substitutes {{$}} with the executor input, runs the command, then uploads the
    # local artifact path (/s3/<bucket>/<key>: the image keeps /s3 writable for uid 1000) to its URI.
    args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container["args"]]
    local_path = "/s3/" + DATASET_URI[len("s3://") :]
    launcher = (
        'set -e; id -u; "$@"; '
        f"python3 -c \"from bakeoff import storage; storage.upload_tree('{local_path}', '{DATASET_URI}')\""
    )
    out_dir = tmp_path / "kfp-out"
    out_dir.mkdir()
    out_dir.chmod(0o777)
    env = [
        f"--env={k}={os.environ[k]}"
        for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    ]
    start = time.monotonic()
    run = subprocess.run(
        [
            "podman",
            "run",
            "--rm",
            "--network=host",
            *env,
            f"--volume={out_dir}:/kfp-out",
            IMAGE,
            "sh",
            "-c",
            launcher,
            "kfp-launcher",
            *container["command"],
            *args,
        ],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.monotonic() - start
    print(f"ingest executor in the container: {seconds:.1f} s")
    assert run.returncode == 0, f"container failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    assert run.stdout.splitlines()[0] == "1000", "the image must run as the non-root uid 1000"

    # The executor's output metadata, as KFP records it.
    output = json.loads((out_dir / "executor_output.json").read_text())
    meta = output["artifacts"]["dataset"]["artifacts"][0]["metadata"]
    assert meta["n_images"] == PER_CLASS * len(CLASSES) and meta["n_rejected"] == 0
    assert len(meta["dataset_hash"]) >= 16

    # The Dataset, read back from S3 by the host: manifest + materialised images under the artifact URI.
    import boto3
    import pandas as pd

    s3 = boto3.client("s3")
    prefix = DATASET_URI[len(f"s3://{BUCKET}/") :]
    keys = {o["Key"][len(prefix) + 1 :] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]}
    assert {"manifest.parquet", "card.json", "rejected.csv"} <= keys
    manifest = pd.read_parquet(
        io.BytesIO(s3.get_object(Bucket=BUCKET, Key=f"{prefix}/manifest.parquet")["Body"].read())
    )
    assert len(manifest) == PER_CLASS * len(CLASSES)
    assert sorted(manifest["label"].unique()) == sorted(CLASSES)
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert all(uri in keys for uri in manifest["uri"]), "every manifest row's image was uploaded with it"
