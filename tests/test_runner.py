"""The stage runner: fingerprints decide done/stale/new, markers are read in bulk, failures stay unmarked."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from xqg.rundir import RunDir
from xqg.runner import StageRunner, Unit, fingerprint, marker_fingerprint


class CountingHandler(pafs.FileSystemHandler):
    """A local filesystem that counts every call made through it (to prove planning cost is per stage, not unit)."""

    def __init__(self) -> None:
        self.local = pafs.LocalFileSystem()
        self.calls = 0

    def _count(self, name: str, *args):
        self.calls += 1
        return getattr(self.local, name)(*args)

    def get_type_name(self):
        return "counting"

    def equals(self, other):
        return self is other

    def get_file_info(self, paths):
        return self._count("get_file_info", paths)

    def get_file_info_selector(self, selector):
        return self._count("get_file_info", selector)

    def create_dir(self, path, recursive):
        return self._count("create_dir", path, recursive)

    def delete_dir(self, path):
        return self._count("delete_dir", path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        return self._count("delete_dir_contents", path, missing_dir_ok)

    def delete_root_dir_contents(self):
        return self._count("delete_dir_contents", "/")

    def delete_file(self, path):
        return self._count("delete_file", path)

    def move(self, src, dest):
        return self._count("move", src, dest)

    def copy_file(self, src, dest):
        return self._count("copy_file", src, dest)

    def open_input_stream(self, path):
        return self._count("open_input_stream", path)

    def open_input_file(self, path):
        return self._count("open_input_file", path)

    def open_output_stream(self, path, metadata):
        return self._count("open_output_stream", path, metadata)

    def open_append_stream(self, path, metadata):
        return self._count("open_append_stream", path, metadata)

    def normalize_path(self, path):
        return path


def counting_run(path: Path) -> tuple[RunDir, CountingHandler]:
    run = RunDir(str(path))
    handler = CountingHandler()
    run.fs = pafs.PyFileSystem(handler)
    return run, handler


def write_markers(root: Path, stage: str, n: int, fp: str = "f0") -> None:
    """n marker files as a finished stage leaves them (written directly: fast)."""
    for i in range(n):
        p = root / "_done" / stage / f"lang=ar/shard={i:05d}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"unit": f"lang=ar/shard={i:05d}", "fingerprint": fp, "rows_out": 3}))


def units(n: int, **inputs) -> list[Unit]:
    return [Unit(f"lang=ar/shard={i:05d}", {"corpus": "c", **inputs}) for i in range(n)]


def test_fingerprint_ignores_key_order_and_sees_every_value():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1, "b": [1, 2]}) != fingerprint({"a": 1, "b": [2, 1]})
    assert marker_fingerprint({"fingerprint": "x", "rows_out": 1}) == "x"
    # A marker without one (written by hand or by an older xqg) is known by its content, not by when it was written.
    assert marker_fingerprint({"rows_out": 1, "finished_at": 1.0}) == marker_fingerprint({"rows_out": 1, "finished_at": 2.0})
    assert marker_fingerprint({"rows_out": 1}) != marker_fingerprint({"rows_out": 2})


def test_plan_splits_done_stale_and_new_and_marks_with_inputs(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    first = StageRunner(run, "generate")
    plan = first.plan(units(3, top_k=10))
    assert [len(plan.todo), len(plan.done), len(plan.stale)] == [3, 0, 0]
    for u in plan.todo[:2]:
        assert first.finish(u, rows_in=5, rows_out=4, rejected=1)
    marker = run.read_marker("generate", "lang=ar/shard=00000")
    assert marker["inputs"] == {"corpus": "c", "top_k": 10} and marker["fingerprint"] == plan.todo[0].fingerprint

    again = StageRunner(run, "generate")
    plan = again.plan(units(3, top_k=10))
    assert [u.name for u in plan.done] == ["lang=ar/shard=00000", "lang=ar/shard=00001"]
    assert [u.name for u in plan.todo] == ["lang=ar/shard=00002"] and not plan.stale

    changed = StageRunner(run, "generate")
    plan = changed.plan(units(3, top_k=5))
    assert len(plan.todo) == 3 and len(plan.stale) == 2 and not plan.done
    assert changed.summary.units_stale == 2 and changed.summary.units_skipped == 0

    kept = StageRunner(run, "generate", keep_stale=True)
    plan = kept.plan(units(3, top_k=5))
    assert [u.name for u in plan.todo] == ["lang=ar/shard=00002"], "--keep-stale keeps, and counts, stale units"
    assert kept.summary.units_kept_stale == 2 and "kept stale" in kept.summary.render()


def test_a_unit_that_does_not_add_up_stays_unmarked_and_fails_the_stage(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    runner = StageRunner(run, "encode")
    short, empty, good = (Unit(n, {"x": 1}, expected=e) for n, e in (("a", 10), ("b", None), ("c", None)))
    assert not runner.finish(short, rows_in=9, rows_out=9, rejected=0)  # read fewer rows than its input holds
    assert not runner.finish(empty, rows_in=4, rows_out=0, rejected=4)  # nothing out of a non-empty input
    assert runner.finish(good, rows_in=4, rows_out=3, rejected=1)
    summary = runner.close()
    assert run.done_units("encode") == {"c"}
    assert summary.units_failed == 2 and not summary.ok and "a: read 9 rows, its input holds 10" in summary.message


def test_rows_lost_between_in_and_out_leave_the_unit_unmarked(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    runner = StageRunner(run, "fuse")
    lost, miswritten, good = Unit("lost", {"x": 1}), Unit("miswritten", {"x": 1}), Unit("good", {"x": 1})
    assert not runner.finish(lost, rows_in=10, rows_out=7, rejected=2)  # one row neither out nor rejected
    assert not runner.finish(miswritten, rows_in=5, rows_out=5, rejected=0, written=4)  # the file holds fewer rows
    assert runner.finish(good, rows_in=5, rows_out=4, rejected=1, written=4)
    summary = runner.close()
    assert run.done_units("fuse") == {"good"} and summary.units_failed == 2
    assert "lost: 10 in != 7 out + 2 rejected" in summary.message
    assert "miswritten: 4 rows written, 5 reported" in summary.message


def test_run_local_prepares_each_unit_and_goes_on_after_a_failure(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    run.write_text("out/a/stale.txt", "from an earlier try")
    runner = StageRunner(run, "fuse", outputs=lambda u: [f"out/{u}"])

    def work(unit: Unit) -> dict:
        if unit.name == "b":
            raise ValueError("shard b is broken")
        assert not run.exists("out", unit.name, "stale.txt"), "earlier output is removed before the unit runs"
        return {"rows_in": 1, "rows_out": 1, "rejected": 0}

    runner.run_local([Unit(n, {}) for n in "abc"], work)
    assert run.done_units("fuse") == {"a", "c"} and runner.failed == ["b: ValueError: shard b is broken"]


def test_planning_10000_marked_units_is_fast_and_costs_constant_filesystem_calls(tmp_path):
    root = tmp_path / "run"
    write_markers(root, "generate", 10_000)
    plan_units = units(10_000)
    want = plan_units[0].fingerprint
    for p in (root / "_done" / "generate" / "lang=ar").iterdir():
        d = json.loads(p.read_text())
        d["fingerprint"] = want  # as if made with exactly these inputs
        p.write_text(json.dumps(d))

    t0 = time.perf_counter()
    cold = StageRunner(RunDir(str(root)), "generate").plan(plan_units)
    cold_s = time.perf_counter() - t0
    assert len(cold.done) == 10_000 and cold_s < 5, f"cold plan took {cold_s:.1f} s"

    run, counter = counting_run(root)
    t0 = time.perf_counter()
    warm = StageRunner(run, "generate").plan(plan_units)
    warm_s = time.perf_counter() - t0
    assert len(warm.done) == 10_000 and warm_s < 5, f"warm plan took {warm_s:.1f} s"
    big_calls = counter.calls

    small_root = tmp_path / "small"
    write_markers(small_root, "generate", 100, fp=want)
    StageRunner(RunDir(str(small_root)), "generate").plan(units(100))  # builds the cache
    small_run, small_counter = counting_run(small_root)
    StageRunner(small_run, "generate").plan(units(100))
    assert big_calls == small_counter.calls <= 4, (big_calls, small_counter.calls)


def test_bulk_markers_see_changes_made_by_other_processes(tmp_path):
    root = tmp_path / "run"
    write_markers(root, "encode", 3)
    run = RunDir(str(root))
    assert set(run.markers("encode")) == {f"lang=ar/shard={i:05d}" for i in range(3)}
    os.remove(root / "_done/encode/lang=ar/shard=00001.json")
    changed = root / "_done/encode/lang=ar/shard=00002.json"
    changed.write_text(json.dumps({"fingerprint": "new", "rows_out": 30}))
    markers = RunDir(str(root)).markers("encode")
    assert set(markers) == {"lang=ar/shard=00000", "lang=ar/shard=00002"}
    assert markers["lang=ar/shard=00002"]["fingerprint"] == "new", "a rewritten marker is read again, not cached"


def test_upstream_names_the_stage_to_run(tmp_path):
    runner = StageRunner(RunDir(str(tmp_path / "run")), "encode")
    with pytest.raises(FileNotFoundError, match="jobs/generate.py"):
        runner.upstream("generate", "lang=ar/shard=00000")


# ---- a chain of stages (generate --encode): each stage's runner marks its own units -----------------------------
def _chain(tmp_path):
    """An upstream runner with two units planned, and a Feed of a downstream runner with one unit made from each."""
    from xqg.runner import Feed
    from xqg.units import Pool

    run = RunDir(str(tmp_path / "run"))
    up = StageRunner(run, "generate")
    ups = [Unit("lang=sw/shard=00000", {"x": 0}), Unit("lang=sw/shard=00001", {"x": 1})]
    up.plan(ups)
    down = StageRunner(run, "encode")
    units = {u.name: Unit(f"generated/{u.name}", {"input": u.fingerprint}) for u in ups}
    down.plan(list(units.values()))
    return up, ups, Feed(down, units, object, {"batch_size": 8}, Pool(False, 1)), down


def test_a_fed_unit_owes_the_rows_its_upstream_unit_put_out_and_is_marked_by_its_own_runner(tmp_path):
    import threading

    from xqg.units import NEXT_PREFIX

    up, ups, feed, down = _chain(tmp_path)
    assert feed.constructor_kwargs() == {"batch_size": 8, "units": {u.name: f"generated/{u.name}" for u in ups}}
    assert up.finish(ups[0], rows_in=5, rows_out=4, rejected=1)
    row = {"unit": ups[0].name, "rows_out": 4, **{f"{NEXT_PREFIX}{k}": v for k, v in
                                                  {"unit": "x", "rows_in": 4, "rows_out": 4, "rejected": 0}.items()}}
    feed.take(up, ups[0], row, True, threading.Lock())
    assert up.run.done_units("encode") == {f"generated/{ups[0].name}"}
    assert feed.units[ups[0].name].expected == 4  # the upstream unit's rows out, not its rows in
    # A downstream result that read fewer rows than its upstream unit wrote stays unmarked.
    assert up.finish(ups[1], rows_in=5, rows_out=5, rejected=0)
    short = {**row, "unit": ups[1].name, f"{NEXT_PREFIX}rows_in": 3, f"{NEXT_PREFIX}rows_out": 3}
    feed.take(up, ups[1], short, True, threading.Lock())
    summary = down.close()
    assert summary.units_done == 1 and summary.units_failed == 1
    assert "read 3 rows, its input holds 5" in summary.message
    assert up.run.done_units("encode") == {f"generated/{ups[0].name}"}


def test_a_fed_unit_whose_upstream_unit_failed_fails_unmarked(tmp_path):
    import threading

    from xqg.units import NEXT_PREFIX

    up, ups, feed, down = _chain(tmp_path)
    row = {"unit": ups[0].name, f"{NEXT_PREFIX}unit": "", f"{NEXT_PREFIX}error": "not encoded: its generation failed"}
    feed.take(up, ups[0], row, False, threading.Lock())
    feed.take(up, Unit("lang=fi/shard=00000", {}), {"unit": "lang=fi/shard=00000"}, True, threading.Lock())  # no unit
    summary = down.close()
    assert summary.units_failed == 1 and f"generate {ups[0].name} is not complete" in summary.message
    assert up.run.done_units("encode") == set()
