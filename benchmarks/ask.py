"""Asking a finished run: CLI time to first answer, and the Serve app's latency and throughput on localhost.

    python benchmarks/ask.py --config configs/demo.yaml [--requests 200] [--seconds 30] [--out /tmp/ask-bench]

- CLI: `jobs/ask.py --config FILE "question"` as a user runs it, a fresh process each time (imports, config,
  encoder and index load, one answer); the median of --cli-runs runs.
- Serve: the app started on a local Ray on 127.0.0.1 (a free port), warmed up, then a bounded load loop at 1 and 8
  concurrent clients: each client posts the demo's dev questions in turn until the run has sent --requests requests
  or --seconds have passed, whichever comes first. Latency is per request as the client sees it (p50, p99);
  throughput is answered requests over the loop's wall time. Only 127.0.0.1 is ever contacted.

Writes ask.json and ask.md (a table for benchmarks/RESULTS.md) under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def questions(limit: int = 280) -> list[str]:
    """The demo's dev questions (7 languages)."""
    rows = (REPO / "data/demo/dev.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in rows[:limit]]


def cli_first_answer(config: str, question: str, runs: int) -> dict[str, float]:
    """Wall seconds of a fresh `jobs/ask.py` process answering one question (median, min, max of runs)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(REPO / "jobs/ask.py"), "--config", config, "--top", "10", question],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"jobs/ask.py failed: {proc.stderr[-2000:]}")
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": runs}


def post(url: str, question: str) -> float:
    """Seconds of one POST /search as the client sees it (a non-200 answer is an error)."""
    data = json.dumps({"question": question, "top_k": 10}).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}")
    return time.perf_counter() - t0


def load_loop(url: str, qs: list[str], clients: int, max_requests: int, max_seconds: float) -> dict[str, float]:
    """`clients` threads posting questions until max_requests are sent or max_seconds pass: p50/p99, throughput."""
    latencies: list[float] = []
    errors: list[str] = []
    sent = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + max_seconds

    def client(k: int) -> None:
        while True:
            with lock:
                if sent[0] >= max_requests or time.perf_counter() > deadline:
                    return
                i = sent[0]
                sent[0] += 1
            try:
                dt = post(url, qs[(i + k) % len(qs)])
                with lock:
                    latencies.append(dt)
            except Exception as e:  # noqa: BLE001 - counted and reported, the loop goes on
                with lock:
                    errors.append(repr(e))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")

    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "wall_s": wall,
            "p50_ms": 1000 * pct(50), "p99_ms": 1000 * pct(99), "throughput_rps": len(latencies) / wall}


def serve_loops(config_path: str, overrides: list[str], max_requests: int, max_seconds: float) -> dict:
    """Start the app on a local Ray, warm it up, run the load loops at 1 and 8 clients, shut it down."""
    import ray
    from ray import serve

    from xqg.ask.serve import start
    from xqg.config import load_config

    config = load_config(config_path, overrides)
    config.ask.port = free_port()
    config.ask.host = "127.0.0.1"
    ray.init(num_cpus=2, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}})
    try:
        t0 = time.perf_counter()
        url = start(config, name="xqg-ask-bench")
        qs = questions()
        post(url, qs[0])
        ready = time.perf_counter() - t0
        for q in qs[:20]:  # warm-up: first batches, tokenizer caches
            post(url, q)
        loops = [load_loop(url, qs, c, max_requests, max_seconds) for c in (1, 8)]
    finally:
        serve.shutdown()
        ray.shutdown()
    return {"start_to_first_answer_s": ready, "loops": loops, "replicas": config.ask.min_replicas,
            "replica_cpus": config.ask.replica_cpus, "max_batch_size": config.ask.max_batch_size}


def markdown(result: dict) -> str:
    """The RESULTS.md table."""
    cli = result["cli"]
    lines = [
        f"CLI time to first answer (fresh process, {cli['runs']} runs): median {cli['median_s']:.2f} s "
        f"(min {cli['min_s']:.2f}, max {cli['max_s']:.2f}).",
        f"Serve: start to first answer {result['serve']['start_to_first_answer_s']:.1f} s; "
        f"{result['serve']['replicas']} replica, {result['serve']['replica_cpus']} CPU, batches of up to "
        f"{result['serve']['max_batch_size']}.",
        "",
        "| clients | requests | errors | p50 ms | p99 ms | throughput req/s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["serve"]["loops"]:
        lines.append(f"| {r['clients']} | {r['requests']} | {r['errors']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                     f"| {r['throughput_rps']:.1f} |")
    lines.append(f"\nLoad average at the start: {result['load_average'][0]:.1f} (1 min), "
                 f"{os.cpu_count()} CPUs.")
    return "\n".join(lines) + "\n"


def main() -> int:
    """Run the CLI and Serve measurements; write ask.json and ask.md."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--cli-runs", type=int, default=3)
    p.add_argument("--requests", type=int, default=200, help="at most this many requests per load loop")
    p.add_argument("--seconds", type=float, default=30.0, help="at most this long per load loop")
    p.add_argument("--out", default="/tmp/ask-bench")
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = {"load_average": os.getloadavg(), "config": args.config}
    result["cli"] = cli_first_answer(args.config, questions(1)[0], args.cli_runs)
    result["serve"] = serve_loops(args.config, args.overrides, args.requests, args.seconds)
    result["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ask.json").write_text(json.dumps(result, indent=1))
    (out / "ask.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
