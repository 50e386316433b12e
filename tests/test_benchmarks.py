"""The GPU benchmark's CPU dry run: every part runs with tiny sizes and reports a positive throughput."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_benchmark_dry_run_reports_every_part(tmp_path: Path) -> None:
    """`benchmarks/gpu.py --device cpu --tiny` writes gpu.json with rows for generate, encode and faiss."""
    out = tmp_path / "gpu"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Its own process: the encode part starts (and shuts down) a local Ray of its own.
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--device", "cpu", "--tiny",
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "gpu.json").read_text())
    assert result["errors"] == {}
    for part in ("generate", "encode", "faiss"):
        rows = [r for r in result["rows"] if r["part"] == part]
        assert rows, f"no {part} row"
        assert all(r["throughput"] > 0 for r in rows), rows
    backends = {r["backend"] for r in result["rows"] if r["part"] == "generate"}
    assert backends == {"hf", "ctranslate2"}
    assert {r["name"].split()[1] for r in result["rows"] if r["part"] == "encode"} == {"passages", "generated"}
    assert "| faiss |" in (out / "gpu.md").read_text()
