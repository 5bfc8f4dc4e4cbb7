"""`bakeoff compile`: the IR parsed back into KFP's protobufs carries the DAG, GPU, retry, cache and secret settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from kfp_ir import parse_compiled

from bakeoff.cli import main
from bakeoff.errors import BakeoffError

ROOT = Path(__file__).resolve().parents[2]
CPU_IMAGE, GPU_IMAGE = "registry.example.com/bakeoff:0.1.0", "registry.example.com/bakeoff:0.1.0-cuda"
SECRET = "s3cr3t-value-that-must-never-be-compiled"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("compile") / "pipeline.yaml"
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    mp.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    try:
        code = main(
            [
                "compile",
                "--out",
                str(out),
                "--config",
                str(ROOT / "configs" / "demo.yaml"),
                "--image",
                CPU_IMAGE,
                "--gpu-image",
                GPU_IMAGE,
                "--parallelism",
                "3",
            ]
        )
    finally:
        mp.undo()
    assert code == 0
    spec, k8s = parse_compiled(out)
    return out, spec, k8s


def _executor(spec, task_component: str):
    return spec.deployment_spec.executors[f"exec-{task_component}"]


def _container(spec, name):
    from google.protobuf import json_format

    return json_format.MessageToDict(spec.deployment_spec)["executors"][f"exec-{name}"]["container"]


def _all_tasks(spec) -> dict:
    """Every task of the pipeline, whatever DAG (root, exit handler, loop) holds it."""
    tasks = dict(spec.root.dag.tasks)
    for component in spec.components.values():
        if component.WhichOneof("implementation") == "dag":
            tasks.update(component.dag.tasks)
    return tasks


def test_dag_fans_out_over_backbones_and_collects(compiled):
    _, spec, _ = compiled
    root = spec.root.dag.tasks
    assert set(root) == {"exit-handler-1", "finalize"}  # the whole bake-off runs inside one ExitHandler
    body = spec.components["comp-exit-handler-1"].dag.tasks
    assert set(body) == {
        "validate",
        "fingerprint",
        "ingest",
        "open-run",
        "for-loop-2",
        "ensemble",
        "select-and-register",
        "insight",
    }
    # the run form is checked first: fingerprint (and through it every later task) waits for validate
    assert list(body["fingerprint"].dependent_tasks) == ["validate"]
    # ingest is keyed by the (never cached) fingerprint of the raw data: new data -> fresh ingest
    assert body["ingest"].inputs.parameters["data_version"].task_output_parameter.producer_task == "fingerprint"
    loop = body["for-loop-2"]
    assert loop.parameter_iterator.items.input_parameter == "pipelinechannel--backbones"
    assert loop.iterator_policy.parallelism_limit == 3
    branch = spec.components["comp-for-loop-2"].dag.tasks
    assert set(branch) == {"features", "train-head", "finetune", "evaluate"}
    assert list(branch["finetune"].dependent_tasks) == ["train-head"]
    # the ensemble collects every branch's candidate run and hands select-and-register the list with its own
    combine = body["ensemble"].inputs
    assert combine.parameters["candidate_run_ids"].task_output_parameter.producer_task == "for-loop-2"
    assert combine.parameters["max_members"].component_input_parameter == "pipelinechannel--ensemble_max_members"
    select = body["select-and-register"].inputs
    assert select.parameters["candidate_run_ids"].task_output_parameter.producer_task == "ensemble"
    assert select.artifacts["candidate_metrics"].task_output_artifact.producer_task == "for-loop-2"
    assert select.parameters["parent_run_id"].task_output_parameter.producer_task == "open-run"
    # the leaderboard Markdown and the decision are select-and-register's outputs (KFP allows no pipeline
    # outputs from inside an ExitHandler)
    outputs = spec.components["comp-select-and-register"].output_definitions
    assert outputs.artifacts["leaderboard"].artifact_type.schema_title == "system.Markdown"
    assert "Output" in outputs.parameters
    # insight runs after the gate, on the decision and every branch's features (it picks the challenger's)
    insight = body["insight"].inputs
    assert insight.parameters["decision"].task_output_parameter.producer_task == "select-and-register"
    assert insight.artifacts["features"].task_output_artifact.producer_task == "for-loop-2"
    shown = spec.components["comp-insight"].output_definitions.artifacts
    assert {shown[n].artifact_type.schema_title for n in ("learning_curve", "label_issues")} == {"system.HTML"}
    evaluate_out = spec.components["comp-evaluate"].output_definitions.artifacts
    assert evaluate_out["errors"].artifact_type.schema_title == "system.HTML"  # the error analysis in the KFP UI
    # the exit task runs when the body ends, whatever happened, and learns how it ended
    finalize = root["finalize"]
    assert finalize.trigger_policy.strategy == finalize.trigger_policy.TriggerStrategy.ALL_UPSTREAM_TASKS_COMPLETED
    assert list(finalize.dependent_tasks) == ["exit-handler-1"]
    assert finalize.inputs.parameters["status"].task_final_status.producer_task == "exit-handler-1"


def test_run_form_parameters_have_the_config_defaults(compiled):
    _, spec, _ = compiled
    params = spec.root.input_definitions.parameters
    import yaml

    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())["parameters"]
    for name in (
        "data_uri",
        "backbones",
        "weights",
        "image_size",
        "head_epochs",
        "finetune_epochs",
        "finetune_lr",
        "finetune_blocks",
        "model_name",
        "gate_test",
        "gate_alpha",
        "per_class",
    ):
        assert name in params, name
    assert [params["backbones"].default_value.list_value.values[i].string_value for i in range(2)] == demo["backbones"][
        :2
    ]
    assert params["image_size"].default_value.number_value == demo["image_size"]
    assert params["weights"].default_value.string_value == demo["weights"]
    assert not any(word in name.lower() for name in params for word in ("secret", "password", "token", "key"))


def test_run_form_is_exactly_the_parameters_model(compiled):
    """Names, types, descriptions and defaults of the KFP run form all come from pipelines.settings.Parameters."""
    from typing import get_origin

    from kfp.pipeline_spec import pipeline_spec_pb2

    from pipelines.settings import Parameters

    _, spec, _ = compiled
    params = spec.root.input_definitions.parameters
    assert set(params) == set(Parameters.model_fields)
    kinds = pipeline_spec_pb2.ParameterType
    for name, info in Parameters.model_fields.items():
        want = {int: kinds.NUMBER_INTEGER, float: kinds.NUMBER_DOUBLE}.get(info.annotation, kinds.STRING)
        if get_origin(info.annotation) is list:
            want = kinds.LIST
        assert params[name].parameter_type == want, name
        assert params[name].description == info.description, name
        assert params[name].is_optional  # every parameter has a default (the config's)


def test_gpu_only_on_features_and_finetune(compiled):
    _, spec, k8s = compiled
    for name in ("features", "finetune"):
        container = _container(spec, name)
        assert container["image"] == GPU_IMAGE
        assert container["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert container["resources"]["accelerator"]["resourceCount"] == "1"
        config = k8s[f"exec-{name}"]
        assert dict(config.node_selector.labels) == {"bakeoff.io/pool": "gpu"}
        [toleration] = config.tolerations
        assert (toleration.key, toleration.operator, toleration.effect) == ("nvidia.com/gpu", "Exists", "NoSchedule")
    cpu_steps = ("validate", "fingerprint", "ingest", "open-run", "train-head", "evaluate", "ensemble")
    cpu_steps += ("select-and-register",)
    for name in (*cpu_steps, "insight"):
        container = _container(spec, name)
        assert container["image"] == CPU_IMAGE
        assert "accelerator" not in container["resources"]
        assert container["resources"]["resourceCpuRequest"] == "1"
        assert not k8s[f"exec-{name}"].node_selector.labels
        assert not k8s[f"exec-{name}"].tolerations


def test_caching_and_retries(compiled):
    _, spec, _ = compiled
    tasks = _all_tasks(spec)
    cached = {name for name, task in tasks.items() if task.caching_options.enable_cache}
    assert cached == {"ingest", "features"}
    retried = {name for name, task in tasks.items() if task.retry_policy.max_retry_count == 3}
    assert retried == {
        "fingerprint",
        "ingest",
        "open-run",
        "features",
        "finetune",
        "evaluate",
        "ensemble",
        "select-and-register",
        "insight",
        "finalize",
    }
    # a configuration error is not transient: the step that catches them is never retried (nor cached)
    assert tasks["validate"].retry_policy.max_retry_count == 0 and not tasks["validate"].caching_options.enable_cache
    assert tasks["evaluate"].retry_policy.backoff_factor == 2.0
    assert tasks["evaluate"].retry_policy.backoff_duration.seconds == 30


def test_secrets_arrive_as_env_from_kubernetes_secrets(compiled):
    out, spec, k8s = compiled
    assert SECRET not in out.read_text()
    for name in (
        "validate",
        "fingerprint",
        "ingest",
        "open-run",
        "features",
        "train-head",
        "finetune",
        "evaluate",
        "ensemble",
        "select-and-register",
        "insight",
        "finalize",
    ):
        secrets = {s.secret_name: {e.env_var for e in s.key_to_env} for s in k8s[f"exec-{name}"].secret_as_env}
        assert secrets["bakeoff-s3"] == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        talks_to_mlflow = name in ("open-run", "evaluate", "ensemble", "select-and-register", "insight", "finalize")
        assert ("bakeoff-mlflow" in secrets) == talks_to_mlflow
        if talks_to_mlflow:
            assert secrets["bakeoff-mlflow"] == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
        [config_map] = k8s[f"exec-{name}"].config_map_as_env
        assert config_map.config_map_name == "bakeoff-config"
        assert {e.env_var for e in config_map.key_to_env} >= {"MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL"}


def test_components_are_lightweight_without_runtime_installs(compiled):
    out, spec, _ = compiled
    text = out.read_text()
    assert "pip install" not in text
    for name in ("ingest", "features", "evaluate", "select-and-register"):
        container = _container(spec, name)
        assert "kfp.dsl.executor_main" in " ".join(container["command"])


def test_bad_config_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters:\n  gate_test: coinflip\n")
    assert main(["compile", "--out", str(tmp_path / "p.yaml"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: config") and "gate_test" in err and "\n" not in err
    assert not (tmp_path / "p.yaml").exists()


def test_a_compile_that_fails_midway_leaves_no_file_behind(tmp_path, monkeypatch):
    """The KFP compiler writing half a file and then failing (full disk, a bug) leaves neither --out nor a temp."""
    from kfp import compiler

    from pipelines.compile import compile_pipeline

    def half_written(self, pipeline_func, package_path, **kwargs):
        with open(package_path, "w") as f:
            f.write("# pipelineSpec: half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compiler.Compiler, "compile", half_written)
    with pytest.raises(BakeoffError, match=r"cannot write .*pipeline.yaml: No space left on device"):
        compile_pipeline(tmp_path / "pipeline.yaml")
    assert list(tmp_path.iterdir()) == []
