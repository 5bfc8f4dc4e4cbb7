"""Run the bake-off pipeline on this machine through ``kfp.local`` (SubprocessRunner, no venv per task).

The same pipeline function as on a cluster; kfp.local ignores the Kubernetes settings. Tasks run as
child processes of this one, so they inherit its environment: the MLflow tracking URI (the embedded
SQLite default unless MLFLOW_TRACKING_URI is set), the weights mirror, the feature cache ($BAKEOFF_CACHE_URI), AWS_*.

``python -m pipelines.local --config CONFIG_JSON --result RESULT_JSON`` is what ``bakeoff run`` starts
in a child process whose output goes to the run's log file, so the terminal shows progress, not noise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from bakeoff import env, storage
from bakeoff.errors import BakeoffError
from pipelines.settings import RunConfig

LOCAL_RETRIES = 0  # locally a failing step is a bug to show at once, not a flaky network to wait out


def prepare_environment(workdir: str | Path) -> dict[str, str]:
    """Point every task at the same tracking store and feature cache (absolute paths: tasks may chdir)."""
    from bakeoff import tracking

    workdir = Path(workdir).resolve()
    uri = tracking.configure()
    # written for the task processes, which inherit this environment
    os.environ[env.MLFLOW_TRACKING_URI.name] = uri
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault(env.NO_PROGRESS.name, "1")  # task output goes to a log file: no progress bars there
    return {env.MLFLOW_TRACKING_URI.name: uri}


def run_local(config: RunConfig, workdir: str | Path = ".bakeoff") -> dict:
    """Run the whole pipeline; returns leaderboard Markdown, the gate's decision and where things are."""
    from pipelines import local_cache
    from pipelines.factory import create_pipeline

    workdir = Path(workdir).resolve()
    params = config.parameters.model_copy()
    if not params.data_uri:
        raise BakeoffError("no data given; pass --data FOLDER|ARCHIVE|s3://PREFIX or set it in the config")
    task_env = prepare_environment(workdir)
    settings = config.settings.model_copy(update={"retries": LOCAL_RETRIES})
    pipeline = create_pipeline(settings, params)
    root = workdir / "kfp"
    root.mkdir(parents=True, exist_ok=True)
    local_cache.init(root)  # kfp.local with a cache that checks cached outputs' files before serving them
    started = time.time()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        task = pipeline(**params.model_dump())
    leaderboard = Path(task.outputs["leaderboard"].path).read_text()
    return {
        "rows": task.outputs["leaderboard"].metadata.get("rows", []),
        "decision": json.loads(task.outputs["decision"]),
        "leaderboard": leaderboard,
        "leaderboard_path": task.outputs["leaderboard"].path,
        "seconds": round(time.time() - started, 1),
        "tracking_uri": task_env[env.MLFLOW_TRACKING_URI.name],
        "pipeline_root": str(root),
        "parameters": params.model_dump(),
    }


def main(argv: list[str] | None = None) -> int:
    """Child-process entry of ``bakeoff run``: config JSON in, result JSON out, logs on stdout."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.local")
    parser.add_argument("--config", required=True, help="RunConfig as JSON")
    parser.add_argument("--result", required=True, help="where to write the result JSON")
    parser.add_argument("--workdir", default=".bakeoff")
    args = parser.parse_args(argv)
    # kfp.local logs cache hits outside its own logging context: make them visible to `bakeoff run`
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s - %(levelname)s - %(message)s")
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
    warnings.filterwarnings("ignore", message=".*non-Python base image.*")
    config = RunConfig.model_validate_json(Path(args.config).read_text())
    try:
        result = run_local(config, args.workdir)
    except BakeoffError as exc:
        result = {"error": str(exc)}
    except RuntimeError as exc:  # kfp.local: "Pipeline ... finished with status FAILURE. Inner task failed: ..."
        result = {"error": str(exc), "failed": True}
    storage.write_bytes(args.result, json.dumps(result, indent=2, default=str).encode())
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
