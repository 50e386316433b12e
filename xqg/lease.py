"""One job per stage and run directory at a time: a lease file, <run>/_locks/<name>.json, renewed by a heartbeat.

Two jobs of the same stage on one run directory would redo and unmark each other's units, so a stage's job holds
the stage's lease while it plans, runs and marks units. The lease file says who holds it (owner id, host, pid,
command, since when) and when it was last renewed; a daemon thread rewrites it every `heartbeat_s` seconds. Another
job that finds a live lease stops with LeaseHeldError naming the holder, or waits for it up to `wait_s` seconds.
A lease is stale, and is taken over with a warning, when

- its heartbeat is older than its `stale_after_s` (3 x heartbeat by default; a SIGKILLed job stops renewing), or
- its holder ran on this machine (same host name, pid namespace and boot) and that process no longer exists.

Different lease names (stages) never block each other, nor do the same names on different run directories.
Within one process a lease is shared (reentrant): several StageRunners of one stage in one process hold it once.

How ownership is decided:

- Local run directories: every read-decide-write of a lease happens under an flock on <run>/_locks/.guard, so
  taking, renewing, taking over and releasing are atomic among processes of this machine (and on NFS with
  working locks). Where flock is not available the object-store protocol below is used.
- Object stores (s3://, gs://, ...: no O_EXCL, no compare-and-swap through pyarrow): read; if free or stale,
  write our lease, wait `settle_s`, read it again and own it only if it still names us; else someone else won and
  we see them as the live holder. Residual race: a competitor that read the lease before our write and whose own
  write lands more than `settle_s` after ours (a paused process, a very slow PUT) overwrites a lease we already
  confirmed, so both believe they hold it. The next heartbeat of the first (within `heartbeat_s`) finds a foreign
  owner and marks its lease lost; StageRunner then refuses to mark or prepare any further unit. So two jobs can
  overlap for at most one heartbeat interval, and only in that unlucky interleaving. Heartbeat ages compare the
  holder's wall clock with the reader's: hosts are assumed to keep their clocks in sync (NTP) to well within
  `stale_after_s`.

A job killed by SIGKILL (or SIGTERM, which skips Python's exit handlers) leaves its lease file behind; it goes
stale `stale_after_s` after its last heartbeat (at once for a later job on the same machine: the pid is gone).

Timings come from the constructor, else from the environment, else the defaults:
XQG_LEASE_HEARTBEAT_S (10), XQG_LEASE_STALE_S (3 x heartbeat), XQG_LEASE_SETTLE_S (1 s on object stores),
XQG_LEASE_WAIT_S (0: do not wait, stop with LeaseHeldError; 'inf' waits for ever), XQG_LEASE_POLL_S.
XQG_LEASE_PROTOCOL=object forces the object-store protocol on local directories (for tests).
"""

from __future__ import annotations

import atexit
import contextlib
import json
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
DEFAULT_HEARTBEAT_S = 10.0
STALE_FACTOR = 3.0
DEFAULT_SETTLE_S = 1.0


class LeaseHeldError(RuntimeError):
    """Another live job holds the lease; the message names it (host, pid, since when, command)."""

    def __init__(self, message: str, holder: dict[str, Any], where: str) -> None:
        super().__init__(message)
        self.holder, self.where = holder, where


class LeaseLostError(RuntimeError):
    """This job's lease was taken over by another job (it was judged stale): this job must not write any more."""


# ---- this process and others on this machine -----------------------------------------------------------------
def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks after boot) of a process, from /proc (Linux); None elsewhere."""
    text = _read(f"/proc/{pid}/stat")
    if not text or ")" not in text:
        return None
    fields = text.rsplit(")", 1)[1].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _machine() -> dict[str, Any]:
    """What tells whether a lease's pid can be checked here: host name, pid namespace, boot id."""
    ns = None
    with contextlib.suppress(OSError):
        ns = os.readlink("/proc/self/ns/pid")
    return {"host": socket.gethostname(), "pidns": ns, "boot_id": _read("/proc/sys/kernel/random/boot_id")}


def _process_started_at() -> float | None:
    """When this process started (epoch seconds), from /proc; None where that is not available."""
    stat = _proc_stat(os.getpid())
    lines = (_read("/proc/stat") or "").splitlines()
    btime = next((line.split()[1] for line in lines if line.startswith("btime ")), None)
    if stat is None or btime is None:
        return None
    return int(btime) + stat[1] / os.sysconf("SC_CLK_TCK")


def _dead_here(info: dict[str, Any]) -> str | None:
    """Why the lease's holder is certainly dead, when it ran on this machine; None when alive or unknowable."""
    me = _machine()
    if info.get("host") != me["host"] or not info.get("pidns") or info.get("pidns") != me["pidns"]:
        return None  # another machine or container: only the heartbeat can tell
    if info.get("boot_id") and me["boot_id"] and info["boot_id"] != me["boot_id"]:
        return "this machine rebooted since"
    try:
        pid = int(info["pid"])
    except (KeyError, TypeError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"pid {pid} no longer exists"
    except PermissionError:
        pass  # exists, another user's
    stat = _proc_stat(pid)
    if stat is not None:
        if stat[0] in ("Z", "X"):
            return f"pid {pid} has exited"
        if info.get("pid_start") is not None and stat[1] != info["pid_start"]:
            return f"pid {pid} is now another process"
    return None


def _when(ts: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(ts)))
    except (TypeError, ValueError, OverflowError):
        return "an unknown time"


def describe(info: dict[str, Any], now: float | None = None) -> str:
    """A holder in words: 'pid 123 on host h (since ..., last heartbeat 2 s ago): python jobs/generate.py ...'."""
    now = time.time() if now is None else now
    try:
        beat = f"last heartbeat {max(0.0, now - float(info['heartbeat_at'])):.0f} s ago"
    except (KeyError, TypeError, ValueError):
        beat = "no heartbeat recorded"
    text = f"pid {info.get('pid', '?')} on host {info.get('host', '?')} (since {_when(info.get('since'))}, {beat})"
    return f"{text}: {info['command']}" if info.get("command") else text


def _env_float(name: str, default: float | None) -> float | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a number of seconds") from None


# ---- where lease files live -------------------------------------------------------------------------------
class _LocalStore:
    """A lease file on a local (or NFS) directory; read-decide-write made atomic by an flock on _locks/.guard."""

    def __init__(self, root: str, name: str) -> None:
        self.dir = os.path.join(root, LOCKS)
        self.file = os.path.join(self.dir, f"{name}.json")
        self.where = self.file
        self.key = ("local", os.path.normpath(self.file))
        self.atomic = True  # False once flock turns out not to work here

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        import fcntl

        os.makedirs(self.dir, exist_ok=True)
        # The guard is never deleted: a waiter holding an fd of a deleted guard would not exclude a newcomer.
        fd = os.open(os.path.join(self.dir, ".guard"), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as e:
                if self.atomic:
                    log.warning("no flock on %s (%s): leases there are confirmed by re-reading instead", self.dir, e)
                self.atomic = False
            yield
        finally:
            os.close(fd)  # drops the flock

    def read(self) -> dict[str, Any] | None:
        try:
            with open(self.file, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
        except ValueError:
            return {}
        return info if isinstance(info, dict) else {}

    def write(self, info: dict[str, Any]) -> None:
        os.makedirs(self.dir, exist_ok=True)
        tmp = f"{self.file}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(info, f, sort_keys=True, indent=1)
        os.replace(tmp, self.file)

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.file)


class _RunDirStore:
    """A lease file on any filesystem of RunDir (object stores): no atomic create, so writes are confirmed by
    re-reading after settle_s (see the module docstring for the race that leaves)."""

    def __init__(self, run: RunDir, name: str) -> None:
        self.run = run
        self.rel = f"{LOCKS}/{name}.json"
        self.where = f"{run.uri.rstrip('/')}/{self.rel}"
        self.key = ("uri", self.where)
        # memory:// lives inside this one process: nobody else can race a write there.
        self.atomic = run.uri.startswith("memory://")

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        yield

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

    def delete(self) -> None:
        self.run.remove(self.rel)


def _store(run: RunDir, name: str) -> _LocalStore | _RunDirStore:
    if os.environ.get("XQG_LEASE_PROTOCOL", "").strip().lower() == "object":
        return _RunDirStore(run, name)
    if run.is_local or "://" not in run.uri:  # a local path, even behind a wrapping filesystem
        return _LocalStore(run.root, name)
    return _RunDirStore(run, name)


def lease_name(name: str) -> str:
    """A lease name as a file name: anything but letters, digits and _.=- becomes '_'."""
    safe = re.sub(r"[^A-Za-z0-9_.=-]", "_", name).lstrip(".")
    if not safe:
        raise ValueError(f"unusable lease name {name!r}")
    return safe


# ---- the lease ----------------------------------------------------------------------------------------------
class Lease:
    """The lease <run>/_locks/<name>.json: acquire() or `with Lease(run, "generate"):`; released on exit.

    wait_s: how long acquire() waits for a live holder before LeaseHeldError (0: not at all; math.inf: for ever).
    """

    def __init__(
        self,
        run: RunDir,
        name: str,
        *,
        wait_s: float | None = None,
        heartbeat_s: float | None = None,
        stale_after_s: float | None = None,
        settle_s: float | None = None,
        poll_s: float | None = None,
    ) -> None:
        self.run, self.name = run, lease_name(name)
        self.store = _store(run, self.name)
        self.heartbeat_s = float(heartbeat_s if heartbeat_s is not None else
                                 _env_float("XQG_LEASE_HEARTBEAT_S", DEFAULT_HEARTBEAT_S))
        if self.heartbeat_s <= 0:
            raise ValueError(f"lease heartbeat must be positive, not {self.heartbeat_s}")
        self.stale_after_s = float(stale_after_s if stale_after_s is not None else
                                   _env_float("XQG_LEASE_STALE_S", STALE_FACTOR * self.heartbeat_s))
        if self.stale_after_s <= self.heartbeat_s:
            raise ValueError(f"a lease must go stale after more than one heartbeat ({self.heartbeat_s} s), "
                             f"not {self.stale_after_s} s")
        self.settle_s = float(settle_s if settle_s is not None else _env_float("XQG_LEASE_SETTLE_S", DEFAULT_SETTLE_S))
        self.wait_s = float(wait_s if wait_s is not None else _env_float("XQG_LEASE_WAIT_S", 0.0))
        self.poll_s = float(poll_s if poll_s is not None else
                            _env_float("XQG_LEASE_POLL_S", min(2.0, self.heartbeat_s)))
        self.owner = uuid.uuid4().hex
        self.info: dict[str, Any] | None = None
        self.lost: str | None = None  # why, once another job took this lease over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def where(self) -> str:
        """The lease file, for messages."""
        return self.store.where

    @property
    def held(self) -> bool:
        """True between a successful acquire() and release() (even if lost since: see `lost`)."""
        return self.info is not None

    def __repr__(self) -> str:
        return f"Lease({self.where!r}, held={self.held}, lost={self.lost is not None})"

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ---- acquiring --------------------------------------------------------------------------------------
    def _mine(self) -> dict[str, Any]:
        now = time.time()
        stat = _proc_stat(os.getpid())
        return {
            "owner": self.owner, "name": self.name, "run": self.run.uri, **_machine(), "pid": os.getpid(),
            "pid_start": stat[1] if stat else None, "process_started_at": _process_started_at(),
            "command": " ".join([os.path.basename(sys.executable), *sys.argv])[:500],
            "since": now, "heartbeat_at": now, "heartbeat_s": self.heartbeat_s, "stale_after_s": self.stale_after_s,
        }

    def _stale(self, info: dict[str, Any]) -> str | None:
        """Why a lease found in the store may be taken over; None while its holder is alive."""
        if not info.get("owner"):
            return "the lease file is unreadable"
        dead = _dead_here(info)
        if dead:
            return dead
        try:
            age = time.time() - float(info["heartbeat_at"])
            limit = float(info.get("stale_after_s") or self.stale_after_s)
        except (KeyError, TypeError, ValueError):
            return "the lease records no heartbeat"
        if age > limit:
            return f"its last heartbeat is {age:.0f} s old (stale after {limit:g} s)"
        return None

    def acquire(self) -> Lease:
        """Take the lease, or wait up to wait_s for its holder, then raise LeaseHeldError naming the holder."""
        if self.held:
            return self
        deadline = time.monotonic() + self.wait_s
        said_at: float | None = None
        while True:
            with self.store.critical():
                current = self.store.read()
                stale = self._stale(current) if current is not None else None
                free = current is None or stale is not None or current.get("owner") == self.owner
                if free:
                    mine = self._mine()
                    self.store.write(mine)
                atomic = self.store.atomic
            if free:
                if not atomic and self.settle_s > 0:
                    time.sleep(self.settle_s)
                    check = self.store.read()
                    if not check or check.get("owner") != self.owner:
                        log.info("%s: another job wrote the lease after this one and won", self.where)
                        continue  # it is the holder now (or, if the file is gone, try again)
                if stale is not None and current:
                    log.warning("%s: taking over the stale lease of %s: %s", self.where, describe(current), stale)
                self.info, self.lost = mine, None
                self._start_heartbeat()
                _LIVE.add(self)
                return self
            now = time.monotonic()
            if now >= deadline:
                raise LeaseHeldError(self._held_message(current), current, self.where)
            if said_at is None or now - said_at >= 60:
                log.warning("%s is held by %s; waiting up to %s", self.where, describe(current),
                            "for ever" if math.isinf(self.wait_s) else f"{deadline - now:.0f} s more")
                said_at = now
            time.sleep(max(0.0, min(self.poll_s, deadline - now)))

    def _held_message(self, holder: dict[str, Any]) -> str:
        limit = holder.get("stale_after_s") or self.stale_after_s
        waited = f" (waited {self.wait_s:g} s)" if self.wait_s > 0 else ""
        return (
            f"another job is running '{self.name}' on {self.run.uri}: {describe(holder)}{waited}. "
            f"Wait for it to finish (XQG_LEASE_WAIT_S=<seconds> makes this job wait). If that job is dead, its lease "
            f"{self.where} goes stale {limit:g} s after its last heartbeat and is then taken over."
        )

    # ---- renewing ---------------------------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(self._stop,), name=f"xqg-lease-{self.name}",
                                        daemon=True)  # a killed job stops renewing: its lease goes stale
        self._thread.start()

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_s):
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
                    info = dict(self.info or current, heartbeat_at=time.time())
                    self.store.write(info)
                    self.info = info
            except Exception as e:  # noqa: BLE001 - a flaky store must not kill the heartbeat; staleness is the limit
                log.warning("could not renew lease %s: %s: %s", self.where, type(e).__name__, e)

    def check(self) -> None:
        """Raise LeaseLostError when another job has taken this lease over."""
        if self.lost:
            raise LeaseLostError(self.lost)

    # ---- releasing --------------------------------------------------------------------------------------
    def release(self) -> None:
        """Stop renewing and remove the lease file if it is still ours; never raises (it runs on error paths)."""
        _LIVE.discard(self)
        if not self.held:
            return
        if self.info is not None and self.info.get("pid") != os.getpid():
            self.info = None  # a forked child's copy (its exit handlers run this): the lease is its parent's
            return
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        try:
            with self.store.critical():
                current = self.store.read()
                if current and current.get("owner") == self.owner:
                    self.store.delete()
                elif not self.lost:
                    log.warning("lease %s was no longer this job's at release: %s", self.where,
                                describe(current) if current else "the file was gone")
        except Exception as e:  # noqa: BLE001
            log.warning("could not release lease %s (it goes stale by itself): %s: %s", self.where,
                        type(e).__name__, e)
        self.info = None


_LIVE: weakref.WeakSet[Lease] = weakref.WeakSet()


@atexit.register
def _release_all() -> None:
    """At a normal exit (also after an uncaught exception), give back every lease this process still holds."""
    for lease in list(_LIVE):
        lease.release()


def read_lease(run: RunDir, name: str) -> dict[str, Any] | None:
    """The lease file's content (who holds name on run), or None when nobody does."""
    return _store(run, lease_name(name)).read()


# ---- one lease per process and name, shared by every holder in the process ----------------------------------
class LeaseHandle:
    """One holder's share of a process-wide lease; release() is idempotent, the last share releases the lease."""

    def __init__(self, entry: _Shared) -> None:
        self._entry: _Shared | None = entry

    @property
    def lease(self) -> Lease:
        if self._entry is None:
            raise RuntimeError("this lease handle has been released")
        return self._entry.lease

    @property
    def released(self) -> bool:
        return self._entry is None

    def release(self) -> None:
        entry, self._entry = self._entry, None
        if entry is None:
            return
        with _SHARED_LOCK:
            entry.count -= 1
            last = entry.count == 0
            if last and _SHARED.get(entry.key) is entry:
                del _SHARED[entry.key]
        if last:
            entry.lease.release()


class _Shared:
    def __init__(self, key: tuple[str, str], lease: Lease) -> None:
        self.key, self.lease, self.count = key, lease, 1


_SHARED: dict[tuple[str, str], _Shared] = {}
_SHARED_LOCK = threading.Lock()


def hold(run: RunDir, name: str, **kwargs: Any) -> LeaseHandle:
    """A share of name's lease on run: acquired (see Lease) unless this process already holds it; kwargs: Lease's."""
    key = _store(run, lease_name(name)).key
    with _SHARED_LOCK:
        entry = _SHARED.get(key)
        if entry is not None and entry.lease.held and not entry.lease.lost and entry.lease.info["pid"] == os.getpid():
            entry.count += 1
            return LeaseHandle(entry)
    lease = Lease(run, name, **kwargs).acquire()
    entry = _Shared(key, lease)
    with _SHARED_LOCK:
        _SHARED[key] = entry
    return LeaseHandle(entry)
