"""Generation throughput: queries/s of the hf, ctranslate2 (and vllm) backends on the same model.

Models are randomly initialised with the real architectures (mT5-small / mT5-base: MT5Config of those sizes,
vocabulary 250,112), built offline; speed does not depend on the weights. The tokenizer is the tiny
SentencePiece one built from the demo text; prompts are demo passages in the paper's template cut to exactly
--input-tokens tokens (~150, a realistic passage). EOS is suppressed (min = max new tokens) so every backend
decodes the same number of tokens.

CPU (this machine):
    python benchmarks/generate.py --sizes small,base --prompts 16 --n 5 --new-tokens 32 --threads 2
GPU (one card; adds a decoder-only model built from a config for vLLM, when vllm is installed):
    python benchmarks/generate.py --device cuda --sizes small,base --prompts 512 --batch-size 64 --n 5 \
        --new-tokens 32 --ct2-compute-types int8_float16,float16 --decoder 0.5b
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TEMPLATE = "Generate a {language} question for this passage: {title} {text}"
MT5_SIZES = {
    # google/mt5-small and google/mt5-base config.json values (untied embeddings, gated-gelu).
    "small": dict(d_model=512, d_ff=1024, d_kv=64, num_layers=8, num_decoder_layers=8, num_heads=6),
    "base": dict(d_model=768, d_ff=2048, d_kv=64, num_layers=12, num_decoder_layers=12, num_heads=12),
    # Smoke and dry runs: the tokenizer's own vocabulary size, not mT5's 250k rows (a 128 MB model to convert).
    "tiny": dict(d_model=64, d_ff=128, d_kv=16, num_layers=2, num_decoder_layers=2, num_heads=4, vocab_size=8192),
}
DECODER_SIZES = {
    # A Qwen2-0.5B-shaped Llama decoder (vocabulary cut to 32,000 so the tokenizer can cover it).
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=32000),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=4000),
}


def build_tokenizer(workdir: Path) -> Path:
    """The tiny SentencePiece tokenizer trained on the demo text (cached in workdir)."""
    from xqg.config import ScratchModel
    from xqg.models.resolve import read_text_files
    from xqg.models.tiny import build_scratch

    out = workdir / "tokenizer-mt5"
    if not (out / "config.json").exists():
        files = [str(REPO / "data" / "demo" / n) for n in ("passages.jsonl", "train.jsonl", "dev.jsonl")]
        build_scratch(ScratchModel(scratch="mt5", vocab_size=8000), read_text_files(files), out)
    return out


def build_mt5(size: str, tokenizer_dir: Path, workdir: Path) -> Path:
    """A randomly initialised mT5 of a real size with the tiny tokenizer, saved once."""
    import torch
    from transformers import AutoTokenizer, MT5Config, MT5ForConditionalGeneration

    out = workdir / f"mt5-{size}-random"
    if (out / "config.json").exists():
        return out
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = MT5Config(**{
        "vocab_size": 250112, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0, **MT5_SIZES[size],
    })
    torch.manual_seed(0)
    model = MT5ForConditionalGeneration(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_decoder(size: str, tokenizer_dir: Path, workdir: Path) -> Path:
    """A randomly initialised Llama-style decoder; the tokenizer is padded with extra tokens to its vocabulary."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = workdir / f"decoder-{size}-random"
    if (out / "config.json").exists():
        return out
    shape = DECODER_SIZES[size]
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.add_tokens([f"<x{i}>" for i in range(shape["vocab_size"] - len(tok))])
    tok.bos_token = tok.eos_token  # CTranslate2's converters want one
    cfg = LlamaConfig(bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=0,
                      max_position_embeddings=1024, tie_word_embeddings=False, **shape)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def prompts(count: int) -> list[str]:
    """Paper-template prompts from the demo passages, three passages per prompt so every one is long enough."""
    from xqg.generate.prompts import build_prompt
    from xqg.languages import PAPER_LANGUAGES

    rows = [json.loads(x) for x in (REPO / "data" / "demo" / "passages.jsonl").read_text(encoding="utf-8").splitlines() if x]
    out = []
    for i in range(count):
        parts = [rows[(3 * i + j) % len(rows)] for j in range(3)]
        text = " ".join(p["text"] for p in parts)
        out.append(build_prompt(TEMPLATE, PAPER_LANGUAGES[i % 7], parts[0]["title"], text))
    return out


def measure(name: str, model: Path, args: argparse.Namespace, compute_type: str, ct2_path: str | None) -> dict[str, Any]:
    """Load one backend, warm it up, time generation of n queries for every prompt (best of --repeats)."""
    import torch

    from xqg.generate.backends import SamplingSettings, make_backend

    s = SamplingSettings(num_queries=args.n, top_k=10, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                         max_input_len=args.input_tokens)
    extra = {"ct2_path": ct2_path} if name == "ctranslate2" else {}
    t0 = time.perf_counter()
    backend = make_backend(name, str(model), s, device=args.device, compute_type=compute_type, threads=args.threads, **extra)
    load_s = time.perf_counter() - t0
    ids = backend.tokenize(prompts(args.prompts))
    lengths = sorted(len(x) for x in ids)
    backend.begin_unit(0)
    backend.generate(ids[:2], [0, 1])  # warm-up: allocations, kernels, thread pools
    best = float("inf")
    for r in range(args.repeats):
        backend.begin_unit(r)
        t0 = time.perf_counter()
        for b in range(0, len(ids), args.batch_size):
            batch = ids[b:b + args.batch_size]
            out = backend.generate(batch, list(range(b, b + len(batch))))
            assert len(out) == len(batch) and all(len(q) == args.n for q in out)
        best = min(best, time.perf_counter() - t0)
    decoded = decoded_length(backend, ids[0], args)
    queries = len(ids) * args.n
    row = {
        "backend": name, "compute_type": backend.describe()["compute_type"], "seconds": round(best, 3),
        "queries_per_s": round(queries / best, 2), "tokens_per_s": round(queries * args.new_tokens / best, 1),
        "load_s": round(load_s, 2), "prompt_tokens": [lengths[0], lengths[-1]], "decoded_tokens_per_query": decoded,
    }
    del backend
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the next backend (a vLLM engine sizes itself to free memory) needs it back
    return row


def decoded_length(backend: Any, ids: list[int], args: argparse.Namespace) -> int | None:
    """Tokens one query really decodes (checks that min = max new tokens holds on every backend)."""
    import torch

    if backend.name == "hf":
        enc = backend.tokenizer.pad({"input_ids": [ids]}, return_tensors="pt").to(backend.device)
        with torch.inference_mode():
            out = backend.model.generate(**enc, generation_config=backend.generation_config)
        width = out.shape[1] - (1 if backend.encoder_decoder else enc["input_ids"].shape[1])
        return int(width)
    if backend.name == "ctranslate2":
        s = backend.sampling
        tokens = [backend.tokenizer.convert_ids_to_tokens(ids)]
        if backend.encoder_decoder:
            r = backend._model.translate_batch(tokens, beam_size=1, sampling_topk=s.top_k, max_decoding_length=s.max_new_tokens,
                                               min_decoding_length=s.min_new_tokens, max_input_length=0)
            return len(r[0].hypotheses[0])
        r = backend._model.generate_batch(tokens, sampling_topk=s.top_k, max_length=s.max_new_tokens,
                                          min_length=s.min_new_tokens, include_prompt_in_result=False)
        return len(r[0].sequences_ids[0])
    return None


def versions() -> dict[str, str]:
    """Library versions and the machine, for the results table."""
    import ctranslate2
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "ctranslate2": ctranslate2.__version__, "cpu": cpu, "cores": str(os.cpu_count())}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    try:
        import vllm

        out["vllm"] = vllm.__version__
    except ImportError:
        pass
    return out


def run_model(label: str, model: Path, args: argparse.Namespace, backends: list[str], workdir: Path) -> list[dict[str, Any]]:
    """Every requested backend and compute type on one model, HF first (the baseline of the speed-up column)."""
    from xqg.generate.convert import ct2_dir_for, ensure_ct2_model

    rows = []
    for name in backends:
        if name == "hf":
            rows.append(measure("hf", model, args, args.hf_dtype, None))
        elif name == "ctranslate2":
            # One conversion in the saved precision; each compute type quantises at load time.
            ct2_path = ensure_ct2_model(str(model), ct2_dir_for(str(model), workdir / "ct2", "auto"), "auto")
            for ct in args.ct2_compute_types.split(","):
                rows.append(measure("ctranslate2", model, args, ct, ct2_path))
        elif name == "vllm":
            rows.append(measure("vllm", model, args, args.hf_dtype, None))
        print(json.dumps({"model": label, **rows[-1]}), flush=True)
    base = next((r["queries_per_s"] for r in rows if r["backend"] == "hf"), None)
    for r in rows:
        r["model"] = label
        r["speedup_vs_hf"] = round(r["queries_per_s"] / base, 2) if base else None
    return rows


def main(argv: list[str] | None = None) -> int:
    """Build the models, measure, print a Markdown table (and JSON with --out)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="small,base", help="mT5 sizes: small, base (tiny for a smoke run)")
    p.add_argument("--decoder", default=None, help="also a decoder-only model of this size (0.5b, tiny): hf, ctranslate2, vllm")
    p.add_argument("--backends", default="hf,ctranslate2")
    p.add_argument("--ct2-compute-types", default="int8,float32")
    p.add_argument("--hf-dtype", default="auto", help="auto = float32 on CPU, bf16 on GPU")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--input-tokens", type=int, default=150)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--workdir", default="/tmp/xqg-bench-generate", help="models and conversions are cached here")
    p.add_argument("--out", help="write the rows and versions as JSON here")
    args = p.parse_args(argv)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(workdir)
    backends = args.backends.split(",")
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for size in [s for s in args.sizes.split(",") if s]:
        rows += run_model(f"mt5-{size} (random)", build_mt5(size, tok, workdir), args, [b for b in backends if b != "vllm"], workdir)
    if args.decoder:
        from xqg.generate.backends.vllm import vllm_installed

        dec = [*backends, "vllm"] if args.device == "cuda" and vllm_installed() and "vllm" not in backends else backends
        rows += run_model(f"llama-{args.decoder} (random)", build_decoder(args.decoder, tok, workdir), args, dec, workdir)
    info = versions()
    print(f"\n{args.prompts} prompts x n={args.n}, {args.new_tokens} new tokens, ~{args.input_tokens} input tokens, "
          f"device {args.device}, threads {args.threads}, total {time.perf_counter() - start:.0f} s")
    print("machine/versions: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print("\n| model | backend | compute type | queries/s | tokens/s | speed-up vs hf | seconds | decoded tokens/query |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['backend']} | {r['compute_type']} | {r['queries_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
              f"{r['speedup_vs_hf'] if r['speedup_vs_hf'] is not None else '-'} | {r['seconds']:.1f} | {r['decoded_tokens_per_query']} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "versions": info, "rows": rows}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
