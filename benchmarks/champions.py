"""The default pipeline's champion, before and after, on two real tasks, side by side in one run.

For each task (the demo dump: Fashion-MNIST; the digits dump: scikit-learn's handwritten digits, not derived from
the demo data) and each of two code versions (a git ref, checked out with `git worktree add --detach` into a temp
folder and removed afterwards, and this working tree), `bakeoff run` is started with the same options, the two
versions of one task at the same time so they share the host's load. Each run gets its own workdir (its MLflow
store, KFP root and log) and its own `XDG_CACHE_HOME` (fresh feature, decoded-image and image caches); the
variables that would point runs at a shared store or cache are dropped. Both versions read the same raw files
with the same seed and split fractions, so they test on the same images; the report checks that from each
champion's `predictions.parquet` and adds a paired McNemar test (bakeoff.stats).

    BAKEOFF_WEIGHTS_URI=.bakeoff/weights python -m benchmarks.champions --out champions.md
    python -m benchmarks.champions --tasks digits --per-class 8 --run-args "--backbones mobilenet_v2 ..."  # tiny

Writes a Markdown report (table, commands, host load, pairing) to --out and prints it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the report, not bars, on the terminal

AFTER_TREE = Path(__file__).resolve().parents[1]
DEFAULT_BEFORE = "3560fcc"  # main when issue 10 was started
DUMP_PER_CLASS = {"demo": 200, "digits": 150}  # the demo as `make demo` builds it; digits: 150 of the 174-183
TASKS = tuple(DUMP_PER_CLASS)
KEPT_ENV = {"BAKEOFF_WEIGHTS_URI"}  # every other BAKEOFF_* (caches, stores) is dropped: each run starts fresh
DROPPED_ENV = {"MLFLOW_TRACKING_URI", "PYTHONPATH", "XDG_CACHE_HOME"}


@dataclass
class Run:
    """One `bakeoff run` of one version on one task, and what came of it."""

    task: str
    version: str
    tree: Path
    workdir: Path
    command: list[str]
    wall_s: float = 0.0
    returncode: int | None = None
    result: dict = field(default_factory=dict)
    champion: str = ""
    val_acc: float | None = None
    test_acc: float | None = None
    run_id: str = ""
    error: str = ""


def make_dumps(root: Path, tasks: list[str], per_class: int | None, seed: int) -> dict[str, tuple[str, str]]:
    """Each task's raw dump (raw-img folder, label map), written once with this tree's code and read by both."""
    from bakeoff.demo_data import make_demo_data
    from bakeoff.task_data import make_digits_data

    makers = {"demo": make_demo_data, "digits": make_digits_data}
    dumps = {}
    for task in tasks:
        made = makers[task](str(root / task / "raw"), per_class=per_class or DUMP_PER_CLASS[task], seed=seed)
        dumps[task] = (made.raw_dir, made.label_map)
    return dumps


def run_env(workdir: Path, tree: Path) -> dict[str, str]:
    """The environment of one run: this tree's code, fresh caches, the embedded MLflow store in its workdir."""
    base = {
        k: v for k, v in os.environ.items() if k not in DROPPED_ENV and (not k.startswith("BAKEOFF_") or k in KEPT_ENV)
    }
    return {**base, "PYTHONPATH": str(tree), "XDG_CACHE_HOME": str(workdir / "cache"), "BAKEOFF_NO_PROGRESS": "1"}


def run_command(tree: Path, config: str, raw: str, label_map: str, run_args: list[str]) -> list[str]:
    """`bakeoff run` with the given options; a relative --config is read from the version's own tree."""
    command = [sys.executable, "-m", "bakeoff", "run"]
    if config:
        command += ["--config", str(tree / config)]
    return command + ["--data", raw, "--label-map", label_map, *run_args]


def run_side_by_side(runs: list[Run], loads: list[float]) -> None:
    """Start every run at once, each in its workdir (where `bakeoff run` keeps its .bakeoff: the embedded MLflow
    store, KFP root, logs), and wait for all, sampling the 1-minute load average every 5 s. Stopped (Ctrl-C,
    SIGTERM), it stops the runs: `bakeoff run` ends its pipeline's processes on SIGTERM."""
    procs = []
    try:
        for run in runs:
            run.workdir.mkdir(parents=True, exist_ok=True)
            with open(run.workdir / "bakeoff-run.log", "w") as log:
                env = run_env(run.workdir, run.tree)
                proc = subprocess.Popen(run.command, cwd=run.workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
            procs.append((run, time.time(), proc))
        pending = list(procs)
        sampled = 0.0
        while pending:
            if time.time() - sampled >= 5:  # the load every 5 s; each run's end to within 0.2 s
                loads.append(os.getloadavg()[0])
                sampled = time.time()
            for item in list(pending):
                run, started, proc = item
                if proc.poll() is not None:
                    run.wall_s, run.returncode = time.time() - started, proc.returncode
                    pending.remove(item)
            if pending:
                time.sleep(0.2)
    finally:
        for _, _, proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=120)


def read_result(run: Run) -> None:
    """The champion (the gate's challenger on a fresh registry) with its val and test accuracy, from result.json."""
    found = sorted((run.workdir / ".bakeoff" / "runs").glob("*/result.json"))
    if run.returncode != 0 or not found:
        log = (run.workdir / "bakeoff-run.log").read_text(errors="replace").strip().splitlines()
        run.error = f"exit {run.returncode}: {log[-1] if log else 'no output'}"
        return
    run.result = json.loads(found[-1].read_text())
    decision = run.result["decision"]
    run.run_id = decision["challenger_run_id"]
    row = next(r for r in run.result["rows"] if r["run_id"] == run.run_id)
    run.val_acc, run.test_acc = row.get("val_accuracy"), row.get("test_accuracy")
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=run.result["tracking_uri"])
    mlflow_run = client.get_run(run.run_id)
    cut = mlflow_run.data.params.get("cut")
    run.champion = f"{mlflow_run.info.run_name}{f' @{cut}' if cut and cut != 'None' else ''}"


def predictions(run: Run):
    """The champion's per-image test predictions (`evaluation/predictions.parquet` of its MLflow run), or None."""
    import pandas as pd

    import mlflow

    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run.run_id,
            artifact_path="evaluation/predictions.parquet",
            tracking_uri=run.result["tracking_uri"],
            dst_path=str(run.workdir / "predictions"),
        )
    except Exception as exc:  # an older version that logged none: the table stands without the paired line
        print(f"no predictions for {run.task}/{run.version}: {exc}", file=sys.stderr)
        return None
    return pd.read_parquet(path, columns=["sha256", "correct"]).set_index("sha256")


def paired_line(before: Run, after: Run) -> str:
    """Whether both champions were tested on the same images, and the paired test of after against before."""
    from bakeoff.stats import paired_test

    if before.error or after.error:
        return "not compared: a run failed"
    old, new = predictions(before), predictions(after)
    if old is None or new is None:
        return "not compared: predictions missing"
    if set(old.index) != set(new.index):
        return f"NOT paired: the test splits differ ({len(old)} vs {len(new)} images, {len(set(old.index) & set(new.index))} shared)"
    new = new.loc[old.index]
    test = paired_test(new["correct"].to_numpy(), old["correct"].to_numpy(), "mcnemar")
    return (
        f"paired: the same {test.n} test images; after - before = {test.delta:+.3f} "
        f"(only after right {test.challenger_only}, only before right {test.champion_only}; "
        f"one-sided exact McNemar p = {test.p_value:.3g})"
    )


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def report(runs: list[Run], pairs: dict[str, str], info: dict) -> str:
    """The Markdown the lead pastes into docs/models.md."""
    lines = [
        "| task | version | champion | val acc | test acc | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        champion = run.champion or f"FAILED ({run.error})"
        lines.append(
            f"| {run.task} | {run.version} | {champion} | {_acc(run.val_acc)} | {_acc(run.test_acc)} | {run.wall_s:.1f} |"
        )
    lines += ["", *(f"- {task}: {line}" for task, line in pairs.items()), ""]
    lines += [
        f"Made {info['started']} on {info['host']} ({info['cpus']} CPUs), load average (1 min) during the runs "
        f"{info['load_min']:.1f}-{info['load_max']:.1f}; before = `{info['before']}`, after = `{info['after']}`.",
        "The two versions of a task ran at the same time (shared load), each with its own MLflow store, KFP root "
        "and fresh caches; the champion is the gate's challenger on a fresh registry. val acc `-`: that version "
        "did not score val.",
        "",
        "```",
        info["argv"],
        *(
            f"# {run.task}/{run.version}\ncd {run.workdir} && PYTHONPATH={run.tree} XDG_CACHE_HOME={run.workdir}/cache "
            f"{shlex.join(run.command)}"
            for run in runs
        ),
        "```",
        "",
    ]
    return "\n".join(lines)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=AFTER_TREE, check=True, capture_output=True, text=True).stdout.strip()


def _stop(signum: int, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: runs stopped, worktree removed


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="git ref of the 'before' code (default: %(default)s)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated, of: " + ", ".join(TASKS))
    parser.add_argument("--config", default="configs/demo.yaml", help="run config, relative to each version's tree")
    parser.add_argument("--per-class", type=int, default=None, help="images per class in each dump and each run")
    parser.add_argument("--run-args", default="", help="more `bakeoff run` options for both versions (one string)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the dumps")
    parser.add_argument("--out", default="champions.md", help="Markdown report (default: %(default)s)")
    parser.add_argument("--workdir", default=None, help="keep everything here (default: a temp folder, removed)")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        parser.error(f"unknown --tasks {unknown}; choose from {', '.join(TASKS)}")
    run_args = shlex.split(args.run_args) + (["--per-class", str(args.per_class)] if args.per_class else [])
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bakeoff-champions-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    before_sha = _git("rev-parse", "--short", f"{args.before}^{{commit}}")
    dirty = " + uncommitted changes" if _git("status", "--porcelain", "--untracked-files=no") else ""
    before_tree = root / "before-tree"
    _git("worktree", "add", "--detach", str(before_tree), before_sha)
    info = {
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "before": f"{args.before} ({before_sha})",
        "after": f"working tree at {_git('rev-parse', '--short', 'HEAD')}{dirty}",
        "argv": "python -m benchmarks.champions " + shlex.join(sys.argv[1:] if argv is None else argv),
    }
    runs, pairs, loads = [], {}, []
    try:
        dumps = make_dumps(root, tasks, args.per_class, args.seed)
        for task in tasks:
            raw, label_map = dumps[task]
            pair = [
                Run(task, version, tree, root / task / version, [])
                for version, tree in (("before", before_tree), ("after", AFTER_TREE))
            ]
            for run in pair:
                run.command = run_command(run.tree, args.config, raw, label_map, run_args)
            run_side_by_side(pair, loads)
            for run in pair:
                read_result(run)
            pairs[task] = paired_line(*pair)
            runs += pair
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(before_tree)], cwd=AFTER_TREE, check=False)
    info["load_min"], info["load_max"] = (min(loads), max(loads)) if loads else (0.0, 0.0)
    text = report(runs, pairs, info)
    Path(args.out).write_text(text)
    print(text)
    failed = any(run.error for run in runs)
    if failed:
        print(f"a run failed; its log: {root}/<task>/<version>/bakeoff-run.log", file=sys.stderr)
    elif not args.workdir:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
