"""Fusion: e'(p) = (1 - alpha) e(p) + alpha * sum over languages and generated queries of e(q), per shard."""

from __future__ import annotations

import logging
import posixpath
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xqg.config import Config
from xqg.encode.layout import STAGE as ENCODE, embeddings_dir, generated_variant, parse_generated_unit, passages_unit
from xqg.encode.vectors import vector_column, vector_matrix
from xqg.languages import normalise_code
from xqg.rundir import RunDir, shard_name
from xqg.summary import StageSummary

log = logging.getLogger(__name__)

STAGE = "fuse"
PART = "part-00000.parquet"


def fuse_vectors(passages: np.ndarray, sums: np.ndarray, counts: np.ndarray, alpha: float, reduce: str) -> np.ndarray:
    """(1 - alpha) e(p) + alpha * (sum or mean of e(q)); rows with no generated query keep e(p) unchanged."""
    has = counts > 0
    gen = sums if reduce == "sum" else sums / np.maximum(counts, 1)[:, None].astype(np.float32)
    fused = (1.0 - alpha) * passages + alpha * gen
    return np.where(has[:, None], fused, passages).astype(np.float32, copy=False)


def gather_generated(docids: pa.Array, tables: list[pa.Table], dim: int) -> tuple[np.ndarray, np.ndarray, int]:
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


def fuse_params(config: Config, languages: list[str], variant: str) -> dict[str, Any]:
    """What decides a fused set's content; a marker written with other params is stale."""
    f = config.fuse
    return {"alpha": f.alpha, "languages": languages, "num_queries": f.num_queries, "reduce": f.reduce, "variant": variant}


def choose_variant(run: RunDir, done: set[str], k: int | None) -> str:
    """embeddings/generated (all queries) or generated-k{k}; the full sums serve k when no list is longer than k."""
    full = generated_variant(None)
    if k is None:
        return full
    variant = generated_variant(k)
    if any((p := parse_generated_unit(u)) and p[0] == variant for u in done):
        return variant
    full_units = [u for u in done if (p := parse_generated_unit(u)) and p[0] == full]
    longest = max((int(run.read_marker(ENCODE, u).get("max_n", k + 1)) for u in full_units), default=k + 1)
    if full_units and longest <= k:
        log.info("fuse.num_queries=%d: no generated list is longer than %d, using the full sums", k, longest)
        return full
    raise FileNotFoundError(
        f"fuse.num_queries={k} needs embeddings/{variant}, which was not encoded: "
        f"run jobs/encode.py --target generated --num-queries {k}"
    )


def resolve_inputs(run: RunDir, config: Config) -> tuple[list[int], list[str], str]:
    """(corpus shards, languages, generated variant) with every input present, or a clear error."""
    shards = run.corpus_shards()
    done = run.done_units(ENCODE)
    missing_p = [s for s in shards if passages_unit(s) not in done]
    if missing_p:
        raise FileNotFoundError(f"passage embeddings missing for shards {missing_p[:10]}: run jobs/encode.py --target passages")
    k = config.fuse.num_queries
    variant = choose_variant(run, done, k)
    have: dict[str, set[int]] = {}
    for unit in done:
        parsed = parse_generated_unit(unit)
        if parsed and parsed[0] == variant:
            have.setdefault(parsed[1], set()).add(parsed[2])
    languages = sorted(normalise_code(c) for c in config.fuse.languages) if config.fuse.languages is not None else sorted(have)
    hint = "" if k is None else f" --num-queries {k}"
    if not languages:
        raise FileNotFoundError(f"no generated-query embeddings ({variant}): run jobs/encode.py --target generated{hint}")
    gaps = [(lang, s) for lang in languages for s in shards if s not in have.get(lang, set())]
    if gaps:
        raise FileNotFoundError(
            f"{len(gaps)} (language, shard) units of embeddings/{variant} are missing, e.g. {gaps[:5]}: run "
            f"jobs/encode.py --target generated{hint} (after generating them), or set fuse.languages"
        )
    return shards, languages, variant


def run_fuse(config: Config) -> StageSummary:
    """Fuse every shard's passage embeddings with its generated-query sums into fused/<fuse.name>/."""
    name = config.fuse.name
    if not name or "/" in name or name.startswith(".") or name == "baseline":
        raise ValueError(f"fuse.name {name!r} must be a plain folder name other than 'baseline'")
    run = RunDir(config.run_dir)
    start = time.perf_counter()
    shards, languages, variant = resolve_inputs(run, config)
    params = fuse_params(config, languages, variant)
    summary = StageSummary(stage=f"fuse {name}")
    run.write_config(config, STAGE)
    no_queries = unmatched = queries = 0
    for shard in shards:
        unit = posixpath.join(name, shard_name(shard))
        if run.is_done(STAGE, unit) and run.read_marker(STAGE, unit).get("params") == params:
            summary.units_skipped += 1
            continue
        ptable = run.read_dir(embeddings_dir(passages_unit(shard)), columns=["docid", "embedding"])
        emb = vector_matrix(ptable["embedding"])
        docids = ptable["docid"].combine_chunks()
        gen = [
            run.read_dir(embeddings_dir(f"{variant}/lang={lang}/{shard_name(shard)}"), ["docid", "n", "embedding_sum"])
            for lang in languages
        ]
        sums, counts, miss = gather_generated(docids, gen, emb.shape[1])
        fused = fuse_vectors(emb, sums, counts, config.fuse.alpha, config.fuse.reduce)
        folder = posixpath.join("fused", unit)
        run.remove(folder)
        run.write_table(posixpath.join(folder, PART), pa.table({"docid": docids, "embedding": vector_column(fused)}))
        shard_no_q = int((counts == 0).sum())
        run.mark_done(STAGE, unit, rows_in=ptable.num_rows, rows_out=ptable.num_rows, params=params,
                      without_queries=shard_no_q, unmatched_generated=miss)
        summary.rows_in += ptable.num_rows
        summary.rows_out += ptable.num_rows
        summary.units_done += 1
        no_queries += shard_no_q
        unmatched += miss
        queries += int(counts.sum())
    summary.seconds = time.perf_counter() - start
    summary.extra.update({
        "alpha": config.fuse.alpha, "reduce": config.fuse.reduce, "languages": ",".join(languages),
        "generated embeddings": variant, "queries fused": queries,
        "passages without generated queries (kept e(p))": no_queries,
        "generated rows without a passage (ignored)": unmatched,
    })
    return summary
