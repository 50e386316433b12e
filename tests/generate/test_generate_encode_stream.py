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
    from xqg.generate_encode import run_generate_encode

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
