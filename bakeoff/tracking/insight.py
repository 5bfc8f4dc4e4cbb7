"""The insight step's files and numbers on the pipeline's parent run, and the dataset card that counts the
suspected label errors (re-logged under ``dataset/``, beside the card ingest wrote)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bakeoff import card, contract, storage
from bakeoff.tracking.artifacts import log_files
from bakeoff.tracking.batching import log_metrics, metric
from bakeoff.tracking.store import client

METRIC_KEYS = (
    "learning_curve_more_data_helps",
    "learning_curve_gain_per_doubling",
    "learning_curve_spread",
    "learning_curve_val_full",
    "label_issues",
    "label_issues_checked",
)


def log_insight(parent_run_id: str, insight_dir: str, dataset_dir: str, record: dict) -> None:
    """Files under ``insight/``, the numbers as ``insight_<key>`` metrics, the card with the label-issue count."""
    c = client()
    now = int(time.time() * 1000)
    points = [metric(f"insight_{key}", record.get(key), now) for key in METRIC_KEYS]
    log_metrics(parent_run_id, [p for p in points if p is not None])
    with tempfile.TemporaryDirectory() as tmp:
        log_files(c, parent_run_id, insight_dir, contract.INSIGHT_FILES, contract.INSIGHT_ARTIFACTS, tmp)
        card_uri = storage.join(dataset_dir, contract.CARD_JSON_NAME)
        if "label_issues" in record and storage.exists(card_uri):
            counted = card.with_label_issues(
                storage.read_json(card_uri), record["label_issues"], record["label_issues_checked"]
            )
            storage.write_json(Path(tmp, contract.CARD_JSON_NAME), counted)
            Path(tmp, contract.CARD_MD_NAME).write_text(card.to_markdown(counted))
            for name in (contract.CARD_JSON_NAME, contract.CARD_MD_NAME):
                c.log_artifact(parent_run_id, str(Path(tmp, name)), contract.DATASET_ARTIFACTS)
