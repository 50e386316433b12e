"""generate --encode: one Ray Data pipeline, generation actors straight into encoder actors; both stages marked."""

from __future__ import annotations

import numpy as np
import pytest

from xqg.config import load_config
from xqg.rundir import shard_name


@pytest.mark.slow  # two actor pools, two models: ~2 min on the contended 2-core machine
def test_streamed_units_are_generated_written_encoded_and_marked_as_the_two_stages_would(
    ray_local, tiny_mt5_dir, tiny_bert_dir, make_corpus_run, demo_passage_rows
):
    from xqg.encode.stage import run_encode
    from xqg.generate.stage import run_generate_encode

    run = make_corpus_run(demo_passage_rows[:10], num_shards=2)
    config = load_config(None, [
        f"run_dir={run.uri}", f"generate.model={tiny_mt5_dir}", "generate.backend=hf", "generate.num_queries=2",
        "generate.max_new_tokens=5", f"encode.model={tiny_bert_dir}", "languages=[sw]",
    ])
    gen, enc = run_generate_encode(config)
    units = [f"lang=sw/{shard_name(s)}" for s in (0, 1)]
    assert gen.ok and enc.ok and gen.units_done == enc.units_done == 2
    assert run.done_units("generate") == set(units)
    assert run.done_units("encode") == {f"generated/{u}" for u in units}
    for u in units:
        generated = run.read_dir(f"generated/{u}")  # the text is written for other stages and reruns
        sums = run.read_dir(f"embeddings/generated/{u}")
        assert sums.column("docid").to_pylist() == generated.column("docid").to_pylist() and sums.num_rows == 5
        nonblank = [sum(1 for q in qs if q.strip()) for qs in generated.column("queries").to_pylist()]
        assert sums.column("n").to_pylist() == nonblank  # each passage's generated queries, all of them encoded
        assert np.abs(np.stack(sums.column("embedding_sum").to_numpy(zero_copy_only=False))).sum() > 0
        # The encode unit is made from exactly the generate unit the marker now holds.
        assert run.read_marker("encode", f"generated/{u}")["inputs"]["input"] == run.read_marker("generate", u)["fingerprint"]
    again = run_encode(config, "generated", ["sw"])  # the plain encode stage sees them complete and current
    assert again.units_done == 0 and again.units_skipped == 2 and again.units_stale == 0


@pytest.mark.slow
def test_a_generate_unit_is_marked_when_its_queries_are_written_not_when_encoded_and_a_kill_loses_no_generation(
    tmp_path, tiny_mt5_dir, tiny_bert_dir, make_corpus_run, demo_passage_rows, ray_local, ray_address
):
    import time

    import yaml

    from processes import kill_job, start_job_on, wait_for, wait_until_cluster_idle

    shards = 4
    run = make_corpus_run(demo_passage_rows[:shards * 6], num_shards=shards, run_dir=tmp_path / "run")
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump({
        "run_dir": run.uri, "languages": ["sw"],
        "generate": {"model": tiny_mt5_dir, "backend": "hf", "num_queries": 2, "max_new_tokens": 5, "max_actors": 1},
        "encode": {"model": tiny_bert_dir, "max_actors": 1},
    }))
    units = {f"lang=sw/{shard_name(s)}" for s in range(shards)}
    log, held = tmp_path / "killed.log", tmp_path / "held"
    # The driver stops for good before it marks the first encode unit: encoding never completes in this job.
    proc = start_job_on(ray_address, "generate.py", config_path, log, "--encode", hold=("encode", 1, held))
    try:
        wait_for(held.exists, proc, log, "the hold before marking the first encode unit", timeout=240)
        deadline = time.monotonic() + 180
        while run.done_units("generate") != units and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        kill_job(proc)
    # Every generate unit was marked while no encode unit could be: marking does not wait for encoding.
    assert run.done_units("generate") == units, log.read_text()[-3000:]
    assert run.done_units("encode") == set()
    generated = {u: run.read_marker("generate", u) for u in units}
    wait_until_cluster_idle(ray_local)

    config = load_config(config_path)
    from xqg.generate.stage import run_generate_encode

    summaries = run_generate_encode(config)  # the rerun: nothing is generated again, everything is encoded
    assert all(s.ok for s in summaries), [s.render() for s in summaries]
    assert summaries[0].units_done == 0 and summaries[0].units_skipped == shards
    assert {u: run.read_marker("generate", u) for u in units} == generated  # not redone: the same markers
    assert run.done_units("encode") == {f"generated/{u}" for u in units}
