"""MLflow tracking: one parent run per pipeline run, one nested run per backbone, the model registered.

Why this shape: the MLflow UI compares nested runs side by side (same params and metric names for
every backbone), the parent run carries what the candidates share (dataset, code version, KFP run,
leaderboard, gate decision), and every candidate's model becomes a version of ONE registered model so
the promotion gate (``bakeoff.registry``) only ever moves aliases. MLflow itself is imported inside
functions so ``bakeoff --help`` stays fast. Secrets never reach MLflow (``bakeoff.redaction``).

One module per job:

* ``store``: where runs go (tracking/registry URI, client, experiments, the UI command);
* ``parent_run``: the pipeline run (dataset identity, card, splits; leaderboard and gate decision at the end),
  found again by its KFP run id (retries reuse it), ended FAILED with its candidates when the pipeline fails;
* ``candidate_run``: one backbone as a nested run (params, metrics, step files, the logged model), keyed by backbone;
* ``models``: the class-names pyfunc logged and registered;
* ``leaderboard``: candidate runs back out of MLflow as a table and as Markdown;
* ``batching`` / ``artifacts``: batched param/metric writes, step files (local or S3) as run artifacts.
"""

from bakeoff.tracking.candidate_run import log_candidate
from bakeoff.tracking.leaderboard import (
    LEADERBOARD_COLUMNS,
    candidate_row,
    last_experiment,
    leaderboard,
    leaderboard_columns,
    leaderboard_markdown,
    pipeline_run_experiment,
    with_aliases,
)
from bakeoff.tracking.parent_run import (
    candidate_runs,
    fail_pipeline_run,
    find_pipeline_run,
    finish_pipeline_run,
    log_gate_decision,
    start_pipeline_run,
)
from bakeoff.tracking.store import (
    EMBEDDED_DIR,
    client,
    configure,
    ensure_configured,
    ensure_experiment,
    reset,
    ui_command,
)

__all__ = [
    "EMBEDDED_DIR",
    "LEADERBOARD_COLUMNS",
    "candidate_row",
    "candidate_runs",
    "client",
    "configure",
    "ensure_configured",
    "ensure_experiment",
    "fail_pipeline_run",
    "find_pipeline_run",
    "finish_pipeline_run",
    "last_experiment",
    "leaderboard",
    "leaderboard_columns",
    "leaderboard_markdown",
    "log_candidate",
    "log_gate_decision",
    "pipeline_run_experiment",
    "reset",
    "start_pipeline_run",
    "ui_command",
    "with_aliases",
]
