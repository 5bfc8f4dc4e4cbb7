"""Thin KFP v2 components, one per file: each unpacks its artifacts, calls the core, writes outputs.

Each file holds one plain function; :func:`load` turns them into lightweight Python components
for a given container image. Why not decorate at import time: the image is a compile-time choice
(CPU or CUDA build, a registry tag), and KFP bakes it into the component spec when decorating.

Lightweight components are shipped as their function's SOURCE, so every import (bakeoff.*, numpy,
...) lives inside the function body, and nothing here may call helpers defined outside it.
"""

from __future__ import annotations

from types import SimpleNamespace

STEPS = (
    "validate",
    "fingerprint",
    "ingest",
    "open_run",
    "features",
    "train_head",
    "finetune",
    "evaluate",
    "ensemble",
    "select_and_register",
    "insight",
    "finalize",
)


def load(image: str) -> SimpleNamespace:
    """Build every component for ``image``: ``load(image).features`` is a KFP component.

    No default here: the image is a compile-time setting (``pipelines.settings.Settings.image``), set in one place.
    """
    import importlib

    from kfp import dsl

    built = {}
    for step in STEPS:
        func = getattr(importlib.import_module(f"components.{step}"), step)
        built[step] = dsl.component(func=func, base_image=image, install_kfp_package=False)
    return SimpleNamespace(**built)
