"""The passage table every corpus format yields, and the checks every reader applies to it.

Every reader yields PassageBlocks: the good rows as a (docid, title, text) string table and the bad rows as
reject dicts {key, reason, raw}, so that rows in = rows out + rows rejected holds block by block. Every kept
row passes clean_passages: valid UTF-8 in every column, a docid without control characters, a non-empty text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xqg.ingest.lines import CONTROL_CHARS, raw_text

PASSAGE_SCHEMA = pa.schema([("docid", pa.string()), ("title", pa.string()), ("text", pa.string())])
DOCID_ALIASES = ("docid", "id", "_id")


@dataclass
class PassageBlock:
    """Validated passages of one input block, and the rows rejected from it."""

    table: pa.Table
    rejects: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the reader did that the summary should say (casts)

    @property
    def rows_in(self) -> int:
        """Input rows this block accounts for."""
        return self.table.num_rows + len(self.rejects)



def _decodes(value: bytes | None) -> bool:
    if value is None:
        return True
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _drop_bad_utf8(table: pa.Table, rows: np.ndarray, rejects: list[dict[str, Any]]) -> tuple[pa.Table, np.ndarray]:
    """Reject the rows with a column that is not valid UTF-8 (pyarrow's bulk check; per row only on failure)."""
    bad: np.ndarray | None = None
    for name in ("docid", "title", "text"):
        column = table[name]
        try:
            column.validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        raw = column.cast(pa.binary()).to_pylist()  # no UTF-8 check on this cast
        invalid = np.fromiter((not _decodes(v) for v in raw), dtype=bool, count=len(raw))
        new = invalid if bad is None else invalid & ~bad
        for i in np.flatnonzero(new):
            fields = {k: table[k].cast(pa.binary())[int(i)].as_py() for k in ("docid", "title", "text")}
            raw_row = {k: v.decode("utf-8", errors="replace") if v is not None else None for k, v in fields.items()}
            rejects.append({"key": f"row {int(rows[i])}", "reason": f"bad UTF-8 in {name}",
                            "raw": raw_text(json.dumps(raw_row, ensure_ascii=False))})
        bad = invalid if bad is None else bad | invalid
    if bad is None:
        return table, rows
    keep = pa.array(~bad)
    return table.filter(keep), rows[~bad]


def _printable_key(docid: str) -> str:
    return docid.encode("unicode_escape").decode("ascii")


def _may_hold_control(values: pa.ChunkedArray) -> bool:
    """False when no value can hold a control character: one numpy pass over the UTF-8 bytes (C0 and DEL are
    single bytes, C1 is 0xC2 0x80-0x9F); True sends the column to the exact (regex) check."""
    for chunk in values.chunks:
        if len(chunk) == 0:
            continue
        if chunk.type != pa.string():
            return True
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)[chunk.offset : chunk.offset + len(chunk) + 1]
        data = chunk.buffers()[2]
        if data is None:
            continue
        b = np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]]
        if np.any((b < 0x20) | (b == 0x7F)) or np.any((b[:-1] == 0xC2) & (b[1:] >= 0x80) & (b[1:] <= 0x9F)):
            return True
    return False


def clean_passages(
    table: pa.Table, rows: np.ndarray, rejects: list[dict[str, Any]] | None = None, *, utf8_checked: bool = False
) -> PassageBlock:
    """Validate docid/title/text string columns (nulls allowed); rows[i] is row i's index in the input.

    A value that is not valid UTF-8 is a reject ("bad UTF-8 in <column>"; utf8_checked: the reader has already
    checked every byte of the block, so this pass is skipped); docids are stripped; a missing docid, a docid
    holding a control character (NUL, ESC, a tab, ...), a missing text or a whitespace-only text is a reject;
    a missing title becomes "" (many corpora have none).
    """
    rejects = list(rejects or [])
    if not utf8_checked:
        table, rows = _drop_bad_utf8(table, rows, rejects)
    docid = pc.utf8_trim_whitespace(table["docid"])
    if isinstance(docid, pa.Array):
        docid = pa.chunked_array([docid], pa.string())
    text = table["text"]
    no_docid = pc.fill_null(pc.equal(docid, ""), True)
    if _may_hold_control(docid):
        control = pc.fill_null(pc.match_substring_regex(docid, CONTROL_CHARS), False)
    else:
        control = pa.chunked_array([pa.array(np.zeros(len(docid), dtype=bool))], pa.bool_())
    no_text = pc.is_null(text)
    empty_text = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(text), ""), False)
    bad = pc.or_(pc.or_(pc.or_(no_docid, control), no_text), empty_text)
    clean = pa.table(
        {"docid": docid, "title": pc.fill_null(table["title"], ""), "text": text}, schema=PASSAGE_SCHEMA
    )
    if not pc.any(bad).as_py():
        return PassageBlock(clean, rejects)
    for i in np.flatnonzero(bad.to_numpy(zero_copy_only=False)):
        i = int(i)
        row = {k: table[k][i].as_py() for k in ("docid", "title", "text")}
        key = row["docid"]
        if no_docid[i].as_py():
            reason, key = "missing docid", None
        elif control[i].as_py():
            reason, key = "control character in docid", _printable_key(docid[i].as_py())
        elif no_text[i].as_py():
            reason = "missing text"
        else:
            reason = "empty text"
        raw = raw_text(json.dumps(row, ensure_ascii=False))
        rejects.append({"key": key or f"row {int(rows[i])}", "reason": reason, "raw": raw})
    return PassageBlock(clean.filter(pc.invert(bad)), rejects)



def reject(row: int, reason: str, line: bytes | str, key: str | None = None) -> dict[str, Any]:
    """A reject dict for input row `row` (keyed by key when the row has a usable docid)."""
    return {"key": key or f"row {row}", "reason": reason, "raw": raw_text(line)}


def from_columns(docid: list, title: list, text: list) -> pa.Table:
    """A (docid, title, text) string table from three Python lists."""
    return pa.table(
        {"docid": pa.array(docid, pa.string()), "title": pa.array(title, pa.string()), "text": pa.array(text, pa.string())}
    )
