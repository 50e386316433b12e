"""The generate actor counts the rows of the file it wrote, and the runner marks a unit only when that count is
the number of rows the unit reports: a writer that loses rows leaves the unit unmarked. The actor's class runs in
this process (connected to the session's Ray: it records the node it runs on)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest

from xqg.config import GenerateConfig
from xqg.generate.actor import GenerateActor
from xqg.generate.backends import SamplingSettings
from xqg.layout import generated_dir, generated_unit
from xqg.rundir import RunDir
from xqg.runner import StageRunner, Unit

PASSAGES = 3


def manifest(row: dict[str, Any]) -> dict[str, Any]:
    """An actor's result as the runner takes it in (the unit's name removed)."""
    return {k: v for k, v in row.items() if k != "unit"}


def test_a_generated_unit_whose_file_holds_fewer_rows_than_reported_stays_unmarked(
    ray_local, tiny_mt5_dir: str, make_corpus_run, demo_passage_rows: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = make_corpus_run(demo_passage_rows[:PASSAGES], num_shards=1)
    sampling = SamplingSettings(num_queries=1, max_new_tokens=4, max_input_len=32)
    actor = GenerateActor(run.uri, tiny_mt5_dir, "hf", asdict(sampling), GenerateConfig().template, seed=1,
                          batch_size=4, use_gpu=False)
    unit = Unit(generated_unit("ar", 0), {"lang": "ar"}, payload={"lang": "ar", "shard": 0}, expected=PASSAGES)
    runner = StageRunner(run, "generate")

    real_write = RunDir.write_table

    def dropping_the_first_row(self: RunDir, rel: str, table: Any, *args: Any, **kwargs: Any) -> Any:
        return real_write(self, rel, table.slice(1), *args, **kwargs)

    monkeypatch.setattr(RunDir, "write_table", dropping_the_first_row)
    lossy = actor.process("ar", 0)
    assert lossy["rows_out"] > 0
    assert lossy["written"] == lossy["rows_out"] - 1 == run.count_rows(generated_dir("ar", 0))
    assert not runner.take(unit, manifest(lossy))
    assert run.done_units("generate") == set()
    assert f"{lossy['written']} rows written, {lossy['rows_out']} reported" in " ".join(runner.failed)

    monkeypatch.undo()
    good = actor.process("ar", 0)  # redone in place, as a rerun does
    assert good["written"] == good["rows_out"] == run.count_rows(generated_dir("ar", 0))
    assert runner.take(unit, manifest(good))
    assert run.done_units("generate") == {unit.name}
