"""Training-data readers: Tevatron JSONL and DPR JSON, good and malformed rows, rejects with reasons."""

from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path

import pytest

from xqg.rundir import RunDir
from xqg.train.data import read_sources
from xqg.train.readers import Reject, TrainExample, hub_name, iter_json_array, read_training_file, row_language

P1 = {"docid": "d1", "title": "Hithal", "text": "Hithal is a market town."}
P2 = {"docid": "d2", "title": "Breldawen", "text": "Breldawen is a town in a valley."}
P3 = {"docid": "d3", "title": "", "text": "A passage without a title."}


def tevatron_rows() -> list[str]:
    """5 good rows, 5 malformed ones (as raw JSON lines)."""
    good = [
        {"query_id": "q1", "query": "Where is Hithal?", "lang": "en", "positive_passages": [P1], "negative_passages": [P2, P3]},
        {"query_id": "ja-2", "query": "Hithalはどこですか？", "positive_passages": [P1], "negative_passages": []},
        {"query_id": "q3", "query": "Who?", "language": " RU ", "positive_passages": [P2, P1]},  # no negatives key
        # an empty negative is dropped from the example, not the example
        {"query_id": "q4", "query": "What?", "positive_passages": [P3], "negative_passages": [{"docid": "x", "text": ""}]},
        # a passage without an id gets a content id
        {"query_id": 5, "query": "Id-less?", "positive_passages": [{"title": "T", "text": "Some text."}]},
    ]
    bad = [
        {"query_id": "b1", "query": "   ", "positive_passages": [P1]},  # empty query
        {"query_id": "b2", "query": "No positive?", "positive_passages": [], "negative_passages": [P2]},
        {"query_id": "b3", "query": "Empty positive?", "positive_passages": [{"docid": "e", "title": "t", "text": " "}]},
        ["not", "an", "object"],
    ]
    lines = [json.dumps(r, ensure_ascii=False) for r in good + bad]
    lines.insert(3, '{"query_id": "broken", "query": ')  # invalid JSON line
    lines.insert(5, "")  # blank lines are not rows
    return lines


def dpr_rows() -> list[object]:
    """4 good DPR examples and 4 malformed ones."""
    ctx = {"title": "Hithal", "text": "Hithal is a market town.", "score": 10, "passage_id": "101"}
    neg = {"title": "Breldawen", "text": "Breldawen is a town.", "psg_id": "102"}
    good = [
        {"question": "where is hithal", "answers": ["x"], "positive_ctxs": [ctx], "negative_ctxs": [], "hard_negative_ctxs": [neg]},
        {"question": "q2", "positive_ctxs": [ctx, neg], "hard_negative_ctxs": []},
        {"question": "q3", "positive_ctxs": [{"title": "No id", "text": "text"}]},
        {"question": "q4", "positive_ctxs": [ctx], "hard_negative_ctxs": [neg, neg, {"text": None}]},
    ]
    bad = [
        {"question": "", "positive_ctxs": [ctx]},
        {"question": "no positives", "positive_ctxs": [], "hard_negative_ctxs": [neg]},
        {"answers": ["y"], "text": "neither a question nor passages"},
        42,
    ]
    return [good[0], bad[0], good[1], bad[1], good[2], bad[2], good[3], bad[3]]


@pytest.fixture
def tevatron_file(tmp_path: Path) -> Path:
    path = tmp_path / "tevatron.jsonl"
    path.write_text("\n".join(tevatron_rows()) + "\n", encoding="utf-8")
    return path


def split(items: list[TrainExample | Reject]) -> tuple[list[TrainExample], list[Reject]]:
    return [e for e in items if isinstance(e, TrainExample)], [r for r in items if isinstance(r, Reject)]


def test_tevatron_jsonl_reads_good_rows_and_rejects_malformed_ones(tevatron_file: Path) -> None:
    good, bad = split(list(read_training_file(str(tevatron_file))))
    assert [e.query_id for e in good] == ["q1", "ja-2", "q3", "q4", "5"]
    assert sorted(r.reason for r in bad) == sorted(
        ["invalid JSON", "empty query", "no positive passage", "no positive passage", "not a JSON object"]
    )
    q1 = good[0]
    assert [p.docid for p in q1.positives] == ["d1"] and [p.docid for p in q1.negatives] == ["d2", "d3"]
    assert q1.negatives[1].title == "" and q1.negatives[1].text == P3["text"]
    assert good[3].negatives == []  # the empty negative was dropped
    assert good[4].positives[0].docid.startswith("sha1:")
    assert [e.lang for e in good] == ["en", "ja", "ru", None, None]
    assert {r.key for r in bad} >= {"b1", "b2", "b3"}  # rejects name the query when it has an id


def test_dpr_json_array_reads_hard_negatives_and_rejects_malformed_elements(tmp_path: Path) -> None:
    path = tmp_path / "dpr.json"
    path.write_text(json.dumps(dpr_rows(), indent=2), encoding="utf-8")
    good, bad = split(list(read_training_file(str(path))))
    assert [e.query for e in good] == ["where is hithal", "q2", "q3", "q4"]
    assert [p.docid for p in good[0].negatives] == ["102"]  # hard_negative_ctxs, not negative_ctxs
    assert [p.docid for p in good[0].positives] == ["101"]
    assert len(good[3].negatives) == 2  # the context without text is dropped
    assert sorted(r.reason for r in bad) == sorted([
        "empty query", "no positive passage", "not a JSON object",
        "unknown format: no query/question and no positive_passages/positive_ctxs",
    ])
    assert good[0].query_id == "dpr.json#0"


def test_gzipped_dpr_file_is_read_the_same(tmp_path: Path) -> None:
    plain, packed = tmp_path / "d.json", tmp_path / "d.json.gz"
    plain.write_text(json.dumps(dpr_rows()), encoding="utf-8")
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write(json.dumps(dpr_rows()))
    a = [(type(x).__name__, getattr(x, "query", None)) for x in read_training_file(str(plain))]
    b = [(type(x).__name__, getattr(x, "query", None)) for x in read_training_file(str(packed))]
    assert a == b and len(a) == 8


def test_json_array_is_streamed_across_chunk_boundaries() -> None:
    rows = [{"question": f"q{i}", "positive_ctxs": [{"text": "t" * (i % 7)}]} for i in range(50)]
    text = json.dumps(rows, indent=1)
    assert list(iter_json_array(io.StringIO(text), chunk_chars=5)) == rows


def test_truncated_json_array_is_an_error_not_a_silent_short_read() -> None:
    text = json.dumps([{"question": "a"}, {"question": "b"}])[:-8]
    with pytest.raises(ValueError):
        list(iter_json_array(io.StringIO(text), chunk_chars=4))


def test_rejects_are_written_per_file_with_exact_counts(tevatron_file: Path, tmp_path: Path) -> None:
    dpr = tmp_path / "dpr.json"
    dpr.write_text(json.dumps(dpr_rows()), encoding="utf-8")
    run = RunDir(str(tmp_path / "run"))
    kept: list[TrainExample] = []
    rows_in, rows_out, rejected = read_sources(
        run, "train_dr", [str(tevatron_file), str(dpr)], accept=lambda e: None, emit=kept.append
    )
    assert (rows_in, rows_out, rejected) == (18, 9, 9)
    table = run.read_rejects("train_dr")
    assert table.num_rows == 9
    assert sorted(set(table.column("unit").to_pylist())) == ["file=00000", "file=00001"]
    assert table.column("unit").to_pylist().count("file=00000") == 5
    assert all(table.column("reason").to_pylist()) and all(table.column("raw").to_pylist())


def test_accept_hook_turns_unwanted_examples_into_rejects(tevatron_file: Path, tmp_path: Path) -> None:
    run = RunDir(str(tmp_path / "run"))
    kept: list[TrainExample] = []
    rows_in, rows_out, rejected = read_sources(
        run, "train_qg", [str(tevatron_file)], accept=lambda e: None if e.lang == "ja" else "not ja", emit=kept.append
    )
    assert (rows_in, rows_out, rejected) == (10, 1, 9) and kept[0].query_id == "ja-2"


def test_language_comes_from_lang_then_language_then_query_id_prefix() -> None:
    assert row_language({"lang": "fi", "language": "ru"}, "ja-1") == ("fi", None)
    assert row_language({"language": "Ko"}, "x") == ("ko", None)
    assert row_language({}, "te_0042") == ("te", None)
    code, error = row_language({}, "-1000054735546624353")
    assert code is None and "no language" in error
    code, error = row_language({"lang": "xx"}, "q")
    assert code is None and "unknown language" in error


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="training file not found"):
        list(read_training_file(str(tmp_path / "nope.jsonl")))


def test_hub_dataset_names_and_the_optional_datasets_package(monkeypatch: pytest.MonkeyPatch) -> None:
    assert hub_name("hub:Tevatron/xor-tydi") == ("Tevatron/xor-tydi", "train")
    assert hub_name("hub:Tevatron/msmarco-passage:dev") == ("Tevatron/msmarco-passage", "dev")
    assert hub_name("Tevatron/xor-tydi") == ("Tevatron/xor-tydi", "train")
    assert hub_name("data/train.jsonl") is None and hub_name("s3://bucket/train.jsonl") is None
    # Without the package (None in sys.modules makes `import datasets` fail, installed or not): a clear error.
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ValueError, match="optional `datasets` package"):
        list(read_training_file("hub:Tevatron/xor-tydi"))


# ---- gp_squad (XOR-TyDi gold paragraphs, SQuAD layout) ------------------------------------------------------

GP1, GP2 = "Hithal is a market town on the Ganavane river.", "Breldawen is a town in a valley."


def gp_squad_doc() -> dict:
    """10 qa rows: 4 good ones (one without a language), 2 duplicate ids, 4 malformed."""
    def element(context: str, *qas: dict, title: str = "title:Hithal_parentSection:Intro") -> dict:
        return {"title": title, "paragraphs": [{"context": context, "qas": list(qas)}]}

    return {"data": [
        element(GP1, {"id": "-100", "question": "ヒサルはどこですか？", "answers": [{"text": "x", "answer_start": 0}],
                      "lang": "ja"},
                {"id": "-101", "question": "Missä Hithal on?", "lang": "fi"}),
        element(GP2, {"id": "-100", "question": "another question, same id", "lang": "ja"}),  # duplicate
        element(GP2, {"id": "ko-7", "question": "브렐다웬은 어디에 있습니까?"}, title="Breldawen"),  # language from the id
        element(GP2, {"id": "-102", "question": "no language anywhere?"}),  # XOR ids are bare numbers
        element("  ", {"id": "-103", "question": "empty context?", "lang": "ru"}),
        element(GP1, {"id": "-104", "question": "   ", "lang": "ru"}),
        {"title": "no paragraphs"},
        42,
        element(GP1, {"id": "-101", "question": "Missä on Hithal?", "lang": "fi"}),  # duplicate
    ], "version": "1.1"}


def test_gp_squad_reads_every_qa_and_removes_duplicate_question_ids(tmp_path: Path) -> None:
    path = tmp_path / "gp_squad_train_data.json"
    path.write_text(json.dumps(gp_squad_doc(), ensure_ascii=False, indent=1), encoding="utf-8")
    items = list(read_training_file(str(path)))
    good, bad = split(items)
    assert len(items) == 10 and len(good) + len(bad) == 10
    assert [e.query_id for e in good] == ["-100", "-101", "ko-7", "-102"]
    assert [e.query for e in good[:2]] == ["ヒサルはどこですか？", "Missä Hithal on?"]  # the first of each id is kept
    assert [e.lang for e in good] == ["ja", "fi", "ko", None] and "no language" in good[3].lang_error
    p = good[0].positives[0]
    assert (p.title, p.text) == ("Hithal", GP1) and good[0].negatives == [] and p.docid.startswith("sha1:")
    assert good[2].positives[0].title == "Breldawen"
    assert sorted(r.reason for r in bad) == sorted([
        "duplicate question id", "duplicate question id", "no positive passage", "empty query",
        "gp_squad data element without paragraphs", "not a JSON object",
    ])
    assert {r.key for r in bad if r.reason == "duplicate question id"} == {"-100", "-101"}


def test_gp_squad_layouts_read_the_same(tmp_path: Path) -> None:
    doc = gp_squad_doc()
    pretty, one_line, version_first, packed = (tmp_path / n for n in ("a.json", "b.json", "c.json", "d.json.gz"))
    pretty.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    one_line.write_text(json.dumps({"meta": {"x": [1]}, **doc}), encoding="utf-8")  # "data" not first: one JSON line
    version_first.write_text(json.dumps({"version": "1.1", "data": doc["data"]}), encoding="utf-8")
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write(json.dumps(doc))

    def view(path: Path) -> list[tuple]:  # rejects without an id are keyed by file and position: keep the position
        return [(type(x).__name__, getattr(x, "query_id", getattr(x, "key", "").split("#", 1)[-1]),
                 getattr(x, "reason", None)) for x in read_training_file(str(path))]

    assert view(pretty) == view(one_line) == view(version_first) == view(packed) and len(view(pretty)) == 10


def test_gp_squad_rows_in_equal_rows_out_plus_rejects(tmp_path: Path) -> None:
    path = tmp_path / "gp.json"
    path.write_text(json.dumps(gp_squad_doc()), encoding="utf-8")
    run = RunDir(str(tmp_path / "run"))
    kept: list[TrainExample] = []
    rows_in, rows_out, rejected = read_sources(
        run, "train_qg", [str(path)], accept=lambda e: None if e.lang else e.lang_error, emit=kept.append
    )
    assert (rows_in, rows_out, rejected) == (10, 3, 7) and rows_in == rows_out + rejected
    reasons = run.read_rejects("train_qg").column("reason").to_pylist()
    assert reasons.count("duplicate question id") == 2 and sum("no language" in r for r in reasons) == 1


def test_language_from_a_language_name_prefix() -> None:
    assert row_language({}, "japanese-1438027461050") == ("ja", None)
    assert row_language({}, "Finnish_12") == ("fi", None)
    assert row_language({}, "klingon-1")[0] is None
