"""Stopping the server processes tests start (each in its own session, so the whole group goes), and finding
the processes of a run by what their command lines mention."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def stop_process_group(proc: subprocess.Popen, grace_s: float = 10) -> None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session=True``), SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def processes_mentioning(text: str) -> dict[int, str]:
    """pid -> command line of every live process (zombies excluded) whose command line contains ``text``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile
            continue
        if text in cmdline and state != "Z":
            found[int(entry.name)] = cmdline.strip()
    return found


def wait_until_gone(text: str, timeout_s: float) -> tuple[float, dict[int, str]]:
    """Seconds until no process mentions ``text`` (or ``timeout_s``), and what is left then."""
    started = time.monotonic()
    while True:
        left = processes_mentioning(text)
        took = time.monotonic() - started
        if not left or took > timeout_s:
            return took, left
        time.sleep(0.2)
