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
        staged = Path(tmp + ".yaml")  # KFP picks the format from the suffix
        try:
            compiler.Compiler().compile(pipeline, package_path=str(staged))
            staged.replace(tmp)
        finally:
            staged.unlink(missing_ok=True)  # a failed compile leaves no stray file next to --out
    return str(out)
