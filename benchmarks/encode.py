"""Encode-stage throughput against a bare PyTorch loop, and FAISS index build / search times.

Models: randomly initialised mBERT-size (BertConfig, vocab 119,547) and XLM-R-base-size (XLMRobertaConfig,
vocab 250,002) encoders: speed does not depend on the weights. Texts: demo passages joined so that each
passage fills p_max_len (128 tokens) and demo questions (~20 tokens), tokenized by a WordPiece tokenizer
trained on the demo text. The encode stage runs through a local Ray (one actor, `--threads` torch threads);
the bare loop runs the same model on the same texts in this process with the same threads, batch size,
length sorting and dynamic padding. Ray overhead = stage wall time / bare time - 1.

  python benchmarks/encode.py                                  # CPU defaults (a few minutes per model)
  python benchmarks/encode.py --passages 20000 --gen-passages 20000 --batch-size 512   # a GPU machine
  python benchmarks/encode.py --skip-encode --index-vectors 1000000                    # FAISS only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from xqg.models.tiny import build_bert  # noqa: E402

LANG = "ar"
NUM_QUERIES = 5

# Dense bf16/fp16 tensor-core peaks (TFLOP/s), to put achieved GPU throughput in proportion.
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "A10": 125.0,
                   "L4": 121.0, "V100": 125.0, "T4": 65.0}


def demo_rows() -> tuple[list[dict], list[str]]:
    """Demo passages {docid, title, text} and demo questions (several scripts)."""
    demo = REPO / "data" / "demo"
    passages = [json.loads(line) for line in (demo / "passages.jsonl").open(encoding="utf-8")]
    questions = [json.loads(line)["question"] for line in (demo / "dev.jsonl").open(encoding="utf-8")]
    return passages, questions


def build_tokenizer(out: Path) -> Path:
    """A WordPiece tokenizer (8k vocab) trained on the demo text: realistic token counts, built offline."""
    from xqg.config import ScratchModel
    from xqg.models.resolve import read_text_files

    if not (out / "tokenizer_config.json").exists():
        files = [str(REPO / "data" / "demo" / n) for n in ("passages.jsonl", "train.jsonl", "dev.jsonl")]
        build_bert(ScratchModel(scratch="bert", vocab_size=8000, max_length=512), read_text_files(files), out)
    return out


def build_model(kind: str, tokenizer_dir: Path, out: Path) -> Path:
    """A randomly initialised mBERT- or XLM-R-base-size (or tiny) encoder saved with the demo tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel

    if (out / "config.json").exists():
        return out
    # XLM-R has one token type: its tokenizer returns no token_type_ids, also for (title, text) pairs.
    names = {"model_input_names": ["input_ids", "attention_mask"]} if kind == "xlmr" else {}
    tok = AutoTokenizer.from_pretrained(tokenizer_dir, **names)
    torch.manual_seed(0)
    if kind == "mbert":
        model = BertModel(BertConfig(vocab_size=119_547, pad_token_id=tok.pad_token_id), add_pooling_layer=False)
    elif kind == "tiny":  # dry runs: the same code path in seconds
        model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, pad_token_id=tok.pad_token_id), add_pooling_layer=False)
    else:
        config = XLMRobertaConfig(vocab_size=250_002, max_position_embeddings=514, type_vocab_size=1,
                                  pad_token_id=tok.pad_token_id)
        model = XLMRobertaModel(config, add_pooling_layer=False)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_texts(n_passages: int, n_gen: int) -> tuple[list[dict], list[list[str]]]:
    """n passages (two demo passages joined: longer than 128 tokens) and n_gen lists of 5 queries (~20 tokens:
    two demo questions joined)."""
    base, questions = demo_rows()
    rows = []
    for i in range(n_passages):
        a, b = base[i % len(base)], base[(i * 7 + 3) % len(base)]
        rows.append({"docid": f"p{i:07d}", "title": a["title"], "text": f"{a['text']} {b['text']}"})
    m = len(questions)
    lists = [[f"{questions[(i * NUM_QUERIES + j) % m]} {questions[(i * 3 + j * 11 + 1) % m]}" for j in range(NUM_QUERIES)]
             for i in range(n_gen)]
    return rows, lists


def make_run(root: Path, rows: list[dict], lists: list[list[str]], shards: int):
    """A run directory with corpus shards and generated queries (+ their markers)."""
    import pyarrow as pa

    from xqg.rundir import RunDir, shard_name

    run = RunDir(str(root))
    for s in range(shards):
        part = rows[s * len(rows) // shards:(s + 1) * len(rows) // shards]
        run.write_table(f"corpus/{shard_name(s)}/part-00000.parquet", pa.Table.from_pylist(part))
        run.mark_done("ingest", shard_name(s), rows_out=len(part))
        glo, ghi = s * len(lists) // shards, (s + 1) * len(lists) // shards
        # Generated rows name passages p0..p(n_gen-1): the encode stage reads them without the corpus.
        gen = pa.table({"docid": [f"p{i:07d}" for i in range(glo, ghi)], "lang": [LANG] * (ghi - glo),
                        "queries": lists[glo:ghi]})
        run.write_table(f"generated/lang={LANG}/{shard_name(s)}/part-00000.parquet", gen)
        run.mark_done("generate", f"lang={LANG}/{shard_name(s)}", rows_out=ghi - glo)
    return run


def bare_loop(model_dir: Path, texts: list[str], pairs: list[str] | None, max_len: int, batch_size: int,
              owners: np.ndarray | None = None) -> dict:
    """Plain transformers + torch in this process: load, tokenize, length-sort, pad per batch, forward, CLS."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    t0 = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, add_pooling_layer=False).to(device).eval()
    amp = torch.bfloat16 if device == "cuda" else None
    t1 = time.perf_counter()
    enc = tok(texts, pairs, truncation=True, max_length=max_len)
    names = [n for n in tok.model_input_names if n in enc]
    lengths = np.array([len(x) for x in enc["input_ids"]])
    order = np.argsort(-lengths, kind="stable")
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        batch = tok.pad({n: [enc[n][i] for i in idx] for n in names}, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.inference_mode(), torch.autocast(device, dtype=amp or torch.float32, enabled=amp is not None):
            out[idx] = model(**batch).last_hidden_state[:, 0].float().cpu().numpy()
    if owners is not None:
        sums = np.zeros((int(owners.max()) + 1, out.shape[1]), dtype=np.float32)
        np.add.at(sums, owners, out)
    if device == "cuda":
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    return {"load_s": t1 - t0, "encode_s": t2 - t1, "total_s": t2 - t0, "tokens": int(lengths.sum()),
            "mean_tokens": float(lengths.mean())}


def stage_run(config, target: str) -> dict:
    """The encode stage on one target: wall time (actor start and model load included) and in-actor seconds."""
    from xqg.encode.stage import run_encode
    from xqg.rundir import RunDir

    run = RunDir(config.run_dir)
    summary = run_encode(config, target)
    assert summary.balanced and summary.units_done, summary.render()
    actor_s = sum(run.read_marker("encode", u)["seconds"] for u in run.done_units("encode") if u.startswith(target))
    return {"wall_s": summary.seconds, "actor_s": actor_s, "texts": summary.extra["texts encoded"]}


def flops_per_sequence(model_dir: Path, tokens: float) -> float:
    """Forward FLOPs of one sequence: 2 x non-embedding params x tokens + attention scores and mixing."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    d, layers, ff = c.hidden_size, c.num_hidden_layers, c.intermediate_size
    per_layer = 4 * d * d + 2 * d * ff  # q, k, v, o projections + the two feed-forward matrices
    return 2 * layers * per_layer * tokens + 4 * layers * tokens * tokens * d


def device_info() -> dict:
    """What ran the benchmark (ray and faiss versions when they are installed)."""
    import torch
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    for name in ("ray", "faiss"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        info["gpu"] = name
        info["gpu_peak_tflops"] = next((v for k, v in GPU_PEAK_TFLOPS.items() if k in name), None)
    return info


def bench_encode(kind: str, args: argparse.Namespace, work: Path, info: dict) -> dict:
    """Stage vs bare loop for passages and generated queries with one model size (bare loop alone with
    --no-stage, e.g. on a GPU machine without Ray)."""
    from xqg.config import load_config

    model_dir = build_model(kind, build_tokenizer(work / "tokenizer"), work / f"model-{kind}")
    rows, lists = make_texts(args.passages, args.gen_passages)
    flat = [q for lst in lists for q in lst]
    owners = np.repeat(np.arange(len(lists)), NUM_QUERIES)
    result: dict = {"model": kind, "passages": len(rows), "generated_queries": len(flat), "stage": not args.no_stage}
    import torch

    torch.set_num_threads(args.threads)
    samples: dict[str, list] = {"bare_p": [], "ray_p": [], "bare_q": [], "ray_q": []}
    if not args.no_stage:
        import ray

        ray.init(num_cpus=max(args.threads, 2), include_dashboard=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}})
    try:
        if not args.no_stage:
            from ray.data import DataContext

            DataContext.get_current().enable_progress_bars = False
        # Bare and staged runs alternate, each repeated: on a shared machine the best of each is compared.
        for _ in range(args.repeats):
            samples["bare_p"].append(bare_loop(model_dir, [r["title"] for r in rows], [r["text"] for r in rows], 128,
                                               args.batch_size))
            samples["bare_q"].append(bare_loop(model_dir, flat, None, 32, args.batch_size, owners))
            if args.no_stage:
                continue
            run_root = Path(tempfile.mkdtemp(prefix=f"run-{kind}-", dir=work))
            make_run(run_root, rows, lists, args.shards)
            overrides = [f"run_dir={run_root}", f"encode.model={model_dir}", f"encode.batch_size={args.batch_size}",
                         "encode.concurrency=1", f"encode.torch_threads={args.threads}"]
            config = load_config(None, overrides)
            samples["ray_p"].append(stage_run(config, "passages"))
            samples["ray_q"].append(stage_run(config, "generated"))
    finally:
        if not args.no_stage:
            ray.shutdown()
    best = {k: min(v, key=lambda r: r.get("total_s", r.get("wall_s"))) for k, v in samples.items() if v}
    result["samples"] = {k: [round(r.get("total_s", r.get("wall_s")), 2) for r in v] for k, v in samples.items()}
    for name, bare, staged, n in (("passages", best["bare_p"], best.get("ray_p"), len(rows)),
                                  ("generated", best["bare_q"], best.get("ray_q"), len(flat))):
        tok = bare["mean_tokens"]
        flops = flops_per_sequence(model_dir, tok) * n
        entry = {
            "texts": n, "mean_tokens": round(tok, 1),
            "bare_encode_s": round(bare["encode_s"], 2), "bare_total_s": round(bare["total_s"], 2),
            "bare_texts_per_s": round(n / bare["encode_s"], 2), "bare_tflops": round(flops / bare["encode_s"] / 1e12, 3),
        }
        if staged:
            entry.update({
                "stage_wall_s": round(staged["wall_s"], 2), "stage_actor_s": round(staged["actor_s"], 2),
                "stage_texts_per_s": round(n / staged["wall_s"], 2),
                "overhead_wall_vs_bare_total": round(staged["wall_s"] / bare["total_s"] - 1, 3),
                "overhead_actor_vs_bare_encode": round(staged["actor_s"] / bare["encode_s"] - 1, 3),
                "stage_tflops": round(flops / staged["actor_s"] / 1e12, 3),
            })
        if info.get("gpu_peak_tflops"):
            entry["bare_share_of_peak"] = round(entry["bare_tflops"] / info["gpu_peak_tflops"], 3)
            if staged:
                entry["stage_share_of_peak"] = round(entry["stage_tflops"] / info["gpu_peak_tflops"], 3)
        result[name] = entry
        print(f"[{kind}] {name}: {json.dumps(entry)}", flush=True)
    return result


def bench_index(n: int, dim: int, nq: int, args: argparse.Namespace) -> dict:
    """Flat IP and IVF-PQ on n random vectors: build, 1000-query search (k=100), IVF-PQ recall@10 vs flat."""
    import faiss

    from xqg.index.build import effective_params, fill_index, train_index
    from xqg.index.faiss_io import set_search_params

    rng = np.random.default_rng(0)
    x = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, 100_000):  # in chunks: float64 temporaries of 1M x 768 would need 6 GB
        x[lo:lo + 100_000] = rng.standard_normal((min(100_000, n - lo), dim), dtype=np.float32)
    q = rng.standard_normal((nq, dim), dtype=np.float32)
    out: dict = {"vectors": n, "dim": dim, "queries": nq, "omp_threads": faiss.omp_get_max_threads()}
    t = time.perf_counter()
    flat = fill_index({"type": "flat"}, x)
    out["flat_build_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    _, exact = flat.search(q, 100)
    out["flat_search_s"] = round(time.perf_counter() - t, 2)
    print(f"[index] flat: {json.dumps(out)}", flush=True)
    del flat
    from xqg.config import IndexConfig

    cfg = IndexConfig(type="ivfpq", nlist=args.nlist, pq_m=args.pq_m, train_sample=args.train_sample)
    params = effective_params(cfg, dim, min(cfg.train_sample, n))
    t = time.perf_counter()
    trained = train_index(params, x[rng.choice(n, min(cfg.train_sample, n), replace=False)])
    out["ivfpq_params"] = params
    out["ivfpq_train_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    ivf = fill_index(params, x, trained)
    out["ivfpq_add_s"] = round(time.perf_counter() - t, 2)
    set_search_params(ivf, nprobe=args.nprobe)
    t = time.perf_counter()
    _, approx = ivf.search(q, 100)
    out["ivfpq_search_s"] = round(time.perf_counter() - t, 2)
    out["ivfpq_nprobe"] = args.nprobe
    out["ivfpq_recall_at_10_vs_flat"] = round(float(np.mean(
        [len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(approx, exact)])), 3)
    out["ivfpq_1_recall_at_10"] = round(float(np.mean([a[0] in set(b[:10]) for a, b in zip(exact, approx)])), 3)
    print(f"[index] ivfpq: {json.dumps(out)}", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    """Measure what the flags ask for; print JSON lines, return the results (and write them with --out)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mbert,xlmr", help="mbert, xlmr (tiny for a dry run)")
    p.add_argument("--passages", type=int, default=256, help="passages to encode (CPU: keep it small)")
    p.add_argument("--gen-passages", type=int, default=200, help="passages with 5 generated queries each")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="torch threads, bare loop and stage actor alike")
    p.add_argument("--repeats", type=int, default=2, help="alternating bare / stage runs; the best of each counts")
    p.add_argument("--skip-encode", action="store_true")
    p.add_argument("--skip-index", action="store_true")
    p.add_argument("--no-stage", action="store_true", help="bare loop only (no Ray: e.g. a GPU machine without it)")
    p.add_argument("--index-vectors", type=int, default=1_000_000)
    p.add_argument("--index-dim", type=int, default=768)
    p.add_argument("--index-queries", type=int, default=1000)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--pq-m", type=int, default=64)
    p.add_argument("--nprobe", type=int, default=64)
    p.add_argument("--train-sample", type=int, default=65_536)
    p.add_argument("--work", default=None, help="folder for models and runs (default: a temporary one)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="xqg-bench-"))
    info = device_info()
    print(f"[device] {json.dumps(info)}", flush=True)
    results: dict = {"device": info, "args": vars(args), "encode": [], "index": None}
    if not args.skip_encode:
        for kind in args.models.split(","):
            results["encode"].append(bench_encode(kind, args, work, info))
    if not args.skip_index:
        results["index"] = bench_index(args.index_vectors, args.index_dim, args.index_queries, args)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
