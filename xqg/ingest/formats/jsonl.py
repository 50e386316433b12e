"""JSON lines corpus: one object {docid|id|_id, title, text} per line; other fields are ignored.

Parsing runs in pyarrow on the hot path; a block that pyarrow refuses is redone line by line with json.loads,
so that a broken line, a line holding two JSON values or a field of the wrong type is one reject with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from xqg.ingest.formats.base import CorpusFormat, register
from xqg.ingest.lines import BLOCK_BYTES, encodable, iter_line_blocks, open_stream, split_lines, utf8_ok
from xqg.ingest.passages import DOCID_ALIASES, PassageBlock, clean_passages, from_columns, reject

_JSONL_SCHEMA = pa.schema([(a, pa.string()) for a in DOCID_ALIASES] + [("title", pa.string()), ("text", pa.string())])


def _parse_jsonl_fast(block: bytes) -> pa.Table:
    """pyarrow's threaded JSON parser; raises on anything irregular, including bad UTF-8 anywhere in the block
    (pyarrow would copy it into string columns unchecked)."""
    if not utf8_ok(block):
        raise pa.ArrowInvalid("invalid UTF-8 in the block")
    table = pajson.read_json(
        pa.BufferReader(block),
        read_options=pajson.ReadOptions(use_threads=True, block_size=4 << 20),
        parse_options=pajson.ParseOptions(explicit_schema=_JSONL_SCHEMA, unexpected_field_behavior="ignore"),
    )
    # pyarrow reads two objects on one line as two rows; the line-by-line path (json.loads) rejects that line.
    # One row per line the slow path would see, or the block goes the slow way: a line means the same either way.
    lines = len(split_lines(block, skip_whitespace=True))
    if table.num_rows != lines:
        raise pa.ArrowInvalid(f"{table.num_rows} JSON objects on {lines} lines")
    docid = pc.coalesce(*(table[a] for a in DOCID_ALIASES))
    return pa.table({"docid": docid, "title": table["title"], "text": table["text"]})


def _docid_value(obj: dict[str, Any]) -> Any:
    for alias in DOCID_ALIASES:
        if obj.get(alias) is not None:
            value = obj[alias]
            if isinstance(value, int) and not isinstance(value, bool):
                return str(value)
            return value
    return None


def _starts_a_value(rest: str) -> bool:
    """Whether rest begins with a whole JSON value (what json.loads called extra data after the first one)."""
    try:
        json.JSONDecoder().raw_decode(rest.lstrip())
    except json.JSONDecodeError:
        return False
    return True


def parse_json_line(line: bytes, row: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(object, None) or (None, reject) for one JSON line."""
    try:
        s = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, reject(row, "undecodable line (bad UTF-8)", line)
    try:
        obj = json.loads(s)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and _starts_a_value(s[e.pos:]):  # a whole value, then another one
            return None, reject(row, "more than one JSON value on one line (a missing line break?)", s)
        return None, reject(row, f"broken JSON: {e.msg}", s)
    if not isinstance(obj, dict):
        return None, reject(row, "not a JSON object", s)
    return obj, None


def _parse_jsonl_slow(block: bytes, first_row: int) -> tuple[pa.Table, np.ndarray, list[dict]]:
    docids: list[Any] = []
    titles: list[Any] = []
    texts: list[Any] = []
    rows: list[int] = []
    rejects: list[dict[str, Any]] = []
    for i, line in enumerate(split_lines(block, skip_whitespace=True), start=first_row):
        obj, rej = parse_json_line(line, i)
        if rej:
            rejects.append(rej)
            continue
        docid, title, text = _docid_value(obj), obj.get("title"), obj.get("text")
        for name, value in (("docid", docid), ("title", title), ("text", text)):
            if value is not None and not isinstance(value, str):
                rejects.append(reject(i, f"{name} is not a string", line, key=docid if isinstance(docid, str) else None))
                break
            if value is not None and not encodable(value):
                key = docid if isinstance(docid, str) and encodable(docid) else None
                rejects.append(reject(i, f"invalid Unicode in {name} (lone surrogate escape)", line, key=key))
                break
        else:
            docids.append(docid)
            titles.append(title)
            texts.append(text)
            rows.append(i)
    return from_columns(docids, titles, texts), np.asarray(rows, dtype=np.int64), rejects



class Jsonl(CorpusFormat):
    """JSON lines {docid|id|_id, title, text}; other fields are ignored."""

    name = "jsonl"
    extensions = (".jsonl",)
    naming = ".jsonl/.jsonl.gz"

    @classmethod
    def read(cls, uri: str, block_bytes: int = BLOCK_BYTES) -> Iterator[PassageBlock]:
        """The file's blocks, validated."""
        next_row = 0
        with open_stream(uri) as stream:
            for block in iter_line_blocks(stream, block_bytes, uri=uri, fmt="jsonl"):
                try:
                    table = _parse_jsonl_fast(block)
                    rows = np.arange(next_row, next_row + table.num_rows, dtype=np.int64)
                    rejects: list[dict[str, Any]] = []
                except (pa.ArrowInvalid, UnicodeDecodeError):
                    table, rows, rejects = _parse_jsonl_slow(block, next_row)
                # Checked: the fast path validates the whole block first, the slow path decodes every line.
                out = clean_passages(table, rows, rejects, utf8_checked=True)
                next_row += out.rows_in
                yield out


register(Jsonl)
