"""Which code produced a result: the git commit and the bakeoff version every MLflow run is tagged with."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bakeoff import __version__, env


def git_commit() -> str:
    """The code version: $BAKEOFF_GIT_COMMIT (set in container builds) or the checkout's HEAD."""
    override = env.git_commit()
    if override:
        return override
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def version() -> str:
    """The installed bakeoff package version."""
    return __version__
