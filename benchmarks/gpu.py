"""One GPU card in one command: generation backends, the encoder, and a FAISS flat search; one JSON + one table.

Parts (each calls the existing benchmark, nothing is measured twice differently):
  generate  benchmarks/generate.py: HF bf16 vs CTranslate2 bfloat16 / int8_bfloat16 on a random mT5-base, and a
            Qwen2-0.5B-shaped decoder (HF, CTranslate2, and vLLM when it is installed)
  encode    benchmarks/encode.py: a random mBERT-size encoder on 128-token passages and ~17-token queries,
            bf16 autocast, with the share of the card's dense bf16 peak (the Ray stage too when Ray is installed,
            else the bare loop alone; the dry run always uses the bare loop)
  faiss     exact inner-product (flat) search on random vectors: faiss on the GPU when faiss has GPU support,
            else faiss on the CPU (said so in the row) plus torch matmul + topk on the GPU for comparison

  python benchmarks/gpu.py --out /tmp/gpu-bench            # one GPU, ~5-8 minutes (see benchmarks/RESULTS.md)
  python benchmarks/gpu.py --device cpu --tiny             # dry run of every part, tiny sizes, well under a minute
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PARTS = ("generate", "encode", "faiss")


def installed(name: str) -> bool:
    """Whether a module can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec(name) is not None


def generate_calls(device: str, tiny: bool) -> list[list[str]]:
    """benchmarks/generate.py's flags, one call per backend so that one that cannot load loses only its rows."""
    if tiny:
        common = ["--device", device, "--prompts", "4", "--batch-size", "4", "--n", "2", "--new-tokens", "4",
                  "--input-tokens", "32", "--threads", "2"]
        mt5, decoder = "tiny", "tiny"
    else:
        common = ["--device", device, "--prompts", "512", "--batch-size", "64", "--n", "5", "--new-tokens", "32"]
        mt5, decoder = "base", "0.5b"
    gpu = device == "cuda"
    calls = [["--sizes", mt5, "--backends", "hf", "--hf-dtype", "bfloat16" if gpu else "auto", *common],
             ["--sizes", mt5, "--backends", "ctranslate2",
              "--ct2-compute-types", "bfloat16,int8_bfloat16" if gpu else "int8,float32", *common]]
    if gpu and installed("vllm"):  # vLLM cannot run mT5: a decoder-only model of about mT5-base's size
        calls.append(["--sizes", "", "--decoder", decoder, "--backends", "vllm", "--hf-dtype", "bfloat16", *common])
    return calls


def run_generate(device: str, tiny: bool, work: Path) -> list[dict[str, Any]]:
    """Rows {part, name, throughput, unit, ...} from benchmarks/generate.py; a backend that fails is an error row."""
    import generate as bench

    rows: list[dict[str, Any]] = []
    for i, argv in enumerate(generate_calls(device, tiny)):
        out = work / f"generate-{i}.json"
        backend = argv[argv.index("--backends") + 1]
        try:
            bench.main([*argv, "--workdir", str(work / "generate"), "--out", str(out)])
        except Exception as e:  # e.g. CTranslate2 built for another CUDA than the card's libraries
            rows.append({"part": "generate", "name": f"{backend}: FAILED ({type(e).__name__}: {str(e)[:200]})",
                         "throughput": 0.0, "unit": "queries/s", "seconds": 0.0, "error": True})
            continue
        for r in json.loads(out.read_text())["rows"]:
            rows.append({"part": "generate", "name": f"{r['model']} {r['backend']} {r['compute_type']}",
                         "model": r["model"], "backend": r["backend"], "throughput": r["queries_per_s"],
                         "unit": "queries/s", "seconds": r["seconds"],
                         "detail": {k: r[k] for k in ("tokens_per_s", "decoded_tokens_per_query", "load_s")}})
    base = {r["model"]: r["throughput"] for r in rows if r.get("backend") == "hf"}
    for r in rows:  # speed-up over HF on the same model (the calls are separate, so it is computed here)
        if r.get("model") in base:
            r["detail"]["speedup_vs_hf"] = round(r["throughput"] / base[r["model"]], 2)
    return rows


def run_encode(device: str, tiny: bool, work: Path) -> list[dict[str, Any]]:
    """Rows from benchmarks/encode.py (the Ray stage when Ray is installed, else the bare loop)."""
    import encode as bench

    argv = ["--skip-index", "--repeats", "1", "--work", str(work / "encode")]
    argv += (["--models", "tiny", "--passages", "32", "--gen-passages", "20", "--batch-size", "16", "--shards", "1"]
             if tiny else ["--models", "mbert", "--passages", "20000", "--gen-passages", "20000", "--batch-size", "512"])
    if tiny or not installed("ray"):  # a dry run skips Ray's start-up (most of its minute), as a GPU machine
        argv.append("--no-stage")     # without Ray must: the bare loop is the same model and batches
    result = bench.main(argv)
    rows = []
    for model in result["encode"]:
        for target in ("passages", "generated"):
            e = model[target]
            staged = "stage_texts_per_s" in e
            rows.append({
                "part": "encode", "name": f"{model['model']} {target} ({e['mean_tokens']:.0f} tok), "
                                          f"{'Ray stage' if staged else 'bare loop'}",
                "throughput": e["stage_texts_per_s"] if staged else e["bare_texts_per_s"], "unit": "texts/s",
                "seconds": e["stage_wall_s"] if staged else e["bare_encode_s"],
                "share_of_bf16_peak": e.get("stage_share_of_peak", e.get("bare_share_of_peak")),
                "detail": e})
    return rows


def run_faiss(device: str, tiny: bool) -> list[dict[str, Any]]:
    """Flat inner-product search: faiss (GPU when it has GPU support), and torch matmul + topk on a GPU."""
    import numpy as np

    n, dim, nq, k = (10_000, 64, 100, 10) if tiny else (1_000_000, 768, 10_000, 100)
    rng = np.random.default_rng(0)
    x = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, 100_000):  # in chunks: one float64 temporary of 1M x 768 would be 6 GB
        x[lo:lo + 100_000] = rng.standard_normal((min(100_000, n - lo), dim), dtype=np.float32)
    q = rng.standard_normal((nq, dim), dtype=np.float32)
    rows: list[dict[str, Any]] = []
    shape = f"{n:,} x {dim}, {nq:,} queries, k={k}"
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        from xqg.index.build import fill_index
        from xqg.index.faiss_io import gpu_enabled, to_gpu

        on_gpu = device == "cuda" and gpu_enabled("auto")
        index = fill_index({"type": "flat"}, x)
        if on_gpu:
            index = to_gpu(index)
        index.search(q[:10], k)  # warm-up (GPU: kernels and scratch memory)
        t = time.perf_counter()
        index.search(q, k)
        s = time.perf_counter() - t
        where = "GPU" if on_gpu else ("CPU: this faiss has no GPU support" if device == "cuda" else "CPU")
        rows.append({"part": "faiss", "name": f"faiss IndexFlatIP on the {where} ({shape})", "throughput": round(nq / s, 1),
                     "unit": "queries/s", "seconds": round(s, 3), "faiss_gpu": on_gpu})
    import torch

    if device == "cuda" or faiss is None:
        dev = device if torch.cuda.is_available() or device == "cpu" else "cpu"
        xt, qt = torch.from_numpy(x).to(dev), torch.from_numpy(q).to(dev)
        if dev == "cuda":
            xt, qt = xt.half(), qt.half()  # fp16 scores: the exact-search precision a GPU index would use

        def search() -> None:
            for lo in range(0, nq, 1024):
                torch.topk(qt[lo:lo + 1024] @ xt.T, k, dim=1)
            if dev == "cuda":
                torch.cuda.synchronize()

        search()
        t = time.perf_counter()
        search()
        s = time.perf_counter() - t
        rows.append({"part": "faiss", "name": f"torch matmul + topk on {dev}, {'fp16' if dev == 'cuda' else 'fp32'} "
                     f"(no faiss GPU index; {shape})", "throughput": round(nq / s, 1), "unit": "queries/s",
                     "seconds": round(s, 3), "faiss_gpu": False})
    return rows


def markdown(result: dict[str, Any]) -> str:
    """One table: a row per measurement."""
    lines = [f"device {result['device']}, {result['machine'].get('gpu') or result['machine'].get('cpu')}, "
             f"total {result['seconds']:.0f} s", "",
             "| part | what | throughput | unit | seconds | share of bf16 peak |", "|---|---|---:|---|---:|---:|"]
    for r in result["rows"]:
        share = r.get("share_of_bf16_peak")
        speedup = (r.get("detail") or {}).get("speedup_vs_hf")
        name = r["name"] + (f" ({speedup}x HF)" if speedup and r.get("backend") != "hf" else "")
        lines.append(f"| {r['part']} | {name} | {r['throughput']:,.1f} | {r['unit']} | {r['seconds']:.1f} | "
                     f"{'-' if share is None else f'{share:.1%}'} |")
    for part, err in result["errors"].items():
        lines.append(f"| {part} | FAILED: {err.splitlines()[-1][:150]} | - | - | - | - |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run every part (a failing part is reported, the others still run); write gpu.json and gpu.md to --out."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="tiny sizes: a dry run of every part")
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--out", default="/tmp/xqg-bench-gpu", help="folder for gpu.json, gpu.md and the built models")
    args = p.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no GPU (use --device cpu --tiny for a dry run)")
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    calls = {"generate": lambda: run_generate(args.device, args.tiny, work),
             "encode": lambda: run_encode(args.device, args.tiny, work),
             "faiss": lambda: run_faiss(args.device, args.tiny)}
    for part in [x for x in args.parts.split(",") if x]:
        began = time.perf_counter()
        print(f"=== {part}", flush=True)
        try:
            rows += calls[part]()
        except Exception as e:  # one broken part (a missing package on the GPU machine) must not lose the others
            import traceback

            errors[part] = traceback.format_exc()
            print(errors[part], flush=True)
        print(f"=== {part}: {time.perf_counter() - began:.0f} s", flush=True)
    from generate import versions

    info = versions() if installed("ctranslate2") else {"torch": torch.__version__}
    info["faiss_gpu"] = any(r.get("faiss_gpu") for r in rows)
    info["ray"] = installed("ray")
    info["vllm"] = info.get("vllm") or installed("vllm")
    result = {"device": args.device, "tiny": args.tiny, "machine": info, "seconds": round(time.perf_counter() - t0, 1),
              "rows": rows, "errors": errors}
    (work / "gpu.json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    (work / "gpu.md").write_text(table)
    print(table)
    return 1 if errors or any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
