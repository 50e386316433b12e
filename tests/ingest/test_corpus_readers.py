"""Passage readers: DPR TSV (quoted and not), JSONL, Parquet, XQuAD; good and malformed input, exact rejects."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xqg.ingest.corpus import detect_format, read_passages
from xqg.ingest.formats.dpr_tsv import _parse_tsv_fast, _parse_tsv_slow
from xqg.ingest.formats.xquad import xquad_docid

def _read_all(uri: str, fmt: str = "auto", **kw) -> tuple[pa.Table, list[dict]]:
    blocks = list(read_passages(uri, fmt, **kw))
    table = pa.concat_tables([b.table for b in blocks]) if blocks else None
    return table, [r for b in blocks for r in b.rejects]


def _reasons(rejects: list[dict]) -> Counter:
    return Counter(r["reason"] for r in rejects)


# DPR's psgs_w100.tsv wraps text (and any field with a quote) in double quotes and doubles inner quotes.
DPR_TSV = (
    'id\ttext\ttitle\n'
    '1\t"Aaron Aaron ( or ; ""Ahärôn"") is a prophet, high priest."\tAaron\n'
    '2\tUnquoted text with "inner quotes" kept as they are\tPlain\n'
    '3\t"NA"\t"Title ""quoted"""\n'
    '4\t"Text ending with a quote ""x"""\tNA\n'
)


def test_dpr_tsv_with_header_and_quotes_is_unquoted(tmp_path: Path) -> None:
    path = tmp_path / "psgs.tsv"
    path.write_text(DPR_TSV, encoding="utf-8")
    table, rejects = _read_all(str(path))
    assert rejects == []
    assert table.to_pylist() == [
        {"docid": "1", "title": "Aaron", "text": 'Aaron Aaron ( or ; "Ahärôn") is a prophet, high priest.'},
        {"docid": "2", "title": "Plain", "text": 'Unquoted text with "inner quotes" kept as they are'},
        {"docid": "3", "title": 'Title "quoted"', "text": "NA"},  # "NA" is text, never a null
        {"docid": "4", "title": "NA", "text": 'Text ending with a quote "x"'},
    ]


def test_dpr_tsv_fast_and_line_by_line_paths_agree(tmp_path: Path) -> None:
    block = DPR_TSV.split("\n", 1)[1].encode()
    names = ["id", "text", "title"]
    fast = _parse_tsv_fast(block, names)
    slow, rows, rejects = _parse_tsv_slow(block, names, first_row=0)
    assert rejects == [] and rows.tolist() == [0, 1, 2, 3]
    assert fast.to_pylist() == slow.to_pylist()


def test_dpr_tsv_without_header_and_gzipped(tmp_path: Path) -> None:
    path = tmp_path / "psgs.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("7\tsome text\tSome title\n8\t\"more \"\"text\"\"\"\tOther\n")
    assert detect_format(str(path)) == "dpr_tsv"
    table, rejects = _read_all(str(path))
    assert rejects == []
    assert table.to_pylist() == [
        {"docid": "7", "title": "Some title", "text": "some text"},
        {"docid": "8", "title": "Other", "text": 'more "text"'},
    ]


def test_dpr_tsv_malformed_rows_rejected_with_exact_counts(tmp_path: Path) -> None:
    lines = [b"id\ttext\ttitle"]
    good = [f"{i}\tgood text {i}\tT{i}".encode() for i in range(40)]
    lines += good[:10]
    lines += [
        b"100\t\tempty text",                    # empty text
        b"101\t   \twhitespace text",            # empty text
        b"102\tonly two fields",                 # missing field
        b"103\ta\tb\tc",                         # one field too many
        b"\xff\xfe\tbad utf8\tT",                # undecodable
        b"\tno docid\tT",                        # missing docid
        b'104\t"quoted\ttab inside"\tT104',      # a quoted field may hold a tab: accepted
    ]
    lines += good[10:]
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    # Small blocks: clean blocks take pyarrow's path, blocks with a bad line the line-by-line path.
    for block_bytes in (1 << 20, 200):
        table, rejects = _read_all(str(path), block_bytes=block_bytes)
        assert _reasons(rejects) == {
            "empty text": 2,
            "expected 3 tab-separated fields, got 2": 1,
            "expected 3 tab-separated fields, got 4": 1,
            "undecodable line (bad UTF-8)": 1,
            "missing docid": 1,
        }
        assert table.num_rows == 41
        assert table.num_rows + len(rejects) == len(lines) - 1
        assert {"docid": "104", "title": "T104", "text": "quoted\ttab inside"} in table.to_pylist()
        keys = {r["reason"]: r["key"] for r in rejects}
        assert keys["undecodable line (bad UTF-8)"] == "row 14"  # 0-based data row, same in both paths
        assert keys["missing docid"] == "row 15"


def test_jsonl_reader_accepts_aliases_int_ids_and_missing_title(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    rows = [
        {"docid": "a", "title": "A", "text": "alpha", "extra": {"nested": 1}},
        {"id": "b", "text": "beta"},
        {"_id": "c", "title": "C", "text": "gamma"},
        {"id": 42, "title": "D", "text": "delta"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    table, rejects = _read_all(str(path))
    assert rejects == []
    assert table.to_pylist() == [
        {"docid": "a", "title": "A", "text": "alpha"},
        {"docid": "b", "title": "", "text": "beta"},
        {"docid": "c", "title": "C", "text": "gamma"},
        {"docid": "42", "title": "D", "text": "delta"},
    ]


def test_jsonl_reader_malformed_rows_rejected_with_exact_counts(tmp_path: Path) -> None:
    good = [json.dumps({"docid": f"d{i}", "title": "t", "text": f"text {i}"}).encode() for i in range(5)]
    bad = [
        b'{"docid": "e1", "title": "t", "text": ""}',         # empty text
        b'{"docid": "e2", "title": "t"}',                     # missing text
        b'{"title": "t", "text": "no id"}',                   # missing docid
        b'{"docid": "e3", "text": "broken"',                  # broken JSON
        b'{"docid": "e4", "text": "\xff\xfe"}',               # bad UTF-8
        b'["not", "an", "object"]',                          # not an object
        b'{"docid": "e5", "text": ["a", "list"]}',            # wrong type
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(good[:2] + bad + good[2:]) + b"\n")
    table, rejects = _read_all(str(path))
    assert _reasons(rejects) == {
        "empty text": 1,
        "missing text": 1,
        "missing docid": 1,
        "broken JSON: Expecting ',' delimiter": 1,
        "undecodable line (bad UTF-8)": 1,
        "not a JSON object": 1,
        "text is not a string": 1,
    }
    assert table["docid"].to_pylist() == [f"d{i}" for i in range(5)]


def test_parquet_reader_file_and_folder_with_int_ids(tmp_path: Path) -> None:
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.table({"id": [1, 2], "text": ["one", " "], "title": ["T1", None]}), folder / "a.parquet")
    pq.write_table(pa.table({"id": [3], "text": ["three"], "title": ["T3"]}), folder / "b.parquet")
    assert detect_format(str(folder)) == "parquet"
    table, rejects = _read_all(str(folder))
    assert table.to_pylist() == [
        {"docid": "1", "title": "T1", "text": "one"},
        {"docid": "3", "title": "T3", "text": "three"},
    ]
    assert [(r["key"], r["reason"]) for r in rejects] == [("2", "empty text")]
    single, _ = _read_all(str(folder / "b.parquet"))
    assert single.num_rows == 1


def test_uri_paths_read_through_pyarrow(tmp_path: Path) -> None:
    path = tmp_path / "psgs.tsv"
    path.write_text(DPR_TSV, encoding="utf-8")
    table, rejects = _read_all(path.as_uri())  # file:///...
    assert table.num_rows == 4 and rejects == []


def _tiny_xquad(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    en = {"version": "1.1", "data": [
        {"title": "Art_A", "paragraphs": [
            {"context": "Paragraph A0.", "qas": [{"id": "q1", "question": "Q1?", "answers": [{"text": "A0", "answer_start": 0}]}]},
            {"context": "Paragraph A1.", "qas": [{"id": "q2", "question": "Q2?", "answers": [{"text": "A1", "answer_start": 0}, {"text": "A1", "answer_start": 0}]}]},
        ]},
        {"title": "Art_B", "paragraphs": [
            {"context": "   ", "qas": [{"id": "q3", "question": "Q3?", "answers": []}]},
        ]},
    ]}
    (folder / "xquad.en.json").write_text(json.dumps(en), encoding="utf-8")


def test_xquad_passages_are_english_paragraphs(tmp_path: Path) -> None:
    _tiny_xquad(tmp_path / "xq")
    assert detect_format(str(tmp_path / "xq")) == "xquad"
    table, rejects = _read_all(str(tmp_path / "xq"))
    assert table.to_pylist() == [
        {"docid": xquad_docid(0, 0), "title": "Art_A", "text": "Paragraph A0."},
        {"docid": xquad_docid(0, 1), "title": "Art_A", "text": "Paragraph A1."},
    ]
    assert [(r["key"], r["reason"]) for r in rejects] == [(xquad_docid(1, 0), "empty text")]


def test_real_xquad_has_240_unique_paragraphs(shared_data: Path) -> None:
    table, rejects = _read_all(str(shared_data / "xquad"))
    assert rejects == [] and table.num_rows == 240
    assert len(set(table["docid"].to_pylist())) == 240


def test_detect_format_refuses_unknown_names(tmp_path: Path) -> None:
    (tmp_path / "corpus.txt").write_text("x")
    with pytest.raises(ValueError, match="corpus.format"):
        detect_format(str(tmp_path / "corpus.txt"))
    assert detect_format(str(tmp_path / "corpus.txt"), "jsonl") == "jsonl"
    assert detect_format("s3://bucket/psgs_w100.tsv.gz") == "dpr_tsv"
    assert np.all([detect_format(f"x{e}") == "jsonl" for e in (".jsonl", ".jsonl.gz")])
