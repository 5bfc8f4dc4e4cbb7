"""The ONE pipeline factory: ``create_pipeline(settings) -> pipeline function``.

DAG::

    ExitHandler(finalize) {
        validate (never cached, never retried) -> fingerprint (never cached) -> ingest (cached) -> open_run
        -> ParallelFor(backbones, parallelism=N) {
            features (cached, GPU) -> train_head -> finetune (GPU) -> evaluate (+ MLflow candidate) }
        -> ensemble(Collected run ids) -> the run ids + the ensemble candidate's (members chosen on val)
        -> select_and_register(those run ids, Collected metrics) -> leaderboard (Markdown), decision
        -> insight(Collected features, decision) -> learning curve, label issues (HTML) }
    finalize: after the body, whatever happened; on failure it ends the MLflow runs FAILED

The run form's parameters and their defaults come from :class:`pipelines.settings.Parameters`;
GPU pool, secrets, retries and parallelism from :class:`pipelines.settings.Settings` (compile time).
The same function runs locally (kfp.local ignores the Kubernetes settings) and on a cluster.

The pipeline itself has no outputs: KFP refuses outputs from inside an ExitHandler. The leaderboard and the
decision are the outputs of the select-and-register task (the KFP UI shows them there; ``pipelines.local``
reads them from its folder).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from pipelines.settings import Parameters, Settings

CACHED_STEPS = ("ingest", "features")
GPU_STEPS = ("features", "finetune")
# validate is never retried: a configuration error does not go away, and no later step can meet one
RETRIED_STEPS = (
    "fingerprint",
    "ingest",
    "open_run",
    "features",
    "finetune",
    "evaluate",
    "ensemble",
    "select_and_register",
    "insight",
    "finalize",
)
MLFLOW_STEPS = ("open_run", "evaluate", "ensemble", "select_and_register", "insight", "finalize")
# what the KFP UI's graph shows for each task (the task names in the IR stay the step names)
DISPLAY_NAMES = {
    "validate": "Validate run form",
    "fingerprint": "Fingerprint raw data",
    "ingest": "Ingest and split images",
    "open_run": "Open MLflow run",
    "features": "Extract features",
    "train_head": "Train classifier head",
    "finetune": "Fine-tune backbone",
    "evaluate": "Evaluate on test split",
    "ensemble": "Ensemble across backbones",
    "select_and_register": "Select, register, gate",
    "insight": "Learning curve, label issues",
    "finalize": "Finalize MLflow runs",
}
EXIT_HANDLER = "bakeoff"  # the ExitHandler group's name (kfp.local names the failing group "exit-handler-1")
# env var -> key in the operator's ConfigMap / Secrets (see docs/orchestration.md and infra/)
CONFIG_MAP_ENV = ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "BAKEOFF_WEIGHTS_URI", "BAKEOFF_CACHE_URI")
S3_SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
MLFLOW_SECRET_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def _python_type(annotation):
    """Map a pydantic field type onto what KFP accepts for a pipeline parameter."""
    text = str(annotation)
    if "list" in text:
        return list
    if annotation in (int, float, str, bool):
        return annotation
    return str  # Literal[...] choices become strings on the run form


def _signature(defaults: Parameters) -> tuple[inspect.Signature, str]:
    params, doc = [], ["Transfer-learning bake-off of pretrained backbones, tracked in MLflow.", "", "Args:"]
    for name, field in Parameters.model_fields.items():
        kind = _python_type(field.annotation)
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=getattr(defaults, name), annotation=kind
            )
        )
        doc.append(f"    {name}: {field.description or name.replace('_', ' ')}")
    return inspect.Signature(params), "\n".join(doc)


def _configure(task, step: str, settings: Settings):
    """Caching, retries, resources and the Kubernetes settings of one task."""
    from kfp import kubernetes

    task.set_caching_options(enable_caching=step in CACHED_STEPS)
    task.set_display_name(DISPLAY_NAMES[step])
    if step in RETRIED_STEPS and settings.retries:
        task.set_retry(
            num_retries=settings.retries,
            backoff_duration=settings.retry_backoff,
            backoff_factor=2.0,
            backoff_max_duration="3600s",
        )
    task.set_cpu_request(settings.cpu_request)
    if step in GPU_STEPS and settings.accelerator_limit:
        task.set_memory_limit(settings.gpu_memory_limit)
        task.set_accelerator_type(settings.accelerator_type)
        task.set_accelerator_limit(settings.accelerator_limit)
        for key, value in settings.gpu_node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        kubernetes.add_toleration(task, key=settings.gpu_toleration_key, operator="Exists", effect="NoSchedule")
    else:
        task.set_memory_limit(settings.memory_limit)
    kubernetes.add_pod_label(task, "app.kubernetes.io/name", "bakeoff-pipeline")  # infra/k8s NetworkPolicies select it
    # Secrets and endpoints reach pods as environment variables, never as parameters.
    kubernetes.use_config_map_as_env(task, settings.config_map, {k: k for k in CONFIG_MAP_ENV}, optional=True)
    kubernetes.use_secret_as_env(task, settings.s3_secret, {k: k for k in S3_SECRET_ENV})
    if step in MLFLOW_STEPS:
        kubernetes.use_secret_as_env(task, settings.mlflow_secret, {k: k for k in MLFLOW_SECRET_ENV}, optional=True)
    return task


def create_pipeline(settings: Settings | None = None, defaults: Parameters | None = None) -> Callable:
    """Build the bake-off pipeline function (decorated with ``dsl.pipeline``) for these settings."""
    from kfp import dsl

    import components

    settings = settings or Settings()
    defaults = defaults or Parameters()
    cpu = components.load(settings.image)
    gpu = components.load(settings.gpu_image) if settings.gpu_image else cpu

    def step(name: str, **kwargs):
        ops = gpu if name in GPU_STEPS else cpu
        return _configure(getattr(ops, name)(**kwargs), name, settings)

    names = list(Parameters.model_fields)

    def bakeoff(*args, **kwargs):
        p = {**dict(zip(names, args)), **kwargs}  # KFP passes the parameter channels positionally
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        finalize = step("finalize", experiment=p["experiment"], model_name=p["model_name"], kfp_run_id=run_id)
        with dsl.ExitHandler(finalize, name=EXIT_HANDLER):
            _body(step, p, names, run_id, settings)

    bakeoff.__signature__, bakeoff.__doc__ = _signature(defaults)
    bakeoff.__annotations__ = {n: q.annotation for n, q in bakeoff.__signature__.parameters.items()}
    return dsl.pipeline(name=settings.pipeline_name, description=bakeoff.__doc__.splitlines()[0])(bakeoff)


def _body(step: Callable, p: dict, names: list[str], run_id: str, settings: Settings):
    """Every task of one bake-off, in the ExitHandler's group; returns the select-and-register task."""
    from kfp import dsl

    checked = step("validate", **{name: p[name] for name in names}, kfp_run_id=run_id)
    version = step(
        "fingerprint", data_uri=p["data_uri"], label_map_uri=p["label_map_uri"], data_version=p["data_version"]
    ).after(checked)
    data = step(
        "ingest",
        data_uri=p["data_uri"],
        label_map_uri=p["label_map_uri"],
        classes=p["classes"],
        per_class=p["per_class"],
        val_fraction=p["val_fraction"],
        test_fraction=p["test_fraction"],
        seed=p["seed"],
        data_version=version.output,
    ).outputs["dataset"]
    opened = step(
        "open_run",
        dataset=data,
        experiment=p["experiment"],
        kfp_run_id=run_id,
        data_uri=p["data_uri"],
        backbones=p["backbones"],
        weights=p["weights"],
        image_size=p["image_size"],
        head_kind=p["head_kind"],
        finetune_epochs=p["finetune_epochs"],
        model_name=p["model_name"],
        gate_test=p["gate_test"],
        gate_alpha=p["gate_alpha"],
    )
    with dsl.ParallelFor(items=p["backbones"], parallelism=settings.parallelism, name="backbones") as backbone:
        feats = step(
            "features",
            dataset=data,
            backbone=backbone,
            weights=p["weights"],
            image_size=p["image_size"],
            batch_size=p["batch_size"],
            precision=p["precision"],
            flip=p["flip"],
            extra_image_sizes=p["extra_image_sizes"],
        ).outputs["features"]
        head = step(
            "train_head",
            features=feats,
            kind=p["head_kind"],
            epochs=p["head_epochs"],
            learning_rate=p["head_lr"],
            batch_size=p["batch_size"],
            seed=p["seed"],
            hidden=p["head_hidden"],
            dropout=p["head_dropout"],
        ).outputs["head"]
        model = step(
            "finetune",
            dataset=data,
            head=head,
            blocks=p["finetune_blocks"],
            epochs=p["finetune_epochs"],
            learning_rate=p["finetune_lr"],
            batch_size=p["batch_size"],
            seed=p["seed"],
            top_k=p["finetune_top_k"],
        ).outputs["model"]
        evaluation = step(
            "evaluate",
            dataset=data,
            features=feats,
            head=head,
            model=model,
            parent_run=opened.outputs["parent_run"],
            backbone=backbone,
            model_name=p["model_name"],
            batch_size=p["batch_size"],
            seed=p["seed"],
        )
    # one more candidate: the members that together do best on val, averaged into one servable model
    combined = step(
        "ensemble",
        dataset=data,
        parent_run_id=opened.outputs["Output"],
        candidate_run_ids=dsl.Collected(evaluation.outputs["Output"]),
        max_members=p["ensemble_max_members"],
        model_name=p["model_name"],
        batch_size=p["batch_size"],
        seed=p["seed"],
    )
    selected = step(
        "select_and_register",
        dataset=data,
        parent_run_id=opened.outputs["Output"],
        candidate_run_ids=combined.outputs["Output"],
        candidate_metrics=dsl.Collected(evaluation.outputs["metrics"]),
        experiment=p["experiment"],
        model_name=p["model_name"],
        gate_test=p["gate_test"],
        gate_alpha=p["gate_alpha"],
    )
    # after the gate: learning curve + suspected label errors on the challenger's cached features (seconds)
    step(
        "insight",
        dataset=data,
        features=dsl.Collected(feats),
        parent_run_id=opened.outputs["Output"],
        decision=selected.outputs["Output"],
        seed=p["seed"],
    )
    return selected
