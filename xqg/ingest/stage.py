"""The ingest stage: corpus -> <run>/corpus/shard=NNNNN/, query sets -> <run>/queries/<name>/ (driver only, no Ray)."""

from __future__ import annotations

import collections
import json
import logging
import posixpath
import time
from typing import Any

import pyarrow as pa
from tqdm import tqdm

from xqg.config import Config, QuerySetConfig
from xqg.ingest.corpus import PASSAGE_SCHEMA, detect_format, read_passages
from xqg.ingest.lines import raw_text
from xqg.ingest.queries import read_query_set
from xqg.ingest.shards import ShardSpool, shard_of, split_duplicates
from xqg.rundir import RunDir, shard_name
from xqg.summary import StageSummary

log = logging.getLogger(__name__)

STAGE = "ingest"
CORPUS_UNIT = "corpus"  # marker written last: the whole corpus pass is complete
STAGING = "_tmp/ingest"


def query_unit(name: str) -> str:
    """Marker / rejects unit of a query set."""
    return f"queries={name}"


def run_ingest(config: Config) -> StageSummary:
    """Ingest the corpus into hash shards and every query set into Parquet; complete units are skipped."""
    run = RunDir(config.run_dir)
    start = time.perf_counter()
    summary = StageSummary(stage=STAGE)
    notes: list[str] = []
    corpus_todo = config.corpus.path is not None and not _corpus_complete(config, run, notes)
    if config.corpus.path is None:
        notes.append("no corpus.path in the config: corpus not ingested")
    elif not corpus_todo:
        summary.units_skipped += config.corpus.num_shards
    query_todo: list[QuerySetConfig] = []
    for qs in config.queries:
        if run.is_done(STAGE, query_unit(qs.name)):
            summary.units_skipped += 1
        else:
            query_todo.append(qs)

    if not corpus_todo and not query_todo:
        summary.message = "\n".join(["ingest already complete: nothing to do", *notes])
        summary.seconds = time.perf_counter() - start
        return summary

    run.write_config(config, STAGE)
    if corpus_todo:
        _ingest_corpus(config, run, summary)
    for qs in query_todo:
        _ingest_query_set(qs, run, summary)
    summary.seconds = time.perf_counter() - start
    summary.message = "\n".join(notes)
    return summary


# ---- corpus -----------------------------------------------------------------------------------------------
def _corpus_complete(config: Config, run: RunDir, notes: list[str]) -> bool:
    """True when every shard and the corpus pass have markers; an ingest with other shard counts is an error."""
    done = run.done_units(STAGE)
    if CORPUS_UNIT not in done:
        return False
    info = run.read_marker(STAGE, CORPUS_UNIT)
    n = config.corpus.num_shards
    if info.get("num_shards") != n:
        raise ValueError(
            f"{run.uri} holds a corpus ingested into {info.get('num_shards')} shards, the config asks for {n}: "
            "use a new run_dir (every later stage is aligned to the corpus shards)"
        )
    if {u for u in done if u.startswith("shard=")} != {shard_name(i) for i in range(n)}:
        return False
    if info.get("source") != config.corpus.path:
        notes.append(f"corpus already ingested from {info.get('source')}; kept it (config names {config.corpus.path})")
    return True


def _clear_corpus(run: RunDir) -> None:
    """Remove every trace of an earlier, incomplete corpus pass (output, rejects, markers, staging)."""
    run.remove("corpus")
    run.remove(STAGING)
    for name in run.listdir("rejects", STAGE):
        if name.startswith("shard=") or name == f"{CORPUS_UNIT}.parquet":
            run.remove("rejects", STAGE, name)
    for unit in run.done_units(STAGE):
        if unit.startswith("shard=") or unit == CORPUS_UNIT:
            run.remove(run.marker_path(STAGE, unit))


def _ingest_corpus(config: Config, run: RunDir, summary: StageSummary) -> None:
    """One streaming pass: parse, validate, hash-shard to staging; then per shard drop duplicates and write."""
    source, n = str(config.corpus.path), config.corpus.num_shards
    fmt = detect_format(source, config.corpus.format)
    _clear_corpus(run)
    spool = ShardSpool(run, STAGING, PASSAGE_SCHEMA)
    read_rejects: list[dict[str, Any]] = []
    rows_in = rows_out = duplicates = 0
    reasons: collections.Counter[str] = collections.Counter()
    read_start = time.perf_counter()
    bar = tqdm(desc=f"ingest corpus ({fmt})", unit=" rows", unit_scale=True, mininterval=1.0)
    try:
        for block in read_passages(source, fmt):
            rows_in += block.rows_in
            read_rejects.extend(block.rejects)
            if block.table.num_rows:
                spool.add(block.table, shard_of(block.table["docid"], n))
            bar.update(block.rows_in)
        bar.close()
        spool.close()
        read_seconds = time.perf_counter() - read_start
        for shard in tqdm(range(n), desc="write corpus shards", unit=" shards", mininterval=1.0):
            staged = spool.read(shard)
            kept, dups = split_duplicates(staged)
            unit = shard_name(shard)
            run.write_table(posixpath.join("corpus", unit, "part-00000.parquet"), kept)
            dup_rows = [
                {"key": r["docid"], "reason": "duplicate docid (first kept)", "raw": raw_text(json.dumps(r, ensure_ascii=False))}
                for r in dups.to_pylist()
            ]
            shard_rejected = run.write_rejects(STAGE, unit, dup_rows)
            run.mark_done(STAGE, unit, rows_in=staged.num_rows, rows_out=kept.num_rows, rows_rejected=shard_rejected)
            rows_out += kept.num_rows
            duplicates += shard_rejected
        rejected = run.write_rejects(STAGE, CORPUS_UNIT, read_rejects) + duplicates
        if duplicates:
            reasons["duplicate docid (first kept)"] = duplicates
        reasons.update(r["reason"] for r in read_rejects)
        if rows_in != rows_out + rejected:  # a bug, never bad input: refuse to mark the corpus complete
            raise RuntimeError(f"corpus counts do not add up: {rows_in} in, {rows_out} out, {rejected} rejected")
        run.mark_done(
            STAGE, CORPUS_UNIT, rows_in=rows_in, rows_out=rows_out, rows_rejected=rejected, num_shards=n,
            source=source, format=fmt, rejects_by_reason=dict(reasons),
        )
    finally:
        bar.close()
        spool.remove()
        if not run.listdir("_tmp"):
            run.remove("_tmp")
    summary.rows_in += rows_in
    summary.rows_out += rows_out
    summary.rejected += rejected
    summary.units_done += n
    summary.extra["corpus"] = f"{rows_out:,} passages in {n} shards from {source} ({fmt})"
    summary.extra["corpus read"] = f"{rows_in / max(read_seconds, 1e-9):,.0f} rows/s"
    if reasons:
        summary.extra["corpus rejects"] = dict(reasons.most_common())
    log.info("corpus: %d in, %d out, %d rejected", rows_in, rows_out, rejected)


# ---- query sets ---------------------------------------------------------------------------------------------
def _ingest_query_set(qs: QuerySetConfig, run: RunDir, summary: StageSummary) -> None:
    """Read one query set, write it and its rejects, then its marker."""
    unit = query_unit(qs.name)
    run.remove("queries", qs.name)
    batch = read_query_set(qs)
    table: pa.Table = batch.table
    run.write_table(posixpath.join("queries", qs.name, "part-00000.parquet"), table)
    rejected = run.write_rejects(STAGE, unit, batch.rejects)
    languages = batch.languages()
    reasons = collections.Counter(r["reason"] for r in batch.rejects)
    run.mark_done(
        STAGE, unit, rows_in=batch.rows_in, rows_out=table.num_rows, rows_rejected=rejected, languages=languages,
        source=qs.path, format=qs.format, rejects_by_reason=dict(reasons),
    )
    summary.rows_in += batch.rows_in
    summary.rows_out += table.num_rows
    summary.rejected += rejected
    summary.units_done += 1
    summary.extra[unit] = f"{batch.rows_in:,} in, {table.num_rows:,} out, {rejected:,} rejected"
    summary.extra[f"{unit} by language"] = languages
    if reasons:
        summary.extra[f"{unit} rejects"] = dict(reasons.most_common())
