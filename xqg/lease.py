"""One job per stage and run directory at a time: a lease file, <run>/_locks/<name>.json, renewed by a heartbeat.

Two jobs of the same stage on one run would redo and unmark each other's units, so a stage's job holds the stage's
lease while it plans, runs and marks units. The file names the holder (owner id, host, pid, command, since when);
a daemon thread renews it every `heartbeat_s`. Another job that finds a live lease stops with LeaseHeldError
naming the holder, or waits up to `wait_s` (XQG_LEASE_WAIT_S; 0 by default, 'inf' for ever). A lease is stale,
and taken over with a warning, when its heartbeat is older than `stale_after_s` (a killed job stops renewing), or
its holder ran on this machine (host, pid namespace, boot) and that process is gone. Names (stages) and run
directories never block each other; within one process a lease is shared by every holder (see hold()).

Deciding ownership: on a local (or NFS) run directory every read-decide-write happens under an flock on
<run>/_locks/.guard. Object stores (and directories without flock) have no atomic create, so a job writes its
lease, waits `settle_s`, reads it back and owns it only if it still names the job. A competitor whose write lands
more than `settle_s` later overwrites it; the first job's next heartbeat then finds a foreign owner and marks its
lease lost, and StageRunner marks no further unit: two jobs overlap for at most one heartbeat, and only then.
Heartbeat ages compare the holder's clock with the reader's: hosts keep their clocks in sync (NTP).

Timings default to the module constants below; tests shorten them by setting those constants.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import re
import socket
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from typing import Any

from xqg.rundir import RunDir

log = logging.getLogger(__name__)

LOCKS = "_locks"
HEARTBEAT_S = 10.0  # how often a holder renews its lease
STALE_AFTER_S = 30.0  # a lease whose heartbeat is older than this is taken over
SETTLE_S = 1.0  # without atomic writes: the wait between writing a lease and reading it back
WAIT_ENV = "XQG_LEASE_WAIT_S"  # how long a job waits for another job's lease (default 0: it stops at once)


class LeaseHeldError(RuntimeError):
    """Another live job holds the lease; the message names it (host, pid, since when, command)."""

    def __init__(self, message: str, holder: dict[str, Any], where: str) -> None:
        super().__init__(message)
        self.holder, self.where = holder, where


class LeaseLostError(RuntimeError):
    """This job's lease was taken over by another job (it was judged stale): this job must not write any more."""


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def _started(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks after boot) of a process, from /proc (Linux); None elsewhere."""
    fields = (_read(f"/proc/{pid}/stat") or "").rpartition(")")[2].split()
    return (fields[0], int(fields[19])) if len(fields) > 19 and fields[19].isdigit() else None


def _machine() -> dict[str, Any]:
    """What tells whether a lease's pid can be checked here: host name, pid namespace, boot id."""
    ns = None
    with contextlib.suppress(OSError):
        ns = os.readlink("/proc/self/ns/pid")
    return {"host": socket.gethostname(), "pidns": ns, "boot_id": _read("/proc/sys/kernel/random/boot_id")}


def _dead_here(info: dict[str, Any]) -> str | None:
    """Why the lease's holder is certainly dead, when it ran on this machine; None when alive or unknowable."""
    me = _machine()
    if info.get("host") != me["host"] or not info.get("pidns") or info.get("pidns") != me["pidns"]:
        return None  # another machine or container: only the heartbeat can tell
    if info.get("boot_id") and me["boot_id"] and info["boot_id"] != me["boot_id"]:
        return "this machine rebooted since"
    pid = info.get("pid")
    if not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"pid {pid} no longer exists"
    except PermissionError:
        pass  # exists, another user's
    stat = _started(pid)
    if stat and stat[0] in ("Z", "X"):
        return f"pid {pid} has exited"
    return f"pid {pid} is now another process" if stat and info.get("pid_start") not in (None, stat[1]) else None


def describe(info: dict[str, Any], now: float | None = None) -> str:
    """A holder in words: 'pid 123 on host h (since ..., last heartbeat 2 s ago): python jobs/generate.py ...'."""
    try:
        now = time.time() if now is None else now
        beat = f"last heartbeat {max(0.0, now - float(info['heartbeat_at'])):.0f} s ago"
    except (KeyError, TypeError, ValueError):
        beat = "no heartbeat recorded"
    try:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
    except (KeyError, TypeError, ValueError, OverflowError):
        since = "an unknown time"
    text = f"pid {info.get('pid', '?')} on host {info.get('host', '?')} (since {since}, {beat})"
    return f"{text}: {info['command']}" if info.get("command") else text


class _Store:
    """The lease file, read and written through the run directory. `atomic`: whether read-decide-write is atomic
    (an flock on a local directory; memory:// lives in one process); else writes are confirmed by re-reading."""

    def __init__(self, run: RunDir, name: str) -> None:
        self.rel, self.where = f"{LOCKS}/{name}.json", f"{run.uri.rstrip('/')}/{LOCKS}/{name}.json"
        self.guard = os.path.join(run.root, LOCKS, ".guard") if run.is_local or "://" not in run.uri else None
        # A local path, even behind a wrapping filesystem, is written as the plain file the flock guards.
        self.run = RunDir(run.root) if self.guard else run
        self.key = os.path.normpath(run.path(self.rel)) if self.guard else self.where
        self.atomic = self.guard is not None or run.uri.startswith("memory://")

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        if self.guard is None:
            yield
            return
        import fcntl

        os.makedirs(os.path.dirname(self.guard), exist_ok=True)
        # The guard is never deleted: a waiter holding an fd of a deleted guard would not exclude a newcomer.
        fd = os.open(self.guard, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as e:
                if self.atomic:
                    log.warning("no flock on %s (%s): leases there are confirmed by re-reading instead", self.guard, e)
                self.atomic = False
            yield
        finally:
            os.close(fd)  # drops the flock

    def read(self) -> dict[str, Any] | None:
        try:
            info = self.run.read_json(self.rel)
        except FileNotFoundError:
            return None
        except ValueError:
            return {}
        except OSError:
            if not self.run.exists(self.rel):
                return None
            raise
        return info if isinstance(info, dict) else {}

    def write(self, info: dict[str, Any]) -> None:
        self.run.write_json(self.rel, info)


def lease_name(name: str) -> str:
    """A lease name as a file name: anything but letters, digits and _.=- becomes '_'."""
    safe = re.sub(r"[^A-Za-z0-9_.=-]", "_", name).lstrip(".")
    if not safe:
        raise ValueError(f"unusable lease name {name!r}")
    return safe


class Lease:
    """The lease <run>/_locks/<name>.json: acquire() or `with Lease(run, "generate"):`; released on exit.

    wait_s: how long acquire() waits for a live holder before LeaseHeldError (0: not at all; math.inf: for ever);
    by default XQG_LEASE_WAIT_S, else 0.
    """

    def __init__(self, run: RunDir, name: str, *, wait_s: float | None = None) -> None:
        self.run, self.name = run, lease_name(name)
        self.store = _Store(run, self.name)
        self.where = self.store.where
        env = os.environ.get(WAIT_ENV, "").strip()
        try:
            self.wait_s = float(env or 0) if wait_s is None else wait_s
        except ValueError:
            raise ValueError(f"{WAIT_ENV}={env!r} is not a number of seconds") from None
        self.owner = uuid.uuid4().hex
        self.info: dict[str, Any] | None = None  # the lease file as this job last wrote it, while held
        self.lost: str | None = None  # why, once another job took this lease over
        self.holders = 0  # shares of this process (hold()); the last release() gives the lease back
        self._stop, self._thread = threading.Event(), None

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _mine(self) -> dict[str, Any]:
        now, started = time.time(), _started(os.getpid())
        return {"owner": self.owner, "name": self.name, "run": self.run.uri, **_machine(), "pid": os.getpid(),
                "pid_start": started[1] if started else None, "since": now, "heartbeat_at": now,
                "command": " ".join([os.path.basename(sys.executable), *sys.argv])[:500],
                "heartbeat_s": HEARTBEAT_S, "stale_after_s": STALE_AFTER_S}

    def _stale(self, info: dict[str, Any]) -> str | None:
        """Why a lease found in the store may be taken over; None while its holder is alive."""
        if not info.get("owner"):
            return "the lease file is unreadable"
        try:
            age, limit = time.time() - float(info["heartbeat_at"]), float(info.get("stale_after_s") or STALE_AFTER_S)
        except (KeyError, TypeError, ValueError):
            return "the lease records no heartbeat"
        return _dead_here(info) or (f"its last heartbeat is {age:.0f} s old (stale after {limit:g} s)"
                                    if age > limit else None)

    def acquire(self) -> Lease:
        """Take the lease, or wait up to wait_s for its holder, then raise LeaseHeldError naming the holder."""
        if self.info is not None:
            return self
        deadline, said_at = time.monotonic() + self.wait_s, -math.inf
        while True:
            with self.store.critical():
                current = self.store.read()
                stale = self._stale(current) if current is not None else None
                free = current is None or stale is not None or current.get("owner") == self.owner
                if free:
                    self.store.write(mine := self._mine())
            if free:
                if not self.store.atomic and SETTLE_S > 0:
                    time.sleep(SETTLE_S)
                    check = self.store.read()
                    if not check or check.get("owner") != self.owner:
                        log.info("%s: another job wrote the lease after this one and won", self.where)
                        continue  # it is the holder now (or, if the file is gone, try again)
                if stale is not None and current:
                    log.warning("%s: taking over the stale lease of %s: %s", self.where, describe(current), stale)
                self.info, self.lost, self.holders, self._stop = mine, None, 1, threading.Event()
                # A daemon: a killed job stops renewing, so its lease goes stale.
                self._thread = threading.Thread(target=self._beat, args=(self._stop,), daemon=True)
                self._thread.start()
                _LIVE.add(self)
                return self
            now = time.monotonic()
            if now >= deadline:
                waited = f" (waited {self.wait_s:g} s)" if self.wait_s > 0 else ""
                raise LeaseHeldError(
                    f"another job is running '{self.name}' on {self.run.uri}: {describe(current)}{waited}. Wait for it "
                    f"to finish ({WAIT_ENV}=<seconds> makes this job wait). If that job is dead, its lease {self.where} "
                    f"goes stale {current.get('stale_after_s') or STALE_AFTER_S:g} s after its last heartbeat and is "
                    f"then taken over.", current, self.where)
            if now - said_at >= 60:
                log.warning("%s is held by %s; waiting up to %s", self.where, describe(current),
                            "for ever" if math.isinf(self.wait_s) else f"{deadline - now:.0f} s more")
                said_at = now
            time.sleep(max(0.0, min(2.0, HEARTBEAT_S, deadline - now)))

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                with self.store.critical():
                    if stop.is_set():
                        return
                    current = self.store.read()
                    if not current or current.get("owner") != self.owner:
                        self.lost = (f"lease {self.where} was taken over by "
                                     f"{describe(current) if current else 'another job (the file was removed)'}")
                        log.error("%s: this job must stop writing", self.lost)
                        return
                    self.info = dict(self.info or current, heartbeat_at=time.time())
                    self.store.write(self.info)
            except Exception as e:  # noqa: BLE001 - a flaky store must not kill the heartbeat; staleness is the limit
                log.warning("could not renew lease %s: %s: %s", self.where, type(e).__name__, e)

    def release(self) -> None:
        """Drop one share; the last stops renewing and removes the lease file if still ours. Never raises."""
        with _SHARED_LOCK:
            self.holders -= 1
            if self.holders > 0:
                return
            if _SHARED.get(self.store.key) is self:
                del _SHARED[self.store.key]
        self._give_back()

    def _give_back(self) -> None:
        _LIVE.discard(self)
        info, self.info, self.holders = self.info, None, 0
        if info is None or info.get("pid") != os.getpid():
            return  # not held, or a forked child's copy (its exit handlers run this): the lease is its parent's
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)  # no renewal may land after the removal below
        try:
            with self.store.critical():
                current = self.store.read()
                if current and current.get("owner") == self.owner:
                    self.store.run.remove(self.store.rel)
                elif not self.lost:
                    log.warning("lease %s was no longer this job's at release: %s", self.where,
                                describe(current) if current else "the file was gone")
        except Exception as e:  # noqa: BLE001 - it runs on error paths; an unreleased lease goes stale by itself
            log.warning("could not release lease %s (it goes stale by itself): %s: %s", self.where,
                        type(e).__name__, e)


_LIVE: weakref.WeakSet[Lease] = weakref.WeakSet()
_SHARED: dict[str, Lease] = {}
_SHARED_LOCK = threading.RLock()


@atexit.register
def _release_all() -> None:
    """At a normal exit (also after an uncaught exception), give back every lease this process still holds."""
    for lease in list(_LIVE):
        lease._give_back()


def read_lease(run: RunDir, name: str) -> dict[str, Any] | None:
    """The lease file's content (who holds name on run), or None when nobody does."""
    return _Store(run, lease_name(name)).read()


def hold(run: RunDir, name: str, **kwargs: Any) -> Lease:
    """name's lease on run, shared by every holder in this process: acquired (see Lease) unless this process
    already holds it; each hold() is given back by one release(). kwargs: Lease's."""
    key = _Store(run, lease_name(name)).key
    with _SHARED_LOCK:
        lease = _SHARED.get(key)
        if lease is not None and lease.info is not None and not lease.lost and lease.info["pid"] == os.getpid():
            lease.holders += 1
            return lease
    lease = Lease(run, name, **kwargs).acquire()
    with _SHARED_LOCK:
        _SHARED[key] = lease
    return lease
