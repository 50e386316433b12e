"""Bookkeeping on an object store costs requests per stage, not per unit: a StageRunner on a run directory on a local
S3 server (moto's server mode, counting the HTTP requests it serves) plans and prepares N units with a constant
number of requests, marks each unit with one PUT, re-plans a finished stage with a constant number, and deletes
the markers and outputs of stale units in batches: and it deletes exactly what it must, nothing else."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

import xqg.lease
from tests.s3_server import CountingS3Server
from xqg.rundir import RunDir
from xqg.runner import StageRunner, Unit

LANGS = ["ar", "bn", "fi", "ja"]
SMALL, LARGE = 24, 96


@pytest.fixture(scope="module")
def s3():
    with CountingS3Server() as server:
        yield server


@pytest.fixture(autouse=True)
def _fast_lease(monkeypatch):
    monkeypatch.setattr(xqg.lease, "SETTLE_S", 0.05)


def units(n: int, model: str) -> list[Unit]:
    return [Unit(f"lang={LANGS[i % 4]}/shard={i // 4:05d}", {"lang": LANGS[i % 4], "model": model}) for i in range(n)]


def outputs(unit: str) -> list[str]:
    return [f"generated/{unit}"]


def files(run: RunDir, rel: str) -> set[str]:
    infos = run.fs.get_file_info(pafs.FileSelector(run.path(rel), recursive=True, allow_not_found=True))
    return {i.path[len(run.root) + 1:] for i in infos if i.type == pafs.FileType.File}


def cycle(s3: CountingS3Server, n: int) -> dict[str, int]:
    """Requests of each step for a stage of n units on a fresh run directory."""
    run = RunDir(s3.uri(f"bookkeeping/n{n}"))
    out: dict[str, int] = {}

    def count(step: str) -> None:
        out[step] = sum(s3.counts().values())
        s3.reset()

    runner = StageRunner(run, "generate", outputs=outputs, lease=False)
    s3.reset()
    plan = runner.plan(units(n, "m1"))
    runner.prepare_all(plan.todo)
    count("plan+prepare")
    for u in plan.todo:
        runner.finish(u, rows_in=1, rows_out=1, rejected=0)
    count("mark")
    runner.close()
    s3.reset()
    assert len(StageRunner(run, "generate", outputs=outputs, lease=False).plan(units(n, "m1")).done) == n
    count("replan")
    for u in units(n, "m1"):  # every unit's output, as the actors write it
        run.write_text(f"generated/{u.name}/part-00000.parquet", "x")
    s3.reset()
    stale = StageRunner(run, "generate", outputs=outputs, lease=False)
    plan = stale.plan(units(n, "m2"))
    assert len(plan.stale) == n
    stale.prepare_all(plan.todo)
    count("stale prepare")
    assert not files(run, "generated") and not files(run, "_done/generate"), "stale markers and outputs all deleted"
    return out


def test_requests_per_stage_do_not_grow_with_units_and_a_mark_is_one_put(s3):
    small, large = cycle(s3, SMALL), cycle(s3, LARGE)
    print(f"\nrequests at {SMALL} units: {small}\nrequests at {LARGE} units: {large}")
    for step in ("plan+prepare", "replan"):
        assert large[step] == small[step] <= 8, f"{step}: {small[step]} -> {large[step]} requests"
    # emptied as folders, one per language for markers and one for outputs: pyarrow's delete_dir_contents costs a
    # HEAD, a LIST, a batched DELETE (POST) and a PUT (its folder object) each; plus the planning listings
    assert large["stale prepare"] == small["stale prepare"] <= 4 * 2 * len(LANGS) + 4, (small, large)
    assert small["mark"] == SMALL and large["mark"] == LARGE, "one PUT per marker"


def test_prepare_deletes_only_what_the_units_to_redo_left(s3):
    run = RunDir(s3.uri("bookkeeping/partial"))
    runner = StageRunner(run, "generate", outputs=outputs, lease=False)
    plan = runner.plan(units(8, "m1"))
    for u in plan.todo[:6]:
        run.write_text(f"generated/{u.name}/part-00000.parquet", "x")
        runner.finish(u, rows_in=1, rows_out=1, rejected=0)
    runner.close()
    # a killed job: unit 6 wrote part of its output and rejects, unit 7 nothing
    run.write_text(f"generated/{plan.todo[6].name}/part-00000.parquet", "half")
    run.write_text(f"rejects/generate/{plan.todo[6].name}.parquet", "r")
    before = files(run, "")
    rerun = StageRunner(run, "generate", outputs=outputs, lease=False)
    again = rerun.plan(units(8, "m1"))
    assert [u.name for u in again.todo] == [u.name for u in plan.todo[6:]]
    s3.reset()
    rerun.prepare_all(again.todo)
    gone = before - files(run, "")
    assert gone == {f"generated/{plan.todo[6].name}/part-00000.parquet", f"rejects/generate/{plan.todo[6].name}.parquet"}
    assert sum(s3.counts().values()) <= 12, s3.counts()  # two listings and two deletes (3 requests each in pyarrow)
    # a second prepare of the same unit (a retry in the same job) asks the store again, whatever the listing said
    run.write_text(f"generated/{plan.todo[7].name}/part-00000.parquet", "retry")
    rerun.prepare(plan.todo[7])
    assert f"generated/{plan.todo[7].name}/part-00000.parquet" not in files(run, "generated")
