"""The one stage runner: plans units, reads markers in bulk, decides pending/done/stale, runs, marks, summarises.

A unit's marker records what the unit was made from (its `inputs`: upstream units' fingerprints, model content
hashes, the parameters that change its output) and `fingerprint`, a hash of those inputs. A unit whose marker
holds another fingerprint than the one planned now is stale: it is redone (or kept, with --keep-stale, and said
so); nothing stale is skipped silently. Every stage decides pending/done/stale here and nowhere else.

A runner holds its stage's lease on the run directory (xqg.lease: <run>/_locks/<stage>.json) from its first look
at its own stage's markers (or from `with`) until close(), so a second job of the same stage on the same run stops
with a message naming the first instead of redoing and unmarking its units. A stage is written as

    with StageRunner(run, STAGE, keep_stale=config.keep_stale) as runner:   # takes the lease (or LeaseHeldError)
        plan = runner.plan(units)
        ...
        return runner.close()                                                # summary; releases the lease

and the lease is released on leaving the `with` however that happens. Without `with`, the lease is taken lazily by
plan()/markers()/prepare()/finish() and released by close(), or, when a stage raises before close(), once the
runner is garbage collected or the process exits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from xqg.lease import Lease, LeaseLostError, hold
from xqg.rundir import MARKERS, RunDir
from xqg.summary import StageSummary

if TYPE_CHECKING:
    from xqg.units import Pool

log = logging.getLogger(__name__)

# Marker fields that say when or where a unit ran, not what it was made from.
VOLATILE = frozenset({"finished_at", "seconds", "actor", "unit", "node", "device"})


def fingerprint(obj: Any) -> str:
    """A short stable hash of JSON-able data (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def marker_fingerprint(marker: dict[str, Any]) -> str:
    """What a downstream unit records of an upstream marker: its fingerprint, else a hash of its content."""
    fp = marker.get("fingerprint")
    if isinstance(fp, str) and fp:
        return fp
    return fingerprint({k: v for k, v in marker.items() if k not in VOLATILE})


@dataclass
class Unit:
    """One unit of work: its name, what it is made from, what the worker needs, and the rows its input owes."""

    name: str
    inputs: dict[str, Any]
    payload: dict[str, Any] = field(default_factory=dict)
    expected: int | None = None

    @property
    def fingerprint(self) -> str:
        """Hash of the inputs; a marker with another one is stale."""
        return fingerprint(self.inputs)


@dataclass
class Plan:
    """The planned units split into what to do and what is done."""

    units: list[Unit]
    todo: list[Unit]
    done: list[Unit]
    stale: list[Unit]
    kept_stale: list[Unit]


def _plain(value: Any) -> Any:
    """numpy scalars (what Ray Data hands back) as plain Python values."""
    return value.item() if hasattr(value, "item") else value


class StageRunner:
    """Plan, run and mark the units of one stage; owns the stage's summary and its exit status."""

    def __init__(
        self,
        run: RunDir,
        stage: str,
        *,
        label: str | None = None,
        keep_stale: bool = False,
        outputs: Callable[[str], Iterable[str]] | None = None,
        lease: bool | str = True,
        lease_wait_s: float | None = None,
    ) -> None:
        """lease: True holds the stage's lease, a string a lease of that name instead (e.g. one per fused name),
        False none (a runner that only reads). lease_wait_s: how long to wait for another job's lease before
        LeaseHeldError (default XQG_LEASE_WAIT_S, else 0: stop at once)."""
        self.run, self.stage, self.keep_stale = run, stage, keep_stale
        self.outputs = outputs  # unit name -> run-relative paths a redo must clear first
        self.summary = StageSummary(label or stage)
        self.failed: list[str] = []
        self._started = time.perf_counter()
        self._markers: dict[str, dict[str, dict[str, Any]]] = {}
        self.lease_name: str | None = (stage if lease is True else lease) or None
        self.lease_wait_s = lease_wait_s
        self._lease: Lease | None = None
        self._lease_release: weakref.finalize | None = None
        self._planned: list[Unit] = []
        # What prepare() knows exists on an object store, from one listing per prefix (prefix -> {path or folder:
        # the files at or under it}), so preparing a unit that left nothing behind costs no request at all.
        self._listed: dict[str, dict[str, set[str]]] = {}
        self._prepared: set[str] = set()  # prepared once already: a second prepare asks the store again
        self._gone: set[str] = set()  # listed files deleted since
        self._prefixes: tuple[list[Unit], list[str]] | None = None  # (for which plan, the prefixes to list)
        self._dispatched = False  # True once a unit of this runner may have run (see prepare_all)

    # ---- the stage's lease -------------------------------------------------------------------------------
    def __enter__(self) -> StageRunner:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> StageRunner:
        """Hold the stage's lease (see xqg.lease); LeaseHeldError names the job that holds it. Idempotent."""
        if self._lease is None and self.lease_name:
            lease = hold(self.run, self.lease_name, wait_s=self.lease_wait_s)
            self._lease = lease
            # Released (this runner's share, once) by close()/__exit__, else when this runner is collected or at
            # exit (weakref.finalize runs atexit); the callback holds the lease, not the runner.
            self._lease_release = weakref.finalize(self, lease.release)
        return self

    def release(self) -> None:
        """Give the stage's lease back (idempotent; close() and leaving `with` do it)."""
        finalizer, self._lease_release, self._lease = self._lease_release, None, None
        if finalizer is not None:
            finalizer()

    @property
    def lease_lost(self) -> str | None:
        """Why, when another job took this runner's lease over (then no unit may be prepared or marked)."""
        return None if self._lease is None else self._lease.lost

    def _own(self) -> None:
        """Before this runner reads or writes its own stage's units: hold the lease, and still own it."""
        self.acquire()
        lost = self.lease_lost
        if lost:
            raise LeaseLostError(f"{self.stage}: {lost}")

    # ---- markers -----------------------------------------------------------------------------------------
    def markers(self, stage: str | None = None) -> dict[str, dict[str, Any]]:
        """Every marker of this (or an upstream) stage, read in bulk once per runner."""
        stage = stage or self.stage
        if stage == self.stage:
            self._own()
        if stage not in self._markers:
            self._markers[stage] = self.run.markers(stage)
        return self._markers[stage]

    def upstream(self, stage: str, unit: str) -> dict[str, Any]:
        """An upstream unit's marker, or a clear error naming the stage to run."""
        marker = self.markers(stage).get(unit)
        if marker is None:
            raise FileNotFoundError(f"{stage} unit {unit!r} is not complete in {self.run.uri}: run jobs/{stage}.py first")
        return marker

    def upstream_fingerprint(self, stage: str, unit: str) -> str:
        """The fingerprint a downstream unit records for an upstream unit."""
        return marker_fingerprint(self.upstream(stage, unit))

    # ---- planning ----------------------------------------------------------------------------------------
    def plan(self, units: list[Unit]) -> Plan:
        """Split units into done (marker with the same fingerprint), stale (another fingerprint) and new."""
        names = [u.name for u in units]
        if len(set(names)) != len(names):
            raise RuntimeError(f"{self.stage}: duplicate unit names in the plan")
        markers = self.markers()
        self._planned = list(units)
        todo, done, stale, kept = [], [], [], []
        for unit in units:
            marker = markers.get(unit.name)
            if marker is None:
                todo.append(unit)
            elif marker_fingerprint(marker) == unit.fingerprint:
                done.append(unit)
            else:
                stale.append(unit)
                (kept if self.keep_stale else todo).append(unit)
        self.summary.units_skipped += len(done)
        self.summary.units_stale += len(stale) - len(kept)
        self.summary.units_kept_stale += len(kept)
        if stale:
            example = self._changed(markers[stale[0].name], stale[0])
            verb = "kept as they are (--keep-stale)" if self.keep_stale else "redone"
            log.warning("%s: %d unit(s) were made from other inputs and are %s, e.g. %s (%s)",
                        self.stage, len(stale), verb, stale[0].name, example)
        return Plan(units, todo, done, stale, kept)

    @staticmethod
    def _changed(marker: dict[str, Any], unit: Unit) -> str:
        """Which inputs differ between a marker and the plan (for the log line)."""
        old = marker.get("inputs")
        if not isinstance(old, dict):
            return "the marker records no inputs"
        keys = sorted(k for k in set(old) | set(unit.inputs) if old.get(k) != unit.inputs.get(k))
        return "changed: " + ", ".join(keys) if keys else "changed inputs"

    # ---- running -----------------------------------------------------------------------------------------
    def prepare(self, unit: Unit) -> None:
        """Before a unit is (re)done: drop its marker, its rejects and any output of an earlier try."""
        self.prepare_all([unit])

    def prepare_all(self, units: list[Unit], threads: int = 32) -> None:
        """prepare() for many units at once: what exists is known from one listing per prefix (markers, rejects,
        each output folder), and only what exists is deleted, in parallel; markers go first, so no unit is ever
        marked while its output is half deleted."""
        self._own()  # LeaseLostError rather than delete what the job that took the lease over is writing
        markers = self.markers()
        if not self.run.is_object_store:  # a local disk answers in microseconds: remove each unit's paths as ever
            for unit in units:
                self.run.unmark(self.stage, unit.name)
                markers.pop(unit.name, None)
                self.run.remove("rejects", self.stage, f"{unit.name}.parquet")
                for rel in self.outputs(unit.name) if self.outputs else ():
                    self.run.remove(rel)
            return
        marker_files: list[str] = []
        other_files: list[str] = []
        folders: list[str] = []  # outside every listed prefix, or prepared before: removed one by one
        for unit in units:
            again = unit.name in self._prepared
            self._prepared.add(unit.name)
            if unit.name in markers or again:
                marker_files.append(self.run.marker_path(self.stage, unit.name))
            rels = [posixpath.join("rejects", self.stage, f"{unit.name}.parquet"),
                    *(self.outputs(unit.name) if self.outputs else ())]
            for rel in rels:
                found = None if again else self._existing(rel)
                if found is None:
                    folders.append(rel)
                else:
                    other_files.extend(found)
        # Whole folders may be emptied in one batch only before any unit of this runner ran: after that a folder
        # the listing saw holding only these units' files may hold another unit's fresh output too.
        batch = not self._dispatched
        self.run.delete_files(marker_files, self._marker_index(markers) if batch else None, threads)
        for unit in units:
            markers.pop(unit.name, None)
        merged: dict[str, set[str]] = {}
        for index in self._listed.values() if batch else ():
            merged.update(index)
        self.run.delete_files(other_files, merged or None, threads)
        if folders:
            with ThreadPoolExecutor(max_workers=min(threads, len(folders))) as pool:
                list(pool.map(self.run.remove, folders))

    def _marker_index(self, markers: dict[str, Any]) -> dict[str, set[str]]:
        """Marker folders -> the marker files under them, from the bulk listing (plan's markers)."""
        top = posixpath.join(MARKERS, self.stage)
        index: dict[str, set[str]] = {}
        for unit in markers:
            f = self.run.marker_path(self.stage, unit)
            node = posixpath.dirname(f)
            while node and node != top and node.startswith(top + "/"):
                index.setdefault(node, set()).add(f)
                node = posixpath.dirname(node)
        return index

    def _listing_for(self, rel: str) -> dict[str, set[str]] | None:
        """The listing (path or folder -> files at or under it) of the prefix that holds rel: this stage's rejects
        and the planned units' outputs (their common folder per top folder) are each listed once, when first
        needed; None when rel lies outside them."""
        if self._prefixes is None or self._prefixes[0] is not self._planned:
            prefixes = {posixpath.join("rejects", self.stage)}
            by_top: dict[str, list[str]] = {}
            for u in self._planned:
                for out in self.outputs(u.name) if self.outputs else ():
                    by_top.setdefault(out.strip("/").split("/", 1)[0], []).append(out.strip("/"))
            for top, outs in by_top.items():
                prefixes.add(posixpath.commonpath(outs) if len(outs) > 1 else (posixpath.dirname(outs[0]) or top))
            self._prefixes = (self._planned, sorted(prefixes, key=len, reverse=True))
        for prefix in self._prefixes[1]:
            if not (rel == prefix or rel.startswith(prefix.rstrip("/") + "/")):
                continue
            if prefix not in self._listed:
                index: dict[str, set[str]] = {}
                for f in self.run.list_files(prefix):
                    node = f
                    while node and node not in (".", "/"):
                        index.setdefault(node, set()).add(f)
                        node = posixpath.dirname(node)
                self._listed[prefix] = index
            return self._listed[prefix]
        return None

    def _existing(self, rel: str) -> list[str] | None:
        """Files at or under rel as the bulk listing saw them (each handed out once: it is about to be deleted);
        None when no listing covers rel."""
        index = self._listing_for(rel.strip("/"))
        if index is None:
            return None
        found = sorted(index.get(rel.strip("/"), set()) - self._gone)
        self._gone.update(found)
        return found

    def finish(
        self, unit: Unit, *, rows_in: int, rows_out: int, rejected: int, written: int | None = None,
        count: bool = True, empty_ok: bool = False, **info: Any,
    ) -> bool:
        """Count a finished unit and mark it, unless its rows do not add up (then it stays unmarked).

        count=False marks without adding to the summary (parts of a unit that is counted as a whole).
        """
        self._dispatched = True
        rows_in, rows_out, rejected = int(rows_in), int(rows_out), int(rejected)
        owed = unit.expected if unit.expected is not None else rows_in
        if count:
            self.summary.rows_in += owed
            self.summary.rows_out += rows_out
            self.summary.rejected += rejected
        problems = []
        if rows_in != owed:
            problems.append(f"read {rows_in} rows, its input holds {owed}")
        if rows_in != rows_out + rejected:
            problems.append(f"{rows_in} in != {rows_out} out + {rejected} rejected")
        if written is not None and written != rows_out:
            problems.append(f"{written} rows written, {rows_out} reported")
        if rows_in > 0 and rows_out == 0 and not empty_ok:
            problems.append(f"no row out of {rows_in} (every row rejected: see rejects/{self.stage}/)")
        self.acquire()
        if self.lease_lost:
            problems.append(f"not marked: {self.lease_lost}")
        if problems:
            self.fail(unit, "; ".join(problems))
            return False
        marker = self.run.mark_done(
            self.stage, unit.name, fingerprint=unit.fingerprint, inputs=unit.inputs, rows_in=rows_in,
            rows_out=rows_out, rejected=rejected, **{k: _plain(v) for k, v in info.items()},
        )
        self.markers()[unit.name] = marker
        self.summary.units_done += int(count)
        return True

    def fail(self, unit: Unit, reason: str) -> None:
        """A unit that could not be completed: left unmarked, named in the summary, the exit status non-zero."""
        self.failed.append(f"{unit.name}: {reason}")
        log.error("%s %s left unmarked: %s", self.stage, unit.name, reason)

    def run_local(self, units: list[Unit], work: Callable[[Unit], dict[str, Any]], desc: str | None = None) -> None:
        """Do units one by one in this process; work returns rows_in/rows_out/rejected and marker info."""
        self._dispatched = True  # prepared one at a time while earlier units' outputs are written
        for unit in tqdm(units, desc=desc or self.summary.stage, unit="unit", disable=len(units) < 2):
            self.prepare(unit)
            try:
                result = work(unit)
            except (FileNotFoundError, ValueError, OSError, RuntimeError) as e:
                self.fail(unit, f"{type(e).__name__}: {e}")
                continue
            self.finish(unit, **result)

    def run_actors(
        self,
        units: list[Unit],
        actor_cls: type,
        constructor_kwargs: dict[str, Any],
        *,
        pool: Pool,
        desc: str,
        rate_key: str = "rows_out",
        rate_unit: str = "rows",
        on_result: Callable[[Unit, dict[str, Any]], dict[str, Any]] | None = None,
        then: Feed | None = None,
    ) -> float:
        """Stream units through a Ray Data actor pool; each result is counted and marked as it arrives.

        A unit whose actor reports an error (or whose result cannot be taken in) stays unmarked and is named in the
        summary; the other units go on. With `then`, the pipeline goes on into the next stage's actors (see Feed):
        each unit here is marked as soon as its own actor returns, while the next stage still works on it.
        """
        from xqg.units import NEXT_PREFIX, run_units

        self.prepare_all(units)
        self._dispatched = True
        if then is not None:
            then.runner.prepare_all(list(then.units.values()))
            then.runner._dispatched = True
        by_name = {u.name: u for u in units}
        taken: dict[str, bool] = {}
        lock = threading.Lock()  # a chained unit's manifest comes twice, from two threads (see run_units' on_first)

        def take_once(row: dict[str, Any]) -> bool:
            """Mark (or fail) a unit from the first copy of its manifest; whether it is marked."""
            own = {k: _plain(v) for k, v in row.items() if not k.startswith(NEXT_PREFIX)}
            name = str(own.pop("unit"))
            with lock:
                if name not in taken:
                    taken[name] = self.take(by_name[name], own, on_result)
                return taken[name]

        def handle(row: dict[str, Any]) -> None:
            marked = take_once(row)
            if then is not None:
                then.take(self, by_name[str(row["unit"])], row, marked, lock)

        rows = [{"unit": u.name, **u.payload} for u in units]
        nexts = None if then is None else [(then.actor_cls, then.constructor_kwargs(), then.pool)]
        return run_units(rows, actor_cls, constructor_kwargs, pool=pool, on_result=handle, desc=desc,
                         rate_key=rate_key, rate_unit=rate_unit, then=nexts, on_first=take_once if then else None)

    def take(
        self, unit: Unit, row: dict[str, Any], on_result: Callable[[Unit, dict[str, Any]], dict[str, Any]] | None = None
    ) -> bool:
        """Mark a unit from its actor's manifest row (plain values, "unit" removed), or fail it with the row's error."""
        error = str(row.pop("error", "") or "")
        if error:
            self.fail(unit, error)
            return False
        try:
            extra = on_result(unit, row) if on_result else {}
        except Exception as e:  # noqa: BLE001 - one unit's bad output must not stop the others being marked
            self.fail(unit, f"{type(e).__name__}: {e}")
            return False
        info = {k: v for k, v in row.items() if k not in unit.payload}
        info.update(extra)
        return self.finish(unit, **info)

    def run_tasks(
        self,
        units: list[Unit],
        work: Callable[..., dict[str, Any]],
        common: dict[str, Any],
        *,
        memory: Callable[[Unit], int],
        num_gpus: float = 0,
        num_cpus: float = 1,
        desc: str | None = None,
        on_result: Callable[[Unit, dict[str, Any]], None] | None = None,
        option: str = "the stage's shard size",
    ) -> None:
        """Do units as Ray tasks on workers (work(unit.payload, **common), memory(unit) bytes each); mark each as
        it arrives. on_result may take keys out of a result that are for the summary, not the marker. option: the
        setting that sizes the memory requests (named when no node type can hold one)."""
        from xqg.capacity import check_fits
        from xqg.tasks import run_tasks

        if units:  # before anything is deleted: a request no node type can meet is a config error
            check_fits(max(memory(u) for u in units), gpus=num_gpus, option=option, what=desc or self.summary.stage)
        self.prepare_all(units)
        self._dispatched = True
        by_name = {u.name: u for u in units}

        def handle(name: str, result: dict[str, Any] | None, error: str | None) -> None:
            unit = by_name[name]
            if result is None:
                self.fail(unit, error or "the task failed")
                return
            if on_result:
                on_result(unit, result)
            self.finish(unit, **result)

        run_tasks([(u.name, u.payload, memory(u)) for u in units], work, common, on_result=handle,
                  desc=desc or self.summary.stage, num_cpus=num_cpus, num_gpus=num_gpus, option=option)

    def close(self, message: str = "") -> StageSummary:
        """The stage's summary: timings, failures (which make the exit status non-zero) and a message."""
        s = self.summary
        lost = self.lease_lost
        if self.stage in self._markers and (s.units_done or self.failed) and not lost:
            self.run.markers(self.stage, known=self._markers[self.stage])  # refresh the bulk cache for the next job
        s.seconds = time.perf_counter() - self._started
        s.units_failed = len(self.failed)
        lines = [message] if message else []
        if lost:
            lines.append(f"this job lost its lease: {lost}")
        if self.failed:
            lines.append(f"{len(self.failed)} unit(s) left unmarked:\n  " + "\n  ".join(self.failed[:20]))
        elif not message and not s.units_done and not s.units_stale and s.units_skipped:
            lines.append("every unit is complete and up to date: nothing to do")
        s.message = "\n".join(lines)
        self.release()
        return s


@dataclass
class Feed:
    """A stage whose actors take another stage's units as they come, in the same Ray Data pipeline: a chain of
    stages, each planned, prepared, marked and summarised by its own runner (StageRunner.run_actors(then=feed)).

    units maps an upstream unit's name to the unit of this stage made from it (those to do; an upstream unit
    without one just passes through). actor_cls is constructed with kwargs plus `units` ({upstream name: unit
    name}); it gets each upstream manifest row and returns it with its own manifest's columns added, each named
    xqg.units.NEXT_PREFIX + column. A unit owes the rows its upstream unit put out; it fails, unmarked, when its
    upstream unit could not be marked.
    """

    runner: StageRunner
    units: dict[str, Unit]
    actor_cls: type
    kwargs: dict[str, Any]
    pool: Pool
    on_result: Callable[[Unit, dict[str, Any]], dict[str, Any]] | None = None

    def constructor_kwargs(self) -> dict[str, Any]:
        """The actors' constructor kwargs: kwargs and the units to make."""
        return {**self.kwargs, "units": {up: unit.name for up, unit in self.units.items()}}

    def take(
        self, upstream: StageRunner, source: Unit, row: dict[str, Any], marked: bool, lock: threading.Lock
    ) -> None:
        """Mark (or fail) the unit made from an upstream unit, from the next-stage columns of its manifest row."""
        from xqg.units import NEXT_PREFIX

        unit = self.units.get(source.name)
        if unit is None:
            return
        own = {k[len(NEXT_PREFIX):]: _plain(v) for k, v in row.items() if k.startswith(NEXT_PREFIX)}
        own.pop("unit", None)
        if not marked:
            self.runner.fail(unit, f"{upstream.stage} {source.name} is not complete")
            return
        with lock:  # the upstream marker may have been written by the other thread just now
            unit.expected = int(upstream.markers()[source.name]["rows_out"])
        self.runner.take(unit, own, self.on_result)
