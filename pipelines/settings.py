"""Compile-time settings and run-form defaults, validated (pydantic) and loadable from a YAML config.

Two kinds of knobs, kept apart on purpose:
- :class:`Parameters` become the pipeline's run-form parameters (a KFP UI user can change them per run);
- :class:`Settings` are baked in at compile time (image, GPU pool, secrets, parallelism): an operator's
  choices that a run form must not be able to change, and secrets must never become parameters.

:class:`Parameters` is THE source of every run-form fact: names, types, choices, defaults and help. The KFP
pipeline signature (``pipelines.factory``), the command-line options of ``bakeoff run/compile/submit/schedule``
(``bakeoff.cli.run_form``) and the tables in docs/orchestration.md (``python -m pipelines.settings``) are derived
from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from bakeoff import validation
from bakeoff.errors import BakeoffError
from bakeoff.stats import TESTS
from bakeoff.validation import Problem, Scope

HeadKind = Literal[
    "dense", "logreg", "search"
]  # = bakeoff.heads.HEAD_KINDS (a test checks; importing heads costs pandas)
GateTest = Literal[TESTS]  # the gate's paired tests, exactly those bakeoff.stats implements
Precision = Literal["auto", "float32", "bfloat16"]  # = bakeoff.features.PRECISIONS (a test checks)
Flip = Literal["off", "on"]


class Parameters(BaseModel):
    """The run form. Names are the pipeline's parameter names; descriptions feed the KFP run form and CLI help."""

    model_config = ConfigDict(extra="forbid")

    data_uri: str = Field(
        "",
        description="REQUIRED. Raw images: a folder of class folders, a .zip/.tar(.gz) archive or an s3:// prefix "
        "(on a cluster the pods must be able to read it).",
    )
    label_map_uri: str = Field(
        "",
        description="JSON or YAML file (path or s3://) mapping raw folder names to class names, e.g. "
        '{"cane": "dog"}; empty: the folder names are the classes.',
    )
    classes: str = Field(
        "", description="Comma-separated class names to keep, after the label map (e.g. dog,horse); empty: all."
    )
    per_class: int = Field(0, ge=0, description="Cap on images per class, a seeded random pick; 0: no cap.")
    val_fraction: float = Field(
        0.15,
        gt=0,
        lt=0.5,
        description="Fraction of each class held out for validation (early stopping); between 0 and 0.5.",
    )
    test_fraction: float = Field(
        0.15,
        gt=0,
        lt=0.5,
        description="Fraction of each class held out for the test split (leaderboard and gate); between 0 and 0.5.",
    )
    seed: int = Field(
        0, description="Seed of the split, the per-class pick, the head and fine-tuning: same inputs, same models."
    )
    data_version: str = Field(
        "",
        description="Any label; changing it forces a fresh ingest (changed files are detected without it); "
        "empty: none.",
    )
    backbones: list[str] = Field(
        default_factory=lambda: ["mobilenet_v2", "vgg16"],
        min_length=1,
        description="Backbones to compare, one parallel branch each; comma-separated on the command line "
        "(bakeoff backbones lists them).",
    )
    weights: str = Field(
        "imagenet",
        description="imagenet, none (random init: smoke tests only, never promoted), a mirror name (e.g. hed), "
        "a file path or s3:// URI; or per backbone: mobilenet_v2=imagenet,vgg16=hed.",
    )
    image_size: int = Field(
        0, ge=0, description="Square input size in pixels; 0: each backbone's default (e.g. 224 for VGG16)."
    )
    extra_image_sizes: list[int] = Field(
        default_factory=list,
        description="More square input sizes to try besides image_size (comma-separated, e.g. 96,128): features at "
        "each size, the head search picks size, layer and head on validation and the model serves at the chosen "
        "size; each extra size costs one more feature pass. Empty: one size.",
    )
    batch_size: int = Field(
        32, ge=1, description="Images per batch in feature extraction, head training, fine-tuning and evaluation."
    )
    precision: Precision = Field(
        "auto",
        description="Arithmetic of feature extraction: float32, bfloat16, or auto: bfloat16 only on CPUs with "
        "AVX512-BF16 or AMX and for backbones measured faster there with unchanged head accuracy (VGG16: 2.4-4.4x; "
        "docs/models.md).",
    )
    flip: Flip = Field(
        "off",
        description="on: features of the horizontally mirrored images too (a second forward pass: extraction costs "
        "twice), and the head search tries flip augmentation and flip test-time averaging, each kept only where it "
        "wins on validation; off: one pass (docs/models.md has the measured cost and gain).",
    )
    head_kind: HeadKind = Field(
        "search",
        description="Classifier on the cached features: search (dense and logreg on the top and each tap layer, "
        "the best on validation kept), dense (Dense + Dropout, Keras) or logreg (scikit-learn logistic "
        "regression, C chosen on validation).",
    )
    head_epochs: int = Field(
        50, ge=1, description="Most epochs of the dense head; early stopping on validation loss usually ends sooner."
    )
    head_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the dense head.")
    head_hidden: int = Field(
        256, ge=1, description="Units of the dense head's hidden layer (the notebooks: 256 or 1024)."
    )
    head_dropout: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="Dropout after the dense head's hidden layer; between 0 and 1 (0.2 or 0.5 in the notebooks).",
    )
    finetune_epochs: int = Field(
        5,
        ge=0,
        description="Most epochs of fine-tuning (early stopping on validation loss); 0: no fine-tuning, the "
        "model is the backbone plus the trained head.",
    )
    finetune_top_k: int = Field(
        1,
        ge=0,
        description="Fine-tune the best k frozen candidates per backbone (on validation); with one candidate per "
        "backbone 0 skips fine-tuning and 1 or more fine-tunes it. A fine-tuned model replaces the frozen one only "
        "if it beats it on validation.",
    )
    ensemble_max_members: int = Field(
        0,
        ge=0,
        description="Most backbones averaged into one ensemble candidate, chosen on validation by greedy forward "
        "selection (added only while validation improves); it competes at the gate like any candidate; "
        "0 or 1: no ensemble (the default: the step costs about 8% of a default run and gained at most one "
        "test image on the two tasks measured; try 3).",
    )
    finetune_lr: float = Field(
        1e-5,
        gt=0,
        description="Peak learning rate of fine-tuning (cosine schedule); keep it low so pretrained features survive.",
    )
    finetune_blocks: int = Field(
        1,
        ge=0,
        description="How many top blocks of the backbone fine-tuning unfreezes (BatchNorm stays frozen); "
        "0: only the head trains.",
    )
    experiment: str = Field(
        "bakeoff", description="MLflow experiment that holds the pipeline run and one nested run per backbone."
    )
    model_name: str = Field(
        "bakeoff-classifier",
        description="MLflow registered model: the gate registers each run's challenger as a version and only the "
        "gate moves @champion.",
    )
    gate_test: GateTest = Field(
        "mcnemar",
        description="Paired one-sided test of the promotion gate on the same test images, one of: "
        + ", ".join(TESTS)
        + " (bakeoff.stats).",
    )
    gate_alpha: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Significance level: the challenger replaces the champion only if the p-value is below it.",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _split_lists(cls, value, info: ValidationInfo):
        """A list parameter may be given as one comma-separated string (command line, YAML)."""
        if isinstance(value, str) and get_origin(cls.model_fields[info.field_name].annotation) is list:
            value = [v.strip() for v in value.split(",") if v.strip()]
        return value


class Settings(BaseModel):
    """What the operator fixes at compile time (see docs/orchestration.md for the cluster side)."""

    model_config = ConfigDict(extra="forbid")

    pipeline_name: str = Field(
        "bakeoff", description="Pipeline name in KFP; submit and schedule upload new versions under it."
    )
    image: str = Field("localhost/bakeoff-python:0.1.0", description="Container image of every step (the CPU build).")
    gpu_image: str | None = Field(
        None, description="Image of features and finetune (the CUDA build); unset: the image of every step."
    )
    parallelism: int = Field(2, ge=1, description="Backbones trained at once (the ParallelFor's parallelism).")
    accelerator_type: str = Field(
        "nvidia.com/gpu", description="Kubernetes resource name of the GPU that features and finetune request."
    )
    accelerator_limit: int = Field(1, ge=0, description="GPUs per features/finetune pod; 0: CPU only everywhere.")
    gpu_node_selector: dict[str, str] = Field(
        default_factory=lambda: {"bakeoff.io/pool": "gpu"},
        description="Node labels the GPU steps must run on (infra/terraform labels the GPU pool so).",
    )
    gpu_toleration_key: str = Field(
        "nvidia.com/gpu", description="Taint the GPU steps tolerate (operator Exists, effect NoSchedule)."
    )
    cpu_request: str = Field("1", description="CPU request of every step (a Kubernetes quantity).")
    memory_limit: str = Field("8G", description="Memory limit of the CPU steps (a Kubernetes quantity).")
    gpu_memory_limit: str = Field("16G", description="Memory limit of features and finetune when they get a GPU.")
    retries: int = Field(3, ge=0, description="Retries of the steps that talk to S3 or MLflow; 0: none.")
    retry_backoff: str = Field(
        "30s", description="Delay before the first retry; it doubles each time, at most 1 h (a duration, e.g. 30s)."
    )
    s3_secret: str = Field(
        "bakeoff-s3", description="Kubernetes Secret giving every step AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
    )
    mlflow_secret: str = Field(
        "bakeoff-mlflow",
        description="Kubernetes Secret giving the MLflow steps MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD (optional).",
    )
    config_map: str = Field(
        "bakeoff-config",
        description="ConfigMap giving every step MLFLOW_TRACKING_URI, AWS_ENDPOINT_URL, BAKEOFF_WEIGHTS_URI "
        "and BAKEOFF_CACHE_URI.",
    )


def reference_table(model: type[BaseModel]) -> str:
    """The Markdown table of a model's fields (name, default, description) that docs/orchestration.md shows.

    ``python -m pipelines.settings`` prints both tables; a test checks the page holds them verbatim.
    """
    rows = ["| name | default | meaning |", "|---|---|---|"]
    for name, field in model.model_fields.items():
        default = json.dumps(field.get_default(call_default_factory=True))
        rows.append(f"| `{name}` | `{default}` | {field.description} |")
    return "\n".join(rows)


class RunConfig(BaseModel):
    """A config file: ``parameters`` (the run form) and ``settings`` (compile time), both optional."""

    model_config = ConfigDict(extra="forbid")

    parameters: Parameters = Field(default_factory=Parameters)
    settings: Settings = Field(default_factory=Settings)


def load_config(
    path: str | Path | None,
    overrides: dict | None = None,
    settings: dict | None = None,
    *,
    scope: Scope | None = None,
    require_data: bool = True,
    notes: list[str] | None = None,
) -> RunConfig:
    """Read a YAML config and apply command-line values on top; every problem at once, on one line.

    Precedence, lowest first: the model's defaults, the file, ``overrides`` (run form) and ``settings``
    (compile time). ``None`` in either dict means "not given". With a ``scope`` the run form is also checked
    as far as that scope allows (``bakeoff.validation``: names, weights, data, classes), together with the
    type and range checks, so a config with three mistakes reports three. What the scope could not check
    is appended to ``notes`` (for the CLI to show).
    """
    where = f"config {path or '(options)'}"
    raw = _read_config(path)
    params = {**(raw.get("parameters") or {}), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    fixed = {**(raw.get("settings") or {}), **{k: v for k, v in (settings or {}).items() if v is not None}}
    extra = {k: v for k, v in raw.items() if k not in ("parameters", "settings")}
    try:
        config = RunConfig(parameters=params, settings=fixed, **extra)
        problems: list[Problem] = []
    except ValidationError as exc:
        config, problems = None, pydantic_problems(exc)
    if scope is not None:
        typed, bad = _typed_parameters(params, problems)
        report = validation.validate(typed, scope, require_data=require_data, skip=bad)
        problems += [Problem(f"parameters.{p.field}", p.message) for p in report.problems]
        if notes is not None:
            notes.extend(report.notes)
    if problems:
        raise validation.RunFormError(where, problems)
    return config


def check_run_form(values: dict, scope: Scope = Scope.HERE) -> Parameters:
    """The run form as a KFP UI user filled it (``components/validate.py``): types, ranges, choices and
    everything ``bakeoff.validation`` checks, every problem at once."""
    try:
        form, problems = Parameters(**values), []
    except ValidationError as exc:
        form, problems = None, pydantic_problems(exc)
    typed, bad = _typed_parameters(values, problems)
    problems += validation.validate(typed, scope, skip=bad).problems
    if problems:
        raise validation.RunFormError("run form", problems)
    return form


def pydantic_problems(exc: ValidationError) -> list[Problem]:
    """Every error of a pydantic validation as a (dotted field, message) problem."""
    return [Problem(".".join(str(p) for p in err["loc"]) or "(config)", err["msg"]) for err in exc.errors()]


def _typed_parameters(params: dict, problems: list[Problem]) -> tuple[dict, set[str]]:
    """The run form with defaults in place of the fields that failed the type checks, and those fields' names.

    The semantic checks then look at every field that is well-typed, and skip the ones already reported.
    """
    bad = {p.field.split(".")[1] for p in problems if p.field.startswith("parameters.") and "." in p.field}
    bad |= {p.field for p in problems if p.field in Parameters.model_fields}
    good = {k: v for k, v in params.items() if k in Parameters.model_fields and k not in bad}
    try:
        return Parameters(**good).model_dump(), bad
    except ValidationError:  # a cross-field rule failed: check names only on the raw values
        return {**Parameters().model_dump(), **good}, bad


def _read_config(path: str | Path | None) -> dict:
    import yaml

    if not path:
        return {}
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise BakeoffError(f"cannot read config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise BakeoffError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(raw, dict):
        raise BakeoffError(f"config {path} must be a mapping with `parameters:` and/or `settings:`")
    return raw


if __name__ == "__main__":
    print(f"{reference_table(Parameters)}\n\n{reference_table(Settings)}")
