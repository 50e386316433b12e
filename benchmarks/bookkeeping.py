"""The driver's bookkeeping against an object store: requests per unit and seconds to plan, prepare, mark and
re-plan a generate stage of N units (the full run: 2,048 shards x 7 languages = 14,336), on a local S3 server.

The server is moto's (server mode, tests/s3_server.py) in its own process on 127.0.0.1, counting every HTTP request
it serves by kind (LIST, HEAD, GET, PUT, POST, DELETE, COPY); the driver side is xqg's own StageRunner on a run
directory s3://bench/run, exactly as the generate stage drives it (outputs generated/<unit>, a lease). No model,
no Ray: what is measured is the bookkeeping alone. Steps (each timed and counted on its own):

  setup     the ingest markers of every shard and their bulk cache, as the ingest stage leaves them (not measured)
  plan      a fresh generate stage: plan every unit (reads the ingest markers as upstream, lists its own)
  prepare   prepare every unit to do (nothing there yet)
  mark      mark every unit as it would finish (one at a time, in one thread: the latency per mark is what
            must stay under the 50 ms between units finishing), then close() (the bulk cache for the next job)
  replan    a second job plans the finished stage (everything done: nothing to do)
  outputs   (setup) one small output file per unit, as the generate actors write them
  stale     a third job with another model: every unit is stale; plan + prepare (delete every marker and output)

  python benchmarks/bookkeeping.py --units 14336 --out bookkeeping.json
  PYTHONPATH=/path/to/older/checkout python benchmarks/bookkeeping.py --units 700   # "before", same server code

Numbers on localhost are a floor: S3 answers in 10-30 ms where moto answers in ~1-3 ms; requests per unit carry
over unchanged, seconds scale with latency / parallelism.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):  # this checkout, unless PYTHONPATH names another one
    os.environ["PYTHONPATH"] = str(REPO)
    sys.path.insert(0, str(REPO))
LANGS = ["ar", "bn", "fi", "ja", "ko", "ru", "te"]


def _s3_server() -> Any:
    """tests/s3_server.py of this checkout, whatever PYTHONPATH says (the server is not what is measured)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("xqg_s3_server", REPO / "tests" / "s3_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, str]:
    """The counting moto server in its own process; (process, endpoint)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "s3_server.py"), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()  # "counting S3 server on ..." once it listens
    return proc, f"127.0.0.1:{port}"


def units_for(n: int, model: str) -> list[Any]:
    """n generate units (shard-major, 7 languages per shard), made from the ingest markers and a model."""
    from xqg.layout import generated_unit
    from xqg.runner import Unit

    return [Unit(generated_unit(LANGS[i % 7], i // 7), {"corpus": f"c{i // 7}", "lang": LANGS[i % 7], "model": model},
                 payload={"lang": LANGS[i % 7], "shard": i // 7}, expected=10) for i in range(n)]


def measure(n: int) -> dict[str, Any]:
    """Run every step against a fresh server; requests by kind, per unit, and seconds for each."""
    control, s3_uri = _s3_server().control, _s3_server().s3_uri
    import xqg.lease
    from xqg.layout import INGEST, corpus_unit, generated_dir
    from xqg.rundir import RunDir
    from xqg.runner import StageRunner

    xqg.lease.SETTLE_S = 0.2  # the lease's settle wait is not bookkeeping per unit
    proc, endpoint = start_server()
    result: dict[str, Any] = {"units": n, "shards": (n + 6) // 7, "steps": {}}
    try:
        run = RunDir(s3_uri(endpoint, "bench/run"))
        with ThreadPoolExecutor(32) as pool:  # setup: the ingest markers
            list(pool.map(lambda s: run.mark_done(INGEST, corpus_unit(s), rows_in=10, rows_out=10, rejected=0),
                          range(result["shards"])))
        run.markers(INGEST)  # the bulk cache the ingest stage's close() leaves (planning reads upstream markers)

        def step(name: str, fn: Any) -> Any:
            control(endpoint, "reset")
            t = time.perf_counter()
            out = fn()
            seconds = time.perf_counter() - t
            counts = control(endpoint, "counts")
            total = sum(counts.values())
            result["steps"][name] = {"seconds": round(seconds, 2), "requests": total,
                                     "requests_per_unit": round(total / n, 3), "by_kind": counts}
            print(f"{name:8s} {seconds:8.2f} s {total:8d} requests  {total / n:7.3f}/unit  {counts}", flush=True)
            return out

        def outputs(u: str) -> list[str]:
            return [f"generated/{u}"]

        def prepare(runner: StageRunner, todo: list[Any]) -> None:
            if hasattr(runner, "prepare_all"):
                runner.prepare_all(todo)
            else:  # an older checkout: one unit at a time
                for u in todo:
                    runner.prepare(u)

        runner = StageRunner(run, "generate", outputs=outputs)
        units = units_for(n, "m1")
        plan = step("plan", lambda: (runner.plan([u for u in units if runner.upstream(INGEST, corpus_unit(u.payload["shard"]))])))
        assert len(plan.todo) == n
        step("prepare", lambda: prepare(runner, plan.todo))
        latencies: list[float] = []

        def mark_all() -> None:
            for u in plan.todo:
                t = time.perf_counter()
                assert runner.finish(u, rows_in=10, rows_out=10, rejected=0, written=10)
                latencies.append(time.perf_counter() - t)
            runner.close()

        step("mark", mark_all)
        result["steps"]["mark"]["ms_per_mark_mean"] = round(1000 * statistics.mean(latencies), 2)
        result["steps"]["mark"]["ms_per_mark_p99"] = round(1000 * sorted(latencies)[int(0.99 * (len(latencies) - 1))], 2)
        print(f"         ms per mark: mean {result['steps']['mark']['ms_per_mark_mean']}, "
              f"p99 {result['steps']['mark']['ms_per_mark_p99']}", flush=True)

        again = StageRunner(run, "generate", outputs=outputs)
        replan = step("replan", lambda: again.plan(units_for(n, "m1")))
        assert len(replan.done) == n, (len(replan.done), n)
        again.close()

        with ThreadPoolExecutor(32) as pool:  # setup: each unit's output file
            list(pool.map(lambda u: run.write_text(f"{generated_dir(u.payload['lang'], u.payload['shard'])}/part-00000.parquet", "x"),
                          units))
        stale = StageRunner(run, "generate", outputs=outputs)

        def redo() -> None:
            p = stale.plan(units_for(n, "m2"))
            assert len(p.stale) == n
            prepare(stale, p.todo)

        step("stale", redo)
        import pyarrow.fs as pafs

        left = [i for i in run.fs.get_file_info(pafs.FileSelector(run.path("generated"), recursive=True,
                                                                  allow_not_found=True))
                if i.type == pafs.FileType.File]
        assert not left, f"{len(left)} output files of stale units left"
        result["steps"]["stale"]["outputs_left"] = len(left)
        stale.release()
    finally:
        proc.terminate()
        proc.wait()
    return result


def table(results: list[dict[str, Any]], labels: list[str]) -> str:
    """Markdown: one row per step and result (requests per unit, seconds)."""
    lines = ["| step | " + " | ".join(f"{lab}: requests/unit | {lab}: seconds" for lab in labels) + " |",
             "|---|" + "---:|---:|" * len(labels)]
    for step in results[0]["steps"]:
        cells = []
        for r in results:
            s = r["steps"].get(step, {})
            cells += [f"{s.get('requests_per_unit', '-')}", f"{s.get('seconds', '-')}"]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, measure, print the JSON (and save it with --out)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", type=int, default=14_336)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    result = measure(args.units)
    result["pythonpath"] = os.environ["PYTHONPATH"]
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
