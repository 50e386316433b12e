"""Kill tests for fuse, index, search, evaluate and jobs/pipeline.py: each job is SIGKILLed mid-stage, rerun,
and must leave exactly the files and markers of an uninterrupted run.

The job is held at a known point by a test hook (tests/hooks, `hold`: right before it marks its n-th unit, that
unit's output written), so the kill always lands mid-stage, never between stages or after the last unit.
Upstream is the ingested demo corpus (4 shards) with seeded random embeddings, as the encode stage lays them out;
the jobs that use Ray connect to the session's cluster.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from processes import kill_job, start_job_on, wait_for, wait_until_cluster_idle
from helpers.configs import demo_config, demo_subset
from helpers.paths import DEMO_CONFIG
from xqg.config import Config
from xqg.encode.vectors import vector_column
from xqg.rundir import RunDir, shard_name
from xqg.runner import VOLATILE

LANGS, DIM = ["ar", "fi"], 16
DOWNSTREAM = ["fuse", "index", "search", "evaluate"]
OUTPUTS = {"fuse": "fused", "index": "index", "search": "runs", "evaluate": "reports"}
# job -> (script, stage held, the unit it is held at (its output written, not marked), the run's first stage)
KILLS = {
    "fuse": ("fuse.py", "fuse", 3, "fuse"),            # 2 of 4 corpus shards fused and marked
    "index": ("index.py", "index", 7, "index"),        # baseline (5 index shards) done, 1 of 5 shards of xqg
    "search": ("search.py", "search", 2, "search"),    # the baseline run done, the xqg run written
    "evaluate": ("evaluate.py", "evaluate", 1, "evaluate"),  # the report written, not marked
    "pipeline": ("pipeline.py", "index", 3, "fuse"),   # fuse done, index of baseline cut at its third shard
}


def overrides(run_dir: Path) -> list[str]:
    # The demo's first 240 passages and its dev questions, one bi-encoder setting: small, every stage still sharded.
    return [f"run_dir={run_dir}", f"languages=[{', '.join(LANGS)}]",
            *demo_subset(run_dir.parent / "demo-240", 240, dev_on_subset=False),
            "index.shard_size=50", "search.depth=20", "evaluate.permutations=200"]


def config_for(run_dir: Path) -> Config:
    return demo_config(run_dir, *overrides(run_dir)[1:])


def write_embeddings(run: RunDir) -> None:
    """Seeded passage vectors, per-language generated-query sums and dev query vectors, with encode markers."""
    rng = np.random.default_rng(0)
    for s in run.corpus_shards():
        docids = run.read_dir(f"corpus/{shard_name(s)}", ["docid"]).column("docid").to_pylist()
        run.write_table(f"embeddings/passages/{shard_name(s)}/part-00000.parquet", pa.table({
            "docid": docids, "embedding": vector_column(rng.standard_normal((len(docids), DIM)).astype(np.float32))}))
        run.mark_done("encode", f"passages/{shard_name(s)}", rows_out=len(docids), inputs={"encoder": "seeded"})
        for lang in LANGS:
            n = rng.integers(1, 4, len(docids)).astype(np.int32)
            run.write_table(f"embeddings/generated/lang={lang}/{shard_name(s)}/part-00000.parquet", pa.table({
                "docid": docids, "lang": [lang] * len(docids), "n": n,
                "embedding_sum": vector_column(rng.standard_normal((len(docids), DIM)).astype(np.float32))}))
            run.mark_done("encode", f"generated/lang={lang}/{shard_name(s)}", rows_out=len(docids), max_n=int(n.max()))
    q = run.read_dir("queries/dev", ["qid", "lang"])
    run.write_table("embeddings/queries/dev/part-00000.parquet", pa.table({
        "qid": q["qid"], "lang": q["lang"],
        "embedding": vector_column(rng.standard_normal((q.num_rows, DIM)).astype(np.float32))}))
    run.mark_done("encode", "queries/dev", rows_out=q.num_rows, inputs={"encoder": "seeded"})


def content(path: Path) -> bytes:
    """A file's bytes; an index manifest's without the time it was built (the one field that says when)."""
    if path.name != "manifest.json":
        return path.read_bytes()
    manifest = json.loads(path.read_bytes())
    manifest.pop("built_at")
    return json.dumps(manifest, sort_keys=True).encode()


def outputs(root: Path, stages: list[str]) -> dict[str, bytes]:
    """Every file the stages write, by run-relative path."""
    return {str(p.relative_to(root)): content(p) for st in stages for p in sorted((root / OUTPUTS[st]).rglob("*"))
            if p.is_file()}


def markers(root: Path, stages: list[str]) -> dict[str, dict[str, dict]]:
    """stage -> unit -> marker without the fields that say when or where it ran."""
    run = RunDir(str(root))
    return {st: {u: {k: v for k, v in m.items() if k not in VOLATILE} for u, m in run.markers(st).items()}
            for st in stages}


@pytest.fixture(scope="module")
def snapshots(ray_local, tmp_path_factory) -> dict[str, Path]:
    """The run directory as each downstream stage finds it (uninterrupted, in this process), and at the end.

    "run" is where it was built and where each test works on a copy: the files record the run directory's path
    (the report shows it), so only runs at one path can be compared byte for byte.
    """
    from xqg.ingest.stage import run_ingest
    from xqg.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("kill-downstream")
    work = root / "run"
    config = config_for(work)
    run_ingest(config)
    write_embeddings(RunDir(str(work)))
    out = {}
    for stage in DOWNSTREAM:
        out[stage] = root / f"before-{stage}"
        shutil.copytree(work, out[stage])
        assert all(s.ok and s.balanced and s.units_done for s in run_pipeline(config, only=[stage])[:-1])
    out["end"] = root / "end"
    work.rename(out["end"])
    out["run"] = work
    return out


@pytest.mark.slow
@pytest.mark.parametrize("job", list(KILLS))
def test_job_killed_mid_stage_reruns_to_the_uninterrupted_result(
    job: str, snapshots: dict[str, Path], tmp_path: Path, ray_local, ray_address: str
) -> None:
    from xqg.pipeline import run_pipeline

    script, held, n, first = KILLS[job]
    run_dir = snapshots["run"]
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(snapshots[first], run_dir)
    config = config_for(run_dir)
    hold_file, log = tmp_path / "held", tmp_path / "killed.log"
    args = [a for o in overrides(run_dir) for a in ("--set", o)] + (["--from", "fuse"] if job == "pipeline" else [])
    proc = start_job_on(ray_address, script, DEMO_CONFIG, log, *args, hold=(held, n, hold_file))
    try:
        wait_for(hold_file.exists, proc, log, f"the hold before marking unit {n} of {held}")
    finally:
        kill_job(proc)
    wait_until_cluster_idle(ray_local)
    run = RunDir(str(run_dir))
    assert len(run.done_units(held)) == n - 1, "killed mid-stage: the units before the held one marked, no other"

    summaries = run_pipeline(config, start=first) if job == "pipeline" else run_pipeline(config, only=[job])
    summaries = summaries[:-1]  # the pipeline's own overall line
    assert all(s.ok and s.balanced for s in summaries), [s.render() for s in summaries]
    resumed = [s for s in summaries if s.stage.split()[0] == held]
    assert sum(s.units_skipped for s in resumed) == n - 1 and sum(s.units_stale for s in resumed) == 0
    for s in summaries:
        assert s.rows_in == s.rows_out + s.rejected and (s.rows_out > 0 or not s.units_done), s.render()

    stages = DOWNSTREAM[DOWNSTREAM.index(first):] if job == "pipeline" else [job]
    after = DOWNSTREAM.index(stages[-1]) + 1  # the uninterrupted run right after the last stage this job runs
    reference = snapshots[DOWNSTREAM[after]] if after < len(DOWNSTREAM) else snapshots["end"]
    want, got = markers(reference, stages), markers(run_dir, stages)
    for st in stages:
        assert got[st].keys() == want[st].keys(), f"{st}: every unit marked exactly once"
        assert got[st] == want[st], f"{st}: units made from the same inputs, with the same counts"
    ref, mine = outputs(reference, stages), outputs(run_dir, stages)
    assert sorted(mine) == sorted(ref), "the same files: nothing lost, nothing left over from the killed job"
    differ = [p for p in ref if mine[p] != ref[p]]
    assert not differ, f"files differ from an uninterrupted run: {differ[:5]}"
