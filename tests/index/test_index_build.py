"""Sharded FAISS indexes from embedding shards: files, order, rebuild rules, and IVF-PQ recall."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xqg.config import load_config
from xqg.encode.vectors import vector_column
from xqg.index.faiss_io import read_index_file, set_search_params
from xqg.index.stage import run_index
from xqg.rundir import RunDir, shard_name
from xqg.search.searcher import ShardSearcher

# fuse and index shards run as Ray tasks on the workers
pytestmark = pytest.mark.usefixtures("ray_local")


def write_embeddings(run: RunDir, sizes: list[int], dim: int, seed: int = 0, centers: int = 0,
                     dtype: str = "float32") -> np.ndarray:
    """Corpus markers + embeddings/passages shards (random, or clustered around `centers` random points), stored
    in dtype; returns the vectors as stored (widened to float32)."""
    rng = np.random.default_rng(seed)
    total = sum(sizes)
    if centers:
        c = rng.standard_normal((centers, dim)).astype(np.float32)
        x = c[rng.integers(0, centers, total)] + 0.5 * rng.standard_normal((total, dim)).astype(np.float32)
    else:
        x = rng.standard_normal((total, dim)).astype(np.float32)
    x = x.astype(dtype).astype(np.float32)
    offset = 0
    for s, n in enumerate(sizes):
        run.mark_done("ingest", shard_name(s), rows_out=n)
        docids = [f"p{offset + i:06d}" for i in range(n)]
        run.write_table(f"embeddings/passages/{shard_name(s)}/part-00000.parquet",
                        pa.table({"docid": docids, "embedding": vector_column(x[offset:offset + n], dtype)}))
        run.mark_done("encode", f"passages/{shard_name(s)}", rows_out=n)
        offset += n
    return x


def test_flat_index_is_sharded_with_docid_maps_and_a_manifest(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    x = write_embeddings(run, [50, 37, 64], dim=16)
    # float32 storage: the flat index holds its own FAISS copy of the vectors (as before storage.dtype existed)
    s = run_index(load_config(None, [f"run_dir={run.uri}", "index.shard_size=40", "storage.dtype=float32"]), "passages")
    assert s.balanced and s.rows_out == 151 and s.units_done == 4
    manifest = json.loads((tmp_path / "run/index/baseline/manifest.json").read_text())
    assert manifest["ntotal"] == 151 and manifest["dim"] == 16 and manifest["params"]["type"] == "flat"
    assert [sh["rows"] for sh in manifest["shards"]] == [40, 40, 40, 31]
    docids, vectors = [], []
    for i, sh in enumerate(manifest["shards"]):
        assert sh["index"] == f"index-{i:05d}.faiss" and sh["docids"] == f"docids-{i:05d}.parquet"
        index = faiss.read_index(str(tmp_path / "run/index/baseline" / sh["index"]))  # FAISS's own format
        assert isinstance(index, faiss.IndexFlatIP) and index.ntotal == sh["rows"]
        vectors.append(index.reconstruct_n(0, index.ntotal))
        docids += pq.read_table(tmp_path / "run/index/baseline" / sh["docids"])["docid"].to_pylist()
    assert docids == [f"p{i:06d}" for i in range(151)], "FAISS id r of shard i = row offset_i + r"
    assert np.array_equal(np.concatenate(vectors), x)


def test_flat_index_over_float16_storage_keeps_no_copy_and_searches_its_source(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    x = write_embeddings(run, [50, 37, 64], dim=16, dtype="float16")
    s = run_index(load_config(None, [f"run_dir={run.uri}", "index.shard_size=40", "storage.dtype=float16"]), "baseline")
    assert s.balanced and s.rows_out == 151 and s.units_done == 4
    manifest = json.loads((tmp_path / "run/index/baseline/manifest.json").read_text())
    assert manifest["params"] == {"type": "flat", "vectors": "source"}
    assert not list((tmp_path / "run/index/baseline").glob("*.faiss")), "no second copy of the vectors"
    # index shard 1 = global rows 40-79: the last 10 rows of source shard 0 and the first 30 of shard 1
    assert [(v["unit"], v["lo"], v["hi"]) for v in manifest["shards"][1]["vectors"]] == [
        ("passages/shard=00000", 40, 50), ("passages/shard=00001", 0, 30)]
    queries = np.random.default_rng(5).standard_normal((7, 16)).astype(np.float32)
    from xqg.search.merge import merge_topk

    hits = [ShardSearcher(run.uri, "index/baseline", sh, nprobe=1, ef_search=0, use_gpu=False).search(queries, 5)
            for sh in manifest["shards"]]
    merged = merge_topk(hits, 5)
    got = np.array([int(d[1:]) for d in merged["docid"].to_pylist()]).reshape(7, 5)
    exact = queries @ x.T  # the stored float16 values, widened: exactly what the index holds
    assert np.array_equal(got, np.argsort(-exact, axis=1)[:, :5])
    assert np.allclose(merged["score"].to_numpy().reshape(7, 5), np.sort(exact, axis=1)[:, ::-1][:, :5], atol=1e-5)

    from xqg.runner import StageRunner
    from xqg.search.stage import changed_sources

    assert changed_sources(StageRunner(run, "search"), manifest) == []
    run.mark_done("encode", f"passages/{shard_name(1)}", rows_out=37, fingerprint="re-encoded")
    assert changed_sources(StageRunner(run, "search"), manifest) == ["encode/passages/shard=00001"], (
        "a search over a source rewritten since the index was built must refuse")


def test_index_is_rebuilt_only_when_inputs_or_parameters_change(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    write_embeddings(run, [30, 30], dim=8)
    config = load_config(None, [f"run_dir={run.uri}", "index.shard_size=25"])
    assert run_index(config, "baseline").units_done == 3
    again = run_index(config, "baseline")
    assert (again.units_done, again.units_skipped) == (0, 3)
    # Re-encoding source shard 1 (rows 30-59) touches index shards 1 (rows 25-49) and 2 (50-59), not shard 0.
    run.mark_done("encode", f"passages/{shard_name(1)}", rows_out=30, fingerprint="re-encoded")
    redo = run_index(config, "baseline")
    assert (redo.units_done, redo.units_skipped, redo.units_stale) == (2, 1, 2)
    assert run_index(load_config(None, [f"run_dir={run.uri}", "index.shard_size=100"]), "baseline").units_done == 1
    assert not (tmp_path / "run/index/baseline/docids-00001.parquet").exists(), "stale shards removed"
    assert sorted(run.done_units("index")) == ["baseline/shard=00000"]


def test_fused_index_needs_every_fused_shard(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    write_embeddings(run, [10, 10], dim=8)
    with pytest.raises(FileNotFoundError, match="jobs/fuse.py"):
        run_index(load_config(None, [f"run_dir={run.uri}"]), "xqg")


def test_hnsw_index_finds_stored_vectors(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    x = write_embeddings(run, [300], dim=16)
    run_index(load_config(None, [f"run_dir={run.uri}", "index.type=hnsw", "index.hnsw_m=8"]), "baseline")
    index = read_index_file(run, "index/baseline/index-00000.faiss")
    set_search_params(index, ef_search=64)
    _, ids = index.search(x[:20], 1)
    exact = np.argmax(x[:20] @ x.T, axis=1)
    assert (ids[:, 0] == exact).mean() >= 0.9


@pytest.fixture
def one_faiss_thread():
    """FAISS on one OpenMP thread: spinning OpenMP threads crawl on an oversubscribed 2-core machine."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.mark.slow
def test_ivfpq_recall_at_10_against_exact_search_on_100k_vectors(tmp_path, one_faiss_thread):
    """100k random vectors (1,000 Gaussian clusters, d=64), IVF128,PQ64x8 trained once on 10k, nprobe 16.

    recall@10 here is the strict one: |approximate top-10 ∩ exact top-10| / 10, averaged over 300 queries.
    Clustered like real embeddings: on isotropic Gaussian data the top-10 scores lie within the PQ error of
    each other (PQ32x8 there: about 0.7 at this nprobe).
    """
    run = RunDir(str(tmp_path / "run"))
    x = write_embeddings(run, [40_000, 35_000, 25_000], dim=64, seed=1, centers=1000)
    overrides = [f"run_dir={run.uri}", "index.type=ivfpq", "index.nlist=128", "index.pq_m=64",
                 "index.train_sample=10000", "index.shard_size=50000", "index.nprobe=16"]
    s = run_index(load_config(None, overrides), "baseline")
    assert s.rows_out == 100_000 and s.units_done == 3  # the trained template + 2 shards
    manifest = json.loads((tmp_path / "run/index/baseline/manifest.json").read_text())
    assert manifest["params"] == {"type": "ivfpq", "nlist": 128, "pq_m": 64, "pq_nbits": 8}
    assert (tmp_path / "run/index/baseline/trained.faiss").exists(), "one training, shared by the shards"
    rng = np.random.default_rng(2)
    queries = x[rng.choice(len(x), 300, replace=False)] + 0.5 * rng.standard_normal((300, 64)).astype(np.float32)
    hits = []
    for sh in manifest["shards"]:
        searcher = ShardSearcher(run.uri, "index/baseline", sh, nprobe=16, ef_search=0, use_gpu=False)
        hits.append(searcher.search(queries, 10))
    from xqg.search.merge import merge_topk

    merged = merge_topk(hits, 10)
    got = np.array([int(d[1:]) for d in merged["docid"].to_pylist()]).reshape(300, 10)
    exact = np.argsort(-(queries @ x.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact)])
    assert recall >= 0.9, recall


def test_pq_m_must_divide_the_dimension(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    write_embeddings(run, [600], dim=10)
    with pytest.raises(ValueError, match="pq_m"):
        run_index(load_config(None, [f"run_dir={run.uri}", "index.type=ivfpq", "index.pq_m=4"]), "baseline")
