"""Bytes per passage that each stage writes to the run directory, float32 vs float16 storage, and the full-run estimate.

A demo run: the first N demo passages (ingest), 5 "generated" queries per passage in each of the 7 paper languages
(demo questions of that language, rotated: real text, no generator needed), a tiny BERT built from scratch (dim
--dim), encode (passages, generated sums, the dev query set), fuse, flat indexes baseline and xqg. It runs once with
storage.dtype=float32; a copy of the run is rerun with storage.dtype=float16 (which redoes exactly the vector units).
Each stage's folder is measured on disk, and its Parquet vector columns are measured apart (column chunk sizes from
the files' metadata), so the estimate scales vectors by 768 / dim and everything else by passage count only.

  python benchmarks/storage.py --passages 2000 --out /tmp/xqg-storage     # prints a Markdown table + JSON
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):  # this checkout, unless PYTHONPATH names another one
    os.environ["PYTHONPATH"] = str(REPO)
    sys.path.insert(0, str(REPO))
DEMO = REPO / "data" / "demo"
LANGS = ["ar", "bn", "fi", "ja", "ko", "ru", "te"]
VECTOR_COLUMNS = {"embedding", "embedding_sum"}
# The paper's run: 18M passages, 7 languages x 5 generated queries, mBERT (dim 768).
FULL_PASSAGES, FULL_DIM = 18_000_000, 768
# What each stage writes, as folders of the run directory (index: the two indexes the pipeline builds).
STAGES = {
    "ingest (corpus)": ["corpus"],
    "encode passages": ["embeddings/passages"],
    "encode generated sums (7 languages)": ["embeddings/generated"],
    "fuse (one fused set)": ["fused"],
    "index baseline (flat)": ["index/baseline"],
    "index xqg (flat)": ["index/xqg"],
}
VECTOR_STAGES = [s for s in STAGES if s != "ingest (corpus)"]


def _read(name: str) -> list[dict]:
    return [json.loads(line) for line in (DEMO / name).read_text(encoding="utf-8").splitlines()]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def folder_bytes(root: Path, rel: str) -> dict[str, int]:
    """{total, vectors, raw, faiss}: bytes of the files under a folder; vectors = the vector columns' chunks as
    stored, raw = their values uncompressed (n x dim x 2 or 4), both plus the FAISS files (a flat index is its
    vectors)."""
    import pyarrow.parquet as pq

    total = vectors = raw = faiss = 0
    for p in (root / rel).rglob("*"):
        if not p.is_file():
            continue
        size = p.stat().st_size
        total += size
        if p.suffix == ".faiss":
            faiss += size
        elif p.suffix == ".parquet":
            meta = pq.ParquetFile(p).metadata
            for g in range(meta.num_row_groups):
                for c in range(meta.num_columns):
                    col = meta.row_group(g).column(c)
                    if col.path_in_schema.split(".")[0] in VECTOR_COLUMNS:
                        vectors += col.total_compressed_size
                        raw += col.num_values * value_bytes(col.physical_type)
    return {"total": total, "vectors": vectors + faiss, "raw": raw + faiss, "faiss": faiss}


def value_bytes(physical_type: str) -> int:
    """Bytes of one stored float: FLOAT 4, DOUBLE 8, float16 (FIXED_LEN_BYTE_ARRAY of 2) 2."""
    return {"FLOAT": 4, "DOUBLE": 8}.get(physical_type, 2)


def gaussian_ratio(dtype: str, rows: int = 20_000, dim: int = FULL_DIM) -> float:
    """Compressed / raw value bytes of N(0, 1) vectors written as the stages write them: how much of the compression
    measured on the tiny BERT's vectors (which differ little from each other) to count on for real ones."""
    import tempfile

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from xqg.encode.vectors import vector_column
    from xqg.rundir import RunDir

    x = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        RunDir(d).write_table("v.parquet", pa.table({"embedding": vector_column(x, dtype)}))
        col = pq.ParquetFile(f"{d}/v.parquet").metadata.row_group(0).column(0)
        return col.total_compressed_size / (col.num_values * value_bytes(col.physical_type))


def build_run(out: Path, passages: int, dim: int) -> tuple[Any, Any]:
    """The float32 run's config and the float16 copy's, with ingested corpus and given generated queries."""
    import numpy as np
    import pyarrow as pa

    from tests.conftest import demo_texts
    from xqg.config import ScratchModel, load_config
    from xqg.ingest.stage import run_ingest
    from xqg.layout import generated_dir, generated_unit
    from xqg.models.tiny import build_scratch
    from xqg.rundir import RunDir

    bert = build_scratch(ScratchModel(scratch="bert", vocab_size=2000, d_model=dim, d_ff=2 * dim), demo_texts(),
                         out / "tiny-bert")
    rows = _read("passages.jsonl")[:passages]
    docids = {r["docid"] for r in rows}
    dev = [q for q in _read("dev.jsonl") if q["docid"] in docids]
    pool = defaultdict(list)
    for q in _read("dev.jsonl") + _read("heldout.jsonl"):
        pool[q["lang"]].append(q["question"])

    def config(run_dir: Path, dtype: str) -> Any:
        return load_config(REPO / "configs" / "demo.yaml", [
            f"run_dir={run_dir}", f"corpus.path={_write(out / 'passages.jsonl', rows)}",
            f"queries=[{{name: dev, path: '{_write(out / 'dev.jsonl', dev)}'}}]", "settings=[]",
            f"encode.model={bert}", f"storage.dtype={dtype}", f"languages=[{', '.join(LANGS)}]",
            "corpus.num_shards=1",  # one file per unit, as a large shard: Parquet footers stay out of bytes/passage
        ])

    c32, c16 = config(out / "float32" / "run", "float32"), config(out / "float16" / "run", "float16")
    run_ingest(c32)
    run = RunDir(c32.run_dir)
    for shard in run.corpus_shards():
        ids = run.read_dir(f"corpus/shard={shard:05d}", ["docid"])["docid"].to_pylist()
        for lang in LANGS:
            qs = pool[lang]
            rng = np.random.default_rng([shard, LANGS.index(lang)])
            # 5 distinct questions per passage, drawn per passage: no two sums alike (they would compress)
            lists = [[qs[k] for k in rng.choice(len(qs), 5, replace=False)] for _ in ids]
            run.write_table(f"{generated_dir(lang, shard)}/part-00000.parquet", pa.table(
                {"docid": ids, "lang": [lang] * len(ids), "queries": lists},
                schema=pa.schema([("docid", pa.string()), ("lang", pa.string()), ("queries", pa.list_(pa.string()))])))
            run.mark_done("generate", generated_unit(lang, shard), rows_in=len(ids), rows_out=len(ids), rejected=0,
                          fingerprint=f"given-{lang}-{shard}")
    return c32, c16


def vector_stages(config: Any) -> None:
    """encode (all) -> fuse -> flat indexes baseline and xqg."""
    from xqg.encode.stage import run_encode
    from xqg.fuse import run_fuse
    from xqg.index.stage import run_index

    results = [run_encode(config, "all"), run_fuse(config), run_index(config, "baseline"), run_index(config, "xqg")]
    if not all(s.ok for s in results):
        raise RuntimeError("a stage failed")


def measure(out: Path, passages: int, dim: int) -> dict[str, Any]:
    """Run both storage settings; bytes per passage per stage, and the full-run estimate per stage."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}})
    try:
        c32, c16 = build_run(out, passages, dim)
        vector_stages(c32)
        shutil.copytree(c32.run_dir, c16.run_dir)
        vector_stages(c16)
    finally:
        ray.shutdown()
    ratios = {dtype: gaussian_ratio(dtype) for dtype in ("float32", "float16")}
    result: dict[str, Any] = {"passages": passages, "dim": dim, "languages": len(LANGS), "queries_per_language": 5,
                              "gaussian_compression": ratios, "stages": {}}
    for stage, folders in STAGES.items():
        row = {}
        for dtype, config in (("float32", c32), ("float16", c16)):
            b = defaultdict(int)
            for rel in folders:
                for k, v in folder_bytes(Path(config.run_dir), rel).items():
                    b[k] += v
            per = {k: v / passages for k, v in b.items()}
            other = per["total"] - per["vectors"]  # docids, counts, headers: they scale with the passage count only
            # vectors scale with the dimension: as compressed here, uncompressed, and compressed like Gaussian ones
            scale = FULL_PASSAGES * FULL_DIM / dim
            row[dtype] = {"bytes_per_passage": per["total"], "vector_bytes_per_passage": per["vectors"],
                          "raw_vector_bytes_per_passage": per["raw"],
                          "full_run_gb": (FULL_PASSAGES * other + scale * per["vectors"]) / 1e9,
                          "full_run_gb_uncompressed": (FULL_PASSAGES * other + scale * per["raw"]) / 1e9,
                          "full_run_gb_gaussian": (FULL_PASSAGES * other + scale * per["faiss"]  # not compressed
                                                   + scale * (per["raw"] - per["faiss"]) * ratios[dtype]) / 1e9}
        result["stages"][stage] = row
    for dtype in ("float32", "float16"):
        for key in ("full_run_gb", "full_run_gb_uncompressed", "full_run_gb_gaussian"):
            result[f"vectors_{key}_{dtype}"] = sum(result["stages"][s][dtype][key] for s in VECTOR_STAGES)
    return result


def table(result: dict[str, Any]) -> str:
    """The Markdown table of RESULTS.md."""
    dim = result["dim"]
    keys = ("full_run_gb_uncompressed", "full_run_gb_gaussian", "full_run_gb")
    lines = [
        f"| stage | bytes/passage (dim {dim}) float32 / float16 | full run, GB, vectors uncompressed float32 / float16 "
        "| as Gaussian vectors compress | as the tiny BERT's compress |",
        "|---|---:|---:|---:|---:|",
    ]

    def pair(f32: float, f16: float, digits: int) -> str:
        return f"{f32:,.{digits}f} / {f16:,.{digits}f}"

    for stage, row in result["stages"].items():
        f32, f16 = row["float32"], row["float16"]
        lines.append(f"| {stage} | {pair(f32['bytes_per_passage'], f16['bytes_per_passage'], 0)} | "
                     + " | ".join(pair(f32[k], f16[k], 1) for k in keys) + " |")
    lines.append("| **vectors in all** (every stage but ingest) | | " + " | ".join(
        f"**{pair(result[f'vectors_{k}_float32'], result[f'vectors_{k}_float16'], 1)}**" for k in keys) + " |")
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, measure, print the table and the JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--passages", type=int, default=2000, help="demo passages (at most 2,000)")
    p.add_argument("--dim", type=int, default=64, help="the tiny BERT's hidden size (vectors scale to 768)")
    p.add_argument("--out", type=Path, required=True, help="an empty work folder")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = measure(args.out, args.passages, args.dim)
    print(table(result))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
