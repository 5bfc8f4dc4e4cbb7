"""components.open_run: the pipeline's MLflow parent run, its id as the return value AND as a small artifact."""

from __future__ import annotations

from kfp.dsl import Artifact, Dataset

from bakeoff import contract, manifest, tracking
from components.open_run import open_run


def test_open_run_creates_the_running_parent_run(tracking_store, dataset, artifact, model_name):
    parent_run = artifact(Artifact, "parent_run")
    run_id = open_run(
        Dataset(uri=str(dataset)),
        "components-open-run",
        "kfp-run-7",
        "s3://raw/drop",
        ["mobilenet_v2", "vgg16"],
        "mobilenet_v2=imagenet,vgg16=hed",
        32,
        "dense",
        1,
        model_name,
        "mcnemar",
        0.05,
        parent_run,
    )
    with open(parent_run.path) as handle:  # the ParallelFor branches read the id from here
        assert handle.read() == run_id
    assert parent_run.metadata == {"mlflow_run_id": run_id, "experiment": "components-open-run"}

    run = tracking.client().get_run(run_id)
    assert run.info.status == "RUNNING"  # select_and_register finishes it
    tags = run.data.tags
    assert tags[contract.KIND_TAG] == contract.KIND_PIPELINE and tags[contract.KFP_RUN_ID_TAG] == "kfp-run-7"
    assert tags[contract.DATASET_HASH_TAG] == manifest.dataset_hash(manifest.read_manifest(dataset, resolve=False))
    params = run.data.params
    assert params["backbones"] == "mobilenet_v2,vgg16" and params["model_name"] == model_name
    assert params["gate_alpha"] == "0.05" and params["n_test"] == "100" and params["data_uri"] == "s3://raw/drop"
