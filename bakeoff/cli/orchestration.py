"""CLI commands for the pipeline: ``run`` (locally through kfp.local), ``compile``, ``submit``, ``schedule``.

Heavy imports (kfp, mlflow, tensorflow) happen inside the commands: ``bakeoff --help`` stays fast.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import typer

from bakeoff import env
from bakeoff.cli.helptext import command_help
from bakeoff.cli.run_form import field_help, with_run_form
from bakeoff.errors import BakeoffError, PipelineFailed
from bakeoff.validation import Scope
from pipelines.client import KFP_EXPERIMENT_NAME
from pipelines.settings import Settings, load_config

CONFIG = typer.Option(None, "--config", "-c", help="YAML with `parameters:` (run form) and `settings:` (compile time).")
HOST = typer.Option(
    ...,
    "--host",
    envvar=env.KF_PIPELINES_ENDPOINT.name,  # read by Typer (click), named in bakeoff.env's registry
    show_envvar=True,
    help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline.",
)
NAMESPACE = typer.Option(None, "--namespace", help="Kubeflow profile namespace (multi-user KFP).")
PACKAGE = typer.Option(None, "--package", help="A pipeline.yaml from `bakeoff compile` (default: compile now).")
KFP_EXPERIMENT = typer.Option(KFP_EXPERIMENT_NAME, "--kfp-experiment", help="KFP experiment to file the run under.")
# compile-time settings: one definition for compile, submit and schedule (the last two compile unless --package)
IMAGE = typer.Option(None, "--image", help=field_help(Settings, "image"))
GPU_IMAGE = typer.Option(None, "--gpu-image", help=field_help(Settings, "gpu_image"))
PARALLELISM = typer.Option(None, "--parallelism", help=field_help(Settings, "parallelism"))


# ---------------------------------------------------------------------------------------------- run
_EXEC = re.compile(r"Executing task '?([\w.-]+)")
_DONE = re.compile(r"Task '?([\w.-]+)'? finished with status (\w+)")
_HIT = re.compile(r"Task '?([\w.-]+)'? cache hit")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


_PER_BACKBONE = {"features", "train-head", "finetune", "evaluate"}
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
STOP_GRACE_S = 20.0  # how long a stopping pipeline may take to end its tasks and mark MLflow before it is killed


def _running(started: dict[str, list[float]]) -> str:
    return ", ".join(f"{name} x{len(t)}" if len(t) > 1 else name for name, t in started.items() if t)


def _follow(proc: subprocess.Popen, log: Path, console) -> list[str]:
    """Show one line per task event while the pipeline child runs; returns the names of failed tasks."""
    started: dict[str, list[float]] = {}  # per task name: start times (ParallelFor branches share a name)
    seen: dict[str, int] = {}
    failed: list[str] = []
    position = 0
    with console.status("starting the pipeline...") as status:
        while True:
            finished = proc.poll() is not None
            with open(log, errors="replace") as handle:
                handle.seek(position)
                chunk = handle.read()
                position = handle.tell()
            for line in _ANSI.sub("", chunk).splitlines():
                if m := _HIT.search(line):
                    console.print(f"  [cyan]cached[/]  {m.group(1)}")
                elif m := _EXEC.search(line):
                    started.setdefault(m.group(1), []).append(time.time())
                    status.update(f"running {_running(started)}")
                elif m := _DONE.search(line):
                    name, state = m.group(1), m.group(2)
                    times = started.get(name) or [time.time()]
                    took = time.time() - times.pop(0)
                    seen[name] = seen.get(name, 0) + 1
                    label = f"{name} #{seen[name]}" if name in _PER_BACKBONE else name
                    if state == "SUCCESS":
                        console.print(f"  [green]done[/]    {label} ({took:.0f} s)")
                    else:
                        failed.append(label)
                        console.print(f"  [red]failed[/]  {label} ({took:.0f} s)")
                    status.update(f"running {_running(started) or '...'}")
            if finished:
                return failed
            time.sleep(0.5)


def run(
    config: Path | None = CONFIG,
    workdir: Path = typer.Option(
        Path(".bakeoff"), "--workdir", help="Local pipeline root, caches, logs, MLflow store."
    ),
    overrides: dict | None = None,
) -> None:
    """Run the WHOLE pipeline on this machine (kfp.local), tracked in MLflow; print the leaderboard and the gate.

    The same DAG as on Kubeflow: ingest -> per backbone (features -> head -> fine-tune -> evaluate) ->
    select-and-register. Tasks run as local processes (2 backbones at a time). MLflow: MLFLOW_TRACKING_URI,
    or the embedded store in .bakeoff/mlflow. Re-running on unchanged data reuses the cached ingest and
    features, and the champion alias moves only if the gate says the challenger really wins.

    Writes .bakeoff/kfp (artifacts), .bakeoff/runs/<time>/pipeline.log (every task's output), result.json.
    Ctrl-C, SIGTERM or SIGHUP (or killing this command) stops every process of the run within seconds and ends
    its MLflow runs FAILED; nothing it started goes on to move an alias.

    Example: bakeoff run --config configs/demo.yaml --backbones mobilenet_v2,vgg16 --finetune-epochs 1
    """
    from bakeoff.cli import output

    cfg = load_config(config, overrides, scope=Scope.HERE)  # every problem, before anything is written
    console = output.console()  # logs/CI: the table at full width, never squeezed to 80
    run_dir = _new_run_dir(workdir)
    (run_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    log, result_path = run_dir / "pipeline.log", run_dir / "result.json"
    p = cfg.parameters
    console.print(f"[bold]bakeoff run[/]: {', '.join(p.backbones)} on {p.data_uri} -> experiment '{p.experiment}'")
    console.print(f"  log: {log}")
    started = time.time()
    # the tasks' output goes to the pipeline log whole: without the knobs the CLI set to quiet its own terminal
    child_env = {**env.snapshot(), "PYTHONUNBUFFERED": "1"}
    for name in env.QUIETED_BY_CLI:
        child_env.pop(name, None)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines.local",
                "--config",
                str(run_dir / "config.json"),
                "--result",
                str(result_path),
                "--workdir",
                str(workdir),
                "--run-key",
                run_dir.name,
                "--parent-pid",
                str(os.getpid()),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,  # its own process group: the pipeline and its tasks, stopped as one
        )
        with StopForwarder(proc) as stop:
            failed = _follow(proc, log, console)
    result = json.loads(result_path.read_text()) if result_path.exists() else {"error": "the pipeline process died"}
    if stop.signum is not None:
        name = signal.Signals(stop.signum).name
        typer.secho(
            f"error: stopped by {name}: every process of the run ended; {result.get('mlflow', 'MLflow not reached')} "
            f"(full log: {log})",
            err=True,
            fg=typer.colors.RED,
        )
        raise SystemExit(128 + stop.signum)  # the shell's convention for "ended by signal N" (click keeps typer.Exit)
    if "error" in result:
        where = f"task '{failed[0]}' failed" if failed else "the pipeline failed"
        reason = _last_error(log) if failed or result.get("failed") else result["error"]
        raise PipelineFailed(f"{where}: {reason} (full log: {log})")
    console.print(_table(result["rows"]))
    decision = result["decision"]
    verdict = "[green]PROMOTED to champion[/]" if decision.get("promoted") else "[yellow]not promoted[/]"
    console.print(f"\n[bold]gate[/] ({decision.get('test')}): {verdict}: {decision.get('reason')}")
    console.print(
        f"finished in {time.time() - started:.0f} s; leaderboard: {result['leaderboard_path']}", soft_wrap=True
    )
    from bakeoff import tracking

    console.print(f"compare the runs: {tracking.ui_command(result['tracking_uri'])}", soft_wrap=True)


def _new_run_dir(workdir: Path) -> Path:
    """``<workdir>/runs/<time>-<4 hex>``: two runs started in the same second get folders of their own."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    while True:
        run_dir = workdir / "runs" / f"{stamp}-{secrets.token_hex(2)}"
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue


class StopForwarder:
    """While the pipeline runs, SIGTERM, SIGHUP or SIGINT to ``bakeoff run`` stop the pipeline, then ``bakeoff run``.

    The first signal asks the pipeline process to stop (it ends its tasks and marks the MLflow runs FAILED, see
    ``pipelines.local``); if it has not exited ``STOP_GRACE_S`` later, or a second signal comes, its whole process
    group is killed. SIGKILL of ``bakeoff run`` itself cannot be caught: the pipeline process's parent-death guard
    covers it.
    """

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopForwarder:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame) -> None:
        if self.signum is not None:
            self.kill()
            return
        self.signum = signum
        try:
            self.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            return
        timer = threading.Timer(STOP_GRACE_S, self.kill)
        timer.daemon = True
        timer.start()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _table(rows: list[dict]):
    """The leaderboard as a compact terminal table (the full one is the Markdown artifact and in MLflow)."""
    from rich.table import Table

    table = Table(title="leaderboard (test split)")
    headers = {
        "backbone": "backbone",
        "weights": "weights",
        "pretrained": "pretrained",
        "image_size": "px",
        "test_accuracy": "accuracy",
        "test_f1_macro": "F1",
        "latency_ms_per_image": "ms/img",
        "model_size_mb": "MB",
        "model_version": "version",
    }
    columns = [c for c in headers if rows and c in rows[0]]
    for column in columns:
        table.add_column(
            headers[column],
            justify="left" if column in ("backbone", "weights") else "right",
            no_wrap=column in ("backbone", "weights"),
        )
    for row in rows:
        table.add_row(*(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    return table


def _last_error(log: Path) -> str:
    """The last exception line a task printed (BakeoffError/Traceback tail), for a one-line summary."""
    lines = [_ANSI.sub("", line).strip() for line in log.read_text(errors="replace").splitlines()]
    for line in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception):", line):
            return line.removeprefix("bakeoff.errors.")[:300]
    return "see the log"


# ------------------------------------------------------------------------------------------ compile
def compile_(
    out: str = typer.Option("pipeline.yaml", "--out", "-o", help="Where to write the IR YAML; - for stdout."),
    config: Path | None = CONFIG,
    image: str | None = IMAGE,
    gpu_image: str | None = GPU_IMAGE,
    parallelism: int | None = PARALLELISM,
    overrides: dict | None = None,
) -> None:
    """Compile the pipeline to KFP IR YAML for the KFP UI or `bakeoff submit --package`.

    The file holds two YAML documents: the PipelineSpec (DAG, run-form parameters with the config's values
    as defaults, caching, retries, resources, GPU accelerator) and the Kubernetes PlatformSpec (GPU node
    selector and nvidia toleration, S3/MLflow credentials from Secrets and endpoints from a ConfigMap as env).

    Example: bakeoff compile --config configs/demo.yaml --image registry.example.com/bakeoff:0.1.0 --out pipeline.yaml
    """
    import tempfile

    from bakeoff.cli import output
    from pipelines.client import image_problem
    from pipelines.compile import compile_pipeline

    settings = dict(image=image, gpu_image=gpu_image, parallelism=parallelism)
    cfg = load_config(config, overrides, settings, scope=Scope.SYNTAX, require_data=False)
    for problem in filter(None, map(image_problem, {cfg.settings.image, cfg.settings.gpu_image} - {None})):
        typer.secho(f"warning: {problem}: no cluster can pull it; pass --image REGISTRY/NAME:TAG", err=True)
    if out != output.STDOUT:
        typer.echo(f"wrote {compile_pipeline(out, cfg.settings, cfg.parameters)}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        output.write_text(
            out, Path(compile_pipeline(Path(tmp, "pipeline.yaml"), cfg.settings, cfg.parameters)).read_text()
        )


# ------------------------------------------------------------------------------------- submit/schedule
def submit(
    host: str = HOST,
    config: Path | None = CONFIG,
    package: str | None = PACKAGE,
    image: str | None = IMAGE,
    gpu_image: str | None = GPU_IMAGE,
    parallelism: int | None = PARALLELISM,
    kfp_experiment: str = KFP_EXPERIMENT,
    namespace: str | None = NAMESPACE,
    run_name: str | None = typer.Option(None, "--run-name", help="Display name of the run."),
    overrides: dict | None = None,
) -> None:
    """Upload the pipeline as a new version to a Kubeflow Pipelines endpoint and start one run.

    Parameters come from --config and the options; credentials from the environment (KF_PIPELINES_TOKEN),
    and the pods get S3/MLflow credentials from Kubernetes Secrets, never from parameters.

    Without --package it compiles first, with --image (a remote cluster refuses an image under localhost/).

    Example: bakeoff submit --host https://kfp.example.com --image registry.example.com/bakeoff:0.1.0 --data s3://team/raw/animals
    """
    from pipelines.client import submit as do_submit

    cfg = _load_for_cluster(config, overrides, package, dict(image=image, gpu_image=gpu_image, parallelism=parallelism))
    done = do_submit(host, cfg, experiment=kfp_experiment, run_name=run_name, package=package, namespace=namespace)
    typer.echo(f"run {done.run_id} (pipeline version {done.version_id}): {done.url}")


def schedule(
    host: str = HOST,
    cron: str = typer.Option(
        ..., "--cron", help='6 fields, seconds first: "0 0 3 * * 1" = Mondays 03:00 (5 fields get "0 ").'
    ),
    config: Path | None = CONFIG,
    package: str | None = PACKAGE,
    image: str | None = IMAGE,
    gpu_image: str | None = GPU_IMAGE,
    parallelism: int | None = PARALLELISM,
    kfp_experiment: str = KFP_EXPERIMENT,
    namespace: str | None = NAMESPACE,
    name: str | None = typer.Option(None, "--name", help="Display name of the recurring run."),
    overrides: dict | None = None,
) -> None:
    """Schedule retraining on Kubeflow Pipelines: a recurring run, one at a time, no catch-up of missed slots.

    Unchanged data reuses the cached ingest and features, and the gate registers a new champion only
    when the challenger significantly beats the current one.

    Example: bakeoff schedule --host https://kfp.example.com --package pipeline.yaml --data s3://team/raw --cron "0 0 3 * * 1"
    """
    from pipelines.client import schedule as do_schedule

    cfg = _load_for_cluster(config, overrides, package, dict(image=image, gpu_image=gpu_image, parallelism=parallelism))
    done = do_schedule(host, cfg, cron, experiment=kfp_experiment, name=name, package=package, namespace=namespace)
    typer.echo(f"recurring run {done.run_id} (pipeline version {done.version_id}): {done.url}")


def _load_for_cluster(config: Path | None, overrides: dict | None, package: str | None, settings: dict):
    """The run form checked as far as this machine reaches the cluster's data; notes say what was left to it."""
    given = [f"--{k.replace('_', '-')}" for k, v in settings.items() if v is not None]
    if package and given:
        raise BakeoffError(
            f"{', '.join(given)} apply when compiling; --package {package} is compiled already (drop one)"
        )
    notes: list[str] = []
    cfg = load_config(config, overrides, settings, scope=Scope.REACHABLE, notes=notes)
    for note in notes:
        typer.secho(f"note: {note}", dim=True)  # stdout: stderr stays the one-line error, if any
    return cfg


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    for name, command in (("run", run), ("compile", compile_), ("submit", submit), ("schedule", schedule)):
        app.command(name, help=command_help(command))(with_run_form(command))
