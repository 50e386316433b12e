"""Kill test: SIGKILL the generate job mid-run, rerun it, and get exactly what an uninterrupted run gives."""

from __future__ import annotations

import pytest
import yaml

from processes import kill_job, start_job_on, wait_for, wait_until_cluster_idle
from xqg.config import load_config
from xqg.generate.stage import run_generate
from xqg.rundir import RunDir

LANGS = ["ar", "bn"]
SHARDS = 3


def table_rows(run: RunDir) -> list[tuple]:
    t = run.read_dir("generated").sort_by([("lang", "ascending"), ("docid", "ascending")])
    return list(zip(t.column("docid").to_pylist(), t.column("lang").to_pylist(), t.column("queries").to_pylist()))


@pytest.mark.slow
def test_killed_run_resumes_to_exactly_the_uninterrupted_result(
    tmp_path, tiny_mt5_dir, make_corpus_run, demo_passage_rows, ray_local, ray_address
):
    rows = demo_passage_rows[:60]  # 20 per shard; the hold, not the size of a unit, makes the kill land mid-run
    run = make_corpus_run(rows, num_shards=SHARDS, run_dir=tmp_path / "run")
    settings = {
        "run_dir": run.uri, "languages": LANGS,
        "generate": {"model": tiny_mt5_dir, "backend": "hf", "num_queries": 3, "max_new_tokens": 8, "batch_size": 16},
    }
    config_path = tmp_path / "generate.yaml"
    config_path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    total = len(LANGS) * SHARDS
    log, held = tmp_path / "killed.log", tmp_path / "held"
    # on the session's Ray (no cluster start), held before marking its second unit
    proc = start_job_on(ray_address, "generate.py", config_path, log, hold=("generate", 2, held))
    try:
        wait_for(held.exists, proc, log, "the hold before marking the second unit", timeout=240)
    finally:
        kill_job(proc)
    marked = len(run.done_units("generate"))
    assert marked == 1, f"killed with one unit marked, the second written: {marked} units marked\n" + log.read_text()
    wait_until_cluster_idle(ray_local)  # no actor of the killed job survives it

    config = load_config(config_path)
    resumed_summary = run_generate(config)  # the rerun
    assert resumed_summary.ok and resumed_summary.units_skipped == marked and resumed_summary.units_stale == 0
    assert resumed_summary.units_done == total - marked
    assert len(run.done_units("generate")) == total
    resumed = table_rows(run)
    pairs = [(d, lang) for d, lang, _ in resumed]
    assert len(pairs) == len(set(pairs)) == len(rows) * len(LANGS), "every (docid, lang) exactly once"

    reference = make_corpus_run(rows, num_shards=SHARDS, run_dir=tmp_path / "reference")
    ref_config = load_config(config_path, [f"run_dir={reference.uri}"])
    assert run_generate(ref_config).units_done == total
    assert table_rows(reference) == resumed, "resumed output differs from an uninterrupted run with the same seed"
