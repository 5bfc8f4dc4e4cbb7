"""Params and metrics logged in batches: one request per 100 params / 1000 metrics instead of one per value.

Why: a candidate run logs ~40 params and a few hundred metric points (per-epoch histories); against a remote
tracking server single calls cost a round trip each. The limits are MLflow's own per-request caps.
"""

from __future__ import annotations

import math
from typing import Any

from bakeoff.tracking.store import client

PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000


def number(value: Any) -> float | None:
    """``value`` as a finite float, or None for what MLflow cannot log as a metric (text, bool, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def log_params(run_id: str, params: dict[str, str]) -> None:
    """Log already-stringified params (see ``bakeoff.redaction.safe_params``)."""
    from mlflow.entities import Param

    c = client()
    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), PARAMS_PER_BATCH):
        c.log_batch(run_id, params=items[start : start + PARAMS_PER_BATCH])


def log_metrics(run_id: str, metrics: list) -> None:
    """Log ``mlflow.entities.Metric`` objects."""
    c = client()
    for start in range(0, len(metrics), METRICS_PER_BATCH):
        c.log_batch(run_id, metrics=metrics[start : start + METRICS_PER_BATCH])


def metric(key: str, value: Any, timestamp: int, step: int = 0):
    """One ``Metric``, or None when ``value`` is not a finite number."""
    from mlflow.entities import Metric

    value = number(value)
    return None if value is None else Metric(key, value, timestamp, step)


def history_metrics(history: dict | None, prefix: str, epoch_end_ms, timestamp: int) -> list:
    """Per-epoch Keras history -> MLflow metrics ``<prefix>_<key>`` with step = epoch, each point at its epoch's
    end (``epoch_end_ms``, wall-clock ms as training recorded it), else at ``timestamp``."""
    times = [int(t) for t in (epoch_end_ms or ())]
    out = []
    for key, values in (history or {}).items():
        if not isinstance(values, list):
            continue
        for epoch, value in enumerate(values):
            point = metric(f"{prefix}_{key}", value, times[epoch] if epoch < len(times) else timestamp, epoch)
            if point is not None:
                out.append(point)
    return out
