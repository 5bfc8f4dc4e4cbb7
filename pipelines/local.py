"""Run the bake-off pipeline on this machine through ``kfp.local`` (SubprocessRunner, no venv per task).

The same pipeline function as on a cluster; kfp.local ignores the Kubernetes settings. Tasks run as
child processes of this one, so they inherit its environment: the MLflow tracking URI (the embedded
SQLite default unless MLFLOW_TRACKING_URI is set), the weights mirror, the feature cache ($BAKEOFF_CACHE_URI), AWS_*.

``python -m pipelines.local --config CONFIG_JSON --result RESULT_JSON --parent-pid PID`` is what ``bakeoff run``
starts in a child process (its own session: this process and every task process share one process group) whose
output goes to the run's log file, so the terminal shows progress, not noise.

Stopping: on SIGTERM, SIGHUP or SIGINT, and when the ``bakeoff run`` that started it dies by any signal (Linux:
``PR_SET_PDEATHSIG``; elsewhere a watchdog thread on ``os.getppid()``), it ends every task process of the run,
ends the run's MLflow runs FAILED, writes the result and exits: no orphan ever finishes a run or moves an alias.

Secrets: everything this process and its tasks print, and the result file, pass ``bakeoff.redaction``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from bakeoff import env, storage
from bakeoff.errors import BakeoffError
from bakeoff.redaction import RedactingStream, redact
from pipelines.settings import RunConfig

LOCAL_RETRIES = 0  # locally a failing step is a bug to show at once, not a flaky network to wait out
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
MARK_FAILED_TIMEOUT_S = 15.0  # longest a stop waits for MLflow before the processes go anyway
PARENT_POLL_S = 1.0  # the watchdog's interval where PR_SET_PDEATHSIG does not exist
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass
class _Run:
    """What a stop needs to know about the run in progress: where its task folders are and its experiment."""

    root: Path | None = None
    name: str = ""
    experiment: str = ""
    model_name: str = ""
    result_path: str | None = None
    stopping: bool = field(default=False)


_run = _Run()


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


def run_local(config: RunConfig, workdir: str | Path = ".bakeoff", run_key: str | None = None) -> dict:
    """Run the whole pipeline; returns leaderboard Markdown, the gate's decision and where things are.

    ``run_key`` names this run's folder under ``<workdir>/kfp`` (``<pipeline name>-<run_key>-<time>``), where the
    result and, when stopped, the KFP run id are read back.
    """
    from pipelines import local_cache
    from pipelines.factory import create_pipeline

    workdir = Path(workdir).resolve()
    params = config.parameters.model_copy()
    if not params.data_uri:
        raise BakeoffError("no data given; pass --data FOLDER|ARCHIVE|s3://PREFIX or set it in the config")
    task_env = prepare_environment(workdir)
    name = f"{config.settings.pipeline_name}-{run_key or uuid.uuid4().hex[:8]}"
    settings = config.settings.model_copy(update={"retries": LOCAL_RETRIES, "pipeline_name": name})
    pipeline = create_pipeline(settings, params)
    root = workdir / "kfp"
    root.mkdir(parents=True, exist_ok=True)
    _run.root, _run.name, _run.experiment, _run.model_name = root, name, params.experiment, params.model_name
    local_cache.init(root)  # kfp.local with a cache that checks cached outputs' files before serving them
    started = time.time()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        pipeline(**params.model_dump())
    select = _task_output(root, name, "select-and-register")
    leaderboard = select["artifacts"]["leaderboard"]["artifacts"][0]
    leaderboard_path = leaderboard["uri"]
    return {
        "rows": leaderboard.get("metadata", {}).get("rows", []),
        "decision": json.loads(select["parameterValues"]["Output"]),
        "leaderboard": Path(leaderboard_path).read_text(),
        "leaderboard_path": leaderboard_path,
        "seconds": round(time.time() - started, 1),
        "tracking_uri": task_env[env.MLFLOW_TRACKING_URI.name],
        "pipeline_root": str(root),
        "parameters": params.model_dump(),
    }


def _task_output(root: Path, name: str, task: str) -> dict:
    """A finished task's ``executor_output.json`` in this run's folder (kfp.local: ``<root>/<name>-<time>/<task>``)."""
    for folder in sorted(root.glob(f"{name}-*"), reverse=True):
        path = folder / task / "executor_output.json"
        if path.is_file():
            return json.loads(path.read_text())
    raise BakeoffError(f"task {task} of {name} left no output under {root}")


# ------------------------------------------------------------------------------------------------ stopping


def guard_parent(parent_pid: int) -> str:
    """Get SIGTERM when ``parent_pid`` (``bakeoff run``) dies, whatever killed it; returns the mechanism used.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGTERM)``, delivered by the kernel at once, no thread, no polling. Elsewhere
    (macOS laptops): a daemon thread that polls ``os.getppid()`` (a dead parent's orphans are re-parented).
    """
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        mechanism = "PR_SET_PDEATHSIG"
    else:

        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(PARENT_POLL_S)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
        mechanism = "watchdog"
    if os.getppid() != parent_pid:  # it died before the guard was set: nothing would ever signal us
        os.kill(os.getpid(), signal.SIGTERM)
    return mechanism


def _stop(signum: int, _frame=None) -> None:
    """End the run: every task process, then its MLflow runs (FAILED), then this process. Never returns."""
    if _run.stopping:
        return
    _run.stopping = True
    name = signal.Signals(signum).name
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # the group-wide SIGTERM below reaches this process too
    os.killpg(0, signal.SIGTERM)  # the task processes share this process group (kfp.local's Popen)
    print(f"stopped by {name}: task processes ended", flush=True)
    marked = _within(MARK_FAILED_TIMEOUT_S, lambda: _fail_mlflow_runs(f"stopped by {name} (bakeoff run)"))
    print(f"stopped by {name}: {marked}", flush=True)
    if _run.result_path:
        result = {"error": f"stopped by {name}", "stopped": name, "mlflow": marked}
        storage.write_bytes(_run.result_path, redact(json.dumps(result, indent=2)).encode())
    sys.stdout.flush()
    os.killpg(0, signal.SIGKILL)  # anything kfp.local started meanwhile, and this process


def _fail_mlflow_runs(reason: str) -> str:
    """The MLflow side of a stop: this KFP run's parent and candidates FAILED, undecided versions deleted."""
    from bakeoff import registry, tracking

    if _run.root is None:
        return "no pipeline started yet"
    try:
        kfp_run_id = _task_output(_run.root, _run.name, "validate")["parameterValues"]["Output"]
    except (BakeoffError, KeyError):
        return "stopped before the run form was checked: no MLflow run exists"
    parent = tracking.find_pipeline_run(_run.experiment, kfp_run_id)
    if parent is None:
        return f"KFP run {kfp_run_id} had not opened its MLflow run"
    ended = tracking.fail_pipeline_run(parent.info.run_id, reason)
    deleted = registry.discard_undecided_versions(_run.model_name, parent.info.run_id)
    return f"ended {len(ended)} MLflow run(s) FAILED (parent {parent.info.run_id}), deleted {len(deleted)} version(s)"


def _within(seconds: float, work, default: str = "MLflow did not answer in time; its runs may still say RUNNING"):
    answer: list[str] = []

    def attempt() -> None:
        try:
            answer.append(work())
        except Exception as exc:  # a stop must go on even when MLflow is down
            answer.append(f"could not mark the MLflow runs FAILED: {type(exc).__name__}: {exc}")

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(seconds)
    return answer[0] if answer else default


def main(argv: list[str] | None = None) -> int:
    """Child-process entry of ``bakeoff run``: config JSON in, result JSON out, logs on stdout."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.local")
    parser.add_argument("--config", required=True, help="RunConfig as JSON")
    parser.add_argument("--result", required=True, help="where to write the result JSON")
    parser.add_argument("--workdir", default=".bakeoff")
    parser.add_argument("--run-key", default=None, help="names this run's folder under WORKDIR/kfp")
    parser.add_argument("--parent-pid", type=int, default=None, help="stop when this process (bakeoff run) dies")
    args = parser.parse_args(argv)
    # every line of the run log passes redaction: task output, MLflow's "View run at <URI>", tracebacks
    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    # kfp.local logs cache hits outside its own logging context: make them visible to `bakeoff run`
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s - %(levelname)s - %(message)s")
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
    warnings.filterwarnings("ignore", message=".*non-Python base image.*")
    _run.result_path = args.result
    if os.getpgrp() == os.getpid():  # our own process group (bakeoff run starts us so): stops take it all
        for sig in STOP_SIGNALS:
            signal.signal(sig, _stop)
        if args.parent_pid:
            print(f"stops with its parent {args.parent_pid} ({guard_parent(args.parent_pid)})", flush=True)
    config = RunConfig.model_validate_json(Path(args.config).read_text())
    try:
        result = run_local(config, args.workdir, args.run_key)
    except BakeoffError as exc:
        result = {"error": str(exc)}
    except RuntimeError as exc:  # kfp.local: "Pipeline ... finished with status FAILURE. Inner task failed: ..."
        result = {"error": str(exc), "failed": True}
    storage.write_bytes(args.result, redact(json.dumps(result, indent=2, default=str)).encode())
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
