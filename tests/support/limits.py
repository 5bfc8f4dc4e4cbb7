"""Real resource failures for tests, without root tricks: a full disk (the kernel's per-process file-size limit),
a read-only folder (an unprivileged uid, since root ignores permission bits), leftover temp files to look for."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

NOBODY = 65534
# storage.atomic_path's temp names: ".<name>.<random>.tmp" (+ the target's suffix where a writer insists on it)
_TEMP_NAME = re.compile(r"^\..+\.[^.]+\.tmp(\.[^.]+)?$")


def limit_file_size(max_bytes: int) -> Callable[[], None]:
    """A ``preexec_fn`` that makes every write past ``max_bytes`` in a file fail with EFBIG, as a full disk would.

    SIGXFSZ is ignored, so the write returns an error instead of the kernel killing the process.
    """

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


def as_unprivileged(uid: int = NOBODY) -> Callable[[], None]:
    """A ``preexec_fn`` that drops root to ``uid`` (nobody), so permission bits apply; a no-op when not root."""

    def apply() -> None:
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return apply


def temp_leftovers(root: Path) -> list[Path]:
    """Temp files an atomic write left under ``root`` (there must be none after a failure)."""
    return [p for p in Path(root).rglob(".*") if p.is_file() and _TEMP_NAME.match(p.name)]


def call_in_child(fn: Callable[[], object], preexec: Callable[[], None] | None = None, timeout: float = 60) -> str:
    """Run ``fn`` in a forked child after ``preexec`` (e.g. ``as_unprivileged()``); return ``"OK <result>"`` or
    ``"<ExceptionType> <message>"``.

    A fork, not a new interpreter: an unprivileged uid may not be allowed to execute a root-owned virtualenv.
    """
    import select

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into the test runner
        os.close(read_end)
        try:
            if preexec:
                preexec()
            message = f"OK {fn()}"
        except BaseException as exc:
            message = f"{type(exc).__name__} {exc}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    chunks = []
    try:
        while select.select([read_end], [], [], timeout)[0]:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    return b"".join(chunks).decode()


@contextlib.contextmanager
def small_filesystem(path: Path, size_bytes: int) -> Iterator[tuple[Path, str]]:
    """A folder on a real filesystem of ``size_bytes`` (a tmpfs) that fills up; yields it and the error text a write
    past the end gives. Where mounting is not permitted, this process's file-size limit gives the same failure
    point (EFBIG instead of ENOSPC) for the duration of the block."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode == 0:
        try:
            yield path, "No space left on device (errno 28)"
        finally:
            subprocess.run(["umount", "--lazy", str(path)], check=False)
        return
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size_bytes, hard))
    try:
        yield path, "File too large (errno 27)"
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
