"""The driver's peak memory during ingest, fuse and index at several corpus sizes: it must not grow with size.

For each size: a synthetic JSONL corpus (random words, ~600 bytes a passage) is ingested; then passage vectors
and one language's generated-query sums (random unit vectors, in the encode stage's output layout and with its
markers, so no model is needed) are written for every corpus shard; then fuse and a flat index run. Each stage
runs in a fresh driver process connected to one local Ray; a thread samples the driver's resident memory
(/proc/self/statm) every 5 ms and Linux's exact peak (VmHWM, reset before the stage) is read at the end. Reported: the driver's
peak RSS during the stage minus its RSS just before the stage (after imports and connecting to Ray).

  python benchmarks/driver_memory.py                                   # 20k and 200k passages
  python benchmarks/driver_memory.py --sizes 10000 100000 --shards 2 --rows-per-shard 5000 \
      --buffers 1048576                                                # what the test runs
  PYTHONPATH=/path/to/other/checkout python benchmarks/driver_memory.py  # the same for another version
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):  # this checkout, unless PYTHONPATH names another one
    os.environ["PYTHONPATH"] = str(REPO)
    sys.path.insert(0, str(REPO))
STAGES = ("ingest", "fuse", "index")
WORDS = ("river city music history north school league station village church island player war film "
         "county team album species language district railway bridge temple mountain market").split()
LANG = "ar"


def rss_bytes() -> int:
    """This process's resident memory now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class PeakSampler:
    """The peak RSS of this process inside a `with` block.

    Linux keeps the peak in VmHWM; writing 5 to /proc/self/clear_refs resets it to the current RSS, so VmHWM
    at the end is the exact peak of the block. (getrusage's ru_maxrss would not do: it keeps the peak of the
    process's whole life, and a process started by fork + exec inherits the parent's.) Where the reset is not
    allowed, a thread samples the RSS every 5 ms instead.
    """

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s, self.top = interval_s, rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.exact = False

    def _run(self) -> None:
        while not self._stop.is_set():
            self.top = max(self.top, rss_bytes())
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakSampler:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.exact = True
        except OSError:
            pass
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.top = max(self.top, rss_bytes())
        if self.exact:
            self.top = max(self.top, status_kb("VmHWM") * 1024)


def write_corpus(path: Path, n: int, seed: int = 0) -> None:
    """n JSONL passages {docid, title, text} of ~90 random words each."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    with path.open("w", encoding="utf-8") as f:
        for start in range(0, n, 10_000):
            m = min(10_000, n - start)
            picks = words[rng.integers(0, len(words), (m, 90))]
            for i in range(m):
                f.write(json.dumps({"docid": f"p{start + i}", "title": f"t{start + i}", "text": " ".join(picks[i])}))
                f.write("\n")


def write_vectors(run_dir: str, dim: int, seed: int = 0, shards: Iterable[int] | None = None,
                  langs: Sequence[str] = (LANG,), queries: int = 5) -> None:
    """Passage vectors and the query sums of each of langs (queries per passage) per corpus shard, as the encode
    stage writes them; every ingested shard, or only shards (the others left as they are)."""
    import numpy as np
    import pyarrow as pa

    from xqg.encode.vectors import vector_column
    from xqg.layout import corpus_dir, embeddings_dir, generated_sum_unit, generated_variant, passages_unit
    from xqg.rundir import RunDir

    run = RunDir(run_dir)
    rng = np.random.default_rng(seed)

    def unit_vectors(n: int) -> np.ndarray:
        x = rng.standard_normal((n, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    wanted = None if shards is None else set(shards)
    for shard in run.corpus_shards():
        if wanted is not None and shard not in wanted:
            continue
        docids = run.read_dir(corpus_dir(shard), columns=["docid"])["docid"]
        n = len(docids)
        unit = passages_unit(shard)
        run.write_table(f"{embeddings_dir(unit)}/part-00000.parquet",
                        pa.table({"docid": docids, "embedding": vector_column(unit_vectors(n))}))
        run.mark_done("encode", unit, fingerprint=f"synthetic-{unit}", inputs={"encoder": "synthetic"},
                      rows_in=n, rows_out=n, rejected=0, encoder="synthetic")
        for lang in langs:
            unit = generated_sum_unit(generated_variant(None), lang, shard)
            run.write_table(f"{embeddings_dir(unit)}/part-00000.parquet", pa.table({
                "docid": docids, "lang": pa.array([lang] * n), "n": pa.array(np.full(n, queries, np.int32)),
                "embedding_sum": vector_column(queries * unit_vectors(n))}))
            run.mark_done("encode", unit, fingerprint=f"synthetic-{unit}", inputs={"encoder": "synthetic"},
                          rows_in=n, rows_out=n, rejected=0, max_n=queries)


def overrides(run_dir: str, corpus: str, shards: int, index_shard: int) -> list[str]:
    """The config of every stage of one size."""
    return [f"run_dir={run_dir}", f"corpus.path={corpus}", f"corpus.num_shards={shards}", f"languages=[{LANG}]",
            f"index.shard_size={index_shard}"]


def scale_buffers(nbytes: int) -> None:
    """Ingest's buffers (read block, spool, row group) at nbytes instead of 16 MiB: a small corpus then fills
    them as a large one does, so that a test can see their bound at small sizes."""
    import functools

    import xqg.ingest.stage as ingest

    ingest.read_passages = functools.partial(ingest.read_passages, block_bytes=nbytes)
    ingest.SPOOL_BYTES = ingest.ROW_GROUP_BYTES = nbytes


def child(stage: str, args: list[str], address: str | None, buffers: int | None = None) -> dict:
    """Run one stage in this process (a fresh driver) and return its peak RSS over the RSS before it."""
    import ray

    from xqg.config import load_config
    from xqg.fuse import run_fuse
    from xqg.index.stage import run_index
    from xqg.ingest.stage import run_ingest

    if address:  # the tasks' workers import xqg from where this driver does
        ray.init(address=address, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))}})
    if buffers:
        scale_buffers(buffers)
    config = load_config(None, args)
    work = {"ingest": lambda: run_ingest(config), "fuse": lambda: run_fuse(config),
            "index": lambda: run_index(config, "baseline")}[stage]
    import gc

    gc.collect()
    before = rss_bytes()
    t0 = time.perf_counter()
    with PeakSampler() as sampler:
        summary = work()
    seconds = time.perf_counter() - t0
    if not summary.ok or not summary.balanced:
        raise SystemExit(f"{stage} failed:\n{summary.render()}")
    return {"stage": stage, "exact": sampler.exact, "before_mb": before / 2**20, "peak_mb": sampler.top / 2**20,
            "delta_mb": (sampler.top - before) / 2**20, "seconds": seconds, "rows_out": summary.rows_out}


def run_child(stage: str, args: list[str], address: str | None, buffers: int | None = None) -> dict:
    """One stage in a fresh Python process (its own driver)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--address", address or "",
           "--args", json.dumps(args), "--buffers", str(buffers or 0)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if out.returncode:
        raise RuntimeError(f"{stage} driver failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(sizes: list[int], root: Path, address: str | None, dim: int = 128, shards: int = 8,
            index_shard: int = 50_000, buffers: int | None = None, rows_per_shard: int = 0) -> list[dict]:
    """Rows {size, stage, before_mb, peak_mb, delta_mb, seconds} for every size and stage."""
    rows = []
    for n in sizes:
        corpus = root / f"corpus-{n}.jsonl"
        write_corpus(corpus, n)
        run_dir = str(root / f"run-{n}")
        # Ingest holds one corpus shard's docids at a time (to drop repeated ones): its memory follows the
        # shard's size, which the user sets, not the corpus's. rows_per_shard keeps that size fixed.
        n_shards = max(shards, -(-n // rows_per_shard)) if rows_per_shard else shards
        args = overrides(run_dir, str(corpus), n_shards, index_shard)
        for stage in STAGES:
            if stage == "fuse":
                write_vectors(run_dir, dim)
            rows.append({"size": n, **run_child(stage, args, address, buffers)})
    return rows


def table(rows: list[dict]) -> str:
    """A markdown table: one line per stage, one column pair per size."""
    sizes = sorted({r["size"] for r in rows})
    head = "| stage | " + " | ".join(f"{s:,} passages: peak - before (MB)" for s in sizes) + " | growth (MB) |"
    lines = [head, "|---|" + "---:|" * (len(sizes) + 1)]
    for stage in STAGES:
        got = {r["size"]: r for r in rows if r["stage"] == stage}
        cells = [f"{got[s]['delta_mb']:.1f} ({got[s]['seconds']:.1f} s)" for s in sizes]
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {got[sizes[-1]]['delta_mb'] - got[sizes[0]]['delta_mb']:+.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--shards", type=int, default=8, help="corpus shards (the same at every size)")
    parser.add_argument("--rows-per-shard", type=int, default=0,
                        help="more shards at larger sizes, so that a shard holds at most this many passages")
    parser.add_argument("--index-shard", type=int, default=50_000)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--buffers", type=int, default=0, help="ingest's buffers in bytes (default: as configured)")
    parser.add_argument("--child", choices=STAGES)
    parser.add_argument("--address", default="")
    parser.add_argument("--args", default="[]")
    parser.add_argument("--out", help="write the rows as JSON here")
    a = parser.parse_args()
    if a.child:
        print(json.dumps(child(a.child, json.loads(a.args), a.address or None, a.buffers or None)))
        return
    import ray

    ray.init(num_cpus=a.num_cpus, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}})
    address = ray.get_runtime_context().gcs_address
    with tempfile.TemporaryDirectory(prefix="xqg-driver-memory-") as tmp:
        rows = measure(a.sizes, Path(tmp), address, a.dim, a.shards, a.index_shard, a.buffers or None,
                       a.rows_per_shard)
    print(table(rows))
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
