"""Kill tests: run a job in its own process group with a private local Ray, and clean up after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers.paths import REPO


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line mentions text (a test's private Ray temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def kill_leftovers(tmpdir: str) -> list[int]:
    """SIGKILL every surviving process of a test's Ray cluster (only its own: matched by the private temp dir)."""
    time.sleep(1.0)  # Ray's fate-sharing children need a moment to notice their parent died
    left = processes_mentioning(tmpdir)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def start_job(script: str, config_path: Path, ray_tmp: str, log: Path, *args: str) -> subprocess.Popen:
    """jobs/<script> in its own session (process group), always with its own local Ray under ray_tmp."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=ray_tmp, PYTHONPATH=str(REPO))
    cmd = [sys.executable, str(REPO / "jobs" / script), "--config", str(config_path), *args, "--set", "ray.num_cpus=2"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def start_job_on(
    address: str, script: str, config_path: Path | None, log: Path, *args: str, hold: tuple[str, int, Path] | None = None
) -> subprocess.Popen:
    """jobs/<script> in its own session (process group), connected to the running Ray cluster at address.

    Many kill tests share one cluster this way (the session's `ray_local`): the job's driver is killed, Ray
    reclaims the job's workers and actors, and the cluster serves the rerun without a new start.
    hold=(stage, n, file): the job stops for good right before marking its n-th unit of stage, after creating
    file (the `hold` test hook of tests/hooks), so the test kills it there: mid-stage, at a known point.
    """
    from tests.hooks.xqg_test_hooks import env as hook_env

    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    if hold is not None:
        env.update(hook_env(hold=[hold[0], hold[1], str(hold[2])]))
    cmd = [sys.executable, str(REPO / "jobs" / script), *(["--config", str(config_path)] if config_path else []), *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def kill_job(proc: subprocess.Popen) -> None:
    """SIGKILL a job's whole process group (its driver and anything it started outside Ray)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def wait_until_cluster_idle(ray, timeout: float = 60.0) -> None:
    """Wait until every CPU of the shared cluster is free again: no worker or actor of a killed job survives."""
    deadline = time.monotonic() + timeout
    while True:
        total, free = ray.cluster_resources().get("CPU", 0), ray.available_resources().get("CPU", 0)
        if free >= total:
            return
        assert time.monotonic() < deadline, f"a killed job still holds {total - free} of {total} CPUs after {timeout} s"
        time.sleep(0.2)


def wait_for(predicate, proc: subprocess.Popen, log: Path, what: str, timeout: float = 240.0) -> None:
    """Poll until predicate() holds; fail with the job's log if the job ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the job ended (exit {proc.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)
