"""Compile-time settings and run-form defaults, validated (pydantic) and loadable from a YAML config.

Two kinds of knobs, kept apart on purpose:
- :class:`Parameters` become the pipeline's run-form parameters (a KFP UI user can change them per run);
- :class:`Settings` are baked in at compile time (image, GPU pool, secrets, parallelism): an operator's
  choices that a run form must not be able to change, and secrets must never become parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bakeoff.errors import BakeoffError


class Parameters(BaseModel):
    """The run form. Names are the pipeline's parameter names."""

    model_config = ConfigDict(extra="forbid")

    data_uri: str = Field("", description="raw images: folder, .zip/.tar archive or s3:// prefix")
    label_map_uri: str = Field("", description="optional JSON/YAML file mapping raw folder names to class names")
    classes: str = Field("", description="comma-separated classes to keep (empty: all)")
    per_class: int = Field(0, ge=0, description="cap on images per class (0: no cap)")
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    seed: int = 0
    data_version: str = Field(
        "", description="any label; changing it forces a fresh ingest (new data is detected anyway)"
    )
    backbones: list[str] = Field(default_factory=lambda: ["mobilenet_v2", "vgg16"], min_length=1)
    weights: str = Field("imagenet", description='one spec, or per backbone: "mobilenet_v2=imagenet,vgg16=hed"')
    image_size: int = Field(0, ge=0, description="input size in pixels (0: each backbone's default)")
    batch_size: int = Field(32, ge=1)
    head_kind: Literal["dense", "logreg"] = "dense"
    head_epochs: int = Field(50, ge=1)
    head_lr: float = Field(1e-3, gt=0)
    finetune_epochs: int = Field(5, ge=0)
    finetune_lr: float = Field(1e-5, gt=0)
    finetune_blocks: int = Field(1, ge=0)
    experiment: str = "bakeoff"
    model_name: str = "bakeoff-classifier"
    gate_test: Literal["mcnemar", "bootstrap"] = "mcnemar"
    gate_alpha: float = Field(0.05, gt=0, lt=1)

    @field_validator("backbones", mode="before")
    @classmethod
    def _split(cls, value):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return value


class Settings(BaseModel):
    """What the operator fixes at compile time (see docs/orchestration.md for the cluster side)."""

    model_config = ConfigDict(extra="forbid")

    pipeline_name: str = "bakeoff"
    image: str = "localhost/bakeoff-python:0.1.0"
    gpu_image: str | None = Field(None, description="image for features/finetune (default: image)")
    parallelism: int = Field(2, ge=1, description="backbones trained at once")
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_limit: int = Field(1, ge=0, description="GPUs per features/finetune pod (0: CPU only)")
    gpu_node_selector: dict[str, str] = Field(default_factory=lambda: {"bakeoff.io/pool": "gpu"})
    gpu_toleration_key: str = "nvidia.com/gpu"
    cpu_request: str = "1"
    memory_limit: str = "8G"
    gpu_memory_limit: str = "16G"
    retries: int = Field(3, ge=0, description="retries of the steps that talk to S3 or MLflow")
    retry_backoff: str = "30s"
    s3_secret: str = "bakeoff-s3"
    mlflow_secret: str = "bakeoff-mlflow"
    config_map: str = "bakeoff-config"


class RunConfig(BaseModel):
    """A config file: ``parameters`` (the run form) and ``settings`` (compile time), both optional."""

    model_config = ConfigDict(extra="forbid")

    parameters: Parameters = Field(default_factory=Parameters)
    settings: Settings = Field(default_factory=Settings)


def load_config(path: str | Path | None, overrides: dict | None = None) -> RunConfig:
    """Read a YAML config and apply CLI overrides (``None`` values are ignored); one-line errors."""
    import yaml

    raw: dict = {}
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise BakeoffError(f"cannot read config {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise BakeoffError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
        if not isinstance(raw, dict):
            raise BakeoffError(f"config {path} must be a mapping with `parameters:` and/or `settings:`")
    params = dict(raw.get("parameters") or {})
    params.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return RunConfig(
            parameters=params,
            settings=raw.get("settings") or {},
            **{k: v for k, v in raw.items() if k not in ("parameters", "settings")},
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise BakeoffError(f"config {path or '(options)'}: {where}: {err['msg']}") from exc
