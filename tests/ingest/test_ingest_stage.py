"""The ingest stage end to end: sharded output, markers, rejects, counts, reruns, resume, URIs, the job script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers.configs import demo_config, ingest_config
from helpers.paths import DEMO, DEMO_CONFIG, REPO
from xqg.config import load_config
from xqg.ingest.stage import run_ingest
from xqg.rundir import RunDir, shard_name


def _tree_state(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def _messy_corpus(tmp_path: Path) -> Path:
    """DPR TSV with a header, quoted text, duplicates and bad rows: 30 good + 3 duplicates + 4 bad rows."""
    lines = ["id\ttext\ttitle"]
    lines += [f'{i}\t"passage {i} says ""hello"""\tTitle {i}' for i in range(30)]
    lines += ["5\tsecond copy of 5\tDup", "17\tsecond copy of 17\tDup", "5\tthird copy of 5\tDup"]
    lines += ["40\t\tno text", "41\tmissing title field", "\tno id\tT"]
    path = tmp_path / "psgs.tsv"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"42\t\xff\xfe\tbad utf8\n")
    return path


def test_sharded_output_markers_and_counts_add_up(tmp_path: Path) -> None:
    config = ingest_config(tmp_path, str(_messy_corpus(tmp_path)), 4)
    summary = run_ingest(config)
    assert (summary.rows_in, summary.rows_out, summary.rejected) == (37, 30, 7) and summary.balanced
    run = RunDir(config.run_dir)
    assert run.corpus_shards() == [0, 1, 2, 3]
    markers = [run.read_marker("ingest", shard_name(s)) for s in range(4)]
    assert sum(m["rows_out"] for m in markers) == 30 == run.count_rows("corpus")
    assert sum(m["rejected"] for m in markers) == 3  # duplicates, found within their shard
    assert [m["rows_out"] for m in markers] == [run.count_rows(f"corpus/{shard_name(s)}") for s in range(4)]
    corpus = run.read_marker("ingest", "corpus")
    assert (corpus["rows_in"], corpus["rows_out"], corpus["rejected"]) == (37, 30, 7)
    rejects = run.read_rejects("ingest").to_pylist()
    assert Counter(r["reason"] for r in rejects) == {
        "duplicate docid (first kept)": 3, "empty text": 1, "expected 3 tab-separated fields, got 2": 1,
        "missing docid": 1, "undecodable line (bad UTF-8)": 1,
    }
    table = run.read_dir("corpus")
    assert table.schema.names == ["docid", "title", "text"]
    kept = {r["docid"]: r for r in table.to_pylist()}
    assert kept["5"] == {"docid": "5", "title": "Title 5", "text": 'passage 5 says "hello"'}  # the first copy
    assert Path(config.run_dir, "_configs", "ingest.yaml").exists()
    assert not Path(config.run_dir, "_tmp").exists()  # staging is cleaned up


def test_every_docid_lands_in_exactly_one_shard(tmp_path: Path) -> None:
    config = ingest_config(tmp_path, str(DEMO / "passages.jsonl"), 5)
    run_ingest(config)
    run = RunDir(config.run_dir)
    seen: dict[str, int] = {}
    for shard in range(5):
        for docid in run.read_dir(f"corpus/{shard_name(shard)}", columns=["docid"])["docid"].to_pylist():
            assert docid not in seen, f"{docid} in shards {seen.get(docid)} and {shard}"
            seen[docid] = shard
            assert zlib.crc32(docid.encode()) % 5 == shard  # the documented, reproducible assignment
    expected = [json.loads(line)["docid"] for line in (DEMO / "passages.jsonl").open(encoding="utf-8")]
    assert sorted(seen) == sorted(expected)
    assert len(set(seen.values())) == 5  # the demo's passages spread over every shard


def test_rerun_of_complete_ingest_is_a_noop(tmp_path: Path) -> None:
    queries = [{"name": "dev", "path": str(DEMO / "dev.jsonl"), "format": "xor_tydi"}]
    config = ingest_config(tmp_path, str(DEMO / "passages.jsonl"), 4, queries=queries)
    first = run_ingest(config)
    n_passages, n_dev = (sum(1 for _ in (DEMO / f).open(encoding="utf-8")) for f in ("passages.jsonl", "dev.jsonl"))
    assert first.units_done == 6 and first.rows_out == n_passages + n_dev  # 4 shards, the corpus pass, 1 query set
    before = _tree_state(Path(config.run_dir))
    again = run_ingest(config)
    assert again.units_done == 0 and again.units_skipped == 6 and again.rows_in == 0
    assert "nothing to do" in again.message
    assert _tree_state(Path(config.run_dir)) == before  # no file rewritten, none added or removed


def test_interrupted_corpus_is_redone_and_complete_query_sets_kept(tmp_path: Path) -> None:
    queries = [{"name": "dev", "path": str(DEMO / "dev.jsonl")}]
    config = ingest_config(tmp_path, str(_messy_corpus(tmp_path)), 4, queries=queries)
    run_ingest(config)
    root = Path(config.run_dir)
    query_marker = root / "_done/ingest/queries=dev.json"
    query_state = (query_marker.stat().st_mtime_ns, (root / "queries/dev/part-00000.parquet").stat().st_mtime_ns)
    # Simulate a crash mid-corpus: one shard marker and the corpus marker gone, stray partial output left.
    (root / "_done/ingest/shard=00002.json").unlink()
    (root / "_done/ingest/corpus.json").unlink()
    stray = root / "corpus/shard=00002/part-00001.parquet"
    stray.write_bytes(b"partial")
    summary = run_ingest(config)
    assert summary.units_done == 5 and summary.units_skipped == 1 and summary.balanced  # 4 shards + the pass
    assert (summary.rows_in, summary.rows_out, summary.rejected) == (37, 30, 7)
    assert not stray.exists()
    assert RunDir(config.run_dir).corpus_shards() == [0, 1, 2, 3]
    assert RunDir(config.run_dir).read_rejects("ingest").num_rows == 7  # rejects not doubled
    assert (query_marker.stat().st_mtime_ns, (root / "queries/dev/part-00000.parquet").stat().st_mtime_ns) == query_state


def test_other_shard_count_on_an_ingested_run_is_an_error(tmp_path: Path) -> None:
    run_ingest(ingest_config(tmp_path, str(DEMO / "passages.jsonl"), 2))
    with pytest.raises(ValueError, match="2 shards"):
        run_ingest(ingest_config(tmp_path, str(DEMO / "passages.jsonl"), 3))


def test_uri_corpus_and_run_dir(tmp_path: Path) -> None:
    corpus = _messy_corpus(tmp_path)
    config = ingest_config(tmp_path, corpus.as_uri(), 4, run_dir=(tmp_path / "urirun").as_uri())
    summary = run_ingest(config)
    assert summary.rows_out == 30 and summary.balanced
    assert len(list((tmp_path / "urirun" / "corpus").glob("shard=*/part-00000.parquet"))) == 4


def test_real_xor_tydi_and_xquad_ingest_counts_add_up(tmp_path: Path, shared_data: Path) -> None:
    xor_dev = shared_data / "xor_tydi" / "xor_dev_retrieve_eng_span_v1_1.jsonl"
    xor_train = shared_data / "xor_tydi" / "xor_train_retrieve_eng_span.jsonl"
    xquad_dir = shared_data / "xquad"
    queries = [
        {"name": "xor-dev", "path": str(xor_dev)},
        {"name": "xor-train", "path": str(xor_train)},
        {"name": "xquad", "path": str(xquad_dir), "format": "xquad", "languages": ["ar", "ru", "de", "zh", "hi"]},
    ]
    config = ingest_config(tmp_path, str(xquad_dir), 3, queries=queries)
    summary = run_ingest(config)
    assert summary.balanced and summary.rejected == 0
    run = RunDir(config.run_dir)
    n_dev = sum(1 for _ in xor_dev.open(encoding="utf-8"))
    n_train = sum(1 for _ in xor_train.open(encoding="utf-8"))
    assert run.read_marker("ingest", "queries=xor-dev")["rows_out"] == n_dev == run.count_rows("queries/xor-dev")
    train = run.read_marker("ingest", "queries=xor-train")
    assert train["rows_out"] == n_train and train["rejected"] == 0 and "ar" in train["languages"]
    xquad = run.read_marker("ingest", "queries=xquad")
    assert set(xquad["languages"]) == {"ar", "ru", "de", "zh", "hi"}
    assert summary.rows_in == 240 + n_dev + n_train + xquad["rows_in"]
    gold = {d for ds in run.read_dir("queries/xquad")["docids"].to_pylist() for d in ds}
    assert gold <= set(run.read_dir("corpus")["docid"].to_pylist())  # query gold ids match corpus docids
    assert "queries=xquad by language" in summary.extra


def test_job_script_writes_sharded_parquet(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "jobs/ingest.py", "--config", str(DEMO_CONFIG), "--set", f"run_dir={run_dir}"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ingest summary" in done.stdout and re.search(r"rows in = out \+ rejected +ok", done.stdout)
    config = demo_config(run_dir)
    shards = sorted(run_dir.glob("corpus/shard=*/part-00000.parquet"))
    assert len(shards) == config.corpus.num_shards
    # Every passage of the demo file, each in the shard its docid hashes to, none twice; every dev question too.
    expected = [json.loads(line)["docid"] for line in (REPO / config.corpus.path).open(encoding="utf-8")]
    written = {s.parent.name: pq.read_table(s, columns=["docid"])["docid"].to_pylist() for s in shards}
    assert sorted(d for ids in written.values() for d in ids) == sorted(expected)
    assert all(shard_name(zlib.crc32(d.encode()) % len(shards)) == name for name, ids in written.items() for d in ids)
    dev = [json.loads(line)["id"] for line in (REPO / config.queries[0].path).open(encoding="utf-8")]
    assert sorted(pq.read_table(run_dir / "queries" / "dev", columns=["qid"])["qid"].to_pylist()) == sorted(dev)
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_rejected_rows_stream_to_rejects_a_row_group_at_a_time_and_the_counts_add_up(tmp_path, monkeypatch):
    """A corpus with many bad rows: they reach rejects/ingest/corpus.parquet in several row groups (the driver held
    less than one group at a time, not every rejected row), and rows in = rows out + rejected."""
    import json as _json

    import pyarrow.parquet as pq

    from xqg.config import load_config
    from xqg.ingest.stage import run_ingest
    from xqg.rundir import RejectWriter, RunDir

    held: list[int] = []
    real_init, real_add = RejectWriter.__init__, RejectWriter.add

    def init(self, run, rel, unit, rows_per_group=65_536, sample=100):
        real_init(self, run, rel, unit, 50, sample)  # groups of 50 rows: 200 rejects make 4

    def add(self, rows):
        real_add(self, rows)
        held.append(len(self._buffer))

    monkeypatch.setattr(RejectWriter, "__init__", init)
    monkeypatch.setattr(RejectWriter, "add", add)
    rows = [{"docid": f"d{i}", "title": f"T{i}", "text": "" if i % 3 == 0 else f"text {i}"} for i in range(600)]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(_json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = load_config(None, [f"run_dir={tmp_path / 'run'}", f"corpus.path={corpus}", "corpus.format=jsonl",
                                "corpus.num_shards=2", "languages=[ar]"])
    summary = run_ingest(config)
    assert summary.ok and summary.rows_in == 600 and summary.rejected == 200 and summary.rows_out == 400
    run = RunDir(config.run_dir)
    with run.fs.open_input_file(run.path("rejects/ingest/corpus.parquet")) as f:
        meta = pq.ParquetFile(f).metadata
    assert meta.num_rows == 200 and meta.num_row_groups == 4
    assert held and max(held) < 50, "less than one row group of rejects held at once"
