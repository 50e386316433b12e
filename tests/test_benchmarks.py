"""The GPU benchmark's CPU dry run: every part runs with tiny sizes and reports a positive throughput."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers.paths import REPO


def test_gpu_benchmark_dry_run_reports_every_part(tmp_path: Path) -> None:
    """`benchmarks/gpu.py --device cpu --tiny` writes gpu.json with rows for generate, encode and faiss."""
    out = tmp_path / "gpu"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Its own process, as a user runs it (a dry run starts no Ray: its encode part runs the bare loop).
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


def _scale(monkeypatch):
    """benchmarks/scale.py as a module (its import sets PYTHONPATH only when unset: keep the environment as is)."""
    import importlib.util

    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH") or str(REPO))
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("scale_benchmark", REPO / "benchmarks" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scale_gen_shards_subset_and_per_passage_cost(monkeypatch) -> None:
    """--gen-shards: the first K shards only where the corpus has more; per-passage cost over the passages run."""
    scale = _scale(monkeypatch)
    assert scale.subset_shards(200, 10) == list(range(10))
    assert scale.subset_shards(2, 10) is None and scale.subset_shards(10, 10) is None
    assert scale.subset_shards(200, 0) is None

    def row(size: int, seconds: float, processed: int | None = None) -> dict:
        r = {"size": size, "shards": size // 5000, "stage": "generate", "seconds": seconds, "driver_cpu_s": 1.0,
             "worker_cpu_s": seconds - 1.0, "bytes_written": 100 * (processed or size), "load_average": 1.0,
             "driver_peak_mb": 1.0, "driver_delta_mb": 0.0, "worker_peak_mb": 1.0}
        if processed:
            r["shards_run"], r["passages_processed"] = processed // 5000, processed
        scale.per_passage(r, processed or size)
        return r

    # 20 s fixed + 2 ms a passage at 10k, and at 1M with 50k passages processed: the same cost per passage run.
    rows = [row(10_000, 40.0), row(1_000_000, 120.0, 50_000)]
    assert rows[1]["us_per_passage"] == 2400.0 and rows[1]["bytes_per_passage"] == 100
    f = scale.fit(rows)
    assert f["sizes"] == [10_000, 50_000]
    assert f["us_per_passage_fit"] == 2000.0 and f["fixed_s"] == 20.0
    assert f["time_per_passage_ratio"] == 0.6  # 2.4 ms over 4 ms
    # 1M on 2 of its shards against 10k in full: about as many passages, so no slope, only the ratios.
    same = scale.fit([row(10_000, 40.0), row(1_000_000, 44.0, 9_900)])
    assert same["sizes"] == [10_000, 9_900] and "fixed_s" not in same and same["marginal_us_per_passage"] == [None]
    assert same["time_per_passage_ratio"] == 1.11
    table = scale.markdown({"rows": rows, "fits": {"generate": f, "encode": same}, "note": "n"})
    assert "| generate | 1,000,000 | 10 of 200 | 120.0 | 417 | 2,400 |" in table
    assert "| encode | - | - | - | - | 1.11 |" in table
