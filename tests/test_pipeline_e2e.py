"""End to end: the demo pipeline submitted to a `ray start` cluster with `ray job submit`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _submit(dashboard: str, run_dir: Path, env: dict[str, str]) -> str:
    cmd = [
        RAY, "job", "submit", "--address", dashboard, "--working-dir", str(REPO), "--",
        "python", "jobs/pipeline.py", "--config", "configs/demo.yaml", "--set", f"run_dir={run_dir}",
    ]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "succeeded" in out.stdout, out.stdout[-4000:]
    return out.stdout


def _report_table(stdout: str) -> str:
    """The report's pipe table as the pipeline printed it last."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("| Lang"))
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end])


@pytest.mark.slow
@pytest.mark.e2e
def test_demo_pipeline_through_ray_job_submit(tmp_path: Path) -> None:
    import ray

    if ray.is_initialized():  # `ray stop` below would pull the in-process cluster from under it
        ray.shutdown()
    port, dash = _free_port(), _free_port()
    # As in an activated virtualenv: the job's `python` is this interpreter.
    env = {**os.environ, "RAY_ADDRESS": "", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # Ray turns token auth on by itself when ~/.ray/auth_token exists (left by any earlier Ray); this
    # throwaway localhost cluster and its client must agree, so it is off for both.
    env["RAY_AUTH_MODE"] = "disabled"
    subprocess.run(
        [RAY, "start", "--head", f"--port={port}", f"--dashboard-port={dash}", "--num-cpus=2",
         "--include-dashboard=true", "--disable-usage-stats"],
        check=True, env=env, capture_output=True, timeout=180,
    )
    try:
        run_dir = tmp_path / "run"
        first = _submit(f"http://127.0.0.1:{dash}", run_dir, env)
        report = json.loads((run_dir / "reports" / "xqg.json").read_text(encoding="utf-8"))
        langs = ["ar", "bn", "fi", "ja", "ko", "ru", "te"]
        for run_label in ("baseline", "+xQG"):
            scores = report["runs"][run_label]["metrics"]
            for metric in ("R@2kt", "R@5kt"):
                assert set(langs) <= set(scores[metric]), scores
                assert all(0.0 <= scores[metric][lang] <= 100.0 for lang in langs)
                assert scores[metric]["avg"] == pytest.approx(sum(scores[metric][lang] for lang in langs) / 7)
        assert (run_dir / "reports" / "xqg.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (run_dir / "reports" / "xqg.md").read_text(encoding="utf-8").count("|") > 20

        # A second submission finds every stage complete, does no work and prints the same report.
        before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*.parquet")}
        second = _submit(f"http://127.0.0.1:{dash}", run_dir, env)
        assert "nothing to do: every stage was already complete" in second
        assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*.parquet")} == before
        table = _report_table(first)
        assert len(table.splitlines()) == 2 + 7 + 1 and table == _report_table(second)
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
