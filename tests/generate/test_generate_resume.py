"""Kill test: SIGKILL the generate job mid-run, rerun it, and get exactly what an uninterrupted run gives."""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from processes import kill_leftovers, processes_mentioning, start_job

from xqg.config import load_config
from xqg.generate.stage import run_generate
from xqg.rundir import RunDir

REPO = Path(__file__).resolve().parents[2]
LANGS = ["ar", "bn"]
SHARDS = 3


def table_rows(run: RunDir) -> list[tuple]:
    t = run.read_dir("generated").sort_by([("lang", "ascending"), ("docid", "ascending")])
    return list(zip(t.column("docid").to_pylist(), t.column("lang").to_pylist(), t.column("queries").to_pylist()))


@pytest.mark.slow
def test_killed_run_resumes_to_exactly_the_uninterrupted_result(
    tmp_path, tiny_mt5_dir, make_corpus_run, demo_passage_rows, ray_local
):
    rows = demo_passage_rows[:240]  # 80 per shard: units take long enough to kill one mid-run
    run = make_corpus_run(rows, num_shards=SHARDS, run_dir=tmp_path / "run")
    settings = {
        "run_dir": run.uri, "languages": LANGS,
        "generate": {"model": tiny_mt5_dir, "backend": "hf", "num_queries": 3, "max_new_tokens": 8, "batch_size": 16},
    }
    config_path = tmp_path / "generate.yaml"
    config_path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    ray_tmp = tempfile.mkdtemp(prefix="xqgk", dir="/tmp")  # short: Ray's socket paths live under it
    total = len(LANGS) * SHARDS
    try:
        proc = start_job("generate.py", config_path, ray_tmp, tmp_path / "killed.log")
        deadline = time.monotonic() + 240
        while not run.done_units("generate") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        marked = len(run.done_units("generate"))
        assert 1 <= marked < total, f"kill came too late or never: {marked} units marked\n" + (tmp_path / "killed.log").read_text()
        survivors = kill_leftovers(ray_tmp)
        print("processes of the killed job's Ray that outlived the process group kill:", survivors)
        assert processes_mentioning(ray_tmp) == [], "processes of the killed job's Ray cluster survived"

        proc = start_job("generate.py", config_path, ray_tmp, tmp_path / "resumed.log")
        assert proc.wait(timeout=300) == 0, (tmp_path / "resumed.log").read_text()
        log = (tmp_path / "resumed.log").read_text()
        assert re.search(rf"units skipped \(complete\) +{marked}\n", log)
        assert kill_leftovers(ray_tmp) == [], "a finished job left processes of its Ray cluster behind"
    finally:
        kill_leftovers(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)

    assert len(run.done_units("generate")) == total
    resumed = table_rows(run)
    pairs = [(d, lang) for d, lang, _ in resumed]
    assert len(pairs) == len(set(pairs)) == len(rows) * len(LANGS), "every (docid, lang) exactly once"

    reference = make_corpus_run(rows, num_shards=SHARDS, run_dir=tmp_path / "reference")
    ref_config = load_config(config_path, [f"run_dir={reference.uri}"])
    assert run_generate(ref_config).units_done == total
    assert table_rows(reference) == resumed, "resumed output differs from an uninterrupted run with the same seed"
