"""Passage readers: DPR TSV, JSONL, Parquet and XQuAD's English paragraphs, streamed as validated blocks.

Every reader yields PassageBlocks: the good rows as a (docid, title, text) string table and the bad rows as
reject dicts {key, reason, raw}, so that rows in = rows out + rows rejected holds block by block. Parsing runs
in pyarrow (threaded C++) on the hot path; a block that pyarrow refuses (a broken line, bad UTF-8, a field of
the wrong type) is redone line by line in Python so that only its bad lines are rejected.
"""

from __future__ import annotations

import csv
import json
import posixpath
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

from xqg.ingest.lines import BLOCK_BYTES, file_info, iter_line_blocks, open_stream, raw_text, split_lines

PASSAGE_SCHEMA = pa.schema([("docid", pa.string()), ("title", pa.string()), ("text", pa.string())])
DOCID_ALIASES = ("docid", "id", "_id")
TSV_DEFAULT_COLUMNS = ["id", "text", "title"]  # psgs_w100.tsv's order, used when a file has no header
PARQUET_BATCH_ROWS = 65_536


@dataclass
class PassageBlock:
    """Validated passages of one input block, and the rows rejected from it."""

    table: pa.Table
    rejects: list[dict[str, Any]] = field(default_factory=list)

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
def clean_passages(table: pa.Table, rows: np.ndarray, rejects: list[dict[str, Any]] | None = None) -> PassageBlock:
    """Validate docid/title/text string columns (nulls allowed); rows[i] is row i's index in the input.

    docids are stripped; a missing docid, a missing text or a whitespace-only text is a reject; a missing
    title becomes "" (many corpora have none).
    """
    rejects = list(rejects or [])
    docid = pc.utf8_trim_whitespace(table["docid"])
    text = table["text"]
    no_docid = pc.fill_null(pc.equal(docid, ""), True)
    no_text = pc.is_null(text)
    empty_text = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(text), ""), False)
    bad = pc.or_(pc.or_(no_docid, no_text), empty_text)
    clean = pa.table(
        {"docid": docid, "title": pc.fill_null(table["title"], ""), "text": text}, schema=PASSAGE_SCHEMA
    )
    if not pc.any(bad).as_py():
        return PassageBlock(clean, rejects)
    for i in np.flatnonzero(bad.to_numpy(zero_copy_only=False)):
        row = {k: table[k][int(i)].as_py() for k in ("docid", "title", "text")}
        if no_docid[int(i)].as_py():
            reason = "missing docid"
        elif no_text[int(i)].as_py():
            reason = "missing text"
        else:
            reason = "empty text"
        rejects.append({"key": row["docid"] or f"row {int(rows[i])}", "reason": reason, "raw": raw_text(json.dumps(row, ensure_ascii=False))})
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


def _tsv_columns(first_line: bytes) -> tuple[list[str], bool]:
    """(column names, True when first_line is a header)."""
    try:
        names = [_unquote_one(n.strip()).lower() for n in first_line.decode("utf-8-sig").rstrip("\r\n").split("\t")]
    except UnicodeDecodeError:
        names = []
    if "text" in names and any(a in names for a in DOCID_ALIASES):
        return names, True
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


def read_dpr_tsv(uri: str, block_bytes: int = BLOCK_BYTES) -> Iterator[PassageBlock]:
    """DPR's psgs_w100.tsv layout: id, text, title, tab-separated, with a header; fields may be CSV-quoted."""
    names: list[str] | None = None
    next_row = 0
    with open_stream(uri) as stream:
        for block in iter_line_blocks(stream, block_bytes):
            if names is None:
                cut = block.find(b"\n")
                first = block if cut < 0 else block[: cut + 1]
                names, is_header = _tsv_columns(first)
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
            out = clean_passages(table, rows, rejects)
            next_row += out.rows_in
            yield out


# ---- JSONL -------------------------------------------------------------------------------------------------
_JSONL_SCHEMA = pa.schema([(a, pa.string()) for a in DOCID_ALIASES] + [("title", pa.string()), ("text", pa.string())])


def _parse_jsonl_fast(block: bytes) -> pa.Table:
    table = pajson.read_json(
        pa.BufferReader(block),
        read_options=pajson.ReadOptions(use_threads=True, block_size=4 << 20),
        parse_options=pajson.ParseOptions(explicit_schema=_JSONL_SCHEMA, unexpected_field_behavior="ignore"),
    )
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


def parse_json_line(line: bytes, row: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(object, None) or (None, reject) for one JSON line."""
    try:
        s = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, _reject(row, "undecodable line (bad UTF-8)", line)
    try:
        obj = json.loads(s)
    except json.JSONDecodeError as e:
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
        for block in iter_line_blocks(stream, block_bytes):
            try:
                table = _parse_jsonl_fast(block)
                rows = np.arange(next_row, next_row + table.num_rows, dtype=np.int64)
                rejects: list[dict[str, Any]] = []
            except (pa.ArrowInvalid, UnicodeDecodeError):
                table, rows, rejects = _parse_jsonl_slow(block, next_row)
            out = clean_passages(table, rows, rejects)
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


def read_parquet_passages(uri: str, batch_rows: int = PARQUET_BATCH_ROWS) -> Iterator[PassageBlock]:
    """A Parquet file or folder of files with docid|id|_id, title (optional) and text columns."""
    fs, files = _parquet_files(uri)
    next_row = 0
    for f in files:
        with fs.open_input_file(f) as handle:
            pf = pq.ParquetFile(handle)
            names = pf.schema_arrow.names
            docid_col = next((a for a in DOCID_ALIASES if a in names), None)
            wanted = [c for c in (docid_col, "title", "text") if c and c in names]
            for batch in pf.iter_batches(batch_size=batch_rows, columns=wanted):
                n = batch.num_rows
                try:
                    cols = {
                        k: (batch.column(src).cast(pa.string()) if src in names else pa.nulls(n, pa.string()))
                        for k, src in (("docid", docid_col or "docid"), ("title", "title"), ("text", "text"))
                    }
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise ValueError(f"{f}: docid/title/text columns must be strings: {e}") from None
                out = clean_passages(pa.table(cols), np.arange(next_row, next_row + n, dtype=np.int64))
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


def read_xquad_passages(folder: str) -> Iterator[PassageBlock]:
    """XQuAD's English paragraphs: docid xquad-<article>-<paragraph>, title the article title."""
    doc = load_json(xquad_file(folder, "en"))
    docids, titles, texts = [], [], []
    for a, article in enumerate(doc.get("data", [])):
        for p, para in enumerate(article.get("paragraphs", [])):
            docids.append(xquad_docid(a, p))
            titles.append(article.get("title"))
            texts.append(para.get("context"))
    yield clean_passages(_from_columns(docids, titles, texts), np.arange(len(docids), dtype=np.int64))
