"""Kill test: SIGKILL jobs/encode.py mid-run, rerun it, and get exactly what an uninterrupted run gives."""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from processes import kill_leftovers, processes_mentioning, start_job
from encode_helpers import install_dr, write_generated, write_query_set
from xqg.config import load_config
from xqg.encode.stage import run_encode
from xqg.encode.vectors import vector_matrix
from xqg.rundir import RunDir

REPO = Path(__file__).resolve().parents[2]
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
    tmp_path, tiny_bert_dir, make_corpus_run, demo_passage_rows, ray_local
):
    rows = demo_passage_rows[:120]
    run = make_run(rows, tmp_path / "run", tiny_bert_dir, make_corpus_run)
    # batch_size 1 makes each unit take long enough to kill the job between two units
    settings = {"run_dir": run.uri, "languages": LANGS, "encode": {"batch_size": 1}}
    config_path = tmp_path / "encode.yaml"
    config_path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    ray_tmp = tempfile.mkdtemp(prefix="xqge", dir="/tmp")  # short: Ray's socket paths live under it
    try:
        proc = start_job("encode.py", config_path, ray_tmp, tmp_path / "killed.log", "--target", "all")
        deadline = time.monotonic() + 240
        while not run.done_units("encode") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        marked = len(run.done_units("encode"))
        assert 1 <= marked < UNITS, f"kill came too late or never: {marked} units\n" + (tmp_path / "killed.log").read_text()
        kill_leftovers(ray_tmp)
        assert processes_mentioning(ray_tmp) == [], "processes of the killed job's Ray cluster survived"

        proc = start_job("encode.py", config_path, ray_tmp, tmp_path / "resumed.log", "--target", "all")
        assert proc.wait(timeout=300) == 0, (tmp_path / "resumed.log").read_text()
        log = (tmp_path / "resumed.log").read_text()
        assert re.search(rf"units skipped \(complete\) +{marked}\n", log), log
        assert kill_leftovers(ray_tmp) == [], "a finished job left processes of its Ray cluster behind"
    finally:
        kill_leftovers(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert len(run.done_units("encode")) == UNITS

    reference = make_run(rows, tmp_path / "reference", tiny_bert_dir, make_corpus_run)
    ref_config = load_config(config_path, [f"run_dir={reference.uri}"])
    assert run_encode(ref_config, "all").units_done == UNITS
    got, want = embeddings(run), embeddings(reference)
    for folder in want:
        assert got[folder][0] == want[folder][0], f"{folder}: rows differ (each exactly once, in order)"
        assert np.abs(got[folder][1] - want[folder][1]).max() < 1e-6, folder
