"""The environment of a local `bakeoff run` inside a test: isolated cwd, MLflow store, feature cache, weights."""

from __future__ import annotations

from pathlib import Path

import pytest


def local_run_env(root: Path, weights_mirror: str) -> pytest.MonkeyPatch:
    """cwd = ``root`` (the embedded MLflow store lives under it), the offline weights mirror, a feature cache of its
    own, and no tracking server from the caller's environment; ``undo()`` the returned patch when done."""
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.setenv("BAKEOFF_WEIGHTS_URI", weights_mirror)
    mp.setenv("BAKEOFF_CACHE_URI", str(root / "feature-cache"))
    return mp
