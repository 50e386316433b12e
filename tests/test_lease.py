"""Stage leases: one job per stage and run directory, with real processes (a holder, a SIGKILLed holder, two racers)."""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import xqg.lease
from helpers.paths import REPO
from xqg.lease import Lease, LeaseHeldError, LeaseLostError, read_lease
from xqg.rundir import RunDir
from xqg.runner import StageRunner, Unit


# Lease timings for these tests (HEARTBEAT_S, STALE_AFTER_S, SETTLE_S of xqg.lease), here and in the children.
FAST = (0.3, 2.0, 0.5)

# A job in a child process. `hold RUN NAME`: take a lease, say HELD, keep it until stdin closes.
# `stage RUN N SLEEP LOG GO FLOCK`: after a start signal, a StageRunner over N units, each appending "<unit> <pid>"
# to LOG; FLOCK "no": the run directory's filesystem has no flock (as on object stores: confirmed by re-reading).
CHILD = r"""
import errno, fcntl, os, sys, time
from pathlib import Path
import xqg.lease
from xqg.cli import run_job
from xqg.lease import Lease
from xqg.rundir import RunDir
from xqg.runner import StageRunner, Unit

xqg.lease.HEARTBEAT_S, xqg.lease.STALE_AFTER_S, xqg.lease.SETTLE_S = %r
mode, uri = sys.argv[1], sys.argv[2]
if mode == "stage" and sys.argv[7] == "no":
    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    fcntl.flock = no_flock
run = RunDir(uri)
if mode == "hold":
    with Lease(run, sys.argv[3]):
        print("HELD", os.getpid(), flush=True)
        sys.stdin.read()
    print("RELEASED", flush=True)
else:
    n, pause, log, go = int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], Path(sys.argv[6])
    Path(f"{go}.ready-{os.getpid()}").touch()
    while not go.exists():
        time.sleep(0.005)

    def work(unit):
        time.sleep(pause)
        with open(log, "a") as f:
            f.write(f"{unit.name} {os.getpid()}\n")
        return {"rows_in": 1, "rows_out": 1, "rejected": 0, "pid": os.getpid()}

    def stage(config, args):
        with StageRunner(RunDir(config.run_dir), "generate") as runner:
            plan = runner.plan([Unit(f"u{i:02d}", {"x": 1}) for i in range(n)])
            runner.run_local(plan.todo, work)
            return runner.close()

    # Through the jobs' own convention: its exit codes and its one-line errors.
    sys.exit(run_job("two jobs", stage, needs_ray=False, argv=["--set", f"run_dir={uri}"]))
""" % (FAST,)


def child(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], env=env, cwd=REPO, text=True, **kw)


@pytest.fixture
def holder(tmp_path):
    """A live process holding the 'generate' lease of tmp_path/run: (run, process)."""
    run = RunDir(str(tmp_path / "run"))
    proc = child("hold", run.uri, "generate", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert line.startswith("HELD"), line
        yield run, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture
def fast(monkeypatch):
    for name, value in zip(("HEARTBEAT_S", "STALE_AFTER_S", "SETTLE_S"), FAST):
        monkeypatch.setattr(xqg.lease, name, value)


def test_a_second_job_of_a_held_stage_stops_naming_the_holder_or_waits_for_it(holder, fast):
    run, proc = holder
    with pytest.raises(LeaseHeldError) as e:
        StageRunner(run, "generate").plan([Unit("u", {})])  # planning reads markers: it needs the lease
    msg = str(e.value)
    assert f"pid {proc.pid} on host {socket.gethostname()}" in msg and "since " in msg and "generate" in msg, msg
    assert e.value.holder["pid"] == proc.pid
    assert not run.exists("_done"), "nothing was read or written without the lease"

    t0 = time.monotonic()
    with pytest.raises(LeaseHeldError, match=f"pid {proc.pid}.*waited 0.6 s"):
        Lease(run, "generate", wait_s=0.6).acquire()
    assert time.monotonic() - t0 >= 0.6

    proc.stdin.close()  # the holder finishes and releases
    with Lease(run, "generate", wait_s=20) as lease:
        assert read_lease(run, "generate")["owner"] == lease.owner
    assert proc.wait(timeout=10) == 0 and read_lease(run, "generate") is None


def test_other_stages_and_other_runs_are_not_blocked(holder, fast, tmp_path):
    run, _ = holder
    with StageRunner(run, "encode") as enc, StageRunner(RunDir(str(tmp_path / "other")), "generate") as gen:
        assert enc.plan([Unit("a", {})]).todo and gen.plan([Unit("a", {})]).todo
        assert read_lease(run, "encode")["pid"] == os.getpid() == read_lease(gen.run, "generate")["pid"]
    assert read_lease(run, "encode") is None and read_lease(run, "generate")["pid"] != os.getpid()


def test_the_lease_of_a_killed_job_is_taken_over_with_a_warning(holder, fast, caplog):
    run, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_lease(run, "generate")["pid"] == proc.pid, "a killed job leaves its lease behind"
    with caplog.at_level(logging.WARNING, logger="xqg.lease"):
        with Lease(run, "generate") as lease:  # same machine: its pid is gone, no need to wait for staleness
            assert read_lease(run, "generate")["owner"] == lease.owner
    assert f"pid {proc.pid} no longer exists" in caplog.text and "taking over the stale lease" in caplog.text


def test_a_lease_from_another_machine_is_taken_over_once_its_heartbeat_is_stale(holder, fast, caplog):
    run, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lease_file = Path(run.root) / "_locks" / "generate.json"
    dead = json.loads(lease_file.read_text())
    dead.update(host="elsewhere", heartbeat_at=time.time())  # only its heartbeat can tell it died
    lease_file.write_text(json.dumps(dead))
    with pytest.raises(LeaseHeldError, match=f"pid {proc.pid} on host elsewhere"):
        Lease(run, "generate").acquire()
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="xqg.lease"), Lease(run, "generate", wait_s=10):
        waited = time.monotonic() - t0
    assert 1.0 < waited < 8, waited  # stale_after_s is 2 s after the last heartbeat
    took_over = r"taking over the stale lease of pid \d+ on host elsewhere.*last heartbeat is \d+ s old"
    assert re.search(took_over, caplog.text), caplog.text


@pytest.mark.parametrize("where", ["memory", "local"])
def test_the_lease_is_released_after_a_normal_exit_and_after_an_exception(where, fast, tmp_path):
    run = RunDir(f"memory://xqg-lease-{uuid.uuid4().hex[:8]}/run" if where == "memory" else str(tmp_path / "run"))

    with StageRunner(run, "fuse") as runner:
        assert read_lease(run, "fuse")["pid"] == os.getpid()
        runner.plan([Unit("a", {})])
        summary = runner.close()
        assert read_lease(run, "fuse") is None, "close() releases"
    assert summary.ok

    with pytest.raises(RuntimeError, match="boom"):
        with StageRunner(run, "fuse") as runner:
            runner.plan([Unit("a", {})])
            raise RuntimeError("boom")
    assert read_lease(run, "fuse") is None

    def stage_without_with() -> None:  # a stage that raises before close(): released when the runner goes
        runner = StageRunner(run, "fuse")
        runner.plan([Unit("a", {})])
        assert read_lease(run, "fuse") is not None
        raise ValueError("bad input")

    try:
        stage_without_with()
    except ValueError:
        pass
    gc.collect()
    assert read_lease(run, "fuse") is None

    # One process, several runners of a stage: one shared lease, released with the last of them.
    a, b = StageRunner(run, "fuse"), StageRunner(run, "fuse")
    a.plan([Unit("a", {})]), b.plan([Unit("a", {})])
    a.close()
    assert read_lease(run, "fuse") is not None
    b.close()
    assert read_lease(run, "fuse") is None
    with Lease(run, "fuse"):  # free for anyone again
        pass


def test_a_job_whose_lease_was_taken_over_stops_marking(fast, tmp_path):
    run = RunDir(str(tmp_path / "run"))
    runner = StageRunner(run, "encode")
    a, b = Unit("a", {}), Unit("b", {})
    runner.plan([a, b])
    lease_file = Path(run.root) / "_locks" / "encode.json"
    mine = json.loads(lease_file.read_text())
    beat = mine["heartbeat_at"]
    deadline = time.time() + 5
    while json.loads(lease_file.read_text())["heartbeat_at"] == beat and time.time() < deadline:
        time.sleep(0.05)
    assert json.loads(lease_file.read_text())["heartbeat_at"] > beat, "the heartbeat renews the lease"

    lease_file.write_text(json.dumps({**mine, "owner": "someone-else", "pid": 1, "host": "elsewhere",
                                      "heartbeat_at": time.time() + 60}))
    deadline = time.time() + 5
    while runner.lease_lost is None and time.time() < deadline:
        time.sleep(0.05)
    assert runner.lease_lost and "host elsewhere" in runner.lease_lost
    assert not runner.finish(a, rows_in=1, rows_out=1, rejected=0)
    with pytest.raises(LeaseLostError):
        runner.prepare(b)
    summary = runner.close()
    assert not summary.ok and "lost its lease" in summary.message and run.done_units("encode") == set()
    assert read_lease(run, "encode")["owner"] == "someone-else", "a lost lease is not removed at release"


@pytest.mark.parametrize("flock", ["yes", "no"])
def test_two_jobs_started_together_on_one_stage_one_works_the_other_stops(flock, tmp_path):
    """Two `jobs/generate.py --languages sw` at once. Without flock the lease falls back to the protocol of
    object stores (write, settle, re-read); here it runs on a local directory, shared by two processes."""
    run = RunDir(str(tmp_path / "run"))
    log, go = tmp_path / "work.log", tmp_path / "go"
    procs = [child("stage", run.uri, "20", "0.05", str(log), str(go), flock,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("go.ready-*"))) < 2 and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.01)
        go.touch()  # both acquire at the same moment
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 4], (codes, outs)
    winner = next(p for p in procs if p.returncode == 0)
    loser_err = next(err for p, (_, err) in zip(procs, outs) if p.returncode == 4)
    assert f"pid {winner.pid} on host {socket.gethostname()}" in loser_err, loser_err
    if flock == "no":  # both confirmed their write by reading it back
        assert all("leases there are confirmed by re-reading" in err for _, err in outs), outs

    lines = log.read_text().split()
    names, pids = lines[0::2], lines[1::2]
    assert sorted(names) == [f"u{i:02d}" for i in range(20)], "every unit done exactly once"
    assert set(pids) == {str(winner.pid)}
    assert run.done_units("generate") == {f"u{i:02d}" for i in range(20)}
    assert {run.read_marker("generate", n)["pid"] for n in names} == {winner.pid}
    assert read_lease(run, "generate") is None
