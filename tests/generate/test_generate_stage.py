"""The generate stage through a real local Ray: counts, schema, shard alignment, --languages, resume, rejects."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xqg.config import Config, load_config
from xqg.generate.stage import run_generate
from xqg.generate.unit import OUTPUT_SCHEMA
from xqg.languages import PAPER_LANGUAGES
from xqg.rundir import RunDir, shard_name

N = 2  # queries per passage in tests (the paper: 5)


def gen_config(run: RunDir, model: str, backend: str, *extra: str) -> Config:
    return load_config(None, [
        f"run_dir={run.uri}", f"generate.model={model}", f"generate.backend={backend}",
        f"generate.num_queries={N}", "generate.max_new_tokens=8", "generate.batch_size=8", *extra,
    ])


def snapshot(run: RunDir, *folders: str) -> dict[str, tuple[int, bytes]]:
    """mtime and bytes of every file under the folders (the markers' bulk-read cache aside: it follows them)."""
    out = {}
    for folder in folders:
        for p in sorted(Path(run.path(folder)).rglob("*")):
            if p.is_file() and not p.name.endswith(".cache.json"):
                out[str(p)] = (p.stat().st_mtime_ns, p.read_bytes())
    return out


@pytest.fixture(scope="module", params=["hf", "ctranslate2"])
def seven_language_run(request, ray_local, tiny_mt5_dir, make_corpus_run, demo_passage_rows):
    """40 demo passages in 2 shards, generated for the paper's 7 languages with one backend."""
    run = make_corpus_run(demo_passage_rows[:40], num_shards=2)
    config = gen_config(run, tiny_mt5_dir, request.param)
    summary = run_generate(config)
    return request.param, run, config, summary


def test_every_passage_gets_n_queries_in_all_seven_languages_shard_aligned(seven_language_run):
    backend, run, config, summary = seven_language_run
    assert summary.balanced and summary.units_done == 14 and summary.units_skipped == 0
    assert summary.rows_in == summary.rows_out == 40 * 7 and summary.rejected == 0
    assert summary.extra["queries generated"] == 40 * 7 * N
    assert run.done_units("generate") == {f"lang={lang}/{shard_name(s)}" for lang in PAPER_LANGUAGES for s in (0, 1)}
    for lang in PAPER_LANGUAGES:
        for s in (0, 1):
            corpus = run.read_dir(f"corpus/{shard_name(s)}")
            out = run.read_dir(f"generated/lang={lang}/{shard_name(s)}")
            assert out.schema == OUTPUT_SCHEMA
            assert out.column("docid").to_pylist() == corpus.column("docid").to_pylist()
            assert set(out.column("lang").to_pylist()) == {lang}
            assert all(len(q) == N for q in out.column("queries").to_pylist())
            assert run.read_marker("generate", f"lang={lang}/{shard_name(s)}")["rows_out"] == corpus.num_rows
    assert run.exists("_configs", "generate.yaml")
    if backend == "ctranslate2":
        assert list(Path(run.path("models", "ct2")).glob("*/model.bin")), "converted once into the run"


def test_languages_flag_adds_a_language_and_leaves_existing_files_untouched(seven_language_run):
    backend, run, config, _ = seven_language_run
    before = snapshot(run, "generated", "_done")
    summary = run_generate(config, languages=["sw"])
    assert summary.units_done == 2 and summary.units_skipped == 0 and summary.rows_out == 40
    after = snapshot(run, "generated", "_done")
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(k for k in after if k not in before) == sorted(
        str(Path(run.path(p))) for s in (0, 1)
        for p in (f"generated/lang=sw/{shard_name(s)}/part-00000.parquet", f"_done/generate/lang=sw/{shard_name(s)}.json")
    )
    again = run_generate(config)  # the config's 7 languages: all complete
    assert again.units_done == 0 and again.units_skipped == 14


def test_rerun_redoes_only_incomplete_units_removing_partial_output_with_the_same_queries(seven_language_run):
    backend, run, config, _ = seven_language_run
    unit = f"lang=ja/{shard_name(1)}"
    folder = Path(run.path(f"generated/{unit}"))
    original = run.read_dir(f"generated/{unit}")
    run.remove(run.marker_path("generate", unit))  # as if killed after writing, before the marker
    run.write_table(f"generated/{unit}/part-stale.parquet", original.slice(0, 3))  # junk of an older try
    summary = run_generate(config)
    assert summary.units_done == 1 and summary.units_skipped == 13
    assert sorted(p.name for p in folder.iterdir()) == ["part-00000.parquet"]
    assert run.read_dir(f"generated/{unit}").equals(original), "a redone unit must give the same queries"


def test_empty_and_very_long_passages_finish_and_rejects_add_up(ray_local, tiny_mt5_dir, make_corpus_run, demo_passage_rows):
    rows = [dict(r) for r in demo_passage_rows[:10]]
    rows[1].update(title="", text="")
    rows[2].update(title=None, text=None)
    rows[6].update(text="lorem ipsum " * 4200)  # ~50,000 characters
    rows[7].update(text="x" * 50_000)
    run = make_corpus_run(rows, num_shards=2)
    summary = run_generate(gen_config(run, tiny_mt5_dir, "ctranslate2", "languages=[ar,fi]"))
    assert summary.balanced and summary.rows_in == 10 * 2
    assert summary.rejected == 2 * 2 and summary.rows_out == 8 * 2
    rejects = run.read_rejects("generate")
    assert sorted(zip(rejects.column("unit").to_pylist(), rejects.column("key").to_pylist())) == sorted(
        (f"lang={lang}/{shard_name(0)}", rows[i]["docid"]) for lang in ("ar", "fi") for i in (1, 2)
    )
    assert set(rejects.column("reason").to_pylist()) == {"empty passage"}
    out = run.read_dir("generated")
    assert out.num_rows + rejects.num_rows == len(rows) * 2
    assert {rows[6]["docid"], rows[7]["docid"]} <= set(out.column("docid").to_pylist())


def test_missing_trained_generator_is_a_clear_error(ray_local, make_corpus_run, demo_passage_rows):
    run = make_corpus_run(demo_passage_rows[:4], num_shards=1)
    config = load_config(None, [f"run_dir={run.uri}"])
    with pytest.raises(FileNotFoundError, match="no trained query generator.*train_qg"):
        run_generate(config)


def test_shards_outside_the_corpus_are_refused(ray_local, tiny_mt5_dir, make_corpus_run, demo_passage_rows):
    run = make_corpus_run(demo_passage_rows[:4], num_shards=2)
    with pytest.raises(ValueError, match=r"--shards \[5\] are not in the ingested corpus"):
        run_generate(gen_config(run, tiny_mt5_dir, "hf"), shards={1, 5})
    assert not run.exists("generated")


def test_shards_selector_generates_only_those_shards(ray_local, tiny_mt5_dir, make_corpus_run, demo_passage_rows):
    run = make_corpus_run(demo_passage_rows[:9], num_shards=3)
    summary = run_generate(gen_config(run, tiny_mt5_dir, "hf", "languages=[te]"), shards={2})
    assert summary.units_done == 1 and summary.rows_out == 3
    assert run.done_units("generate") == {f"lang=te/{shard_name(2)}"}
    assert os.listdir(run.path("generated", "lang=te")) == [shard_name(2)]


@pytest.mark.parametrize("change", [
    "generate.top_k=3", "generate.temperature=0.7", "generate.template='Write a {language} question: {title} {text}'",
    "generate.num_queries=3", "generate.seed=7", "generate.max_new_tokens=9", "generate.compute_type=int8",
])
def test_every_setting_that_changes_the_queries_changes_every_unit_fingerprint(make_corpus_run, demo_passage_rows, change):
    from xqg.generate.stage import plan_units
    from xqg.runner import StageRunner

    run = make_corpus_run(demo_passage_rows[:8], num_shards=2)

    def fingerprints(*overrides: str, model: str = "sha:model-1") -> dict[str, str]:
        config = load_config(None, [f"run_dir={run.uri}", "languages=[ar, fi]", *overrides])
        units = plan_units(StageRunner(run, "generate"), config, model, config.languages, [0, 1])
        return {u.name: u.fingerprint for u in units}

    base = fingerprints()
    changed = fingerprints(change)
    assert base.keys() == changed.keys() and len(base) == 4
    assert all(base[u] != changed[u] for u in base), change
    assert fingerprints() == base, "the same settings give the same fingerprints"
    new_model = fingerprints(model="sha:model-2")
    assert all(base[u] != new_model[u] for u in base), "a retrained generator changes every unit"
    assert fingerprints("generate.batch_size=7", "generate.concurrency=3") == base, "speed settings change nothing"
