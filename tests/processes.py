"""Kill tests: run a job in its own process group with a private local Ray, and clean up after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


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
