"""passage_texts looks up each shard's own docids (routed by ingest's shard hash) and finds every passage."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from helpers.configs import ingest_config
from xqg.evaluate.stage import passage_texts, wanted_by_shard
from xqg.ingest.stage import run_ingest
from xqg.rundir import RunDir


def ingested(folder: Path, n: int, num_shards: int) -> RunDir:
    """A run with n passages d<i> (title T<i>, text "text of passage <i>") ingested into num_shards shards."""
    rows = [{"docid": f"d{i}", "title": f"T{i}", "text": f"text of passage {i}"} for i in range(n)]
    corpus = folder / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = ingest_config(folder, corpus, num_shards, fmt="jsonl")
    assert run_ingest(config).ok
    return RunDir(config.run_dir)


def test_passage_texts_finds_every_wanted_passage_through_its_shard(tmp_path: Path) -> None:
    """Ingested into 7 shards, 300 passages; asking for 120 of them (and one unknown id) returns exactly those, and
    each shard is asked only for the docids that hash to it."""
    run = ingested(tmp_path, 300, num_shards=7)
    wanted = pa.array([f"d{i}" for i in range(0, 300, 5)] + [f"d{i}" for i in range(1, 300, 5)] + ["missing"])
    texts = passage_texts(run, wanted, include_title=True)
    assert texts == {f"d{i}": f"T{i} text of passage {i}" for i in range(300) if i % 5 in (0, 1)}
    routed = wanted_by_shard(run, run.corpus_shards(), wanted)
    assert sum(len(v) for v in routed.values()) == len(wanted)  # each docid goes to one shard, not to all 7
    for shard, want in routed.items():
        held = set(run.read_dir(f"corpus/shard={shard:05d}", columns=["docid"])["docid"].to_pylist())
        assert {d for d in want.to_pylist() if d != "missing"} <= held


def test_with_ray_the_shards_are_read_by_tasks_and_the_driver_gets_only_wanted_passages(ray_local, tmp_path, monkeypatch):
    run = ingested(tmp_path, 200, num_shards=4)
    driver_reads = []
    real = RunDir.read_dir
    # in this process only: Ray's workers import RunDir afresh, unpatched
    monkeypatch.setattr(RunDir, "read_dir", lambda self, rel, *a, **k: driver_reads.append(rel) or real(self, rel, *a, **k))
    wanted = pa.array([f"d{i}" for i in range(0, 200, 7)])
    texts = passage_texts(run, wanted, include_title=False)
    assert texts == {f"d{i}": f"text of passage {i}" for i in range(0, 200, 7)}
    assert not driver_reads, "the driver read a corpus shard itself"
