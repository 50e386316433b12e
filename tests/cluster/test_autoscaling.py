"""On a real Ray autoscaler with fake nodes (head: no GPU; "gpu" workers: 0 to 2): use_gpu: true jobs started with
no GPU make the autoscaler add GPU nodes, run on more than one GPU actor, and never on the CPU path; killing a
worker node mid-stage loses and duplicates no unit."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest
import yaml

from simcluster import PrivateAutoscalingCluster, wait, wait_for

from xqg.rundir import RunDir, shard_name

pytestmark = pytest.mark.slow

SHARDS = 4
GPU_NODE = {"resources": {"CPU": 1, "GPU": 1, "object_store_memory": 150_000_000}, "node_config": {},
            "min_workers": 0, "max_workers": 2}


@pytest.fixture(scope="module")
def cluster(ray_local):
    # The session's local Ray first: started after this cluster, ray.init() would find and join this one.
    # A short private temp dir (Ray's socket paths must stay under ~107 characters).
    parent = os.environ.get("RAY_TMPDIR") or "/tmp"
    os.makedirs(parent, exist_ok=True)
    temp_dir = tempfile.mkdtemp(prefix="ac", dir=parent)
    c = PrivateAutoscalingCluster({"CPU": 1}, {"gpu": GPU_NODE}, temp_dir)
    try:
        c.start()
        yield c
    finally:
        c.shutdown()


def write_config(path: Path, run: RunDir, mt5: str, bert: str) -> Path:
    config = {
        "run_dir": run.uri, "languages": ["sw"],
        "generate": {"model": mt5, "backend": "hf", "num_queries": 2, "max_new_tokens": 6, "batch_size": 8,
                     "use_gpu": True},
        "encode": {"model": bert, "use_gpu": True, "batch_size": 16},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def markers(run: RunDir, stage: str) -> dict[str, dict]:
    return {u: run.read_marker(stage, u) for u in run.done_units(stage)}


def test_gpu_jobs_started_without_gpus_scale_out_and_never_run_on_the_cpu_path(
    cluster, tmp_path, tiny_mt5_dir, tiny_bert_dir, make_corpus_run, demo_passage_rows
):
    run = make_corpus_run(demo_passage_rows[:SHARDS * 12], num_shards=SHARDS)
    config = write_config(tmp_path / "c.yaml", run, tiny_mt5_dir, tiny_bert_dir)
    log = tmp_path / "generate.log"
    assert wait(cluster.job("generate.py", config, log), log, 240) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "use_gpu is true and this Ray cluster has no GPU yet" in text  # the visible waiting message
    gen = markers(run, "generate")
    assert set(gen) == {f"lang=sw/{shard_name(s)}" for s in range(SHARDS)}
    assert {m["device"] for m in gen.values()} == {"fake-gpu"}  # every unit on a GPU actor, none on the CPU path
    assert len({m["actor"] for m in gen.values()}) > 1 and len({m["node"] for m in gen.values()}) > 1

    log = tmp_path / "encode.log"
    assert wait(cluster.job("encode.py", config, log, "--target", "all"), log, 240) == 0, log.read_text()[-3000:]
    enc = markers(run, "encode")
    assert len(enc) == 2 * SHARDS  # passages + generated sums per shard
    assert {m["device"] for m in enc.values()} == {"fake-gpu"}
    assert len({m["actor"] for m in enc.values()}) > 1


def test_killing_a_worker_node_mid_stage_loses_and_duplicates_no_unit(
    cluster, tmp_path, tiny_mt5_dir, tiny_bert_dir, make_corpus_run, demo_passage_rows
):
    from xqg.config import load_config
    from xqg.generate.stage import run_generate

    rows = demo_passage_rows[:SHARDS * 12]
    reference = make_corpus_run(rows, num_shards=SHARDS)
    run = make_corpus_run(rows, num_shards=SHARDS)
    ref_config = write_config(tmp_path / "ref.yaml", reference, tiny_mt5_dir, tiny_bert_dir)
    config = write_config(tmp_path / "c.yaml", run, tiny_mt5_dir, tiny_bert_dir)

    log = tmp_path / "generate.log"
    job = cluster.job("generate.py", config, log)
    first = wait_for(lambda: markers(run, "generate"), 180, "a first generate unit")
    actor_pid = int(next(iter(first.values()))["actor"].rsplit(":", 1)[1])
    raylet = int(Path(f"/proc/{actor_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])  # the actor's raylet
    for pid in (raylet, actor_pid):  # the node dies: its raylet and its worker
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert wait(job, log, 240) == 0, log.read_text()[-3000:]

    # The uninterrupted result: the same settings on the CPU path of the session's local Ray (a
    # passage's queries depend on its seed alone, not on the device, the batch or the actor that made them).
    assert run_generate(load_config(ref_config, ["generate.use_gpu=false"])).ok
    for s in range(SHARDS):
        unit = f"generated/lang=sw/{shard_name(s)}"
        got, want = run.read_dir(unit), reference.read_dir(unit)
        assert got.num_rows == len(set(got.column("docid").to_pylist())) == 12  # every passage once
        assert got.sort_by("docid").equals(want.sort_by("docid"))
    assert set(markers(run, "generate")) == set(markers(reference, "generate"))
