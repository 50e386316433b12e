"""Cost vs corpus size: every pipeline stage on a synthetic corpus at several sizes, on a local Ray, tiny models.

The corpus and its dev questions come from the demo generator (`xqg.demo.data`, the same families of
near-duplicate passages as data/demo, at any size). The generator (mT5) and the bi-encoder (BERT) are tiny
from-scratch models with random weights (built offline, as the tests build them): speed per passage, not
quality, is measured, and no training stage runs. Stages in order: ingest, generate, encode (passages,
generated, queries), fuse, index (baseline and fused), search (both), evaluate.

Generation runs on a fixed subset at every size so that the larger sizes finish on 2 CPU cores: one target
language (--gen-languages, default ar) and --gen-queries queries of at most --gen-new-tokens tokens per
passage (defaults 1 and 8; the paper: 7 languages x 5 queries of 32). Every passage of every shard is
generated (fusion needs every shard), so generate's per-passage cost is comparable across sizes.

--gen-shards K: at sizes whose corpus has more than K shards, generate and encode (passages and generated queries)
run for real on the first K corpus shards only, through the stages' own shard filter (`run_generate` /
`run_encode` `shards=`, what `jobs/generate.py --shards` uses), on the run directory of the whole corpus (ingest
runs on every shard; generate and encode plan against the whole corpus's markers and listings). The other shards
then get random vectors in encode's layout (set-up, not timed, as --synthetic-vectors writes them) so that fuse,
index, search and evaluate run over the whole corpus. Those generate / encode rows count per-passage cost over the
passages actually processed (the K shards' rows), and the table marks them "K of <shards>".

Per stage and size: wall time, passages/s, CPU seconds of the driver and of every Ray worker (from /proc: wall
time on a shared machine follows the other users' load), the load average, the driver's peak RSS (PeakSampler of
benchmarks/driver_memory.py), the largest Ray worker's RSS (the driver's descendant processes named ray::*,
sampled every 0.5 s) and the bytes the stage added to the run directory. Each size runs in a fresh driver process
with its own local Ray. Then per stage a fit of time = a + b*n (a: fixed cost, Ray Data start and model load;
b: cost per passage), the marginal cost per passage between neighbouring sizes, and the per-passage time, CPU and
bytes at the largest size over those at the smallest.

  python benchmarks/scale.py --sizes 10000 100000            # 11.5 min on 2 shared cores (benchmarks/RESULTS.md)
  python benchmarks/scale.py --sizes 1000000 --synthetic-vectors --merge /tmp/xqg-scale/scale-10k-100k.json
      # 1M without generate and encode (random vectors in their layout feed fuse), added to an earlier result
  python benchmarks/scale.py --sizes 10000 1000000 --gen-shards 10 --merge /tmp/xqg-scale/scale-10k-100k.json
      # 1M with generate and encode on its first 10 of 200 shards; 10k (2 shards) in full, at the same load
  python benchmarks/scale.py --sizes 10000 1000000 --gen-shards 2 --stages ingest,generate,encode --out k2.json
      # the same work (2 shards, ~10k passages) in a 2-shard and a 200-shard corpus: no fit, only the ratios
  python benchmarks/scale.py --sizes 1000000 --stages ingest,generate --merge scale.json   # fewer stages
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):  # this checkout, unless PYTHONPATH names another one
    os.environ["PYTHONPATH"] = str(REPO)
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from driver_memory import PeakSampler, rss_bytes  # noqa: E402  (one peak sampler for every benchmark)

STAGES = ("ingest", "generate", "encode", "fuse", "index", "search", "evaluate")
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


# ---- measuring ---------------------------------------------------------------------------------------------
def _children(pid: int) -> dict[int, list[int]]:
    """Parent pid -> child pids of every process on the machine (one pass over /proc)."""
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields after the last ')' are fixed.
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        out.setdefault(ppid, []).append(int(entry))
    return out


def ray_workers(root: int) -> list[int]:
    """Pids of the Ray worker processes (command line ray::...) below root: this driver's local Ray only, not
    another user's Ray on the same machine."""
    tree, todo, found = _children(root), [root], []
    while todo:
        for child in tree.get(todo.pop(), []):
            todo.append(child)
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    if f.read(5) == b"ray::":
                        found.append(child)
            except OSError:
                pass
    return found


def pid_rss(pid: int) -> int:
    """Resident bytes of one process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def pid_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) one process has used so far (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


class WorkerSampler:
    """While a `with` block runs: the largest RSS of any Ray worker below this process, and the CPU seconds the
    workers used (each worker's CPU time at its last sample minus at the block's start; a worker started in the
    block counts from zero). CPU seconds depend much less than wall time on what else the machine runs."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s, self.top = interval_s, 0
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for pid in ray_workers(os.getpid()):
            self.top = max(self.top, pid_rss(pid))
            cpu = pid_cpu(pid)
            if cpu is not None:
                self.last[pid] = cpu

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    @property
    def cpu_s(self) -> float:
        """Worker CPU seconds used inside the block."""
        return sum(cpu - self.first.get(pid, 0.0) for pid, cpu in self.last.items())

    def __enter__(self) -> WorkerSampler:
        self._sample()
        self.first, self.top = dict(self.last), 0
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def tree_bytes(path: Path) -> int:
    """Bytes of every file under path."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def measure(stage: str, run_dir: Path, work: Callable[[], list[Any]]) -> dict[str, Any]:
    """Run one stage's summaries-returning callable; its wall time, memory and bytes written."""
    import gc

    gc.collect()
    before_bytes, before_rss = tree_bytes(run_dir), rss_bytes()
    t0, cpu0 = time.perf_counter(), os.times()
    with PeakSampler() as driver, WorkerSampler() as workers:
        summaries = work()
    seconds, cpu1 = time.perf_counter() - t0, os.times()
    for s in summaries:
        if not s.ok or not s.balanced:
            raise SystemExit(f"{stage} failed:\n{s.render()}")
    return {
        "stage": stage, "seconds": round(seconds, 3), "units": sum(s.units_done for s in summaries),
        "driver_cpu_s": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 2),
        "worker_cpu_s": round(workers.cpu_s, 2), "load_average": round(os.getloadavg()[0], 1),
        "rows_out": sum(s.rows_out for s in summaries), "driver_peak_mb": round(driver.top / 2**20, 1),
        "driver_delta_mb": round((driver.top - before_rss) / 2**20, 1), "driver_exact": driver.exact,
        "worker_peak_mb": round(workers.top / 2**20, 1), "bytes_written": tree_bytes(run_dir) - before_bytes,
        "parts": [{"stage": s.stage, "seconds": round(s.seconds, 3), "rows_out": s.rows_out} for s in summaries],
    }


# ---- set-up ------------------------------------------------------------------------------------------------
def build_models(work: Path) -> tuple[Path, Path]:
    """A tiny mT5 generator and a tiny BERT bi-encoder with random weights, tokenizers trained on the demo text."""
    from xqg.config import ScratchModel
    from xqg.models.resolve import read_text_files
    from xqg.models.tiny import build_scratch

    files = [str(REPO / "data" / "demo" / n) for n in ("passages.jsonl", "train.jsonl", "dev.jsonl")]
    out = []
    for kind in ("mt5", "bert"):
        folder = work / f"model-{kind}"
        if not (folder / "config.json").exists():
            build_scratch(ScratchModel(scratch=kind, vocab_size=2000), read_text_files(files), folder)
        out.append(folder)
    return out[0], out[1]


def make_data(n: int, work: Path, replicate_above: int) -> Path:
    """The demo generator's corpus and questions at n passages (kept in work/ for the next run).

    Above replicate_above passages the corpus is the demo corpus of replicate_above passages repeated with new
    docids (copy k: '<docid>-k'), and the questions are that corpus's: the generator makes every name unique, and
    at 1M passages it had not finished after 7 minutes, still drawing place names (NameBank._fresh rejects names it
    has handed out, and the place-name space runs short). Cost per passage does not depend on whether texts repeat."""
    from xqg.demo.data import make_demo_data

    folder = work / f"data-{n}"
    if (folder / "README.md").exists():  # written last: its presence means the rest is complete
        return folder
    t0 = time.perf_counter()
    if n <= replicate_above:
        make_demo_data(str(folder), n_passages=n)
    else:
        base = make_data(replicate_above, work, replicate_above)
        folder.mkdir(parents=True, exist_ok=True)
        lines = (base / "passages.jsonl").read_text(encoding="utf-8").splitlines()
        with (folder / "passages.jsonl").open("w", encoding="utf-8") as f:
            for i in range(n):
                copy, line = divmod(i, len(lines))
                if copy:
                    row = json.loads(lines[line])
                    row["docid"] = f"{row['docid']}-{copy}"
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                else:
                    f.write(lines[line] + "\n")
        shutil.copy(base / "dev.jsonl", folder / "dev.jsonl")
        (folder / "README.md").write_text(f"{n} passages: data-{replicate_above} repeated with new docids\n")
    print(f"[data] {n:,} passages made in {time.perf_counter() - t0:.0f} s", flush=True)
    return folder


def overrides(n: int, data: Path, run_dir: Path, mt5: Path, bert: Path, args: argparse.Namespace) -> list[str]:
    """The config of one size: shards of --shard-passages passages, the generation subset, tiny models."""
    shards = max(1, round(n / args.shard_passages))
    langs = args.gen_languages
    return [
        f"run_dir={run_dir}", f"corpus.path={data / 'passages.jsonl'}", "corpus.format=jsonl",
        f"corpus.num_shards={shards}", f"queries=[{{name: dev, path: {data / 'dev.jsonl'}, format: xor_tydi}}]",
        f"languages=[{langs}]", f"fuse.languages=[{langs}]", f"generate.model={mt5}", "generate.backend=ctranslate2",
        f"generate.num_queries={args.gen_queries}", f"generate.max_new_tokens={args.gen_new_tokens}",
        "generate.max_input_len=128", "generate.batch_size=64", f"encode.model={bert}", "encode.batch_size=128",
        "index.type=flat", "search.depth=100", "evaluate.permutations=1000", "ray.num_cpus=2",
    ]


def subset_shards(num_shards: int, gen_shards: int) -> list[int] | None:
    """The corpus shards generate and encode run on: the first gen_shards when the corpus has more, else None
    (every shard)."""
    return list(range(gen_shards)) if 0 < gen_shards < num_shards else None


def stage_calls(config: Any, shards: list[int] | None = None) -> dict[str, Callable[[], list[Any]]]:
    """What each stage runs (the pipeline's own stage functions); generate and encode on shards only, if given
    (the query set is encoded whole)."""
    from xqg.encode.stage import run_encode
    from xqg.evaluate.stage import run_evaluate
    from xqg.fuse import run_fuse
    from xqg.generate.stage import run_generate
    from xqg.index.stage import run_index
    from xqg.ingest.stage import run_ingest
    from xqg.layout import index_names
    from xqg.search.stage import run_search

    only = None if shards is None else set(shards)
    return {
        "ingest": lambda: [run_ingest(config)],
        "generate": lambda: [run_generate(config, shards=only)],
        "encode": lambda: [run_encode(config, t, shards=None if t == "queries" else only)
                           for t in ("passages", "generated", "queries")],
        "fuse": lambda: [run_fuse(config)],
        "index": lambda: [run_index(config, name) for name in index_names(config)],
        "search": lambda: [run_search(config, name) for name in index_names(config)],
        "evaluate": lambda: [run_evaluate(config)],
    }


def run_size(n: int, stages: list[str], work: Path, models: tuple[Path, Path], args: argparse.Namespace) -> list[dict]:
    """Every chosen stage at one size, on a fresh run directory; one row per stage."""
    from xqg.config import load_config
    from xqg.encode.stage import run_encode

    data = make_data(n, work, args.replicate_above)
    run_dir = work / f"run-{n}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: every stage does all its work
    config = load_config(None, overrides(n, data, run_dir, *models, args))
    subset = None if args.synthetic_vectors else subset_shards(config.corpus.num_shards, args.gen_shards)
    calls = stage_calls(config, subset)
    rows = []
    for stage in stages:
        if subset is not None and stage == "fuse":
            # Set-up, not measured: the shards generate and encode left out get random vectors in encode's layout.
            from driver_memory import write_vectors
            from xqg.rundir import RunDir

            others = sorted(set(RunDir(str(run_dir)).corpus_shards()) - set(subset))
            write_vectors(str(run_dir), dim=64, shards=others, langs=args.gen_languages.split(","),
                          queries=args.gen_queries)
        if args.synthetic_vectors and stage in ("generate", "encode"):
            continue
        if args.synthetic_vectors and stage == "fuse":
            # Set-up, not measured: random vectors in the encode stage's layout instead of generate + encode
            # (hours at 1M on 2 cores); the query set is encoded for real, so search and evaluate run as usual.
            from driver_memory import write_vectors

            write_vectors(str(run_dir), dim=64)
            run_encode(config, "queries")
        print(f"[{n:,}] {stage} ...", flush=True)
        row = {"size": n, "shards": config.corpus.num_shards, **measure(stage, run_dir, calls[stage])}
        done = n  # passages the stage processed: every one, except generate / encode on a subset of shards
        if subset is not None and stage in ("generate", "encode"):
            from xqg.rundir import RunDir

            done = sum(RunDir(str(run_dir)).corpus_shard_rows(s) for s in subset)
            row["shards_run"], row["passages_processed"] = len(subset), done
        per_passage(row, done)
        row["synthetic_vectors"] = args.synthetic_vectors and stage != "ingest"
        if subset is not None and stage not in ("ingest", "generate", "encode"):
            row["synthetic_beyond"] = len(subset)  # real vectors on the first shards, random on the others
        print(f"[{n:,}] {json.dumps({k: v for k, v in row.items() if k != 'parts'})}", flush=True)
        rows.append(row)
    if not args.keep_runs:
        shutil.rmtree(run_dir, ignore_errors=True)
    return rows


def per_passage(row: dict[str, Any], done: int) -> None:
    """Rates per passage processed (done), added to a stage's row."""
    row["passages_per_s"] = round(done / row["seconds"], 1)
    row["us_per_passage"] = round(row["seconds"] / done * 1e6, 2)
    row["bytes_per_passage"] = round(row["bytes_written"] / done, 1)
    row["cpu_us_per_passage"] = round((row["driver_cpu_s"] + row["worker_cpu_s"]) / done * 1e6, 2)


def child(n: int, stages: list[str], work: Path, args: argparse.Namespace) -> list[dict]:
    """One size in this process: a fresh driver and a fresh local Ray, so every size starts alike."""
    import ray

    models = build_models(work)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"], "TOKENIZERS_PARALLELISM": "false"}})
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars, ctx.print_on_execution_start = False, False
    try:
        return run_size(n, stages, work, models, args)
    finally:
        ray.shutdown()


# ---- fitting and reporting ---------------------------------------------------------------------------------
SLOPE_SPAN = 1.5  # a slope between two sizes needs one to process at least this many times the other's passages


def apart(n1: int, n2: int) -> bool:
    """Far enough apart for a slope: noise over a small difference in n would swamp it."""
    return max(n1, n2) >= SLOPE_SPAN * min(n1, n2)


def slopes(ns: list[int], ys: list[float]) -> list[float | None]:
    """(y2 - y1) / (n2 - n1) in millionths between neighbours (None where they processed about as many passages,
    e.g. 10k in full and 1M on 2 of its shards)."""
    return [round((y2 - y1) / (n2 - n1) * 1e6, 2) if apart(n1, n2) else None
            for (n1, y1), (n2, y2) in zip(zip(ns, ys), zip(ns[1:], ys[1:]))]


def fit(rows: list[dict]) -> dict[str, Any]:
    """time = a + b*n by least squares over the sizes, slopes between neighbouring sizes, and largest/smallest
    ratios of per-passage time and bytes. n is the passages a stage processed (the corpus size, or the subset's
    passages for generate / encode on --gen-shards); rows stay in corpus-size order."""
    rows = sorted(rows, key=lambda r: r["size"])
    ns = [r.get("passages_processed", r["size"]) for r in rows]
    ts = [r["seconds"] for r in rows]
    out: dict[str, Any] = {"sizes": ns}
    if len(rows) < 2:
        return out
    if apart(min(ns), max(ns)):  # else no fit: the per-passage ratios below still compare the sizes
        mean_n, mean_t = sum(ns) / len(ns), sum(ts) / len(ts)
        b = sum((n - mean_n) * (t - mean_t) for n, t in zip(ns, ts)) / sum((n - mean_n) ** 2 for n in ns)
        out["fixed_s"] = round(mean_t - b * mean_n, 2)
        out["us_per_passage_fit"] = round(b * 1e6, 2)
    # Marginal cost per passage between neighbouring sizes: superlinear cost shows as a rising slope.
    out["marginal_us_per_passage"] = slopes(ns, ts)
    out["marginal_cpu_us_per_passage"] = slopes(ns, [r["driver_cpu_s"] + r["worker_cpu_s"] for r in rows])
    first, last = rows[0], rows[-1]
    out["time_per_passage_ratio"] = round(last["us_per_passage"] / first["us_per_passage"], 2)
    out["cpu_per_passage_ratio"] = round(last["cpu_us_per_passage"] / first["cpu_us_per_passage"], 2)
    if first["bytes_written"] > 0:
        out["bytes_per_passage_ratio"] = round(last["bytes_per_passage"] / first["bytes_per_passage"], 2)
    return out


def machine() -> dict[str, Any]:
    """The machine and library versions."""
    import pyarrow
    import ray
    import torch

    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(int(mem) / 2**20, 1), "python": platform.python_version(),
            "ray": ray.__version__, "torch": torch.__version__, "pyarrow": pyarrow.__version__,
            "load_average_at_end": os.getloadavg()}


def markdown(result: dict[str, Any]) -> str:
    """The per-stage, per-size table and the fit table."""
    rows, sizes = result["rows"], sorted({r["size"] for r in result["rows"]})
    lines = ["| stage | passages | shards | wall s | passages/s | wall µs/passage | CPU µs/passage | load | "
             "driver peak MB (Δ) | largest worker MB | bytes written | bytes/passage |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for stage in STAGES:
        for r in sorted((r for r in rows if r["stage"] == stage), key=lambda r: r["size"]):
            mark = " *" if r.get("synthetic_vectors") else " †" if r.get("synthetic_beyond") else ""
            shards = f"{r['shards_run']} of {r['shards']}" if "shards_run" in r else str(r["shards"])
            lines.append(f"| {stage} | {r['size']:,}{mark} | {shards} | {r['seconds']:.1f} | {r['passages_per_s']:,.0f} | "
                         f"{r['us_per_passage']:,.0f} | {r['cpu_us_per_passage']:,.0f} | {r['load_average']:.0f} | "
                         f"{r['driver_peak_mb']:.0f} ({r['driver_delta_mb']:+.0f}) | "
                         f"{r['worker_peak_mb']:.0f} | {r['bytes_written']:,} | {r['bytes_per_passage']:,.0f} |")
    lines += ["", "| stage | fixed a (s) | b (wall µs/passage, fit) | marginal wall µs/passage between sizes | "
              "marginal CPU µs/passage | wall µs/passage largest / smallest | CPU µs/passage largest / smallest | "
              "bytes/passage largest / smallest |", "|---|---:|---:|---|---|---:|---:|---:|"]
    for stage, f in result["fits"].items():
        if len(f.get("sizes", [])) < 2:
            continue
        marg = " → ".join("-" if m is None else f"{m:,.0f}" for m in f["marginal_us_per_passage"])
        cpu = " → ".join("-" if m is None else f"{m:,.0f}" for m in f["marginal_cpu_us_per_passage"])
        fixed = f"{f['fixed_s']:.1f} | {f['us_per_passage_fit']:,.0f}" if "fixed_s" in f else "- | -"
        lines.append(f"| {stage} | {fixed} | {marg} | {cpu} | "
                     f"{f['time_per_passage_ratio']} | {f['cpu_per_passage_ratio']} | "
                     f"{f.get('bytes_per_passage_ratio', '-')} |")
    return "\n".join(lines) + f"\n\nsizes: {', '.join(f'{s:,}' for s in sizes)}; {result['note']}\n"


def main(argv: list[str] | None = None) -> int:
    """Measure every stage at every size (one child process per size); write the JSON and the markdown table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated, in pipeline order")
    p.add_argument("--shard-passages", type=int, default=5_000, help="passages per corpus shard (the same at every size)")
    p.add_argument("--gen-languages", default="ar", help="the target languages generated (comma-separated)")
    p.add_argument("--gen-queries", type=int, default=1, help="queries per passage and language")
    p.add_argument("--gen-new-tokens", type=int, default=8, help="at most this many tokens per generated query")
    p.add_argument("--work", default="/tmp/xqg-scale", help="models, corpora and run directories")
    p.add_argument("--keep-runs", action="store_true", help="keep each size's run directory")
    p.add_argument("--merge", help="an earlier JSON result: its rows of other sizes are kept")
    p.add_argument("--out", default=None, help="JSON result (default: <work>/scale.json); the table goes beside it")
    p.add_argument("--synthetic-vectors", action="store_true",
                   help="skip generate and encode: random vectors in their layout (set-up, not measured) feed fuse")
    p.add_argument("--gen-shards", type=int, default=0,
                   help="at sizes with more corpus shards, generate and encode run on the first K shards only "
                        "(random vectors in their layout for the others, set-up, not measured); 0: every shard")
    p.add_argument("--replicate-above", type=int, default=100_000,
                   help="larger corpora repeat the demo corpus of this size with new docids (see make_data)")
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        p.error(f"unknown stages {sorted(unknown)}; stages are {', '.join(STAGES)}")
    if args.gen_shards < 0 or (args.gen_shards and args.synthetic_vectors):
        p.error("--gen-shards takes a positive number of shards, and not with --synthetic-vectors")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out or work / "scale.json")
    if args.child:
        out.write_text(json.dumps(child(args.child, stages, work, args)))
        return 0
    build_models(work)  # once, before the children that share it
    rows: list[dict] = []
    if args.merge and Path(args.merge).exists():
        rows = [r for r in json.loads(Path(args.merge).read_text())["rows"] if r["size"] not in args.sizes]
    for n in args.sizes:
        part = work / f"rows-{n}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), *(argv if argv is not None else sys.argv[1:]),
               "--child", str(n), "--out", str(part)]
        subprocess.run(cmd, check=True)
        rows += json.loads(part.read_text())
    synthetic = sorted({r["size"] for r in rows if r.get("synthetic_vectors")})
    subsets = sorted({(r["size"], r["shards_run"], r["shards"], r["passages_processed"]) for r in rows
                      if "shards_run" in r})
    note = (f"generation subset at every size: languages [{args.gen_languages}], {args.gen_queries} query per "
            f"passage, at most {args.gen_new_tokens} new tokens; {args.shard_passages:,} passages per shard; "
            "tiny random-weight mT5 / BERT (2 layers, d_model 64, vocabulary 2,000)"
            + (f"; corpora above {args.replicate_above:,} passages repeat the {args.replicate_above:,}-passage one "
               "with new docids" if max(r["size"] for r in rows) > args.replicate_above else "")
            + (f"; * at {', '.join(f'{x:,}' for x in synthetic)} passages generate and encode did not run: random "
               "vectors in their layout fed fuse (the query set was encoded for real)" if synthetic else "")
            + "".join(f"; at {n:,} passages generate and encode ran on the first {k} of {total} shards ({done:,} "
                      "passages; per-passage columns over those), random vectors in encode's layout on the other "
                      "shards († fuse and later stages: real vectors on those shards, random on the rest)"
                      for n, k, total, done in subsets))
    result = {"machine": machine(), "args": vars(args), "note": note, "rows": rows,
              "fits": {s: fit([r for r in rows if r["stage"] == s]) for s in STAGES}}
    out.write_text(json.dumps(result, indent=1))
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
