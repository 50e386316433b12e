"""One unit of generation work: a corpus shard's passages in one language -> n queries per passage."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from xqg.generate.backends.base import GeneratorBackend
from xqg.generate.prompts import (
    CHARS_PER_TOKEN_BOUND,
    build_prompt,
    in_sampling_order,
    is_empty_passage,
    stable_seed,
    text_is_last,
)

log = logging.getLogger(__name__)

OUTPUT_SCHEMA = pa.schema([("docid", pa.string()), ("lang", pa.string()), ("queries", pa.list_(pa.string()))])
EMPTY_PASSAGE = "empty passage"
# vLLM-style engines schedule requests themselves; hand them at least this many rows per call.
SELF_SCHEDULED_BATCH = 4096
# Rows tokenised and length-sorted together: bounds memory on shards of millions of passages.
CHUNK_ROWS = 8192


@dataclass
class UnitResult:
    """A unit's output rows (corpus order), its rejects and how long generation took."""

    table: pa.Table
    rejects: list[dict[str, Any]] = field(default_factory=list)
    rows_in: int = 0
    seconds: float = 0.0
    batches_failed: int = 0


def _raw(docid: str, title: str | None, text: str | None) -> str:
    """A reject's raw field: the row as JSON, text clipped (rejects must stay small)."""
    return json.dumps({"docid": docid, "title": title, "text": (text or "")[:2000]}, ensure_ascii=False)


def _error(e: BaseException) -> str:
    return f"generation failed: {type(e).__name__}: {str(e)[:500]}"


def prompt_token_ids(
    backend: GeneratorBackend, template: str, lang: str, titles: list[str | None], texts: list[str | None]
) -> list[list[int]]:
    """Token ids of each row's prompt, the passage cut so the prompt fits generate.max_input_len tokens."""
    max_len = backend.sampling.max_input_len
    max_chars = max_len * CHARS_PER_TOKEN_BOUND
    prompts = [build_prompt(template, lang, ti, tx, max_chars) for ti, tx in zip(titles, texts)]
    if text_is_last(template):
        return backend.tokenize(prompts, truncate=True)  # cutting the prompt's end cuts the passage
    # Text before the end of the template: shorten the passage itself so the template's tail survives.
    ids = backend.tokenize(prompts, truncate=False)
    for i, row in enumerate(ids):
        text = (texts[i] or "")[:max_chars]
        for _ in range(4):
            if len(row) <= max_len or not text:
                break
            text = text[: int(len(text) * max_len / len(row) * 0.95)]
            row = backend.tokenize([build_prompt(template, lang, titles[i], text)], truncate=False)[0]
        ids[i] = row if len(row) <= max_len else backend.tokenize([build_prompt(template, lang, titles[i], text)])[0]
    return ids


def _checked(out: list[list[str]], rows: int, n: int) -> list[list[str]]:
    if len(out) != rows or any(len(q) != n for q in out):
        raise RuntimeError(f"backend returned {[len(q) for q in out]} queries for {rows} prompts (want {n} each)")
    return out


@dataclass
class _Chunk:
    """Rows of one chunk of a unit, as Python lists."""

    docids: list[str]
    titles: list[str | None]
    texts: list[str | None]

    def raw(self, i: int) -> str:
        return _raw(self.docids[i], self.titles[i], self.texts[i])


def _tokenize_chunk(
    backend: GeneratorBackend, chunk: _Chunk, keep: list[int], template: str, lang: str, rejects: list[dict[str, Any]]
) -> dict[int, list[int]]:
    """Prompt token ids of the kept rows; rows that break the tokenizer become rejects."""
    try:
        return dict(zip(keep, prompt_token_ids(backend, template, lang, [chunk.titles[i] for i in keep], [chunk.texts[i] for i in keep])))
    except Exception:  # noqa: BLE001 - find the rows that break the tokenizer, keep the rest
        ids = {}
        for i in keep:
            try:
                ids[i] = prompt_token_ids(backend, template, lang, [chunk.titles[i]], [chunk.texts[i]])[0]
            except Exception as e:  # noqa: BLE001
                rejects.append({"key": chunk.docids[i], "reason": f"tokenization failed: {type(e).__name__}: {e}", "raw": chunk.raw(i)})
        return ids


def _generate_rows(
    backend: GeneratorBackend, chunk: _Chunk, ids: dict[int, list[int]], seeds: dict[int, int], step: int,
    rejects: list[dict[str, Any]],
) -> tuple[dict[int, list[str]], int]:
    """n queries per row in length-sorted batches; a failed batch is retried row by row. -> (queries, failed batches)."""
    n = backend.sampling.num_queries
    # Longest prompts first: similar lengths share a batch (little padding) and memory peaks show up at once.
    order = sorted(ids, key=lambda i: (-len(ids[i]), i))
    queries: dict[int, list[str]] = {}
    failed = 0
    for b in range(0, len(order), step):
        rows = order[b:b + step]
        try:
            out = _checked(backend.generate([ids[i] for i in rows], [seeds[i] for i in rows]), len(rows), n)
            queries.update(zip(rows, out))
            continue
        except Exception as e:  # noqa: BLE001 - one bad batch must not stop the shard
            failed += 1
            log.warning("batch of %d rows failed (%s); retrying the rows one by one", len(rows), _error(e))
            backend.recover()
        for i in rows:
            try:
                queries[i] = _checked(backend.generate([ids[i]], [seeds[i]]), 1, n)[0]
            except Exception as e:  # noqa: BLE001
                backend.recover()
                rejects.append({"key": chunk.docids[i], "reason": _error(e), "raw": chunk.raw(i)})
    return queries, failed


def generate_unit(
    backend: GeneratorBackend,
    passages: pa.Table,
    *,
    lang: str,
    shard: int,
    template: str,
    seed: int,
    batch_size: int,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[int, int], None] | None = None,
) -> UnitResult:
    """n queries per passage in corpus order; empty passages and rows whose generation fails become rejects.

    Each row's queries are stored in sampling order (prompts.in_sampling_order), not in the backend's order,
    so that `encode --num-queries k` takes k independent samples rather than the k most likely.

    The unit is worked through in chunks of chunk_rows passages (sorted by length inside a chunk), so memory
    stays bounded on corpus shards of millions of rows; progress(rows done, rows) is called after each chunk.
    """
    start = time.perf_counter()
    step = max(batch_size, SELF_SCHEDULED_BATCH) if backend.schedules_itself else batch_size
    rejects: list[dict[str, Any]] = []
    out_docids: list[str] = []
    out_queries: list[list[str]] = []
    failed = 0
    backend.begin_unit(stable_seed(seed, lang, shard))
    has_title = "title" in passages.column_names
    for c0 in range(0, passages.num_rows, chunk_rows):
        part = passages.slice(c0, chunk_rows)
        docids = [str(d) for d in part.column("docid").to_pylist()]
        chunk = _Chunk(docids, part.column("title").to_pylist() if has_title else [None] * len(docids), part.column("text").to_pylist())
        keep = []
        for i in range(len(docids)):
            if is_empty_passage(chunk.titles[i], chunk.texts[i]):
                rejects.append({"key": docids[i], "reason": EMPTY_PASSAGE, "raw": chunk.raw(i)})
            else:
                keep.append(i)
        ids = _tokenize_chunk(backend, chunk, keep, template, lang, rejects)
        seeds = {i: stable_seed(seed, lang, docids[i]) for i in ids}
        queries, chunk_failed = _generate_rows(backend, chunk, ids, seeds, step, rejects)
        failed += chunk_failed
        for i in sorted(queries):
            out_docids.append(docids[i])
            # Backends may return a row's samples sorted by score (CTranslate2 does): store them in an order
            # drawn from the row's seed, so that the first k are distributed like k independent samples.
            out_queries.append(in_sampling_order(queries[i], seeds[i]))
        if progress is not None:
            progress(c0 + part.num_rows, passages.num_rows)
    table = pa.table(
        {"docid": out_docids, "lang": [lang] * len(out_docids), "queries": out_queries}, schema=OUTPUT_SCHEMA
    )
    return UnitResult(table, rejects, passages.num_rows, time.perf_counter() - start, failed)
