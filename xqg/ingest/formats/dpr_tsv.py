"""DPR's TSV corpus (psgs_w100.tsv, XOR-TyDi's enwiki_20190201_w100.tsv): id, text, title, tab-separated.

Parsing runs in pyarrow (threaded C++) on the hot path; a block that pyarrow refuses (a broken line, bad UTF-8)
is redone line by line in Python so that only its bad lines are rejected. A header line repeated inside the
file (files joined with cat) is a reject; a first line that looks like a header without DPR's columns is a
ValueError naming the file.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from xqg.ingest.formats.base import CorpusFormat, register
from xqg.ingest.lines import BLOCK_BYTES, iter_line_blocks, open_stream, split_lines
from xqg.ingest.passages import DOCID_ALIASES, PassageBlock, clean_passages, reject

TSV_DEFAULT_COLUMNS = ["id", "text", "title"]  # psgs_w100.tsv's order, used when a file has no header


def unquote(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Undo CSV quoting where a field is wrapped in double quotes ("a ""b"" c" -> a "b" c); others stay as is."""
    wrapped = pc.and_(
        pc.and_(pc.starts_with(values, '"'), pc.ends_with(values, '"')), pc.greater_equal(pc.binary_length(values), 2)
    )
    if not pc.any(wrapped).as_py():
        return values
    inner = pc.replace_substring(pc.utf8_slice_codeunits(values, 1, -1), '""', '"')
    return pc.if_else(wrapped, inner, values)


def _unquote_one(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1].replace('""', '"')
    return value


# A header field: a short name (letters, digits, _ . -), no spaces; a data row has a long text with spaces.
_HEADER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,39}")
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _looks_like_header(fields: list[str]) -> bool:
    """True when a first line that is not DPR's header still reads as one: only short names, the first not a
    number (DPR's headerless rows start with a numeric id and hold a text with spaces)."""
    return (
        bool(fields)
        and not _INTEGER.fullmatch(fields[0])
        and all(_HEADER_NAME.fullmatch(f) for f in fields)
    )


def _tsv_columns(first_line: bytes, uri: str = "the TSV file") -> tuple[list[str], bool]:
    """(column names, True when first_line is a header).

    DPR's header (psgs_w100.tsv and XOR-TyDi's enwiki_20190201_w100.tsv: id, text, title) and any header that
    names a docid column (id, docid, _id) and a text column are recognised, in any order. A first line that
    looks like a header without naming those columns is a ValueError; anything else is a data row of
    id, text, title.
    """
    try:
        fields = [_unquote_one(n.strip()) for n in first_line.decode("utf-8-sig").rstrip("\r\n").split("\t")]
    except UnicodeDecodeError:
        return list(TSV_DEFAULT_COLUMNS), False
    names = [f.lower() for f in fields]
    if "text" in names and any(a in names for a in DOCID_ALIASES):
        return names, True
    if _looks_like_header(fields):
        missing = [want for want, ok in (("id (or docid, _id)", any(a in names for a in DOCID_ALIASES)),
                                         ("text", "text" in names)) if not ok]
        raise ValueError(
            f"{uri}: the first line looks like a header ({', '.join(fields)}) but has no {' and no '.join(missing)} "
            "column: a DPR TSV corpus has the columns id, text, title (the header 'id<TAB>text<TAB>title' of "
            "psgs_w100.tsv and enwiki_20190201_w100.tsv; title optional, any order) or no header and rows in "
            "that order"
        )
    return list(TSV_DEFAULT_COLUMNS), False


def _tsv_table(columns: dict[str, Any], names: list[str]) -> pa.Table:
    docid_col = next(a for a in DOCID_ALIASES if a in names) if any(a in names for a in DOCID_ALIASES) else None
    n = len(next(iter(columns.values())))
    nulls = pa.nulls(n, pa.string())
    return pa.table(
        {
            "docid": columns[docid_col] if docid_col else nulls,
            "title": columns["title"] if "title" in names else nulls,
            "text": columns["text"] if "text" in names else nulls,
        }
    )


def _parse_tsv_fast(block: bytes, names: list[str]) -> pa.Table:
    """pyarrow's threaded parser, quoting off (DPR text is full of quotes); raises on any irregular line."""
    table = pacsv.read_csv(
        pa.BufferReader(block),
        read_options=pacsv.ReadOptions(column_names=names, use_threads=True),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.binary() for n in names}),
    )
    # The cast validates UTF-8 and raises on a bad byte sequence.
    return _tsv_table({n: unquote(table[n].cast(pa.string())) for n in names}, names)


def _parse_tsv_slow(block: bytes, names: list[str], first_row: int) -> tuple[pa.Table, np.ndarray, list[dict]]:
    """Line by line: bad UTF-8 and wrong field counts become rejects; a quoted field may hold tabs."""
    cols: list[list[str]] = [[] for _ in names]
    rows: list[int] = []
    rejects: list[dict[str, Any]] = []
    for i, line in enumerate(split_lines(block), start=first_row):
        try:
            s = line.decode("utf-8")
        except UnicodeDecodeError:
            rejects.append(reject(i, "undecodable line (bad UTF-8)", line))
            continue
        fields = s.split("\t")
        if len(fields) == len(names):
            fields = [_unquote_one(f) for f in fields]
        else:
            try:
                fields = next(csv.reader([s], delimiter="\t", quotechar='"', doublequote=True, strict=True))
            except csv.Error:
                pass
            if len(fields) != len(names):
                got = len(s.split("\t"))
                rejects.append(reject(i, f"expected {len(names)} tab-separated fields, got {got}", s))
                continue
        for col, value in zip(cols, fields):
            col.append(value)
        rows.append(i)
    table = _tsv_table({n: pa.array(c, pa.string()) for n, c in zip(names, cols)}, names)
    return table, np.asarray(rows, dtype=np.int64), rejects


REPEATED_HEADER = "header line repeated inside the file (files joined with cat?)"


def _drop_repeated_headers(
    table: pa.Table, rows: np.ndarray, names: list[str], rejects: list[dict[str, Any]]
) -> tuple[pa.Table, np.ndarray]:
    """Reject the rows that are a header line again (every field a column name: id, docid, _id, text, title, any
    case or order): a header is never a passage. Only a file's first line is taken as its header."""
    words = pa.array([*DOCID_ALIASES, "text", "title"], pa.string())
    columns = ["docid", "text", "title"] if "title" in names else ["docid", "text"]
    is_header: Any = None
    for column in columns:  # docid first: the (long) text column is looked at only where a docid matches
        same = pc.fill_null(pc.is_in(pc.utf8_lower(pc.utf8_trim_whitespace(table[column])), value_set=words), False)
        is_header = same if is_header is None else pc.and_(is_header, same)
        if not pc.any(is_header).as_py():
            return table, rows
    mask = np.asarray(is_header.to_numpy(zero_copy_only=False), dtype=bool)
    for i in np.flatnonzero(mask):
        line = "\t".join(str(table[c][int(i)].as_py()) for c in columns)
        rejects.append(reject(int(rows[i]), REPEATED_HEADER, line))
    return table.filter(pa.array(~mask)), rows[~mask]



class DprTsv(CorpusFormat):
    """DPR's psgs_w100.tsv layout: id, text, title, tab-separated, with a header; fields may be CSV-quoted."""

    name = "dpr_tsv"
    extensions = (".tsv",)
    naming = ".tsv/.tsv.gz"

    @classmethod
    def read(cls, uri: str, block_bytes: int = BLOCK_BYTES) -> Iterator[PassageBlock]:
        """The file's blocks, validated."""
        names: list[str] | None = None
        next_row = 0
        with open_stream(uri) as stream:
            for block in iter_line_blocks(stream, block_bytes, uri=uri, fmt="dpr_tsv"):
                if names is None:
                    cut = block.find(b"\n")
                    first = block if cut < 0 else block[: cut + 1]
                    names, is_header = _tsv_columns(first, uri)
                    if is_header:
                        block = block[len(first) :]
                        if not block:
                            continue
                try:
                    table = _parse_tsv_fast(block, names)
                    rows = np.arange(next_row, next_row + table.num_rows, dtype=np.int64)
                    rejects: list[dict[str, Any]] = []
                except (pa.ArrowInvalid, UnicodeDecodeError):
                    table, rows, rejects = _parse_tsv_slow(block, names, next_row)
                table, rows = _drop_repeated_headers(table, rows, names, rejects)
                # Checked: the fast path's binary -> string cast validates UTF-8, the slow path decodes every line.
                out = clean_passages(table, rows, rejects, utf8_checked=True)
                next_row += out.rows_in
                yield out


register(DprTsv)
