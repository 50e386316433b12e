"""The encode stage through a real local Ray and a tiny real BERT, checked against plain one-process encoding."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from encode_helpers import concat, dev_questions, direct_encode, install_dr, write_generated, write_query_set
from xqg.config import load_config
from xqg.encode.stage import run_encode
from xqg.encode.vectors import vector_matrix
from xqg.rundir import RunDir, shard_name

LANGS = ["ar", "fi"]
SHARDS = 2


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, tiny_bert_dir, make_corpus_run, demo_passage_rows, ray_local):
    """A run with 2 corpus shards (one bad passage), 2 languages of generated queries and a query set, all encoded."""
    rows = [dict(r) for r in demo_passage_rows[:24]]
    rows[5]["text"] = "  "
    rows[5]["title"] = ""  # nothing to encode: rejected with its reason
    rows[7]["title"] = None  # a passage without a title is still a passage
    run = make_corpus_run(rows, num_shards=SHARDS, run_dir=tmp_path_factory.mktemp("encode") / "run")
    lists = write_generated(run, rows, LANGS, SHARDS)
    questions = dev_questions(10) + [{"id": "blank", "lang": "ar", "question": " ", "answers": ["x"], "docid": "d"}]
    write_query_set(run, "dev", questions)
    install_dr(run, tiny_bert_dir)
    # batch_size 3 splits each shard into several length-sorted batches, each padded to its own length.
    # float32 storage: vectors are compared with one-process encoding to 1e-5 (float16: tests/test_storage.py)
    config = load_config(None, [f"run_dir={run.uri}", "encode.batch_size=3", "encode.chunk_size=5",
                                "storage.dtype=float32"])
    summary = run_encode(config, "all")  # one actor pool for the three targets
    return {"run": run, "rows": rows, "lists": lists, "questions": questions, "config": config,
            "summary": summary, "model": tiny_bert_dir}


def marker_totals(run: RunDir, prefix: str) -> dict[str, int]:
    """rows_in / rows_out / rejected / items summed over the encode markers of one target."""
    markers = [run.read_marker("encode", u) for u in run.done_units("encode") if u.startswith(prefix)]
    return {k: sum(m[k] for m in markers) for k in ("rows_in", "rows_out", "rejected", "items")}


def test_passage_embeddings_equal_one_process_encoding_whatever_the_batching(encoded):
    run, rows = encoded["run"], encoded["rows"]
    table = run.read_dir("embeddings/passages")
    kept = [r for r in rows if r["docid"] != rows[5]["docid"]]
    assert table["docid"].to_pylist() == [r["docid"] for r in kept], "shard order and row order are kept"
    assert pa.types.is_fixed_size_list(table.schema.field("embedding").type)
    got = vector_matrix(table["embedding"])
    # models/dr records Tevatron's format (train_dr's default): "title text" as one segment
    want = direct_encode(encoded["model"], concat(kept), None, 128, "cls")
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() < 1e-5
    pairs = direct_encode(encoded["model"], [r["title"] or "" for r in kept], [r["text"] for r in kept], 128, "cls")
    assert np.abs(got - pairs).max() > 1e-3, "not the (title, text) pair format"


def test_bad_passage_is_rejected_and_counts_add_up(encoded):
    run, s = encoded["run"], encoded["summary"]
    assert s.balanced and s.units_done == SHARDS + len(LANGS) * SHARDS + 1
    p = marker_totals(run, "passages/")
    assert (p["rows_in"], p["rows_out"], p["rejected"]) == (24, 23, 1)
    rejects = run.read_rejects("encode").to_pylist()
    assert [(r["key"], r["reason"]) for r in rejects if r["unit"].startswith("passages/")] == [
        (encoded["rows"][5]["docid"], "empty passage")
    ]
    for shard in range(SHARDS):
        marker = run.read_marker("encode", f"passages/{shard_name(shard)}")
        assert marker["rows_in"] == marker["rows_out"] + marker["rejected"] == 12


def test_generated_sums_equal_the_sum_of_each_query_embedding(encoded):
    run, lists = encoded["run"], encoded["lists"]
    table = run.read_dir("embeddings/generated")
    got = vector_matrix(table["embedding_sum"])
    keys = list(zip(table["docid"].to_pylist(), table["lang"].to_pylist()))
    flat = [(i, q) for i, k in enumerate(keys) for q in lists[k] if q.strip()]
    single = direct_encode(encoded["model"], [q for _, q in flat], None, 32, "cls")
    want = np.zeros_like(got)
    np.add.at(want, np.array([i for i, _ in flat]), single)
    assert np.abs(got - want).max() < 1e-4
    n = table["n"].to_pylist()
    assert n == [sum(1 for q in lists[k] if q.strip()) for k in keys]
    assert 0 in n and np.all(got[np.array(n) == 0] == 0), "a passage without queries sums to the zero vector"
    assert marker_totals(run, "generated/")["items"] == sum(n)


def test_generated_embeddings_store_one_vector_per_passage_and_language(encoded):
    run, rows = encoded["run"], encoded["rows"]
    files = run.parquet_files("embeddings/generated")
    assert len(files) == len(LANGS) * SHARDS
    table = run.read_dir("embeddings/generated")
    pairs = set(zip(table["docid"].to_pylist(), table["lang"].to_pylist()))
    assert table.num_rows == len(pairs) == len(rows) * len(LANGS), "one row per (passage, language)"
    dim = table.schema.field("embedding_sum").type.list_size
    queries = sum(table["n"].to_pylist())
    assert queries > table.num_rows * 2, "several queries per passage went in"
    stored = 0
    for f in files:  # float values actually written, from the Parquet column-chunk metadata
        meta = pq.ParquetFile(f).metadata
        for g in range(meta.num_row_groups):
            for c in range(meta.num_columns):
                col = meta.row_group(g).column(c)
                if col.physical_type == "FLOAT":
                    stored += col.num_values
    assert stored == table.num_rows * dim, "one stored vector per (passage, language), none per query"


def test_query_set_embeddings_and_blank_question_rejected(encoded):
    run = encoded["run"]
    q = marker_totals(run, "queries/")
    assert (q["rows_in"], q["rows_out"], q["rejected"]) == (11, 10, 1)
    table = run.read_dir("embeddings/queries/dev")
    good = encoded["questions"][:10]
    assert table["qid"].to_pylist() == [q["id"] for q in good]
    assert table["lang"].to_pylist() == [q["lang"] for q in good]
    want = direct_encode(encoded["model"], [q["question"] for q in good], None, 32, "cls")
    assert np.abs(vector_matrix(table["embedding"]) - want).max() < 1e-5
    rejects = [r for r in run.read_rejects("encode").to_pylist() if r["unit"] == "queries/dev"]
    assert [(r["key"], r["reason"]) for r in rejects] == [("blank", "empty question")]


def test_rerun_skips_complete_units_without_touching_output(encoded):
    run, config = encoded["run"], encoded["config"]
    before = {f: Path(f).stat().st_mtime_ns for f in run.parquet_files("embeddings")}
    summary = run_encode(config, "all")
    assert summary.units_done == 0
    assert summary.units_skipped == SHARDS + len(LANGS) * SHARDS + 1
    assert {f: Path(f).stat().st_mtime_ns for f in run.parquet_files("embeddings")} == before


def test_separate_encoders_mean_pooling_languages_and_first_k_queries(
    tmp_path, tiny_bert_dir, make_corpus_run, demo_passage_rows, ray_local
):
    import torch
    from transformers import AutoModel, AutoTokenizer

    rows = demo_passage_rows[30:36]
    run = make_corpus_run(rows, num_shards=1, run_dir=tmp_path / "run")
    lists = write_generated(run, rows, LANGS, 1)
    dr = Path(run.local_path("models", "dr"))
    shutil.copytree(tiny_bert_dir, dr / "query")
    # A passage encoder with other weights, so that using the wrong one shows.
    model = AutoModel.from_pretrained(tiny_bert_dir, add_pooling_layer=False)
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(dr / "passage")
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(dr / "passage")
    run.write_json("models/dr/xqg_dr.json", {"pooling": "mean", "shared_encoder": False, "q_max_len": 16,
                                             "p_max_len": 48, "passage_format": "title_text_pair"})
    config = load_config(None, [f"run_dir={run.uri}", "encode.batch_size=2", "encode.num_queries=1",
                                "storage.dtype=float32"])

    assert run_encode(config, "passages").units_done == 1
    got = vector_matrix(run.read_dir("embeddings/passages")["embedding"])
    want = direct_encode(str(dr / "passage"), [r["title"] for r in rows], [r["text"] for r in rows], 48, "mean")
    assert np.abs(got - want).max() < 1e-5
    other = direct_encode(str(dr / "query"), [r["title"] for r in rows], [r["text"] for r in rows], 48, "mean")
    assert np.abs(got - other).max() > 1e-3, "passages went through the passage encoder"

    s = run_encode(config, "generated", languages=["fi"])
    assert s.units_done == 1 and sorted(run.done_units("encode")) == [
        "generated-k1/lang=fi/shard=00000", "passages/shard=00000"
    ], "only fi, into the first-k variant"
    table = run.read_dir("embeddings/generated-k1")
    firsts = [lists[(d, "fi")][:1] for d in table["docid"].to_pylist()]
    assert table["n"].to_pylist() == [sum(1 for q in f if q.strip()) for f in firsts]
    texts = [f[0] for f in firsts if f and f[0].strip()]
    want = direct_encode(str(dr / "query"), texts, None, 16, "mean")
    has = np.array([bool(f and f[0].strip()) for f in firsts])
    got = vector_matrix(table["embedding_sum"])
    assert np.abs(got[has] - want).max() < 1e-5 and np.all(got[~has] == 0)


def test_missing_bi_encoder_is_a_clear_error(tmp_path, make_corpus_run, demo_passage_rows):
    run = make_corpus_run(demo_passage_rows[:2], num_shards=1, run_dir=tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="xqg_dr.json"):
        run_encode(load_config(None, [f"run_dir={run.uri}"]), "passages")
