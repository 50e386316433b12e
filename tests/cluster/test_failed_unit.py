"""A failed unit costs one unit: a corrupt corpus shard fails its unit alone, named, with a non-zero exit; a rerun
after the shard is restored does exactly that unit. On the session's local Ray (cheap)."""

from __future__ import annotations

from pathlib import Path

from xqg.rundir import shard_name


def test_a_corrupt_shard_fails_its_unit_alone_and_a_rerun_redoes_exactly_it(
    ray_local, tiny_mt5_dir, make_corpus_run, demo_passage_rows, capsys
):
    from xqg.cli import run_job
    from xqg.commands import get_command

    run = make_corpus_run(demo_passage_rows[:12], num_shards=3)
    bad = Path(run.path("corpus", shard_name(1), "part-00000.parquet"))
    original = bad.read_bytes()
    bad.write_bytes(original[: len(original) // 2])  # truncated after ingest (a half-copied file)
    job = get_command("generate")  # what `xqg generate` and jobs/generate.py run, in-process
    argv = ["--set", f"run_dir={run.uri}", "--set", f"generate.model={tiny_mt5_dir}", "--set", "generate.backend=hf",
            "--set", "generate.num_queries=1", "--set", "generate.max_new_tokens=4", "--set", "languages=[sw]"]

    assert run_job("generate", job.run, job.add_arguments, argv=argv) == 1
    out = capsys.readouterr().out
    bad_unit = f"lang=sw/{shard_name(1)}"
    assert run.done_units("generate") == {f"lang=sw/{shard_name(0)}", f"lang=sw/{shard_name(2)}"}
    assert "1 unit(s) left unmarked" in out and f"{bad_unit}: " in out
    reason = out.split(f"{bad_unit}: ", 1)[1].splitlines()[0]
    assert "parquet" in reason.lower() or "Arrow" in reason, reason  # the reader's own words, not a traceback
    marked = {u: run.read_marker("generate", u) for u in run.done_units("generate")}

    bad.write_bytes(original)
    assert run_job("generate", job.run, job.add_arguments, argv=argv) == 0
    assert run.done_units("generate") == {f"lang=sw/{shard_name(s)}" for s in range(3)}
    assert {u: run.read_marker("generate", u) for u in marked} == marked  # the healthy units were not redone
    assert run.read_marker("generate", bad_unit)["rows_out"] == 4
