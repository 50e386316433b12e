"""Hostile inputs through the ingest stage: bad UTF-8, inputs that yield nothing, foreign TSV
headers, control characters in ids, Parquet columns of the wrong type, and the same checks on query sets.

Every case runs run_ingest on small files in tmp_path and checks the exact reject reasons, that
rows in = rows out + rejected, that an input yielding nothing raises one message naming the file and why,
and that nothing is marked complete for it.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.configs import ingest_config
from helpers.paths import DEMO
from xqg.ingest import stage as ingest_stage
from xqg.ingest.corpus import read_passages
from xqg.ingest.formats.dpr_tsv import REPEATED_HEADER
from xqg.ingest.stage import run_ingest
from xqg.rundir import RunDir


def _ingest(tmp_path: Path, corpus: Path | None, fmt: str = "auto", queries: list[dict] | None = None):
    """run_ingest; (summary, run, reject reasons counted)."""
    config = ingest_config(tmp_path, corpus, 2, fmt, queries)
    summary = run_ingest(config)
    run = RunDir(config.run_dir)
    return summary, run, Counter(run.read_rejects("ingest")["reason"].to_pylist())


def _refused(tmp_path: Path, corpus: Path, fmt: str = "auto", match: str | None = None) -> str:
    """run_ingest must raise one ValueError naming the file; nothing may be marked complete."""
    config = ingest_config(tmp_path, corpus, 2, fmt)
    with pytest.raises(ValueError, match=match) as info:
        run_ingest(config)
    message = str(info.value)
    assert str(corpus) in message
    assert RunDir(config.run_dir).done_units("ingest") == set()
    assert not (tmp_path / "run" / "corpus").exists()
    return message


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def _good(n: int, prefix: str = "d") -> list[dict]:
    return [{"docid": f"{prefix}{i}", "title": f"T{i}", "text": f"passage number {i}"} for i in range(n)]


def _corpus(run: RunDir) -> pa.Table:
    table = run.read_dir("corpus")
    table.validate(full=True)  # valid UTF-8 in every string: what encode will read
    return table


def _invalid_utf8_strings(values: list[bytes]) -> pa.Array:
    """A string array holding bytes that are not UTF-8 (as a careless writer leaves them in Parquet)."""
    offsets = np.cumsum([0] + [len(v) for v in values]).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), len(values), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))])


# ---- invalid UTF-8 / Unicode ---------------------------------------------------------------------------------
def test_jsonl_bad_utf8_is_rejected_on_the_fast_path_too(tmp_path: Path) -> None:
    # The block has no other fault, so pyarrow's fast path reads it: it used to copy the bytes into Parquet.
    path = tmp_path / "c.jsonl"
    path.write_bytes(
        _jsonl(_good(3))
        + b'{"docid": "bad1", "title": "t", "text": "caf\xe9 latin-1"}\n'         # bad UTF-8 in the text
        + b'{"docid": "bad2", "title": "t", "text": "ok", "x": "\xff\xfe"}\n'  # ... in an ignored field
        + b'{"docid": "bad3", "title": "\xc3", "text": "ok"}\n'                # truncated sequence in the title
        + _jsonl(_good(2, "e"))
    )
    summary, run, reasons = _ingest(tmp_path, path)
    assert reasons == {"undecodable line (bad UTF-8)": 3}
    assert (summary.rows_in, summary.rows_out, summary.rejected) == (8, 5, 3) and summary.ok
    assert sorted(_corpus(run)["docid"].to_pylist()) == ["d0", "d1", "d2", "e0", "e1"]
    keys = sorted(run.read_rejects("ingest")["key"].to_pylist())
    assert keys == ["row 3", "row 4", "row 5"]


def test_jsonl_and_tsv_reject_bad_utf8_alike(tmp_path: Path) -> None:
    tsv = tmp_path / "c.tsv"
    tsv.write_bytes(b"id\ttext\ttitle\n1\tgood text\tT\n2\tcaf\xe9\tT\n")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_bytes(b'{"id": "1", "text": "good text"}\n{"id": "2", "text": "caf\xe9"}\n')
    for path in (tsv, jsonl):
        for block_bytes in (1 << 20, 40):  # the fast path, and one line per block
            blocks = list(read_passages(str(path), block_bytes=block_bytes))
            assert [r["reason"] for b in blocks for r in b.rejects] == ["undecodable line (bad UTF-8)"]
            assert [d for b in blocks for d in b.table["docid"].to_pylist()] == ["1"]


def test_jsonl_lone_surrogate_escapes_are_rejected(tmp_path: Path) -> None:
    # A JSON \ud800 escape decodes to a str that cannot be written as UTF-8 (it used to crash the slow path).
    path = tmp_path / "c.jsonl"
    path.write_bytes(
        _jsonl(_good(2))
        + b'{"docid": "s1", "text": "x\\ud800y"}\n'
        + b'{"docid": "s2", "title": "\\udc00", "text": "ok"}\n'
        + b'{"docid": "s3\\ud83d", "text": "ok"}\n'
        + b'{"docid": "s4", "text": "a real pair \\ud83d\\ude00 is fine"}\n'
    )
    summary, run, reasons = _ingest(tmp_path, path)
    assert reasons == {
        "invalid Unicode in text (lone surrogate escape)": 1,
        "invalid Unicode in title (lone surrogate escape)": 1,
        "invalid Unicode in docid (lone surrogate escape)": 1,
    }
    assert (summary.rows_in, summary.rows_out, summary.rejected) == (6, 3, 3) and summary.ok
    kept = {r["docid"]: r["text"] for r in _corpus(run).to_pylist()}
    assert kept["s4"] == "a real pair \U0001F600 is fine"


def test_utf8_byte_order_mark_is_not_part_of_the_first_row(tmp_path: Path) -> None:
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + _jsonl(_good(2)))
    summary, run, reasons = _ingest(tmp_path / "a", jsonl)
    assert reasons == {} and sorted(_corpus(run)["docid"].to_pylist()) == ["d0", "d1"]
    tsv = tmp_path / "c.tsv"
    tsv.write_bytes(b"\xef\xbb\xbf7\tsome text\tT\n8\tmore text\tT\n")  # no header: the BOM sat on the first id
    summary, run, reasons = _ingest(tmp_path / "b", tsv)
    assert reasons == {} and sorted(_corpus(run)["docid"].to_pylist()) == ["7", "8"]


def test_parquet_strings_that_are_not_utf8_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    text = _invalid_utf8_strings([b"fine", b"caf\xe9", b"also fine"])
    title = pa.array([b"T0", b"T1", b"\xff"], pa.binary())  # a binary column: read as UTF-8 text
    pq.write_table(pa.table({"docid": ["a", "b", "c"], "title": title, "text": text}), path)
    summary, run, reasons = _ingest(tmp_path, path)
    assert reasons == {"bad UTF-8 in text": 1, "bad UTF-8 in title": 1}
    assert (summary.rows_in, summary.rows_out, summary.rejected) == (3, 1, 2) and summary.ok
    assert _corpus(run).to_pylist() == [{"docid": "a", "title": "T0", "text": "fine"}]
    assert "read as UTF-8 text" in summary.extra["corpus notes"]


# ---- inputs that yield no passage -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["empty.jsonl", "empty.tsv", "empty.jsonl.gz"])
def test_empty_corpus_file_is_an_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wb"):
            pass
    else:
        path.write_bytes(b"")
    message = _refused(tmp_path, path, match="holds no rows")
    assert "empty corpus is an error" in message


def test_blank_lines_only_and_header_only_are_empty(tmp_path: Path) -> None:
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(b"\n  \n\n")
    assert "(jsonl) holds no rows" in _refused(tmp_path / "a", blank)
    header = tmp_path / "header.tsv"
    header.write_bytes(b"id\ttext\ttitle\n")
    assert "(dpr_tsv) holds no rows" in _refused(tmp_path / "b", header)


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.tsv"])
def test_gzip_file_under_a_plain_name_is_an_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(gzip.compress(_jsonl(_good(50))))
    message = _refused(tmp_path, path, match="looks like gzip-compressed data")
    assert "name it .gz" in message
    assert not (tmp_path / "run" / "rejects").exists()  # refused before any row is read


def test_parquet_file_read_as_jsonl_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    pq.write_table(pa.table({"docid": ["a"], "text": ["x"]}), path)
    _refused(tmp_path, path, match="looks like a Parquet file")


def test_jsonl_read_as_dpr_tsv_is_an_error_with_reasons(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(_jsonl(_good(5)))
    message = _refused(tmp_path, path, fmt="dpr_tsv", match="no passage out of corpus")
    assert "(dpr_tsv)" in message and "all 5 rows read were rejected" in message
    assert "'expected 3 tab-separated fields, got 1' x5" in message
    assert "set corpus.format: jsonl" in message
    rejects = RunDir(str(tmp_path / "run")).read_rejects("ingest")  # kept for a look, not marked
    assert rejects.num_rows == 5


def test_every_row_rejected_is_an_error_naming_the_top_reasons(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(
        _jsonl([{"docid": f"e{i}", "text": " "} for i in range(4)] + [{"text": "no id"}] * 2 + [{"docid": "x"}])
        + b"not json\n"
    )
    message = _refused(tmp_path, path, match="all 8 rows read were rejected")
    assert "'empty text' x4; 'missing docid' x2; 'broken JSON: Expecting value' x1 and 1 other reason(s)" in message
    assert str(tmp_path / "run" / "rejects" / "ingest") in message


def test_a_corpus_that_starts_with_nothing_but_rejects_stops_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_stage, "GIVE_UP_AFTER_ROWS", 10)
    path = tmp_path / "corpus.tsv"
    path.write_bytes(b"".join(f"{i}\tno title field\n".encode() for i in range(30)) + b"99\tgood text\tT\n")
    # One read block holds all 31 rows: the check runs per block, so it sees the good row and goes on.
    summary, run, reasons = _ingest(tmp_path / "one-block", path)
    assert summary.rows_out == 1 and reasons == {"expected 3 tab-separated fields, got 2": 30}
    # Small blocks: once 10 rows or more are read without a passage, the reading stops with the one message.
    read = np.cumsum([b.rows_in for b in read_passages(str(path), block_bytes=64)])
    stop = int(read[np.argmax(read >= 10)])
    assert 10 <= stop < 30
    monkeypatch.setattr(ingest_stage, "read_passages", lambda uri, fmt: read_passages(uri, fmt, block_bytes=64))
    message = _refused(tmp_path / "small-blocks", path, match=f"the first {stop} rows \\(reading stopped there\\)")
    assert "no passage out of corpus" in message and f"'expected 3 tab-separated fields, got 2' x{stop}" in message
    assert RunDir(str(tmp_path / "small-blocks" / "run")).read_rejects("ingest").num_rows == stop


def test_a_complete_corpus_replaced_by_an_empty_file_is_unmarked(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(_jsonl(_good(6)))
    config = ingest_config(tmp_path, path, 2)
    assert run_ingest(config).rows_out == 6
    assert "corpus" in RunDir(config.run_dir).done_units("ingest")
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="holds no rows"):
        run_ingest(config)
    assert RunDir(config.run_dir).done_units("ingest") == set()  # the old pass is not left looking complete
    path.write_bytes(_jsonl(_good(3)))  # fixed: the next run (a new job on the same run) just works
    summary = run_ingest(config)
    assert summary.rows_out == 3 and summary.ok
    assert "corpus" in RunDir(config.run_dir).done_units("ingest")


# ---- TSV headers -----------------------------------------------------------------------------------------------
def test_tsv_header_that_is_not_dprs_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "corpus.tsv"
    path.write_bytes(b"pid\tbody\theading\n1\tsome text\tT\n")
    message = _refused(tmp_path, path, match="looks like a header")
    assert "(pid, body, heading)" in message and "no id (or docid, _id) and no text column" in message
    assert "id, text, title" in message


@pytest.mark.parametrize("header", [b"id\ttext\ttitle", b"docid\ttitle\ttext", b'"id"\t"text"\t"title"', b"ID\tText\tTitle",
                                    b"\xef\xbb\xbfid\ttext\ttitle"])
def test_dpr_and_enwiki_headers_are_recognised(tmp_path: Path, header: bytes) -> None:
    # psgs_w100.tsv and XOR-TyDi's enwiki_20190201_w100.tsv both start with id<TAB>text<TAB>title.
    names = [n.strip(b'"\xef\xbb\xbf').lower() for n in header.split(b"\t")]
    row = {b"id": b"11", b"docid": b"11", b"text": b"Aaron is a prophet", b"title": b"Aaron"}
    path = tmp_path / "corpus.tsv"
    path.write_bytes(header + b"\n" + b"\t".join(row[n] for n in names) + b"\n")
    summary, run, reasons = _ingest(tmp_path, path)
    assert reasons == {} and summary.rows_in == 1
    assert _corpus(run).to_pylist() == [{"docid": "11", "title": "Aaron", "text": "Aaron is a prophet"}]


def test_headerless_rows_are_still_data(tmp_path: Path) -> None:
    path = tmp_path / "corpus.tsv"
    path.write_bytes(b"doc-1\tA passage with words.\tTitle\n42\tx\ty\n")  # a text with spaces is no header
    summary, run, reasons = _ingest(tmp_path, path)
    assert reasons == {} and sorted(_corpus(run)["docid"].to_pylist()) == ["42", "doc-1"]


# ---- files joined with cat, two JSON values on one line ---------------------------------------------------------
@pytest.mark.parametrize("second_header", [b"id\ttext\ttitle", b"ID\tText\tTitle", b"docid\ttitle\ttext"])
@pytest.mark.parametrize("block_bytes", [1 << 20, 40])  # the fast path (pyarrow), and one line per block
def test_a_header_repeated_inside_a_tsv_is_a_reject_never_a_passage(
    tmp_path: Path, second_header: bytes, block_bytes: int
) -> None:
    # `cat a.tsv b.tsv > corpus.tsv`: b's header line sits among the rows; it used to become passage "id".
    first = b"id\ttext\ttitle\n1\tfirst passage\tA\n2\tsecond passage\tB\n"
    second = second_header + b"\n3\tthird passage\tC\n"
    path = tmp_path / "corpus.tsv"
    path.write_bytes(first + second)
    blocks = list(read_passages(str(path), block_bytes=block_bytes))
    assert [d for b in blocks for d in b.table["docid"].to_pylist()] == ["1", "2", "3"]
    rejects = [r for b in blocks for r in b.rejects]
    assert [(r["key"], r["reason"]) for r in rejects] == [("row 2", REPEATED_HEADER)]
    assert sum(b.rows_in for b in blocks) == 4  # three passages and the header, each accounted for once


def test_a_repeated_tsv_header_is_counted_as_a_reject_by_ingest(tmp_path: Path) -> None:
    path = tmp_path / "corpus.tsv"
    path.write_bytes(b"id\ttext\ttitle\n1\tfirst passage\tA\nid\ttext\ttitle\n2\tsecond passage\tB\n")
    summary, run, reasons = _ingest(tmp_path, path)
    assert reasons == {REPEATED_HEADER: 1}
    assert (summary.rows_in, summary.rows_out, summary.rejected) == (3, 2, 1) and summary.ok
    assert sorted(_corpus(run)["docid"].to_pylist()) == ["1", "2"]


TWO_ON_ONE_LINE = "more than one JSON value on one line (a missing line break?)"


@pytest.mark.parametrize("neighbour_broken", [False, True])  # True: the block takes the line-by-line path
@pytest.mark.parametrize("block_bytes", [1 << 20, 60])
def test_two_json_objects_on_one_line_are_one_reject_on_every_path(
    tmp_path: Path, neighbour_broken: bool, block_bytes: int
) -> None:
    # pyarrow read `{...} {...}` as two passages, json.loads as one broken line: which one a line got depended on
    # whether another line of its block was broken. Now it is one line, one reject, whatever its neighbours.
    rows = _good(4)
    lines = [json.dumps(rows[0]), json.dumps(rows[1]) + " " + json.dumps(rows[2]), json.dumps(rows[3])]
    lines += ['{"docid": "x", "text": broken'] if neighbour_broken else []
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    blocks = list(read_passages(str(path), block_bytes=block_bytes))
    assert [d for b in blocks for d in b.table["docid"].to_pylist()] == ["d0", "d3"]
    rejects = {r["key"]: r["reason"] for b in blocks for r in b.rejects}
    assert rejects["row 1"] == TWO_ON_ONE_LINE
    assert sum(b.rows_in for b in blocks) == len(lines)  # rows are lines


def test_trailing_garbage_after_a_json_object_is_broken_json_not_two_values(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(_jsonl(_good(1)) + b'{"docid": "g", "text": "t"} garbage\n')
    reasons = [r["reason"] for b in read_passages(str(path)) for r in b.rejects]
    assert reasons == ["broken JSON: Extra data"]


def test_two_query_objects_on_one_line_are_one_reject(tmp_path: Path) -> None:
    q = {"question": "Mikä?", "answers": ["a"], "lang": "fi"}
    queries = tmp_path / "dev.jsonl"
    queries.write_text(
        json.dumps({"id": "q0", **q}) + "\n" + json.dumps({"id": "q1", **q}) + json.dumps({"id": "q2", **q}) + "\n",
        encoding="utf-8",
    )
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(_jsonl(_good(2)))
    summary, run, reasons = _ingest(tmp_path, corpus, queries=[{"name": "dev", "path": str(queries)}])
    assert reasons == {TWO_ON_ONE_LINE: 1}
    assert run.read_dir("queries/dev")["qid"].to_pylist() == ["q0"]


# ---- control characters in docids --------------------------------------------------------------------------------
def test_control_characters_in_docids_are_rejected(tmp_path: Path) -> None:
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_bytes(
        _jsonl(_good(2))
        + _jsonl([
            {"docid": "a\u0000b", "text": "NUL inside"},
            {"docid": "\u001b[31mred", "text": "an escape sequence"},
            {"docid": "tab\tinside", "text": "a tab inside"},
            {"docid": "c1\u0085", "text": "a C1 control"},
            {"docid": "  padded  ", "text": "surrounding spaces are stripped, not rejected"},
            {"docid": "ok", "text": "control chars in text \u0007 are kept"},
        ])
    )
    summary, run, reasons = _ingest(tmp_path / "jsonl", jsonl)
    assert reasons == {"control character in docid": 3}  # "c1\u0085": U+0085 is whitespace, stripped
    assert (summary.rows_in, summary.rows_out, summary.rejected) == (8, 5, 3) and summary.ok
    assert sorted(_corpus(run)["docid"].to_pylist()) == ["c1", "d0", "d1", "ok", "padded"]
    keys = set(run.read_rejects("ingest")["key"].to_pylist())
    assert "a\\x00b" in keys  # printable key

    tsv = tmp_path / "c.tsv"
    tsv.write_bytes(b"id\ttext\ttitle\n1\tgood\tT\n2\x00\tNUL id\tT\n\x7f3\tDEL id\tT\n")
    summary, run, reasons = _ingest(tmp_path / "tsv", tsv)
    assert reasons == {"control character in docid": 2} and summary.rows_out == 1 and summary.balanced

    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"docid": ["p1", "p\x002", "p\x013"], "text": ["a", "b", "c"]}), parquet)
    summary, run, reasons = _ingest(tmp_path / "parquet", parquet)
    assert reasons == {"control character in docid": 2} and summary.rows_out == 1 and summary.balanced


# ---- Parquet column types --------------------------------------------------------------------------------------
def test_parquet_without_docid_or_text_is_an_error_naming_the_columns(tmp_path: Path) -> None:
    neither = tmp_path / "neither.parquet"
    pq.write_table(pa.table({"pid": ["1"], "body": ["x"]}), neither)
    message = _refused(tmp_path / "a", neither, match="no docid \\(or id, _id\\) and no text column")
    assert "its columns are: pid, body" in message
    no_text = tmp_path / "no_text.parquet"
    pq.write_table(pa.table({"id": ["1"], "contents": ["x"]}), no_text)
    message = _refused(tmp_path / "b", no_text, match="no text column: ")
    assert "no docid" not in message and "its columns are: id, contents" in message


def test_parquet_integer_ids_are_cast_and_said(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"docid": pa.array([7, 12345678901234], pa.int64()), "text": ["a", "b"],
                             "title": pa.array(["T", "U"]).dictionary_encode()}), path)
    summary, run, reasons = _ingest(tmp_path, path)
    assert reasons == {} and summary.ok
    assert sorted(_corpus(run)["docid"].to_pylist()) == ["12345678901234", "7"]
    assert "docid column 'docid' (int64) cast to string (integers: lossless)" in summary.extra["corpus notes"]


@pytest.mark.parametrize("column,values,type_", [
    ("title", [1.5, None], pa.float64()),
    ("text", [True, False], pa.bool_()),
    ("docid", [1.0, 2.0], pa.float32()),
])
def test_parquet_columns_that_do_not_cast_losslessly_are_an_error(tmp_path: Path, column: str, values: list, type_) -> None:
    cols = {"docid": ["a", "b"], "title": ["T", "U"], "text": ["x", "y"]}
    cols[column] = pa.array(values, type_)
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table(cols), path)
    message = _refused(tmp_path, path, match=f"the {column} column '{column}' is {type_}, not a string")
    assert "convert the column first" in message


def test_zero_byte_and_zero_row_parquet(tmp_path: Path) -> None:
    empty_file = tmp_path / "zero.parquet"
    empty_file.write_bytes(b"")
    _refused(tmp_path / "a", empty_file, match="is not a readable Parquet file")
    no_rows = tmp_path / "norows.parquet"
    pq.write_table(pa.table({"docid": pa.array([], pa.string()), "text": pa.array([], pa.string())}), no_rows)
    _refused(tmp_path / "b", no_rows, match="\\(parquet\\) holds no rows")


# ---- query sets ------------------------------------------------------------------------------------------------
def test_query_set_rows_with_bad_unicode_or_control_characters_are_rejected(tmp_path: Path) -> None:
    queries = tmp_path / "dev.jsonl"
    queries.write_bytes(
        _jsonl([{"id": "ok1", "question": "Mikä?", "answers": ["a"], "lang": "fi"}])
        + b'{"id": "q1", "question": "caf\xe9?", "answers": [], "lang": "fi"}\n'             # bad UTF-8
        + b'{"id": "q2", "question": "x\\ud800?", "answers": [], "lang": "fi"}\n'           # lone surrogate
        + b'{"id": "q3", "question": "ok?", "answers": ["\\udfff"], "lang": "fi"}\n'        # ... in an answer
        + b'{"id": "q\\u00004", "question": "ok?", "answers": [], "lang": "fi"}\n'          # NUL in the qid
        + b'{"id": "q5", "question": "ok?", "answers": [], "lang": "fi", "docid": "p\\u001b1"}\n'  # gold docid
        + _jsonl([{"id": "ok2", "question": "Что?", "answers": ["b"], "lang": "ru", "docid": "d0"}])
    )
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(_jsonl(_good(2)))
    summary, run, reasons = _ingest(tmp_path, corpus, queries=[{"name": "dev", "path": str(queries)}])
    assert reasons == {
        "undecodable line (bad UTF-8)": 1,
        "invalid Unicode in question (lone surrogate escape)": 1,
        "invalid Unicode in answers (lone surrogate escape)": 1,
        "control character in id": 1,
        "control character in docid": 1,
    }
    marker = run.read_marker("ingest", "queries=dev")
    assert (marker["rows_in"], marker["rows_out"], marker["rejected"]) == (7, 2, 5) and summary.ok
    table = run.read_dir("queries/dev")
    table.validate(full=True)
    assert table["qid"].to_pylist() == ["ok1", "ok2"]


def test_query_set_that_yields_nothing_fails_alone_with_its_reasons(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(_jsonl(_good(2)))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(_jsonl([{"id": str(i), "question": " ", "lang": "fi"} for i in range(3)]))
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    zipped = tmp_path / "zipped.jsonl"
    zipped.write_bytes(gzip.compress(_jsonl([{"id": "1", "question": "q?", "lang": "fi"}])))
    good = tmp_path / "good.jsonl"
    good.write_bytes(_jsonl([{"id": "1", "question": "q?", "answers": [], "lang": "fi"}]))
    queries = [{"name": n, "path": str(p)} for n, p in (("bad", bad), ("empty", empty), ("zipped", zipped), ("good", good))]
    summary, run, reasons = _ingest(tmp_path, corpus, queries=queries)
    assert not summary.ok and summary.units_failed == 3 and summary.balanced
    assert run.done_units("ingest") >= {"corpus", "queries=good"}
    assert not run.done_units("ingest") & {"queries=bad", "queries=empty", "queries=zipped"}
    assert f"no query out of query set 'bad' {bad} (xor_tydi): all 3 rows read were rejected" in summary.message
    assert "'empty question' x3" in summary.message
    assert f"query set 'empty' {empty} (xor_tydi) holds no rows" in summary.message
    assert f"{zipped} looks like gzip-compressed data" in summary.message
    assert reasons == {"empty question": 3}


def test_xquad_query_ids_with_control_characters_are_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "xq"
    folder.mkdir()

    def doc(ids: list[str]) -> dict:
        return {"data": [{"title": "A", "paragraphs": [
            {"context": "Para.", "qas": [{"id": i, "question": f"{i}?", "answers": [{"text": "x"}]} for i in ids]}]}]}

    (folder / "xquad.en.json").write_text(json.dumps(doc(["q1", "q\u00002"])), encoding="utf-8")
    (folder / "xquad.de.json").write_text(json.dumps(doc(["q1", "q\u00002"])), encoding="utf-8")
    summary, run, reasons = _ingest(tmp_path, folder, queries=[{"name": "xq", "path": str(folder), "format": "xquad"}])
    assert reasons == {"control character in id": 1} and summary.ok
    assert run.read_dir("queries/xq")["qid"].to_pylist() == ["q1-de"]


# ---- valid inputs stay valid -----------------------------------------------------------------------------------
def test_demo_data_still_ingests_fully(tmp_path: Path) -> None:
    queries = [{"name": "dev", "path": str(DEMO / "dev.jsonl"), "format": "xor_tydi"}]
    summary, run, reasons = _ingest(tmp_path, DEMO / "passages.jsonl", queries=queries)
    assert summary.ok and reasons == {}
    n_passages, n_dev = (sum(1 for _ in (DEMO / f).open(encoding="utf-8")) for f in ("passages.jsonl", "dev.jsonl"))
    assert _corpus(run).num_rows == n_passages and run.count_rows("queries/dev") == n_dev
    assert "corpus notes" not in summary.extra
