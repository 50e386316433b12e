"""The generate stage's steady-state throughput against a bare CTranslate2 loop, side by side in one run.

Model: a randomly initialised mT5 of a real size (`--size small|base`, benchmarks/generate.py builds it; speed does
not depend on the weights), converted once for CTranslate2. Corpus: demo passages joined so every prompt reaches
max_input_len, in `--shards` shards of one language (one unit each). The stage runs through a local Ray with one
actor (one CPU: CTranslate2 gets one intra thread, as Ray gives the actor OMP_NUM_THREADS=1); the bare loop runs
the same converted model in this process with the same thread count, prompts, sampling settings, compute type,
batch size, length sorting and per-unit seeding: tokenize, translate_batch, decode. Steady state compares the
stage's in-actor unit seconds (read shard, tokenize, generate, write Parquet; recorded in each unit's marker)
with the bare loop's seconds over the same units; wall time (Ray and actor start-up, model load) is shown beside.
Runs alternate, `--repeats` times each, and the best of each is compared (the machine may be shared).

  python benchmarks/generate_stage.py                          # CPU: mT5-small, 4 x 64 passages, int8
  python benchmarks/generate_stage.py --size tiny --passages 32 --shards 2 --repeats 1   # a smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LANG = "ar"


def generate_benchmark() -> Any:
    """benchmarks/generate.py as a module (its random-model builders and template)."""
    spec = importlib.util.spec_from_file_location("xqg_bench_generate", REPO / "benchmarks" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def passages(n: int) -> list[dict[str, str]]:
    """n passages {docid, title, text}: three demo passages joined, long enough to fill any prompt."""
    rows = [json.loads(x) for x in (REPO / "data" / "demo" / "passages.jsonl").read_text(encoding="utf-8").splitlines() if x]
    out = []
    for i in range(n):
        parts = [rows[(3 * i + j) % len(rows)] for j in range(3)]
        out.append({"docid": f"p{i:07d}", "title": parts[0]["title"], "text": " ".join(p["text"] for p in parts)})
    return out


def make_run(root: Path, rows: list[dict[str, str]], shards: int) -> None:
    """A run directory holding the corpus shards and their ingest markers, as ingest leaves them."""
    import pyarrow as pa

    from xqg.rundir import RunDir, shard_name

    run = RunDir(str(root))
    for s in range(shards):
        part = rows[s * len(rows) // shards:(s + 1) * len(rows) // shards]
        run.write_table(f"corpus/{shard_name(s)}/part-00000.parquet", pa.Table.from_pylist(part))
        run.mark_done("ingest", shard_name(s), rows_out=len(part))


def stage_run(config: Any) -> dict[str, float]:
    """The generate stage on every unit: wall seconds, summed in-actor unit seconds, queries."""
    from xqg.generate.stage import run_generate
    from xqg.rundir import RunDir

    summary = run_generate(config, [LANG])
    assert summary.ok and summary.units_done, summary.render()
    run = RunDir(config.run_dir)
    markers = [run.read_marker("generate", u) for u in sorted(run.done_units("generate"))]
    return {"wall_s": summary.seconds, "unit_s": sum(float(m["seconds"]) for m in markers),
            "queries": sum(int(m["rows_out"]) for m in markers) * config.generate.num_queries}


def bare_loop(model_dir: Path, ct2_path: str, rows: list[dict[str, str]], shards: int, config: Any) -> dict[str, float]:
    """Plain CTranslate2 in this process: per unit seed, tokenize, sort by length, translate_batch, decode."""
    import ctranslate2
    from transformers import AutoTokenizer

    from xqg.generate.prompts import build_prompt, stable_seed

    gen = config.generate
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model_dir)
    translator = None
    t1 = time.perf_counter()
    queries = 0
    for s in range(shards):
        part = rows[s * len(rows) // shards:(s + 1) * len(rows) // shards]
        # A fresh translator per unit, as the backend does: CTranslate2 seeds its worker threads once.
        ctranslate2.set_random_seed(stable_seed(gen.seed, LANG, s) & 0xFFFFFFFF)
        translator = None
        translator = ctranslate2.Translator(ct2_path, device="cpu", compute_type=gen.compute_type, inter_threads=1,
                                            intra_threads=1)
        prompts = [build_prompt(gen.template, LANG, r["title"], r["text"]) for r in part]
        ids = tok(prompts, truncation=True, max_length=gen.max_input_len)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
        for b in range(0, len(order), gen.batch_size):
            batch = [tok.convert_ids_to_tokens(ids[i]) for i in order[b:b + gen.batch_size]]
            results = translator.translate_batch(
                batch, beam_size=1, num_hypotheses=gen.num_queries, sampling_topk=gen.top_k,
                sampling_temperature=gen.temperature, max_decoding_length=gen.max_new_tokens, max_input_length=0,
            )
            texts = tok.batch_decode([tok.convert_tokens_to_ids(h) for r in results for h in r.hypotheses],
                                     skip_special_tokens=True)
            queries += len(texts)
    t2 = time.perf_counter()
    return {"load_s": t1 - t0, "loop_s": t2 - t1, "queries": queries}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Build the model, alternate stage and bare runs, print and write the comparison."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="small", choices=["tiny", "small", "base"])
    p.add_argument("--passages", type=int, default=256)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--num-queries", type=int, default=5)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--max-input-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--compute-type", default="int8")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workdir", default=None, help="keeps the built model between runs")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    args = p.parse_args(argv)

    import ray

    from xqg.config import load_config
    from xqg.generate.convert import convert_for_run
    from xqg.rundir import RunDir

    bench = generate_benchmark()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="xqg-genstage-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = bench.build_mt5(args.size, bench.build_tokenizer(work), work)
    rows = passages(args.passages)
    ray.init(address="local", num_cpus=2, include_dashboard=False,  # its own Ray, never a running cluster
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}})
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    samples: dict[str, list[dict[str, float]]] = {"stage": [], "bare": []}
    try:
        for r in range(args.repeats):
            root = work / f"run-{r}"
            make_run(root, rows, args.shards)
            config = load_config(None, [
                f"run_dir={root}", f"languages=[{LANG}]", f"generate.model={model_dir}", "generate.backend=ctranslate2",
                f"generate.compute_type={args.compute_type}", f"generate.num_queries={args.num_queries}",
                f"generate.max_new_tokens={args.max_new_tokens}", f"generate.max_input_len={args.max_input_len}",
                f"generate.batch_size={args.batch_size}", "generate.max_actors=1", "generate.use_gpu=false",
            ])
            ct2_path = convert_for_run(RunDir(config.run_dir), str(model_dir), args.compute_type, False)
            samples["bare"].append(bare_loop(model_dir, ct2_path, rows, args.shards, config))
            samples["stage"].append(stage_run(config))
            print(f"repeat {r}: bare {samples['bare'][-1]}, stage {samples['stage'][-1]}", flush=True)
    finally:
        ray.shutdown()
    bare = min(samples["bare"], key=lambda x: x["loop_s"])
    stage = min(samples["stage"], key=lambda x: x["unit_s"])
    assert bare["queries"] == stage["queries"], (bare, stage)
    result = {
        "model": f"mt5-{args.size} (random)", "passages": args.passages, "units": args.shards,
        "queries": stage["queries"], "settings": {k: v for k, v in vars(args).items() if k not in ("workdir", "out")},
        "bare_loop_s": round(bare["loop_s"], 2), "bare_queries_per_s": round(bare["queries"] / bare["loop_s"], 2),
        "stage_unit_s": round(stage["unit_s"], 2), "stage_queries_per_s": round(stage["queries"] / stage["unit_s"], 2),
        "stage_vs_bare": round(stage["unit_s"] / bare["loop_s"] - 1, 3),
        "stage_wall_s": round(stage["wall_s"], 2),
        "samples_s": {"bare": [round(x["loop_s"], 2) for x in samples["bare"]],
                      "stage": [round(x["unit_s"], 2) for x in samples["stage"]]},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg": [round(x, 1) for x in os.getloadavg()]},
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
