"""The tune stage: the fusion chosen on the held-out set only, recorded with its scores, fingerprinted downstream."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from xqg.config import ConfigError, load_config
from xqg.encode.vectors import vector_column
from xqg.rundir import RunDir, shard_name
from xqg.tune import choose, run_fuse_sets, run_tune

# the tune unit and the fused sets run as Ray tasks on the workers
pytestmark = pytest.mark.usefixtures("ray_local")

DIM = 8
SHARDS = 2
N_PASSAGES = 40


def write_query_set(run: RunDir, name: str, rows: list[dict], vectors: np.ndarray) -> None:
    """A query set as ingest and encode write it: queries/<name> and embeddings/queries/<name>, with markers."""
    run.write_table(f"queries/{name}/part-00000.parquet", pa.table({
        "qid": [r["qid"] for r in rows], "lang": [r["lang"] for r in rows],
        "question": [r["question"] for r in rows],
        "answers": pa.array([r["answers"] for r in rows], pa.list_(pa.string())),
        "docids": pa.array([r["docids"] for r in rows], pa.list_(pa.string())),
    }))
    run.mark_done("ingest", f"queries={name}", rows_out=len(rows), content=repr(rows))
    run.write_table(f"embeddings/queries/{name}/part-00000.parquet", pa.table({
        "qid": [r["qid"] for r in rows], "lang": [r["lang"] for r in rows], "embedding": vector_column(vectors)}))
    run.mark_done("encode", f"queries/{name}", rows_out=len(rows), content=vectors.tobytes().hex())


def questions(passages: list[dict], picks: range, rng: np.random.Generator, e: np.ndarray, s: np.ndarray,
              prefix: str) -> tuple[list[dict], np.ndarray]:
    """Questions on the picked passages (the answer: the title's last word), embedded near e(p) + its query sum."""
    rows = [{"qid": f"{prefix}{i}", "lang": "ar", "question": f"q {i}", "answers": [passages[i]["title"].split()[-1]],
             "docids": [passages[i]["docid"]]} for i in picks]
    vecs = np.stack([0.3 * e[i] + s[i] / np.linalg.norm(s[i]) + 0.8 * rng.standard_normal(DIM) for i in picks])
    return rows, vecs.astype(np.float32)


@pytest.fixture
def tune_run(make_corpus_run, demo_passage_rows, tmp_path):
    """A 2-shard run with passage embeddings, Arabic query sums, and two query sets: heldout and dev."""
    passages = demo_passage_rows[:N_PASSAGES]
    run = make_corpus_run(passages, num_shards=SHARDS, run_dir=tmp_path / "run")
    rng = np.random.default_rng(0)
    e = rng.standard_normal((N_PASSAGES, DIM)).astype(np.float32) * 3
    s = rng.standard_normal((N_PASSAGES, DIM)).astype(np.float32) * rng.uniform(1, 20, (N_PASSAGES, 1))
    per = N_PASSAGES // SHARDS
    for sh in range(SHARDS):
        rows = slice(sh * per, (sh + 1) * per)
        ids = [p["docid"] for p in passages[rows]]
        run.write_table(f"embeddings/passages/{shard_name(sh)}/part-00000.parquet",
                        pa.table({"docid": ids, "embedding": vector_column(e[rows])}))
        run.mark_done("encode", f"passages/{shard_name(sh)}", rows_out=per)
        run.write_table(f"embeddings/generated/lang=ar/{shard_name(sh)}/part-00000.parquet", pa.table({
            "docid": ids, "lang": ["ar"] * per, "n": np.full(per, 3, np.int32), "embedding_sum": vector_column(s[rows])}))
        run.mark_done("encode", f"generated/lang=ar/{shard_name(sh)}", rows_out=per, max_n=3)
    write_query_set(run, "heldout", *questions(passages, range(0, 20), rng, e, s, "h"))
    write_query_set(run, "dev", *questions(passages, range(20, 40), rng, e, s, "d"))
    config = load_config(None, [
        f"run_dir={run.root}", "languages=[ar]", "search.depth=5", "tune.alphas=[0.01, 0.1, 0.5]",
        "queries=[{name: dev, path: dev.jsonl}, {name: heldout, path: heldout.jsonl}]", "tune.query_set=heldout",
    ])
    return run, config, passages, (e, s, rng)


def test_tune_records_the_best_fusion_on_the_heldout_set(tune_run) -> None:
    run, config, _, _ = tune_run
    summary = run_tune(config)
    assert summary.ok and summary.balanced and summary.units_done == 1 and summary.rows_in == 20
    doc = run.read_json("tune/xqg.json")
    assert doc["query_set"] == "heldout" and doc["questions"] == 20
    # the paper's fusion first, then every (reduction, alpha) of the grid once
    assert [(r["reduce"], r["alpha"]) for r in doc["grid"]] == [("sum", 0.01)] + [
        (r, a) for r in ("sum", "mean", "norm") for a in (0.01, 0.1, 0.5) if (r, a) != ("sum", 0.01)]
    best = choose(doc["grid"], "R@2kt")
    assert doc["choice"] == {"alpha": best["alpha"], "reduce": best["reduce"]}
    assert all(r["scores"]["R@2kt"] <= doc["choice_scores"]["R@2kt"] for r in doc["grid"])
    assert run.read_marker("tune", "xqg")["choice"] == doc["choice"]
    assert run_tune(config).units_skipped == 1  # nothing changed: nothing redone


def test_dev_never_influences_the_choice(tune_run) -> None:
    run, config, passages, (e, s, rng) = tune_run
    run_tune(config)
    before = run.read_text("tune/xqg.json")
    # Other dev questions, answers, gold passages and embeddings: the tune unit is not even stale ...
    rows, vecs = questions(passages, range(0, 40, 2), rng, e, s, "d")
    write_query_set(run, "dev", [{**r, "answers": ["1919"], "docids": [passages[39]["docid"]]} for r in rows], -vecs)
    assert run_tune(config).units_skipped == 1
    # ... and done again from scratch, its choice and scores are byte for byte the same.
    run.remove("tune")
    run.clear_markers("tune")
    assert run_tune(config).units_done == 1
    assert run.read_text("tune/xqg.json") == before
    # The held-out set decides: other held-out answers make the unit stale, and it is redone.
    hrows, hvecs = questions(passages, range(0, 20), np.random.default_rng(1), e, s, "h")
    write_query_set(run, "heldout", hrows, hvecs)
    again = run_tune(config)
    assert again.units_stale == 1 and again.units_done == 1


def test_a_new_choice_redoes_the_tuned_fused_set(tune_run) -> None:
    run, config, _, _ = tune_run
    run_tune(config)
    first = run_fuse_sets(config)
    assert [s.units_done for s in first] == [SHARDS, SHARDS]  # the paper's set and the tuned one
    marker = run.read_marker("tune", "xqg")
    choice = marker["choice"]
    other = {"alpha": 0.5 if choice["alpha"] != 0.5 else 0.1, "reduce": "mean"}
    kept = {k: v for k, v in marker.items() if k not in ("unit", "finished_at", "choice")}
    run.mark_done("tune", "xqg", **kept, choice=other)
    again = run_fuse_sets(config)
    assert again[0].units_skipped == SHARDS  # the paper's fusion does not depend on the choice
    assert again[1].units_stale == SHARDS and again[1].units_done == SHARDS
    fused = run.read_marker("fuse", f"xqg-tuned/{shard_name(0)}")
    assert (fused["inputs"]["alpha"], fused["inputs"]["reduce"]) == (other["alpha"], "mean")


def test_tuning_on_the_evaluated_set_is_refused(tmp_path) -> None:
    base = [f"run_dir={tmp_path}", "queries=[{name: dev, path: d.jsonl}, {name: heldout, path: h.jsonl}]"]
    with pytest.raises(ConfigError, match="never dev"):
        load_config(None, [*base, "tune.query_set=dev"])
    with pytest.raises(ConfigError, match="never dev"):
        load_config(None, [*base, "tune.query_set=heldout", "search.query_set=heldout"])
    with pytest.raises(ConfigError, match="not one of queries"):
        load_config(None, [*base, "tune.query_set=other"])
