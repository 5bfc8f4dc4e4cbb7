"""Compile the pipeline to KFP's IR YAML (PipelineSpec + the Kubernetes PlatformSpec, two YAML documents)."""

from __future__ import annotations

from pathlib import Path

from bakeoff import storage
from pipelines.settings import Parameters, Settings


def compile_pipeline(out: str | Path, settings: Settings | None = None, defaults: Parameters | None = None) -> str:
    """Write the compiled pipeline to ``out`` atomically; returns the path."""
    from kfp import compiler

    from pipelines.factory import create_pipeline

    pipeline = create_pipeline(settings, defaults)
    with storage.atomic_path(out) as tmp:
        compiler.Compiler().compile(pipeline, package_path=tmp + ".yaml")
        Path(tmp + ".yaml").replace(tmp)
    return str(out)
