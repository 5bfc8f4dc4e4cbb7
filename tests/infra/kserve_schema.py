"""Offline schema check of the KServe objects bakeoff ships (InferenceService v1beta1, ServingRuntime v1alpha1).

Why hand-written: kubernetes-validate has no schemas for custom resources (it raises SchemaNotFoundError), the
``kserve`` SDK (whose model classes would do) does not install cleanly here (kserve 0.21 downgrades pandas 3 to 2),
and the API server PRUNES unknown fields of a custom resource instead of rejecting them, so a typo such as
``storageURI`` would silently deploy a model-less predictor. The schema below covers exactly the fields bakeoff
uses, with their names, types and enums as KServe's published CRDs declare them (config/crd/full/
serving.kserve.io_inferenceservices.yaml and _servingruntimes.yaml, v0.20); any other field fails, so adding one
means adding it here after checking the CRD. Embedded Kubernetes types (containers, resources) are validated with
kubernetes-validate's own core/v1 schemas, by wrapping them in a Pod.
"""

from __future__ import annotations

import jsonschema

K8S_VERSION = "1.37.0"
API_GROUP = "serving.kserve.io"
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
    "additionalProperties": False,
}
_INT = {"type": "integer"}
_MODEL = {
    "type": "object",
    "required": ["modelFormat", "storageUri"],
    "properties": {
        "modelFormat": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
            "additionalProperties": False,
        },
        "runtime": {"type": "string"},
        "runtimeVersion": {"type": "string"},
        "protocolVersion": {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]},
        "storageUri": {"type": "string", "pattern": "^(s3|gs|https?|pvc|hdfs|webhdfs|oci|hf)://.+"},
        "resources": {"type": "object"},  # core/v1 ResourceRequirements: checked by kubernetes-validate
        "env": {"type": "array"},
        "args": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}
INFERENCE_SERVICE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": f"{API_GROUP}/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["predictor"],
            "properties": {
                "predictor": {
                    "type": "object",
                    "required": ["model"],
                    "properties": {
                        "model": _MODEL,
                        "serviceAccountName": {"type": "string"},
                        "minReplicas": {**_INT, "minimum": 0},
                        "maxReplicas": {**_INT, "minimum": 0},
                        "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
                        "scaleMetricType": {"enum": ["Utilization", "Value", "AverageValue"]},
                        "scaleTarget": {**_INT, "minimum": 1},
                        "timeout": {**_INT, "minimum": 1},
                        "containerConcurrency": {**_INT, "minimum": 0},
                        "labels": _STRING_MAP,
                        "annotations": _STRING_MAP,
                    },
                    "additionalProperties": False,
                }
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
SERVING_RUNTIME = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": f"{API_GROUP}/v1alpha1"},
        "kind": {"const": "ServingRuntime"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["containers", "supportedModelFormats"],
            "properties": {
                "supportedModelFormats": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "version": {"type": "string"},
                            "autoSelect": {"type": "boolean"},
                            "priority": {**_INT, "minimum": 1},
                        },
                        "additionalProperties": False,
                    },
                },
                "protocolVersions": {"type": "array", "items": {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]}},
                "multiModel": {"type": "boolean"},
                "disabled": {"type": "boolean"},
                "containers": {"type": "array", "minItems": 1},  # core/v1 Containers: kubernetes-validate
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
SCHEMAS = {"InferenceService": INFERENCE_SERVICE, "ServingRuntime": SERVING_RUNTIME}


def is_kserve(doc: dict) -> bool:
    return str(doc.get("apiVersion", "")).split("/")[0] == API_GROUP


def _as_pod(containers: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "embedded"}, "spec": {"containers": containers}}


def validate(doc: dict) -> None:
    """Raise (jsonschema.ValidationError or kubernetes_validate.ValidationError) unless ``doc`` is a valid KServe
    object built only from the fields above, its embedded Kubernetes types included."""
    import kubernetes_validate

    kind = doc.get("kind")
    if kind not in SCHEMAS:
        raise jsonschema.ValidationError(f"{kind}: bakeoff ships no such KServe kind; add its schema first")
    jsonschema.validate(doc, SCHEMAS[kind])
    if kind == "ServingRuntime":
        kubernetes_validate.validate(_as_pod(doc["spec"]["containers"]), K8S_VERSION, strict=True)
    else:
        model = doc["spec"]["predictor"]["model"]
        container = {"name": "kserve-container", **{k: model[k] for k in ("resources", "env", "args") if k in model}}
        kubernetes_validate.validate(_as_pod([container]), K8S_VERSION, strict=True)
