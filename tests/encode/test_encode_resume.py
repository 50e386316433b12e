"""Kill test: SIGKILL jobs/encode.py mid-run, rerun it, and get exactly what an uninterrupted run gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from processes import kill_job, start_job_on, wait_for, wait_until_cluster_idle
from encode_helpers import install_dr, write_generated, write_query_set
from xqg.config import load_config
from xqg.encode.stage import run_encode
from xqg.encode.vectors import vector_matrix
from xqg.rundir import RunDir

LANGS = ["ar", "bn"]
SHARDS = 6
UNITS = SHARDS + len(LANGS) * SHARDS + 1


def make_run(rows: list[dict], run_dir: Path, model: str, make_corpus_run) -> RunDir:
    """Corpus, generated queries, a query set and models/dr, as the upstream stages leave them."""
    run = make_corpus_run(rows, num_shards=SHARDS, run_dir=run_dir)
    write_generated(run, rows, LANGS, SHARDS)
    questions = [{"id": f"q{i}", "lang": "ar", "question": r["title"] + "?", "answers": [r["title"]],
                  "docid": r["docid"]} for i, r in enumerate(rows[:20])]
    write_query_set(run, "dev", questions)
    install_dr(run, model)
    return run


def embeddings(run: RunDir) -> dict[str, tuple[list, np.ndarray]]:
    """Every embedding folder's ids and vectors."""
    out = {}
    for folder, key, col in (("passages", "docid", "embedding"), ("generated", "docid", "embedding_sum"),
                             ("queries/dev", "qid", "embedding")):
        t = run.read_dir(f"embeddings/{folder}")
        ids = list(zip(t[key].to_pylist(), t["lang"].to_pylist())) if "lang" in t.column_names else t[key].to_pylist()
        out[folder] = (ids, vector_matrix(t[col]))
    return out


@pytest.mark.slow
def test_killed_encode_resumes_to_exactly_the_uninterrupted_result(
    tmp_path, tiny_bert_dir, make_corpus_run, demo_passage_rows, ray_local, ray_address
):
    rows = demo_passage_rows[:120]
    run = make_run(rows, tmp_path / "run", tiny_bert_dir, make_corpus_run)
    settings = {"run_dir": run.uri, "languages": LANGS, "encode": {"batch_size": 8}}
    config_path = tmp_path / "encode.yaml"
    config_path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    log, held = tmp_path / "killed.log", tmp_path / "held"
    # on the session's Ray (no cluster start), held before marking its second unit
    proc = start_job_on(ray_address, "encode.py", config_path, log, "--target", "all", hold=("encode", 2, held))
    try:
        wait_for(held.exists, proc, log, "the hold before marking the second unit", timeout=240)
    finally:
        kill_job(proc)
    marked = len(run.done_units("encode"))
    assert marked == 1, f"killed with one unit marked, the second written: {marked} units\n" + log.read_text()
    wait_until_cluster_idle(ray_local)  # no actor of the killed job survives it

    resumed = run_encode(load_config(config_path), "all")  # the rerun
    assert resumed.ok and resumed.units_skipped == marked and resumed.units_stale == 0
    assert resumed.units_done == UNITS - marked
    assert len(run.done_units("encode")) == UNITS

    reference = make_run(rows, tmp_path / "reference", tiny_bert_dir, make_corpus_run)
    ref_config = load_config(config_path, [f"run_dir={reference.uri}"])
    assert run_encode(ref_config, "all").units_done == UNITS
    got, want = embeddings(run), embeddings(reference)
    for folder in want:
        assert got[folder][0] == want[folder][0], f"{folder}: rows differ (each exactly once, in order)"
        assert np.abs(got[folder][1] - want[folder][1]).max() < 1e-6, folder
