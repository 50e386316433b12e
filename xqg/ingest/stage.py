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
from xqg.layout import INGEST, PART, corpus_dir, corpus_unit, query_set_dir, query_set_unit
from xqg.rundir import RunDir
from xqg.runner import StageRunner, Unit
from xqg.stamp import content_stamp
from xqg.summary import StageSummary

log = logging.getLogger(__name__)

STAGE = INGEST
CORPUS_UNIT = "corpus"  # marker written last: the whole corpus pass is complete
STAGING = "_tmp/ingest"


def corpus_units(config: Config) -> tuple[list[Unit], Unit]:
    """Every corpus shard unit and the whole-pass unit, made from the source's content, format and shard count."""
    source = str(config.corpus.path)
    inputs = {"source": content_stamp(source), "format": detect_format(source, config.corpus.format),
              "num_shards": config.corpus.num_shards}
    return [Unit(corpus_unit(i), inputs) for i in range(config.corpus.num_shards)], Unit(CORPUS_UNIT, inputs)


def run_ingest(config: Config) -> StageSummary:
    """Ingest the corpus into hash shards and every query set into Parquet; units whose source changed are redone."""
    run = RunDir(config.run_dir)
    runner = StageRunner(run, STAGE, keep_stale=config.keep_stale)
    notes: list[str] = []
    corpus_todo = False
    if config.corpus.path is None:
        notes.append("no corpus.path in the config: corpus not ingested")
    else:
        _check_shard_count(config, runner)
        shards, whole = corpus_units(config)
        # One streaming pass writes every shard: any shard to (re)do means the whole pass.
        corpus_plan = runner.plan([*shards, whole])
        corpus_todo = bool(corpus_plan.todo)
        if corpus_todo:  # the complete shards are rewritten too: not skipped
            runner.summary.units_skipped -= len(corpus_plan.done)
    query_sets = {query_set_unit(qs.name): qs for qs in config.queries}
    query_plan = runner.plan([
        Unit(unit, {"source": content_stamp(qs.path), "format": qs.format, "languages": qs.languages})
        for unit, qs in query_sets.items()
    ])
    if not corpus_todo and not query_plan.todo:
        return runner.close("\n".join(["ingest already complete: nothing to do", *notes]))
    run.write_config(config, STAGE)
    if corpus_todo:
        _ingest_corpus(config, run, runner, shards, whole)
    for unit in query_plan.todo:
        _ingest_query_set(query_sets[unit.name], run, runner, unit)
    return runner.close("\n".join(notes))


# ---- corpus -----------------------------------------------------------------------------------------------
def _check_shard_count(config: Config, runner: StageRunner) -> None:
    """Every later stage is aligned to the corpus shards: another shard count needs another run directory."""
    info = runner.markers().get(CORPUS_UNIT)
    if info is None:
        return
    n = config.corpus.num_shards
    old = info.get("num_shards", (info.get("inputs") or {}).get("num_shards"))
    if old != n:
        raise ValueError(
            f"{runner.run.uri} holds a corpus ingested into {old} shards, the config asks for {n}: "
            "use a new run_dir (every later stage is aligned to the corpus shards)"
        )


def _clear_corpus(run: RunDir, runner: StageRunner, units: list[Unit]) -> None:
    """Remove every trace of an earlier corpus pass (output, rejects, markers, staging)."""
    run.remove("corpus")
    run.remove(STAGING)
    for unit in units:
        runner.prepare(unit)


def _ingest_corpus(config: Config, run: RunDir, runner: StageRunner, shards: list[Unit], whole: Unit) -> None:
    """One streaming pass: parse, validate, hash-shard to staging; then per shard drop duplicates and write."""
    source, n = str(config.corpus.path), config.corpus.num_shards
    fmt = detect_format(source, config.corpus.format)
    _clear_corpus(run, runner, [*shards, whole])
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
            unit = shards[shard].name
            run.write_table(posixpath.join(corpus_dir(shard), PART), kept)
            dup_rows = [
                {"key": r["docid"], "reason": "duplicate docid (first kept)", "raw": raw_text(json.dumps(r, ensure_ascii=False))}
                for r in dups.to_pylist()
            ]
            shard_rejected = run.write_rejects(STAGE, unit, dup_rows)
            # Counted as part of the whole pass (below); an empty shard of a small corpus is fine.
            runner.finish(shards[shard], rows_in=staged.num_rows, rows_out=kept.num_rows, rejected=shard_rejected,
                          count=False, empty_ok=True)
            rows_out += kept.num_rows
            duplicates += shard_rejected
        rejected = run.write_rejects(STAGE, CORPUS_UNIT, read_rejects) + duplicates
        if duplicates:
            reasons["duplicate docid (first kept)"] = duplicates
        reasons.update(r["reason"] for r in read_rejects)
        runner.finish(whole, rows_in=rows_in, rows_out=rows_out, rejected=rejected, num_shards=n, source=source,
                      format=fmt, rejects_by_reason=dict(reasons))
    finally:
        bar.close()
        spool.remove()
        if not run.listdir("_tmp"):
            run.remove("_tmp")
    summary = runner.summary
    summary.units_done += n  # the shards were marked uncounted
    summary.extra["corpus"] = f"{rows_out:,} passages in {n} shards from {source} ({fmt})"
    summary.extra["corpus read"] = f"{rows_in / max(read_seconds, 1e-9):,.0f} rows/s"
    if reasons:
        summary.extra["corpus rejects"] = dict(reasons.most_common())
    log.info("corpus: %d in, %d out, %d rejected", rows_in, rows_out, rejected)


# ---- query sets ---------------------------------------------------------------------------------------------
def _ingest_query_set(qs: QuerySetConfig, run: RunDir, runner: StageRunner, unit_: Unit) -> None:
    """Read one query set, write it and its rejects, then its marker."""
    unit = unit_.name
    runner.prepare(unit_)
    run.remove(query_set_dir(qs.name))
    batch = read_query_set(qs)
    table: pa.Table = batch.table
    run.write_table(posixpath.join(query_set_dir(qs.name), PART), table)
    rejected = run.write_rejects(STAGE, unit, batch.rejects)
    languages = batch.languages()
    reasons = collections.Counter(r["reason"] for r in batch.rejects)
    runner.finish(unit_, rows_in=batch.rows_in, rows_out=table.num_rows, rejected=rejected, languages=languages,
                  source=qs.path, format=qs.format, rejects_by_reason=dict(reasons))
    summary = runner.summary
    summary.extra[unit] = f"{batch.rows_in:,} in, {table.num_rows:,} out, {rejected:,} rejected"
    summary.extra[f"{unit} by language"] = languages
    if reasons:
        summary.extra[f"{unit} rejects"] = dict(reasons.most_common())
