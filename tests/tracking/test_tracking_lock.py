"""The promotion lock as a lease (issue 8 item 7): a SIGKILLed holder blocks others for about one ttl, waiters say
who holds it, operators can look and break it, a failed release is a warning, and re-gating the champion changes
nothing. Real processes against the real MLflow server; a real SQLite store for the broken-store case."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from bakeoff import promotion_lock, registry, tracking
from bakeoff.cli import main
from bakeoff.errors import BakeoffError

TTL_S = 6.0
SLACK_S = 6.0  # one heartbeat read + create over REST on a loaded 2-core machine, with margin

HOLDER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from bakeoff import promotion_lock, tracking
    tracking.configure(sys.argv[1])
    with promotion_lock.registry_lock(sys.argv[2], ttl_s=float(sys.argv[3]), holder="pipeline run p-77 (KFP run k-42)"):
        print("HELD", flush=True)
        time.sleep(600)
    """
)


def _expires(model_name: str) -> float:
    holder = promotion_lock.read_holder(model_name)
    assert holder is not None
    return holder.expires


def test_a_sigkilled_holder_blocks_the_next_gate_for_about_one_ttl_and_is_named(tracking_env, model_name):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, tracking_env.url, model_name, str(TTL_S)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        start_new_session=True,
    )
    try:
        assert holder.stdout.readline().strip() == "HELD"
        first_expiry = _expires(model_name)
        messages: list[str] = []
        got: dict = {}

        def wait_for_lock() -> None:
            with promotion_lock.registry_lock(model_name, timeout_s=120, ttl_s=TTL_S, notify=messages.append):
                got["at"] = time.monotonic()

        waiter = threading.Thread(target=wait_for_lock)
        waiter.start()
        # a live holder keeps renewing: it still holds the lock well past its first ttl
        time.sleep(TTL_S * 1.5)
        assert "at" not in got
        assert _expires(model_name) > first_expiry + TTL_S / 2
        os.kill(holder.pid, signal.SIGKILL)
        killed = time.monotonic()
        waiter.join(120)
        assert "at" in got, messages
        waited = got["at"] - killed
        assert waited <= TTL_S + SLACK_S, f"waited {waited:.1f} s after the SIGKILL"
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
    # the waiting line, said once for this holder: who (pipeline and KFP run), where (host, pid), until when
    waiting = [m for m in messages if m.startswith("waiting")]
    assert len(waiting) == 1, messages
    assert "pipeline run p-77 (KFP run k-42)" in waiting[0]
    assert f"host {socket.gethostname()} pid {holder.pid} until " in waiting[0] and "UTC" in waiting[0]
    assert f"bakeoff lock {model_name} --break" in waiting[0]
    assert any("broke the lapsed lease" in m for m in messages)
    assert promotion_lock.read_holder(model_name) is None  # released after use


def test_operators_see_and_break_the_lock_and_the_holder_then_moves_nothing(tracking_env, model_name, capsys):
    assert main(["lock", model_name]) == 0
    assert capsys.readouterr().out.strip() == f"{model_name}.lock is free"
    with pytest.raises(BakeoffError, match=f"promotion lock {model_name}.lock was lost while held"):
        with promotion_lock.registry_lock(model_name, holder="pipeline run p-1") as lease:
            assert main(["lock", model_name]) == 0
            shown = capsys.readouterr().out
            assert (
                f"{model_name}.lock is held by pipeline run p-1 on host {socket.gethostname()} pid {os.getpid()}"
                in (shown)
            )
            assert main(["lock", model_name, "--break"]) == 0
            assert "broke" in capsys.readouterr().out
            lease.check()  # what the gate calls right before an alias moves
    assert promotion_lock.read_holder(model_name) is None
    assert main(["lock", model_name, "--break"]) == 0
    assert "nothing to break" in capsys.readouterr().out


def test_waiting_past_the_timeout_names_the_holder(tracking_env, model_name):
    with promotion_lock.registry_lock(model_name, holder="pipeline run p-9"):
        with pytest.raises(BakeoffError, match="still held by pipeline run p-9 on host .* pid .*--break"):
            with promotion_lock.registry_lock(model_name, timeout_s=1, notify=lambda _m: None):
                pass


def test_a_release_that_fails_is_a_warning_naming_the_lock(tmp_path, monkeypatch):
    """The store breaks while the lock is held (here: its SQLite file overwritten): the release warns, never hides."""
    db = tmp_path / "mlflow.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.configure(f"sqlite:///{db}")
    said: list[str] = []
    try:
        with promotion_lock.registry_lock("m", ttl_s=30, notify=said.append):
            db.write_bytes(b"this is not a database" * 512)
    finally:
        tracking.reset()
    [warning] = said
    assert re.match(r"warning: could not release the promotion lock m\.lock \(.+\); .*bakeoff lock m --break$", warning)


def _log(dataset, candidates, model_name, threshold):
    parent = tracking.start_pipeline_run("lock-regate", str(dataset), run_name=f"t{threshold}")
    child = tracking.log_candidate(parent, model_name=model_name, **candidates(threshold).dirs)
    return parent, child


def _registry_state(model_name: str, parents: list[str]) -> dict:
    c = tracking.client()
    versions = {mv.version: dict(mv.tags) for mv in c.search_model_versions(f"name='{model_name}'")}
    aliases = {a: c.get_model_version_by_alias(model_name, a).version for a in ("champion", "challenger")}
    runs = {p: dict(c.get_run(p).data.tags) for p in parents}
    return {"versions": versions, "aliases": aliases, "runs": runs}


def test_regating_the_champions_own_run_changes_nothing(tracking_env, dataset, candidates, model_name):
    gate = registry.GateConfig()
    p1, r1 = _log(dataset, candidates, model_name, 127.5)
    d1 = registry.select_and_register(p1, [r1], model_name=model_name, dataset_dir=str(dataset), gate=gate)
    assert d1["promoted"]
    p2, r2 = _log(dataset, candidates, model_name, 201.03)  # a worse one: holds @challenger
    d2 = registry.select_and_register(p2, [r2], model_name=model_name, dataset_dir=str(dataset), gate=gate)
    assert not d2["promoted"]
    before = _registry_state(model_name, [p1, p2])

    again = registry.select_and_register(p1, [r1], model_name=model_name, dataset_dir=str(dataset), gate=gate)
    by_parent = registry.promote(p1, gate=registry.GateConfig(test="bootstrap"))
    by_run = registry.promote(r1, dataset_dir=str(dataset))

    assert again == d1  # the recorded decision
    for decision in (by_parent, by_run):
        assert registry.is_unchanged(decision) and "already is the champion" in decision["reason"]
        assert decision["champion_version_after"] == d1["challenger_version"]
    after = _registry_state(model_name, [p1, p2])
    assert after == before  # @challenger still on v2, no verdict or decision tag rewritten
    assert before["aliases"] == {"champion": d1["challenger_version"], "challenger": d2["challenger_version"]}
