"""Fusion: e'(p) = (1 - alpha) e(p) + alpha * sum over languages and generated queries of e(q), per shard."""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xqg.config import Config
from xqg.encode.vectors import storage_inputs, stored_width, vector_column, vector_matrix
from xqg.languages import normalise_code
from xqg.layout import (
    ENCODE,
    FUSE,
    PART,
    embeddings_dir,
    fused_dir,
    fused_set,
    fused_unit,
    generated_sum_unit,
    generated_variant,
    parse_generated_sum_unit,
    passages_unit,
)
from xqg.rundir import RunDir
from xqg.runner import StageRunner, Unit, marker_fingerprint
from xqg.summary import StageSummary
from xqg.tasks import task_memory

log = logging.getLogger(__name__)



def reduce_generated(passages: np.ndarray, sums: np.ndarray, counts: np.ndarray, reduce: str) -> np.ndarray:
    """The generated queries' part of the fusion: their sum (the paper's), their mean, or the sum rescaled to the
    length of e(p) ('norm')."""
    if reduce == "sum":
        return sums
    if reduce == "mean":
        return sums / np.maximum(counts, 1)[:, None].astype(np.float32)
    if reduce == "norm":
        # The raw sum's length varies with the passage (and its scale with the encoder): rescaled to |e(p)|, only
        # its direction counts, and alpha is the generated queries' share of the fused vector.
        lengths = np.linalg.norm(sums, axis=1, keepdims=True)
        return sums * (np.linalg.norm(passages, axis=1, keepdims=True) / np.maximum(lengths, 1e-12))
    raise ValueError(f"unknown fuse.reduce {reduce!r}: sum, mean or norm")


def fuse_vectors(passages: np.ndarray, sums: np.ndarray, counts: np.ndarray, alpha: float, reduce: str) -> np.ndarray:
    """(1 - alpha) e(p) + alpha * (sum, mean or norm of e(q)) in float32 whatever the inputs' dtype; rows with no
    generated query keep e(p) unchanged."""
    # float16 inputs would make numpy compute in float16 (alpha is a weak Python scalar): widen first, round once
    passages, sums = passages.astype(np.float32, copy=False), sums.astype(np.float32, copy=False)
    has = counts > 0
    gen = reduce_generated(passages, sums, counts, reduce)
    fused = (1.0 - alpha) * passages + alpha * gen
    return np.where(has[:, None], fused, passages).astype(np.float32, copy=False)


def gather_generated(docids: pa.Array, tables: Iterable[pa.Table], dim: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Add up (embedding_sum, n) of each language onto the passage rows by docid; return (sums, counts, unmatched)."""
    sums = np.zeros((len(docids), dim), dtype=np.float32)
    counts = np.zeros(len(docids), dtype=np.int64)
    unmatched = 0
    for table in tables:
        # null (no such passage) -> -1
        pos = pc.fill_null(pc.index_in(table["docid"], value_set=docids), -1).to_numpy(zero_copy_only=False)
        ok = pos >= 0
        unmatched += int((~ok).sum())
        # docids are unique within one language's table, so a fancy-indexed += never collides.
        sums[pos[ok]] += vector_matrix(table["embedding_sum"], dim)[ok]
        counts[pos[ok]] += table["n"].to_numpy(zero_copy_only=False)[ok]
    return sums, counts, unmatched


def fuse_languages(config: Config) -> list[str]:
    """The languages a fused set is made of: fuse.languages, else the run's languages (never what happens to exist)."""
    langs = config.fuse.languages if config.fuse.languages is not None else config.languages
    return sorted(dict.fromkeys(normalise_code(c) for c in langs))


def choose_variant(encoded: dict[str, dict[str, Any]], k: int | None, setting: str | None = None) -> str:
    """embeddings/generated (all queries) or generated-k{k} (of the setting); the full sums serve k when no list is
    longer than k."""
    full = generated_variant(None, setting)
    if k is None:
        return full
    variant = generated_variant(k, setting)
    if any((p := parse_generated_sum_unit(u)) and p[0] == variant for u in encoded):
        return variant
    full_units = [u for u in encoded if (p := parse_generated_sum_unit(u)) and p[0] == full]
    longest = max((int(encoded[u].get("max_n", k + 1)) for u in full_units), default=k + 1)
    if full_units and longest <= k:
        log.info("fuse.num_queries=%d: no generated list is longer than %d, using the full sums", k, longest)
        return full
    raise FileNotFoundError(
        f"fuse.num_queries={k} needs embeddings/{variant}, which was not encoded: "
        f"run jobs/encode.py --target generated --num-queries {k}"
    )


def plan_units(runner: StageRunner, config: Config) -> tuple[list[Unit], list[str], str]:
    """One unit per corpus shard, made from its passage embeddings and its languages' query sums; or a clear error."""
    name = fused_set(config)
    shards = runner.run.corpus_shards()
    encoded = runner.markers(ENCODE)
    setting = config.setting
    missing_p = [s for s in shards if passages_unit(s, setting) not in encoded]
    if missing_p:
        raise FileNotFoundError(f"passage embeddings missing for shards {missing_p[:10]}: run jobs/encode.py --target passages")
    k = config.fuse.num_queries
    variant = choose_variant(encoded, k, setting)
    languages = fuse_languages(config)
    gaps = [(lang, s) for lang in languages for s in shards if generated_sum_unit(variant, lang, s) not in encoded]
    if gaps:
        hint = "" if k is None else f" --num-queries {k}"
        raise FileNotFoundError(
            f"fused set {name!r} is made of languages {languages}, but {len(gaps)} (language, shard) units of "
            f"embeddings/{variant} are missing, e.g. {gaps[:5]}: run jobs/generate.py and jobs/encode.py --target "
            f"generated{hint} for them, or set fuse.languages"
        )
    f = config.fuse
    params = {"alpha": f.alpha, "reduce": f.reduce, "num_queries": k, "variant": variant, "languages": languages,
              **storage_inputs(config.storage.dtype)}
    units = []
    for s in shards:
        p = encoded[passages_unit(s, setting)]
        gen = {lang: marker_fingerprint(encoded[generated_sum_unit(variant, lang, s)]) for lang in languages}
        units.append(Unit(
            fused_unit(name, s), {"passages": marker_fingerprint(p), "generated": gen, **params},
            payload={"shard": s, "passages": passages_unit(s, setting), "encoder": (p.get("inputs") or {}).get("encoder")}, expected=int(p["rows_out"]),
        ))
    return units, languages, variant


def fuse_shard(payload: dict[str, Any], *, run_uri: str, variant: str, languages: list[str], alpha: float,
               reduce: str, storage: str = "float32") -> dict[str, Any]:
    """Fuse one shard (a Ray task on a worker): read its passage vectors and query sums (float16 or float32), fuse
    in float32, write fused/<name>/ in the storage dtype."""
    run = RunDir(run_uri)
    shard = payload["shard"]
    ptable = run.read_dir(embeddings_dir(payload["passages"]), columns=["docid", "embedding"])
    emb = vector_matrix(ptable["embedding"])
    docids = ptable["docid"].combine_chunks()
    gen = (  # one language in memory at a time
        run.read_dir(embeddings_dir(generated_sum_unit(variant, lang, shard)), ["docid", "n", "embedding_sum"])
        for lang in languages
    )
    sums, counts, miss = gather_generated(docids, gen, emb.shape[1])
    fused = fuse_vectors(emb, sums, counts, alpha, reduce)
    run.write_table(posixpath.join(fused_dir(payload["unit"]), PART),
                    pa.table({"docid": docids, "embedding": vector_column(fused, storage)}))
    return {"rows_in": ptable.num_rows, "rows_out": ptable.num_rows, "rejected": 0,
            "without_queries": int((counts == 0).sum()), "unmatched_generated": miss, "encoder": payload["encoder"],
            "queries": int(counts.sum())}


def fuse_memory(rows: int, dim: int) -> int:
    """Bytes a fuse task holds at its peak: passage vectors (Arrow and numpy), one language's sums, the running
    sums, the fused matrix and its output column: about six copies of the shard's vectors."""
    return task_memory(rows * dim * 4, copies=6)


def run_fuse(config: Config) -> StageSummary:
    """Fuse every shard's passage embeddings with its generated-query sums into fused/<fuse.name>/ (Ray tasks)."""
    run = RunDir(config.run_dir)
    name = fused_set(config)
    runner = StageRunner(run, FUSE, label=f"fuse {name}", keep_stale=config.keep_stale, outputs=lambda u: [fused_dir(u)])
    units, languages, variant = plan_units(runner, config)
    plan = runner.plan(units)
    totals = {"without_queries": 0, "unmatched_generated": 0, "queries": 0}

    def counted(unit: Unit, result: dict[str, Any]) -> None:
        totals["queries"] += result.pop("queries")  # for the summary, not the marker
        totals["without_queries"] += result["without_queries"]
        totals["unmatched_generated"] += result["unmatched_generated"]

    if plan.todo:
        run.write_config(config, FUSE)
        first = embeddings_dir(plan.todo[0].payload["passages"])
        dim = stored_width(run.fs, run.parquet_files(first), "embedding")
        for unit in plan.todo:
            unit.payload["unit"] = unit.name
        runner.run_tasks(
            plan.todo, fuse_shard,
            {"run_uri": run.worker_uri, "variant": variant, "languages": languages, "alpha": config.fuse.alpha,
             "reduce": config.fuse.reduce, "storage": config.storage.dtype},
            memory=lambda u: fuse_memory(int(u.expected or 0), dim), desc=f"fuse {name}", on_result=counted,
            option="corpus.num_shards (more shards: fewer passages, less memory per fuse task)",
        )
    runner.summary.extra.update({
        "alpha": config.fuse.alpha, "reduce": config.fuse.reduce, "languages": ",".join(languages),
        "generated embeddings": variant, "queries fused": totals["queries"],
        "passages without generated queries (kept e(p))": totals["without_queries"],
        "generated rows without a passage (ignored)": totals["unmatched_generated"],
    })
    return runner.close()

