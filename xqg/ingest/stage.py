"""The ingest stage: corpus -> <run>/corpus/shard=NNNNN/, query sets -> <run>/queries/<name>/ (driver only, no Ray)."""

from __future__ import annotations

import collections
import json
import logging
import posixpath
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from xqg.config import Config, QuerySetConfig
from xqg.ingest.corpus import detect_format, read_passages
from xqg.ingest.passages import PASSAGE_SCHEMA
from xqg.ingest.lines import raw_text
from xqg.ingest.queries import read_query_set
from xqg.ingest.shards import ShardSpool, first_seen, shard_of
from xqg.layout import INGEST, PART, corpus_dir, corpus_unit, query_set_dir, query_set_unit
from xqg.rundir import RunDir
from xqg.runner import StageRunner, Unit
from xqg.stamp import content_stamp
from xqg.summary import StageSummary

log = logging.getLogger(__name__)

STAGE = INGEST
CORPUS_UNIT = "corpus"  # marker written last: the whole corpus pass is complete
STAGING = "_tmp/ingest"
# A corpus whose first rows are all rejected is not the corpus it is said to be (the wrong format, a binary
# file): stop there instead of spooling millions of rejects.
GIVE_UP_AFTER_ROWS = 100_000
# The driver's memory while ingesting is bounded by these and the reader's block (xqg.ingest.lines.BLOCK_BYTES),
# whatever the corpus size: rows staged per flush, and the size of a corpus shard's row groups.
SPOOL_BYTES = 16 << 20
ROW_GROUP_BYTES = 16 << 20


def corpus_units(config: Config) -> tuple[list[Unit], Unit]:
    """Every corpus shard unit and the whole-pass unit, made from the source's content, format and shard count."""
    source = str(config.corpus.path)
    inputs = {"source": content_stamp(source), "format": detect_format(source, config.corpus.format),
              "num_shards": config.corpus.num_shards}
    return [Unit(corpus_unit(i), inputs) for i in range(config.corpus.num_shards)], Unit(CORPUS_UNIT, inputs)


def run_ingest(config: Config) -> StageSummary:
    """Ingest the corpus into hash shards and every query set into Parquet; units whose source changed are redone.

    A corpus that yields no passage (an empty file, the wrong format, every row rejected) is a ValueError naming
    the file, the format, the rows read and the top reject reasons; nothing of it is marked complete.
    """
    run = RunDir(config.run_dir)
    with StageRunner(run, STAGE, keep_stale=config.keep_stale) as runner:  # the lease is given back however it ends
        return _run_ingest(config, run, runner)


def _run_ingest(config: Config, run: RunDir, runner: StageRunner) -> StageSummary:
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
    spool = ShardSpool(run, STAGING, PASSAGE_SCHEMA, buffer_bytes=SPOOL_BYTES)
    # Streamed to rejects/ as they come: a corpus with millions of bad rows never holds them in the driver.
    read_rejects = run.reject_writer(STAGE, CORPUS_UNIT)
    rows_in = rows_out = duplicates = kept = 0
    stopped = False
    reasons: collections.Counter[str] = collections.Counter()
    notes: dict[str, None] = {}  # what the reader converted, in order, once each
    read_start = time.perf_counter()
    bar = tqdm(desc=f"ingest corpus ({fmt})", unit=" rows", unit_scale=True, mininterval=1.0)
    try:
        for block in read_passages(source, fmt):
            rows_in += block.rows_in
            kept += block.table.num_rows
            read_rejects.add(block.rejects)
            for note in block.notes:
                if note not in notes:
                    notes[note] = None
                    log.info("corpus: %s", note)
            if block.table.num_rows:
                spool.add(block.table, shard_of(block.table["docid"], n))
            bar.update(block.rows_in)
            if not kept and rows_in >= GIVE_UP_AFTER_ROWS:
                stopped = True
                break
        bar.close()
        if not kept:  # nothing to ingest: one clear error, no marker
            read_rejects.close()
            raise ValueError(nothing_ingested(source, fmt, rows_in, read_rejects.sample, run.path("rejects", STAGE),
                                              stopped, reasons=read_rejects.reasons))
        spool.close()
        read_seconds = time.perf_counter() - read_start
        for shard in tqdm(range(n), desc="write corpus shards", unit=" shards", mininterval=1.0):
            unit = shards[shard].name
            staged, kept_rows, dup_rows = write_corpus_shard(run, spool, shard)
            shard_rejected = run.write_rejects(STAGE, unit, dup_rows)
            # Counted as part of the whole pass (below); an empty shard of a small corpus is fine.
            runner.finish(shards[shard], rows_in=staged, rows_out=kept_rows, rejected=shard_rejected,
                          count=False, empty_ok=True)
            rows_out += kept_rows
            duplicates += shard_rejected
        rejected = read_rejects.close() + duplicates
        if duplicates:
            reasons["duplicate docid (first kept)"] = duplicates
        reasons.update(read_rejects.reasons)
        runner.finish(whole, rows_in=rows_in, rows_out=rows_out, rejected=rejected, num_shards=n, source=source,
                      format=fmt, rejects_by_reason=dict(reasons))
    finally:
        bar.close()
        read_rejects.close()  # idempotent: what came so far is on disk whatever went wrong
        spool.remove()
        if not run.listdir("_tmp"):
            run.remove("_tmp")
    summary = runner.summary
    summary.units_done += n  # the shards were marked uncounted
    summary.extra["corpus"] = f"{rows_out:,} passages in {n} shards from {source} ({fmt})"
    summary.extra["corpus read"] = f"{rows_in / max(read_seconds, 1e-9):,.0f} rows/s"
    if notes:
        summary.extra["corpus notes"] = "; ".join(notes)
    if reasons:
        summary.extra["corpus rejects"] = dict(reasons.most_common())
    log.info("corpus: %d in, %d out, %d rejected", rows_in, rows_out, rejected)


def write_corpus_shard(run: RunDir, spool: ShardSpool, shard: int,
                       row_group_bytes: int | None = None) -> tuple[int, int, list[dict[str, Any]]]:
    """Write a shard's staged rows minus repeated docids to corpus/shard=NNNNN, streaming: only its docid column
    and one row group are in memory at once. Returns (rows staged, rows written, the duplicate rows as rejects)."""
    row_group_bytes = row_group_bytes or ROW_GROUP_BYTES
    keep = first_seen(spool.column(shard, "docid"))
    path = run.path(posixpath.join(corpus_dir(shard), PART))
    run.fs.create_dir(posixpath.dirname(path), recursive=True)
    dup_rows: list[dict[str, Any]] = []
    parts: list[pa.Table] = []
    buffered = offset = written = 0
    with pq.ParquetWriter(path, PASSAGE_SCHEMA, filesystem=run.fs, compression="zstd") as writer:
        for table in spool.iter_tables(shard):
            mask = keep[offset:offset + table.num_rows]
            offset += table.num_rows
            if not mask.all():
                dup_rows += [
                    {"key": r["docid"], "reason": "duplicate docid (first kept)",
                     "raw": raw_text(json.dumps(r, ensure_ascii=False))}
                    for r in table.filter(pa.array(~mask)).to_pylist()
                ]
                table = table.filter(pa.array(mask))
            parts.append(table)
            buffered += table.nbytes
            written += table.num_rows
            if buffered >= row_group_bytes:  # row groups of a useful size, whatever the staging flushes were
                writer.write_table(pa.concat_tables(parts))
                parts, buffered = [], 0
        if any(t.num_rows for t in parts) or not written:  # an empty shard: one empty row group, as pq.write_table
            writer.write_table(pa.concat_tables(parts) if parts else PASSAGE_SCHEMA.empty_table())
    return offset, written, dup_rows


def _format_hint(fmt: str, rejects: list[dict[str, Any]], reasons: collections.Counter[str] | None = None) -> str:
    """A guess at what the rows are when they are not what fmt expects ('' when there is none)."""
    raws = [str(r.get("raw", "")).lstrip() for r in rejects[:100]]
    reasons = reasons if reasons is not None else collections.Counter(r["reason"] for r in rejects)
    if raws and fmt != "jsonl" and sum(r.startswith("{") for r in raws) > len(raws) // 2:
        return " The rows look like JSON lines: set corpus.format: jsonl (or name the file .jsonl)."
    if raws and fmt == "jsonl" and sum("\t" in r and not r.startswith("{") for r in raws) > len(raws) // 2:
        return " The rows look tab-separated: set corpus.format: dpr_tsv (or name the file .tsv)."
    if reasons and reasons.most_common(1)[0][0].startswith("undecodable line"):
        return " The file is not UTF-8 text (compressed under a plain name, or another encoding?)."
    return ""


def nothing_ingested(source: str, fmt: str, rows_in: int, rejects: list[dict[str, Any]], rejects_dir: str,
                     stopped: bool = False, what: str = "corpus", name: str = "passage",
                     reasons: collections.Counter[str] | None = None) -> str:
    """The one message for an input that yields nothing: the file, its format, rows read, the top reasons
    (reasons: every reject's counted, when `rejects` is only a sample of them)."""
    if rows_in == 0:
        return (f"{what} {source} ({fmt}) holds no rows: nothing to ingest (an empty {what} is an error; "
                f"check the path and the format)")
    reasons = reasons if reasons is not None else collections.Counter(r["reason"] for r in rejects)
    top = "; ".join(f"{reason!r} x{count:,}" for reason, count in reasons.most_common(3))
    more = f" and {len(reasons) - 3} other reason(s)" if len(reasons) > 3 else ""
    scope = f"the first {rows_in:,} rows (reading stopped there)" if stopped else f"all {rows_in:,} rows"
    hint = _format_hint(fmt, rejects, reasons) if what == "corpus" else ""
    return (f"no {name} out of {what} {source} ({fmt}): {scope} read were rejected; top reasons: {top}{more}; "
            f"rejected rows in {rejects_dir}/.{hint}")


# ---- query sets ---------------------------------------------------------------------------------------------
def _ingest_query_set(qs: QuerySetConfig, run: RunDir, runner: StageRunner, unit_: Unit) -> None:
    """Read one query set, write it and its rejects, then its marker; a set that yields no query fails."""
    unit = unit_.name
    runner.prepare(unit_)
    run.remove(query_set_dir(qs.name))
    summary = runner.summary
    try:
        batch = read_query_set(qs)
    except ValueError as e:  # not a query file at all (binary, not a SQuAD document): unmarked, the others go on
        runner.fail(unit_, str(e))
        return
    table: pa.Table = batch.table
    if table.num_rows == 0:  # unmarked, said once with its reasons; the other sets go on
        rejected = run.write_rejects(STAGE, unit, batch.rejects)
        summary.rows_in += batch.rows_in
        summary.rejected += rejected
        runner.fail(unit_, nothing_ingested(qs.path, qs.format, batch.rows_in, batch.rejects,
                                            run.path("rejects", STAGE), what=f"query set {qs.name!r}", name="query"))
        return
    run.write_table(posixpath.join(query_set_dir(qs.name), PART), table)
    rejected = run.write_rejects(STAGE, unit, batch.rejects)
    languages = batch.languages()
    reasons = collections.Counter(r["reason"] for r in batch.rejects)
    runner.finish(unit_, rows_in=batch.rows_in, rows_out=table.num_rows, rejected=rejected, languages=languages,
                  source=qs.path, format=qs.format, rejects_by_reason=dict(reasons))
    summary.extra[unit] = f"{batch.rows_in:,} in, {table.num_rows:,} out, {rejected:,} rejected"
    summary.extra[f"{unit} by language"] = languages
    if reasons:
        summary.extra[f"{unit} rejects"] = dict(reasons.most_common())
