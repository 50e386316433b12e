"""Fusion against the formula computed with numpy on the same inputs, and its options and errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from xqg.config import Config, load_config
from xqg.encode.vectors import vector_column, vector_matrix
from xqg.fuse import run_fuse
from xqg.rundir import RunDir, shard_name

# fuse and index shards run as Ray tasks on the workers
pytestmark = pytest.mark.usefixtures("ray_local")

DIM = 8
SHARDS = 2
PER_SHARD = 6


def make_run(tmp_path, langs=("ar", "fi", "te"), variants=("generated",), max_n=5, seed=0) -> tuple[RunDir, dict]:
    """Corpus markers, passage embeddings and per-language query sums as the encode stage writes them.

    Generated rows are shuffled against the passage order, passage 0 of each shard has no generated rows
    in any language, and one generated row names a passage that does not exist.
    """
    rng = np.random.default_rng(seed)
    run = RunDir(str(tmp_path / "run"))
    data = {"e": {}, "sum": {}, "n": {}}
    for s in range(SHARDS):
        run.mark_done("ingest", shard_name(s), rows_out=PER_SHARD)
        docids = [f"d{s}-{i}" for i in range(PER_SHARD)]
        e = rng.standard_normal((PER_SHARD, DIM)).astype(np.float32)
        run.write_table(f"embeddings/passages/{shard_name(s)}/part-00000.parquet",
                        pa.table({"docid": docids, "embedding": vector_column(e)}))
        run.mark_done("encode", f"passages/{shard_name(s)}", rows_out=PER_SHARD)
        data["e"].update(zip(docids, e))
        for variant in variants:
            for lang in langs:
                order = rng.permutation(PER_SHARD - 1) + 1  # passage 0 has none; shuffled order
                ids = [docids[i] for i in order] + ["not-a-passage"]
                sums = rng.standard_normal((len(ids), DIM)).astype(np.float32)
                n = rng.integers(1, max_n + 1, len(ids)).astype(np.int32)
                run.write_table(f"embeddings/{variant}/lang={lang}/{shard_name(s)}/part-00000.parquet", pa.table({
                    "docid": ids, "lang": [lang] * len(ids), "n": n, "embedding_sum": vector_column(sums)}))
                run.mark_done("encode", f"{variant}/lang={lang}/{shard_name(s)}", rows_out=len(ids), max_n=int(n.max()))
                for d, v, k in zip(ids, sums, n):
                    data["sum"][(variant, lang, d)] = v
                    data["n"][(variant, lang, d)] = int(k)
    return run, data


def expected(data: dict, docid: str, alpha: float, langs, variant="generated", reduce="sum") -> np.ndarray:
    """The formula, written out with numpy for one passage."""
    e = data["e"][docid]
    keys = [(variant, lang, docid) for lang in langs if (variant, lang, docid) in data["sum"]]
    if not keys:
        return e
    total = np.sum([data["sum"][k] for k in keys], axis=0)
    if reduce == "mean":
        total = total / sum(data["n"][k] for k in keys)
    return (1 - alpha) * e + alpha * total


def fused(run: RunDir, name: str = "xqg") -> dict[str, np.ndarray]:
    t = run.read_dir(f"fused/{name}")
    return dict(zip(t["docid"].to_pylist(), vector_matrix(t["embedding"])))


def test_paper_setting_is_the_default():
    c = Config()
    assert (c.fuse.alpha, c.fuse.reduce, c.fuse.num_queries, c.fuse.languages) == (0.01, "sum", None, None)
    assert c.generate.num_queries * len(c.languages) == 35, "5 queries x 7 languages are summed"


def test_fuse_equals_the_formula_and_keeps_passages_without_queries(tmp_path):
    run, data = make_run(tmp_path)
    # float32 storage: the formula is checked to 1e-6 (float16 storage: tests/test_storage.py)
    s = run_fuse(load_config(None, [f"run_dir={run.uri}", "languages=[ar, fi, te]", "storage.dtype=float32"]))
    assert s.balanced and s.rows_out == SHARDS * PER_SHARD and s.units_done == SHARDS
    assert s.extra["passages without generated queries (kept e(p))"] == SHARDS
    assert s.extra["generated rows without a passage (ignored)"] == SHARDS * 3
    got = fused(run)
    assert list(got) == [f"d{s}-{i}" for s in range(SHARDS) for i in range(PER_SHARD)], "passage order kept"
    for docid, vec in got.items():
        np.testing.assert_allclose(vec, expected(data, docid, 0.01, ["ar", "fi", "te"]), rtol=1e-6, atol=1e-6)
    assert np.array_equal(got["d0-0"], data["e"]["d0-0"]), "no generated query: e(p) unchanged"


def test_mean_of_chosen_languages_and_rerun_with_new_alpha(tmp_path):
    run, data = make_run(tmp_path)
    overrides = [f"run_dir={run.uri}", "storage.dtype=float32", "languages=[ar, fi, te]", "fuse.alpha=0.3",
                 "fuse.reduce=mean", "fuse.languages=[te, ar]"]
    s = run_fuse(load_config(None, overrides))
    assert s.extra["languages"] == "ar,te"
    for docid, vec in fused(run).items():
        np.testing.assert_allclose(vec, expected(data, docid, 0.3, ["ar", "te"], reduce="mean"), rtol=1e-6, atol=1e-6)
    again = run_fuse(load_config(None, overrides))
    assert (again.units_done, again.units_skipped) == (0, SHARDS), "same settings: nothing redone"
    changed = run_fuse(load_config(None, [*overrides[:-1], "fuse.alpha=0.5", "fuse.languages=[te, ar]"]))
    assert changed.units_done == SHARDS, "other alpha: every shard redone"
    for docid, vec in fused(run).items():
        np.testing.assert_allclose(vec, expected(data, docid, 0.5, ["ar", "te"], reduce="mean"), rtol=1e-6, atol=1e-6)


def test_first_k_queries_use_their_own_encoded_variant(tmp_path):
    run, data = make_run(tmp_path, variants=("generated", "generated-k2"))
    run_fuse(load_config(None, [f"run_dir={run.uri}", "languages=[ar, fi, te]", "fuse.num_queries=2", "fuse.name=k2",
                                "storage.dtype=float32"]))
    for docid, vec in fused(run, "k2").items():
        want = expected(data, docid, 0.01, ["ar", "fi", "te"], variant="generated-k2")
        np.testing.assert_allclose(vec, want, rtol=1e-6, atol=1e-6)


def test_first_k_without_its_variant_is_a_clear_error_unless_no_list_is_longer(tmp_path):
    run, data = make_run(tmp_path, max_n=3)
    with pytest.raises(FileNotFoundError, match="--num-queries 2"):
        run_fuse(load_config(None, [f"run_dir={run.uri}", "languages=[ar, fi, te]", "fuse.num_queries=2"]))
    # No list is longer than 3: the full sums are the first-3 sums.
    s = run_fuse(load_config(None, [f"run_dir={run.uri}", "languages=[ar, fi, te]", "fuse.num_queries=3"]))
    assert s.extra["generated embeddings"] == "generated"


def test_missing_language_shard_is_a_clear_error(tmp_path):
    run, _ = make_run(tmp_path)
    run.remove("_done", "encode", "generated", "lang=fi", f"{shard_name(1)}.json")
    with pytest.raises(FileNotFoundError, match=r"\('fi', 1\)"):
        run_fuse(load_config(None, [f"run_dir={run.uri}", "languages=[ar, fi, te]"]))
    s = run_fuse(load_config(None, [f"run_dir={run.uri}", "languages=[ar, fi, te]", "fuse.languages=[ar, te]"]))
    assert s.units_done == SHARDS
