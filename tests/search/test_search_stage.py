"""Search through real Ray actors over a sharded flat index, checked against brute-force numpy top-k."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from xqg.config import load_config
from xqg.encode.vectors import vector_column
from xqg.index.stage import run_index
from xqg.rundir import RunDir, shard_name
from xqg.search.merge import merge_topk
from xqg.search.stage import run_search

DIM = 16
SIZES = [70, 45, 85]


def write_inputs(run: RunDir, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Corpus markers and passage embeddings (shuffled docid names, so id order != row order)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((sum(SIZES), DIM)).astype(np.float32)
    names = [f"doc-{v:04d}" for v in rng.permutation(10_000)[: len(x)]]
    offset = 0
    for s, n in enumerate(SIZES):
        run.mark_done("ingest", shard_name(s), rows_out=n)
        run.write_table(f"embeddings/passages/{shard_name(s)}/part-00000.parquet",
                        pa.table({"docid": names[offset:offset + n], "embedding": vector_column(x[offset:offset + n])}))
        run.mark_done("encode", f"passages/{shard_name(s)}", rows_out=n)
        offset += n
    return x, names


def write_queries(run: RunDir, name: str, q: np.ndarray) -> list[str]:
    """An encoded query set, as the encode stage leaves it."""
    qids = [f"{name}-{i}" for i in range(len(q))]
    run.write_table(f"embeddings/queries/{name}/part-00000.parquet",
                    pa.table({"qid": qids, "lang": ["fi"] * len(q), "embedding": vector_column(q)}))
    run.mark_done("encode", f"queries/{name}", rows_out=len(q))
    return qids


def read_tsv(path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def searched(tmp_path_factory, ray_local):
    """A flat index of 200 vectors in 4 index shards, searched with 25 queries at depth 10."""
    root = tmp_path_factory.mktemp("search")
    run = RunDir(str(root / "run"))
    x, names = write_inputs(run)
    q = np.random.default_rng(1).standard_normal((25, DIM)).astype(np.float32)
    qids = write_queries(run, "dev", q)
    config = load_config(None, [f"run_dir={run.uri}", "index.shard_size=60", "search.depth=10",
                                "search.batch_size=7", "search.query_set=dev"])
    assert run_index(config, "baseline").units_done == 4
    summary = run_search(config, "baseline")
    return {"run": run, "root": root, "x": x, "names": names, "q": q, "qids": qids, "config": config,
            "summary": summary}


def test_flat_search_returns_exactly_the_brute_force_top_k(searched):
    x, q, names = searched["x"], searched["q"], searched["names"]
    lines = read_tsv(searched["root"] / "run/runs/baseline.tsv")
    assert lines[0] == ["qid", "docid", "rank", "score"]
    body = lines[1:]
    assert len(body) == 25 * 10
    scores = q @ x.T
    for i, qid in enumerate(searched["qids"]):
        rows = [r for r in body if r[0] == qid]
        top = np.argsort(-scores[i])[:10]
        assert [r[1] for r in rows] == [names[j] for j in top], f"query {qid}"
        assert [int(r[2]) for r in rows] == list(range(1, 11))
        np.testing.assert_allclose([float(r[3]) for r in rows], scores[i, top], rtol=1e-5, atol=1e-5)
    s = searched["summary"]
    assert s.balanced and s.rows_out == 25 and s.extra["index shards"] == 4


def test_trec_run_file_matches_the_tsv(searched):
    root = searched["root"]
    trec = [line.split(" ") for line in (root / "run/runs/baseline.trec").read_text().splitlines()]
    tsv = read_tsv(root / "run/runs/baseline.tsv")[1:]
    assert [(t[0], t[1], t[2], t[3], t[4], t[5]) for t in trec] == [(r[0], "Q0", r[1], r[2], r[3], "baseline") for r in tsv]


def test_other_query_set_gets_its_own_run_and_reruns_are_skipped(searched):
    run, config = searched["run"], searched["config"]
    again = run_search(config, "baseline")
    assert (again.units_done, again.units_skipped) == (0, 1)
    write_queries(run, "extra", searched["q"][:3])
    s = run_search(config, "baseline", "extra")
    assert s.units_done == 1
    assert len(read_tsv(searched["root"] / "run/runs/baseline.extra.tsv")) == 1 + 3 * 10
    assert run.is_done("search", "baseline.extra") and run.is_done("search", "baseline")


def test_missing_index_is_a_clear_error(searched):
    with pytest.raises(FileNotFoundError, match="jobs/index.py"):
        run_search(searched["config"], "xqg")


def test_merge_breaks_score_ties_by_docid_and_keeps_depth():
    part1 = pa.table({"q": pa.array([0, 0, 1], pa.int32()), "docid": ["b", "z", "c"],
                      "score": pa.array([1.0, 0.5, 2.0], pa.float32())})
    part2 = pa.table({"q": pa.array([0, 0, 1], pa.int32()), "docid": ["a", "y", "d"],
                      "score": pa.array([1.0, 0.7, 2.0], pa.float32())})
    for parts in ([part1, part2], [part2, part1]):  # whatever order the shards answer in
        merged = merge_topk(parts, depth=3)
        assert merged["docid"].to_pylist() == ["a", "b", "y", "c", "d"]
        assert merged["rank"].to_pylist() == [1, 2, 3, 1, 2]


def test_running_merge_equals_merging_every_shard_at_once_and_holds_only_depth_per_query():
    import numpy as np

    from xqg.search.merge import RunningTopK

    rng = np.random.default_rng(0)
    parts = [pa.table({"q": pa.array(np.repeat(np.arange(20), 10), pa.int32()),
                       "docid": [f"s{s}-d{i}" for i in range(200)],
                       "score": pa.array(rng.integers(0, 5, 200).astype(np.float32))})  # many ties
             for s in range(12)]
    top = RunningTopK(depth=7)
    for part in parts:
        top.add(part)
        assert top.result().num_rows <= 20 * 7, "the driver holds queries x depth hits, not every shard's"
    assert top.result().equals(merge_topk(parts, depth=7))
