"""Parse a compiled pipeline back into KFP's own protobuf messages (what the KFP backend reads)."""

from __future__ import annotations

import yaml


def parse_compiled(path):
    """Returns (PipelineSpec, {executor name: KubernetesExecutorConfig}) from the two YAML documents."""
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    with open(path) as handle:
        docs = list(yaml.safe_load_all(handle))
    assert len(docs) == 2, "expected the PipelineSpec and the kubernetes PlatformSpec"
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
    platform = json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
    executors = {
        name: json_format.ParseDict(json_format.MessageToDict(value), k8s_pb2.KubernetesExecutorConfig())
        for name, value in platform.platforms["kubernetes"].deployment_spec.executors.items()
    }
    return spec, executors
