"""Query-set readers: XOR-TyDi JSONL and XQuAD; good and malformed input with exact reject counts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from xqg.config import QuerySetConfig
from xqg.ingest.corpus import read_passages
from xqg.ingest.formats.xquad import xquad_docid
from xqg.ingest.queries import read_query_set, read_xor_tydi, read_xquad_queries



def _reasons(rejects: list[dict]) -> Counter:
    return Counter(r["reason"] for r in rejects)


def test_xor_tydi_good_rows(tmp_path: Path) -> None:
    rows = [
        {"id": "1", "question": "ما هو؟", "answers": ["a", "b"], "lang": " ar", "split": "train"},  # stray space
        {"id": 2, "question": "Mikä?", "answers": [], "lang": "FI"},      # no answers: still a query
        {"id": "3", "question": "Was ist?", "lang": "de", "docid": "p7"},  # not a paper language: still valid
        {"id": "4", "question": "Что?", "answers": ["x"], "lang": "ru", "docid": ["p1", "p2"]},
    ]
    path = tmp_path / "dev.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    batch = read_xor_tydi(str(path))
    assert batch.rejects == []
    assert batch.table.to_pylist() == [
        {"qid": "1", "lang": "ar", "question": "ما هو؟", "answers": ["a", "b"], "docids": []},
        {"qid": "2", "lang": "fi", "question": "Mikä?", "answers": [], "docids": []},
        {"qid": "3", "lang": "de", "question": "Was ist?", "answers": [], "docids": ["p7"]},
        {"qid": "4", "lang": "ru", "question": "Что?", "answers": ["x"], "docids": ["p1", "p2"]},
    ]
    assert batch.languages() == {"ar": 1, "de": 1, "fi": 1, "ru": 1}


def test_xor_tydi_malformed_rows_rejected_with_exact_counts(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "ok1", "question": "q?", "answers": ["a"], "lang": "ja"}).encode(),
        json.dumps({"id": "e1", "question": "  ", "answers": ["a"], "lang": "ja"}).encode(),   # empty question
        json.dumps({"id": "e2", "answers": ["a"], "lang": "ja"}).encode(),                      # missing question
        json.dumps({"question": "q?", "answers": ["a"], "lang": "ja"}).encode(),                 # missing id
        json.dumps({"id": "e3", "question": "q?", "answers": ["a"]}).encode(),                   # missing lang
        json.dumps({"id": "e4", "question": "q?", "answers": ["a"], "lang": "xx"}).encode(),     # unknown lang
        json.dumps({"id": "e5", "question": "q?", "answers": "a", "lang": "ja"}).encode(),       # answers not a list
        b'{"id": "e6", "question": "\xff", "lang": "ja"}',                                       # bad UTF-8
        b'{"id": "e7", "question": "q?"',                                                        # broken JSON
        json.dumps({"id": "ok1", "question": "again?", "answers": [], "lang": "ko"}).encode(),   # duplicate id
        json.dumps({"id": "ok2", "question": "q2?", "answers": ["b"], "lang": "ko"}).encode(),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    batch = read_xor_tydi(str(path))
    assert _reasons(batch.rejects) == {
        "empty question": 1,
        "missing question": 1,
        "missing id": 1,
        "missing language code: None": 1,
        "unknown language code: 'xx'": 1,
        "answers is not a list of strings": 1,
        "undecodable line (bad UTF-8)": 1,
        "broken JSON: Expecting ',' delimiter": 1,
        "duplicate qid (first kept)": 1,
    }
    assert batch.table["qid"].to_pylist() == ["ok1", "ok2"]
    assert batch.table["question"].to_pylist()[0] == "q?"  # the first ok1 is kept
    assert batch.rows_in == len(lines)


def test_xor_tydi_set_languages_keep_only_those(tmp_path: Path) -> None:
    path = tmp_path / "dev.jsonl"
    rows = [{"id": str(i), "question": "q?", "answers": [], "lang": lang} for i, lang in enumerate(["ar", "fi", "ar", "te"])]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")  # no final newline
    qs = QuerySetConfig(name="dev", path=str(path), languages=[" AR", "te"])
    assert qs.languages == ["ar", "te"]
    batch = read_query_set(qs)
    assert batch.table["qid"].to_pylist() == ["0", "2", "3"]
    assert _reasons(batch.rejects) == {"language fi is not one of the query set's languages": 1}


def _tiny_xquad(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)

    def doc(questions: dict[str, str]) -> dict:
        return {"version": "1.1", "data": [
            {"title": "Art_A", "paragraphs": [
                {"context": "Para A0.", "qas": [{"id": "q1", "question": questions["q1"], "answers": [{"text": "x", "answer_start": 0}]}]},
                {"context": "Para A1.", "qas": [
                    {"id": "q2", "question": questions["q2"], "answers": [{"text": "A1", "answer_start": 0}, {"text": "A1", "answer_start": 0}, {"text": "a one", "answer_start": 0}]},
                    {"id": "q3", "question": questions["q3"], "answers": [{"text": "y", "answer_start": 0}]},
                ]},
            ]},
        ]}

    (folder / "xquad.en.json").write_text(json.dumps(doc({"q1": "Q1?", "q2": "Q2?", "q3": "Q3?"})), encoding="utf-8")
    (folder / "xquad.de.json").write_text(json.dumps(doc({"q1": "F1?", "q2": "F2?", "q3": " "})), encoding="utf-8")
    ar = doc({"q1": "س1؟", "q2": "س2؟", "q3": "س3؟"})
    ar["data"][0]["paragraphs"][1]["qas"][1]["id"] = "q9"  # no English counterpart
    (folder / "xquad.ar.json").write_text(json.dumps(ar, ensure_ascii=False), encoding="utf-8")


def test_xquad_questions_get_english_answers_and_paragraph(tmp_path: Path) -> None:
    _tiny_xquad(tmp_path / "xq")
    batch = read_xquad_queries(str(tmp_path / "xq"))  # every language but English
    assert batch.table.to_pylist() == [
        {"qid": "q1-ar", "lang": "ar", "question": "س1؟", "answers": ["x"], "docids": [xquad_docid(0, 0)]},
        {"qid": "q2-ar", "lang": "ar", "question": "س2؟", "answers": ["A1", "a one"], "docids": [xquad_docid(0, 1)]},
        {"qid": "q1-de", "lang": "de", "question": "F1?", "answers": ["x"], "docids": [xquad_docid(0, 0)]},
        {"qid": "q2-de", "lang": "de", "question": "F2?", "answers": ["A1", "a one"], "docids": [xquad_docid(0, 1)]},
    ]
    assert [(r["key"], r["reason"]) for r in batch.rejects] == [
        ("q9-ar", "no English question with this id in xquad.en.json"),
        ("q3-de", "empty question"),
    ]
    only_de = read_xquad_queries(str(tmp_path / "xq"), ["de"])
    assert only_de.languages() == {"de": 2} and only_de.rows_in == 3


def test_xquad_missing_language_file_is_an_error(tmp_path: Path) -> None:
    _tiny_xquad(tmp_path / "xq")
    with pytest.raises(FileNotFoundError, match="xquad.zh.json"):
        read_xquad_queries(str(tmp_path / "xq"), ["zh"])


def test_real_xor_tydi_dev_and_train(shared_data: Path) -> None:
    xor_dev = shared_data / "xor_tydi" / "xor_dev_retrieve_eng_span_v1_1.jsonl"
    xor_train = shared_data / "xor_tydi" / "xor_train_retrieve_eng_span.jsonl"
    dev = read_xor_tydi(str(xor_dev))
    assert dev.rejects == [] and dev.table.num_rows == sum(1 for _ in xor_dev.open(encoding="utf-8"))
    assert set(dev.languages()) == {"ar", "bn", "fi", "ja", "ko", "ru", "te"}
    train = read_xor_tydi(str(xor_train))
    raw_langs = Counter(json.loads(line)["lang"] for line in xor_train.open(encoding="utf-8"))
    assert " ar" in raw_langs  # the real file's stray space ...
    assert train.rejects == []  # ... is normalised, not rejected
    assert train.languages()["ar"] == raw_langs[" ar"] + raw_langs.get("ar", 0)


def test_real_xquad_five_languages_point_at_corpus_paragraphs(shared_data: Path) -> None:
    xquad = shared_data / "xquad"
    batch = read_xquad_queries(str(xquad), ["ar", "ru", "de", "zh", "hi"])
    assert batch.rejects == []
    counts = batch.languages()
    assert set(counts) == {"ar", "ru", "de", "zh", "hi"} and len(set(counts.values())) == 1
    docids = set(next(iter(read_passages(str(xquad)))).table["docid"].to_pylist())
    assert all(len(d) == 1 and d[0] in docids for d in batch.table["docids"].to_pylist())
    assert all(batch.table["answers"].to_pylist())  # every XQuAD question has an English answer
