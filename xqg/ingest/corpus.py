"""Passage readers: DPR TSV, JSONL, Parquet and XQuAD's English paragraphs, streamed as validated blocks.

Every reader yields PassageBlocks: the good rows as a (docid, title, text) string table and the bad rows as
reject dicts {key, reason, raw}, so that rows in = rows out + rows rejected holds block by block. Parsing runs
in pyarrow (threaded C++) on the hot path; a block that pyarrow refuses (a broken line, bad UTF-8, a field of
the wrong type) is redone line by line in Python so that only its bad lines are rejected.

Every kept row passes clean_passages: valid UTF-8 in every column, a docid without control characters, a
non-empty text. Whichever path reads a block, a row is a line: a TSV header line repeated inside the file (files
joined with cat) and a line holding two JSON values are each one reject with its reason. Inputs that cannot be a corpus at all (a compressed or binary file read as text, a TSV header
that is not DPR's, a Parquet file without docid/text columns or with a column that is not text) are a
ValueError naming the file, never a pass that quietly keeps nothing.
"""

from __future__ import annotations

import csv
import json
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from xqg.ingest.lines import (
    BLOCK_BYTES,
    CONTROL_CHARS,
    encodable,
    file_info,
    iter_line_blocks,
    open_stream,
    raw_text,
    split_lines,
    utf8_ok,
)

PASSAGE_SCHEMA = pa.schema([("docid", pa.string()), ("title", pa.string()), ("text", pa.string())])
DOCID_ALIASES = ("docid", "id", "_id")
TSV_DEFAULT_COLUMNS = ["id", "text", "title"]  # psgs_w100.tsv's order, used when a file has no header
PARQUET_BATCH_ROWS = 65_536


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


def xquad_docid(article_idx: int, paragraph_idx: int) -> str:
    """The stable docid of an XQuAD English paragraph (its position in xquad.en.json)."""
    return f"xquad-{article_idx}-{paragraph_idx}"


def detect_format(uri: str, fmt: str = "auto") -> str:
    """The corpus format: fmt itself, or picked from the extension / folder content when fmt is 'auto'."""
    if fmt != "auto":
        return fmt
    name = uri.lower().rstrip("/")
    for ext, found in ((".tsv", "dpr_tsv"), (".jsonl", "jsonl"), (".parquet", "parquet")):
        if name.endswith(ext) or any(name.endswith(ext + z) for z in (".gz", ".bz2", ".zst")):
            return found
    fs, path, info = file_info(uri)
    if info.type == pafs.FileType.Directory:
        names = [posixpath.basename(i.path) for i in fs.get_file_info(pafs.FileSelector(path))]
        if "xquad.en.json" in names:
            return "xquad"
        if any(n.endswith(".parquet") for n in names):
            return "parquet"
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"corpus not found: {uri}")
    raise ValueError(
        f"cannot tell the corpus format of {uri}: name it .tsv/.tsv.gz, .jsonl/.jsonl.gz or .parquet, "
        "point at a folder holding xquad.en.json, or set corpus.format"
    )


def read_passages(uri: str, fmt: str = "auto", block_bytes: int = BLOCK_BYTES) -> Iterator[PassageBlock]:
    """Stream a corpus as validated blocks."""
    fmt = detect_format(uri, fmt)
    if fmt == "dpr_tsv":
        return read_dpr_tsv(uri, block_bytes)
    if fmt == "jsonl":
        return read_jsonl_passages(uri, block_bytes)
    if fmt == "parquet":
        return read_parquet_passages(uri)
    if fmt == "xquad":
        return read_xquad_passages(uri)
    raise ValueError(f"unknown corpus format {fmt!r}")


# ---- validation shared by every reader -------------------------------------------------------------------
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


def _reject(row: int, reason: str, line: bytes | str, key: str | None = None) -> dict[str, Any]:
    return {"key": key or f"row {row}", "reason": reason, "raw": raw_text(line)}


def _from_columns(docid: list, title: list, text: list) -> pa.Table:
    return pa.table(
        {"docid": pa.array(docid, pa.string()), "title": pa.array(title, pa.string()), "text": pa.array(text, pa.string())}
    )


# ---- DPR TSV ---------------------------------------------------------------------------------------------
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
            rejects.append(_reject(i, "undecodable line (bad UTF-8)", line))
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
                rejects.append(_reject(i, f"expected {len(names)} tab-separated fields, got {got}", s))
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
        rejects.append(_reject(int(rows[i]), REPEATED_HEADER, line))
    return table.filter(pa.array(~mask)), rows[~mask]


def read_dpr_tsv(uri: str, block_bytes: int = BLOCK_BYTES) -> Iterator[PassageBlock]:
    """DPR's psgs_w100.tsv layout: id, text, title, tab-separated, with a header; fields may be CSV-quoted."""
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


# ---- JSONL -------------------------------------------------------------------------------------------------
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
        return None, _reject(row, "undecodable line (bad UTF-8)", line)
    try:
        obj = json.loads(s)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and _starts_a_value(s[e.pos:]):  # a whole value, then another one
            return None, _reject(row, "more than one JSON value on one line (a missing line break?)", s)
        return None, _reject(row, f"broken JSON: {e.msg}", s)
    if not isinstance(obj, dict):
        return None, _reject(row, "not a JSON object", s)
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
                rejects.append(_reject(i, f"{name} is not a string", line, key=docid if isinstance(docid, str) else None))
                break
            if value is not None and not encodable(value):
                key = docid if isinstance(docid, str) and encodable(docid) else None
                rejects.append(_reject(i, f"invalid Unicode in {name} (lone surrogate escape)", line, key=key))
                break
        else:
            docids.append(docid)
            titles.append(title)
            texts.append(text)
            rows.append(i)
    return _from_columns(docids, titles, texts), np.asarray(rows, dtype=np.int64), rejects


def read_jsonl_passages(uri: str, block_bytes: int = BLOCK_BYTES) -> Iterator[PassageBlock]:
    """JSON lines {docid|id|_id, title, text}; other fields are ignored."""
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


# ---- Parquet -------------------------------------------------------------------------------------------------
def _parquet_files(uri: str) -> tuple[pafs.FileSystem, list[str]]:
    fs, path, info = file_info(uri)
    if info.type == pafs.FileType.File:
        return fs, [path]
    if info.type == pafs.FileType.Directory:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        files = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
        if files:
            return fs, files
    raise FileNotFoundError(f"no parquet corpus at {uri}")


def _string_column(f: str, role: str, name: str, type_: pa.DataType) -> tuple[str, str | None]:
    """(how to convert column name to string, a note for the summary or None); a ValueError for a column that
    would not convert losslessly."""
    t = pa.types
    if t.is_string(type_):
        return "string", None
    if t.is_null(type_):
        return "null", None
    if t.is_large_string(type_) or t.is_binary(type_) or t.is_large_binary(type_) or t.is_string_view(type_) \
            or t.is_binary_view(type_) or (t.is_dictionary(type_) and (t.is_string(type_.value_type)
                                                                      or t.is_large_string(type_.value_type))):
        note = None if t.is_large_string(type_) or t.is_string_view(type_) or t.is_dictionary(type_) else \
            f"{f}: {role} column {name!r} ({type_}) read as UTF-8 text (rows that are not valid UTF-8 rejected)"
        return "bytes", note
    if t.is_integer(type_):
        return "integer", f"{f}: {role} column {name!r} ({type_}) cast to string (integers: lossless)"
    raise ValueError(
        f"{f}: the {role} column {name!r} is {type_}, not a string: only string, UTF-8 binary and integer "
        f"columns are read (a cast from {type_} to string may not be lossless); convert the column first"
    )


def _to_string(values: pa.Array, how: str) -> pa.Array:
    """A column as a string array; UTF-8 is checked later, row by row only where the bulk check fails."""
    if how == "string":
        return values
    if how == "null":
        return pa.nulls(len(values), pa.string())
    if how == "integer":
        return values.cast(pa.string())
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    # Through binary: the byte cast keeps bad UTF-8 for clean_passages to reject instead of raising here.
    return values.cast(pa.binary()).view(pa.string())


def read_parquet_passages(uri: str, batch_rows: int = PARQUET_BATCH_ROWS) -> Iterator[PassageBlock]:
    """A Parquet file or folder of files with docid|id|_id, title (optional) and text columns.

    Columns are strings (or UTF-8 binary); an integer docid column is cast to string (lossless, noted). A file
    without a docid or text column, or with a column of another type (a float title), is a ValueError naming it.
    """
    fs, files = _parquet_files(uri)
    next_row = 0
    for f in files:
        with fs.open_input_file(f) as handle:
            try:
                pf = pq.ParquetFile(handle)
            except (pa.ArrowInvalid, OSError) as e:
                raise ValueError(f"{f} is not a readable Parquet file: {e}") from None
            schema = pf.schema_arrow
            names = schema.names
            docid_col = next((a for a in DOCID_ALIASES if a in names), None)
            missing = [m for m, ok in (("docid (or id, _id)", docid_col), ("text", "text" in names)) if not ok]
            if missing:
                raise ValueError(
                    f"{f}: no {' and no '.join(missing)} column: a Parquet corpus needs docid (or id, _id) and text "
                    f"columns, title optional; its columns are: {', '.join(names) or 'none'}"
                )
            sources = {"docid": docid_col, "title": "title" if "title" in names else None, "text": "text"}
            plan: dict[str, str] = {}
            notes: list[str] = []
            for role, src in sources.items():
                if src is not None:
                    plan[role], note = _string_column(f, role, src, schema.field(src).type)
                    notes += [note] if note else []
            wanted = [src for src in sources.values() if src is not None]
            for batch in pf.iter_batches(batch_size=batch_rows, columns=wanted):
                n = batch.num_rows
                cols = {
                    role: _to_string(batch.column(src), plan[role]) if src else pa.nulls(n, pa.string())
                    for role, src in sources.items()
                }
                out = clean_passages(pa.table(cols), np.arange(next_row, next_row + n, dtype=np.int64))
                out.notes = notes
                next_row += n
                yield out


# ---- XQuAD ---------------------------------------------------------------------------------------------------
def load_json(uri: str) -> Any:
    """A whole JSON document from a local path or URI."""
    with open_stream(uri) as stream:
        data = stream.read()
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{uri} is not a valid UTF-8 JSON document: {e}") from None


def xquad_file(folder: str, lang: str) -> str:
    """The URI of xquad.<lang>.json in an XQuAD folder."""
    return f"{folder.rstrip('/')}/xquad.{lang}.json"


def xquad_articles(doc: Any, uri: str) -> list[Any]:
    """The article list of a SQuAD-format document, or a ValueError naming the file."""
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise ValueError(f"{uri} is not a SQuAD/XQuAD document: no 'data' list of articles at its top level")
    return data


def read_xquad_passages(folder: str) -> Iterator[PassageBlock]:
    """XQuAD's English paragraphs: docid xquad-<article>-<paragraph>, title the article title."""
    uri = xquad_file(folder, "en")
    docids, titles, texts, rows = [], [], [], []
    rejects: list[dict[str, Any]] = []
    i = 0
    for a, article in enumerate(xquad_articles(load_json(uri), uri)):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        title = article.get("title") if isinstance(article, dict) else None
        if not isinstance(title, str):
            title = None  # a missing title is allowed
        for p, para in enumerate(paragraphs if isinstance(paragraphs, list) else []):
            docid = xquad_docid(a, p)
            text = para.get("context") if isinstance(para, dict) else None
            if text is not None and not isinstance(text, str):
                rejects.append(_reject(i, "text is not a string", repr(para), key=docid))
            elif text is not None and not encodable(text):
                rejects.append(_reject(i, "invalid Unicode in text (lone surrogate escape)", repr(para), key=docid))
            elif title is not None and not encodable(title):
                rejects.append(_reject(i, "invalid Unicode in title (lone surrogate escape)", repr(title), key=docid))
            else:
                docids.append(docid)
                titles.append(title)
                texts.append(text)
                rows.append(i)
            i += 1
    yield clean_passages(_from_columns(docids, titles, texts), np.asarray(rows, dtype=np.int64), rejects)
