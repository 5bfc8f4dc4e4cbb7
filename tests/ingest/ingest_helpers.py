"""Helpers shared by the ingest tests (a module, not a conftest, so tests can import it by name)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bakeoff import manifest


def read(out: Path) -> pd.DataFrame:
    """The manifest with URIs resolved to absolute paths."""
    return manifest.read_manifest(out)
