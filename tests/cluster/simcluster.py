"""A real Ray autoscaler with fake nodes (ray.cluster_utils.AutoscalingCluster) that stays private to one test.

AutoscalingCluster.start()/shutdown() run `ray stop --force`, which stops every Ray on the machine (other
jobs' included), and its default config file (fake_multi_node/example.yaml) is not in the installed wheel. This
subclass gives it the same fake_multinode config, its own port and temp dir, and stops only its own processes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from ray.cluster_utils import AutoscalingCluster

from processes import REPO, kill_leftovers
from tests.hooks.xqg_test_hooks import env as hook_env

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class PrivateAutoscalingCluster(AutoscalingCluster):
    """Head with head_resources (no GPU), worker types that the autoscaler launches as fake nodes on demand."""

    def __init__(self, head_resources: dict, worker_node_types: dict, temp_dir: str, **config_kwargs) -> None:
        """config_kwargs: top-level autoscaler config values (e.g. idle_timeout_minutes) over the defaults below."""
        import ray

        self.temp_dir, self.port = temp_dir, free_port()
        self.address = f"{ray._private.services.get_node_ip_address()}:{self.port}"
        super().__init__(head_resources, worker_node_types, **config_kwargs)

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
        types = dict(worker_node_types)
        types["ray.head.default"] = {"resources": dict(head_resources), "node_config": {}, "max_workers": 0}
        return {
            "cluster_name": "xqg-fake", "max_workers": sum(t.get("max_workers", 0) for t in worker_node_types.values()),
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": self.address},
            "available_node_types": types, "head_node_type": "ray.head.default", "auth": {}, "upscaling_speed": 1.0,
            "idle_timeout_minutes": 0.1, "docker": {}, "initialization_commands": [], "setup_commands": [],
            "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
            "worker_start_ray_commands": [], "file_mounts": {}, "cluster_synced_files": [],
            "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [], **config_kwargs,
        }

    def env(self, **hooks: object) -> dict[str, str]:
        """Environment of the cluster's processes and of jobs sent to it; hooks: test hooks (tests/hooks) over the
        default one: an actor given a fake GPU computes on the CPU, says so, and takes 6 s a unit."""
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        # Ray turns token auth on by itself when ~/.ray/auth_token exists (left by any earlier Ray); this
        # throwaway cluster and its jobs must agree, so it is off for both.
        env.update(RAY_AUTH_MODE="disabled", RAY_TMPDIR=self.temp_dir, TOKENIZERS_PARALLELISM="false",
                   OMP_NUM_THREADS="1", **hook_env(**{"fake_gpu_unit_s": 6, **hooks}))
        return env

    def start(self, _system_config=None, override_env=None, hooks: dict | None = None) -> None:
        config = Path(self.temp_dir) / "autoscaling.json"
        config.write_text(json.dumps(self._config))
        head = dict(self._head_resources)
        cmd = [RAY, "start", "--head", f"--port={self.port}", f"--temp-dir={self.temp_dir}",
               f"--autoscaling-config={config}", f"--num-cpus={head.pop('CPU', 1)}", f"--num-gpus={head.pop('GPU', 0)}",
               "--include-dashboard=false", "--object-store-memory=200000000"]
        env = self.env(**(hooks or {}))
        env.update({"AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1", **(override_env or {})})
        # Ray 2.60's raylet aborts when its dashboard agent has not written its port file within 15 s (hard-coded):
        # on a loaded machine that happens; start again.
        for _ in range(3):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode == 0:
                return
            self.shutdown()
        raise RuntimeError(f"ray start failed 3 times: {done.stdout[-2000:]}{done.stderr[-2000:]}")

    def shutdown(self) -> None:
        kill_leftovers(self.temp_dir)

    def job(self, script: str, config_path: Path, log: Path, *args: str) -> subprocess.Popen:
        """jobs/<script> as a driver of this cluster (like `ray job submit`), in its own process group."""
        env = self.env()
        env["RAY_ADDRESS"] = self.address
        cmd = [sys.executable, str(REPO / "jobs" / script), "--config", str(config_path), *args]
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait(proc: subprocess.Popen, log: Path, timeout: float) -> int:
    """The job's exit status; its log in the failure message when it does not end in time."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"job still running after {timeout}s:\n{log.read_text(errors='replace')[-4000:]}") from None


def wait_for(predicate, timeout: float, what: str, step: float = 0.5):
    """Poll until predicate() is truthy; return it."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
