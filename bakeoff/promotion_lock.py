"""The registry-wide promotion lock: a short lease, renewed while held, that says who holds it and until when.

Why a lease and not a plain mutex: a pipeline that dies holding the lock (SIGKILL, OOM, a deleted pod) cannot
release it. With a short time to live (``ttl_s``, default 60 s) renewed by a heartbeat thread while held, a dead
holder blocks the others for about one ttl, never for the whole of a long gate. While waiting, the caller says once
(and again when the holder changes) who holds it: the pipeline run, the host, the process id, and until when. An
operator can look and break it by hand (``bakeoff lock MODEL``, ``bakeoff lock MODEL --break``).

The lock is the existence of the registered model ``<model_name>.lock``: creating a registered model is an INSERT
under a unique constraint, so exactly one of several concurrent creators succeeds against any MLflow backend (SQLite,
PostgreSQL, through the REST server or directly). Its tags carry the owner token (who may renew and delete it), the
expiry (seconds since the epoch, UTC: holders' clocks should agree to within a few seconds), and the holder's
description, host and pid for people.
"""

from __future__ import annotations

import datetime as _dt
import os
import random
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from bakeoff import tracking
from bakeoff.contract import (
    LOCK_EXPIRES_TAG,
    LOCK_HOLDER_TAG,
    LOCK_HOST_TAG,
    LOCK_OWNER_TAG,
    LOCK_PID_TAG,
)
from bakeoff.errors import BakeoffError
from bakeoff.redaction import one_line

LOCK_SUFFIX = ".lock"
DEFAULT_TTL_S = 60.0
DEFAULT_TIMEOUT_S = 900.0
BEATS_PER_TTL = 4  # renew four times per ttl: three renewals in a row may fail before the lease lapses


def lock_name(model_name: str) -> str:
    """The registered model that is the lock of ``model_name``."""
    return f"{model_name}{LOCK_SUFFIX}"


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its tags say."""

    owner: str
    holder: str
    host: str
    pid: str
    expires: float

    @classmethod
    def from_tags(cls, tags: dict) -> Holder:
        try:
            expires = float(tags.get(LOCK_EXPIRES_TAG, "0"))
        except ValueError:
            expires = 0.0
        return cls(
            owner=tags.get(LOCK_OWNER_TAG, ""),
            holder=tags.get(LOCK_HOLDER_TAG, "") or "an unnamed holder",
            host=tags.get(LOCK_HOST_TAG, "") or "?",
            pid=tags.get(LOCK_PID_TAG, "") or "?",
            expires=expires,
        )

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) > self.expires

    def describe(self, now: float | None = None) -> str:
        """``<holder> on host H pid P until 12:00:05 UTC (in 42 s)``, or ``... expired 3 s ago``."""
        now = now if now is not None else time.time()
        until = _dt.datetime.fromtimestamp(self.expires, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        left = self.expires - now
        when = f"in {left:.0f} s" if left >= 0 else f"expired {-left:.0f} s ago"
        return f"{self.holder} on host {self.host} pid {self.pid} until {until} ({when})"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read_holder(model_name: str) -> Holder | None:
    """Who holds the lock of ``model_name`` now, or None when it is free."""
    return _read(tracking.client(), lock_name(model_name))


def _read(c, name: str) -> Holder | None:
    from mlflow.exceptions import MlflowException

    try:
        return Holder.from_tags(dict(c.get_registered_model(name).tags))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return None
        raise


def break_lock(model_name: str) -> Holder | None:
    """Delete the lock of ``model_name`` whoever holds it (an operator's last resort); returns whom it removed.

    The holder, if alive, notices at its next heartbeat or before it moves an alias, and moves none.
    """
    c = tracking.client()
    name = lock_name(model_name)
    holder = _read(c, name)
    if holder is not None:
        _delete_if_owner(c, name, holder.owner)
    return holder


def _delete_if_owner(c, name: str, owner: str) -> bool:
    """Delete the lock when its owner token is still ``owner`` (re-read just before: a new owner's lock stays)."""
    from mlflow.exceptions import MlflowException

    again = _read(c, name)
    if again is None or again.owner != owner:
        return False
    try:
        c.delete_registered_model(name)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return False
        raise
    return True


class Lease:
    """A held lock: renewed by a heartbeat thread until released; ``check()`` raises once it was lost."""

    def __init__(self, c, model_name: str, token: str, ttl_s: float, notify: Callable[[str], None] = _stderr):
        self.model_name, self.name, self.token, self.ttl_s = model_name, lock_name(model_name), token, ttl_s
        self._notify = notify
        self.expires = time.time() + ttl_s
        self.lost: str | None = None
        self._c = c
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.name}", daemon=True)

    def __str__(self) -> str:
        return self.token

    def start(self) -> Lease:
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / BEATS_PER_TTL):
            self.renew()

    def renew(self) -> None:
        """Push the expiry one ttl ahead while the lock is still ours; otherwise remember that it was lost."""
        if self.lost:
            return
        if time.time() > self.expires:
            self.lost = f"its lease expired at {self.expires:.0f} before it could be renewed"
            return
        try:
            holder = _read(self._c, self.name)
            if holder is None or holder.owner != self.token:
                self.lost = "it was broken (deleted) or taken over by another holder"
                return
            expires = time.time() + self.ttl_s
            self._c.set_registered_model_tag(self.name, LOCK_EXPIRES_TAG, f"{expires:.3f}")
            self.expires = expires
        except Exception:  # MLflow unreachable for a moment: the next beat tries again, the expiry check guards
            pass

    def check(self) -> None:
        """Raise when the lock is no longer held (broken by an operator, or a lapsed lease): move no alias then.

        Asks the store (one read), so a break a moment ago is seen even between heartbeats.
        """
        if self.lost is None and time.time() > self.expires:
            self.lost = "its lease expired (heartbeats failed)"
        if self.lost is None:
            holder = _read(self._c, self.name)
            if holder is None or holder.owner != self.token:
                self.lost = "it was broken (deleted) or taken over by another holder"
        if self.lost:
            raise BakeoffError(f"promotion lock {self.name} was lost while held: {self.lost}; no alias was moved")

    def release(self) -> None:
        """Stop the heartbeat and delete the lock; a release that fails is a warning naming the lock, never silent.

        The warning goes to ``notify`` (stderr: the terminal, a KFP step's log), not to Python's warnings, which
        the CLI files in its log.
        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        try:
            released = _delete_if_owner(self._c, self.name, self.token)
        except Exception as exc:
            self._notify(
                f"warning: could not release the promotion lock {self.name} ({type(exc).__name__}: "
                f"{one_line(exc, 300)}); it expires by itself within {self.ttl_s:.0f} s, or break it now: "
                f"bakeoff lock {self.model_name} --break"
            )
            return
        if not released and not self.lost:
            self._notify(
                f"warning: promotion lock {self.name} was no longer held by this process at release "
                "(broken or expired meanwhile)"
            )


def default_holder() -> str:
    """A description of this process for the holder tag when the caller gives none."""
    return "a bakeoff process"


@contextmanager
def registry_lock(
    model_name: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    ttl_s: float = DEFAULT_TTL_S,
    holder: str | None = None,
    notify: Callable[[str], None] = _stderr,
) -> Iterator[Lease]:
    """Hold the promotion lock of ``model_name`` for the ``with`` block; yields the :class:`Lease`.

    ``holder`` describes the caller for whoever waits (e.g. ``pipeline run <id> (KFP run <id>)``). While waiting,
    ``notify`` gets one line naming the current holder, again whenever the holder changes. A lock whose lease
    lapsed (its holder died) is broken by the next caller.
    """
    from mlflow.exceptions import MlflowException

    if ttl_s <= 0:
        raise BakeoffError(f"lock ttl must be positive (got {ttl_s})")
    c = tracking.client()
    name = lock_name(model_name)
    token = uuid.uuid4().hex
    deadline = time.monotonic() + timeout_s
    announced: str | None = None
    while True:
        try:
            c.create_registered_model(
                name,
                tags={
                    LOCK_OWNER_TAG: token,
                    LOCK_EXPIRES_TAG: f"{time.time() + ttl_s:.3f}",
                    LOCK_HOLDER_TAG: holder or default_holder(),
                    LOCK_HOST_TAG: socket.gethostname(),
                    LOCK_PID_TAG: str(os.getpid()),
                },
                description=f"bakeoff promotion lock for {model_name}: held while a gate moves its aliases; a lease "
                f"renewed every {ttl_s / BEATS_PER_TTL:.0f} s that expires by itself. Look or break it with "
                f"`bakeoff lock {model_name} [--break]`.",
            )
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        current = _read(c, name)
        if current is not None and current.expired():
            _delete_if_owner(c, name, current.owner)  # its holder died: the lease lapsed
            notify(f"promotion lock {name}: broke the lapsed lease of {current.describe()}")
            continue
        if current is not None and current.owner != announced:
            announced = current.owner
            notify(
                f"waiting for the promotion lock {name}: held by {current.describe()}; "
                f"if that process is dead it lapses by itself, or break it: bakeoff lock {model_name} --break"
            )
        if time.monotonic() > deadline:
            who = current.describe() if current is not None else "another pipeline"
            raise BakeoffError(
                f"promotion lock {name} is still held by {who} after {timeout_s:.0f} s; retry later, or if that "
                f"process is dead: bakeoff lock {model_name} --break"
            )
        time.sleep(0.2 + random.random() * 0.4)
    lease = Lease(c, model_name, token, ttl_s, notify).start()
    try:
        yield lease
    finally:
        lease.release()
