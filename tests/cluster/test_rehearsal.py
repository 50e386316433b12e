"""The cluster dress rehearsal: a real Ray autoscaler with fake nodes shaped like cluster.yaml (a head with no CPU
for work, a GPU worker type from 0 with fake GPUs, a CPU worker type), the run directory on a local S3 server
(moto) that the test starts, so no stage can lean on a disk the nodes share. generate --encode streams 2,000
passages x 2 languages = 64 generate units (+ 64 encode units) through a GPU pool and a CPU pool while the test
kills a GPU node in the middle of a unit, and the first generate actor's start-up raises.

It asserts: no pool held more actors than its maximum (the Ray actor table); the killed node was running a unit
(its start line names the node, no marker yet) and that unit was redone on another node; the broken actor cost
its units only (exit 1, named, unmarked; every other unit marked) and a rerun completes them (exit 0) without
redoing anything else; the outputs equal a local run's (queries exactly, summed vectors to float rounding; each
passage once)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from simcluster import PrivateAutoscalingCluster, free_port, wait

from xqg.rundir import RunDir, shard_name

pytestmark = pytest.mark.slow

LANGS = ["sw", "fi"]
SHARDS = 32  # x 2 languages = 64 generate units
PASSAGES = 2000
GPU_NODES = 3
ENCODERS = 2  # encode.max_actors: below the 5 CPUs the worker types could bring
# cluster.yaml's shape, small: the head runs drivers only; GPU workers scale from 0; one CPU worker type.
WORKERS = {
    "gpu": {"resources": {"CPU": 2, "GPU": 1, "object_store_memory": 150_000_000}, "node_config": {},
            "min_workers": 0, "max_workers": GPU_NODES},
    "cpu": {"resources": {"CPU": 1, "object_store_memory": 150_000_000}, "node_config": {},
            "min_workers": 0, "max_workers": 1},
}
BUCKET = "xqg-rehearsal"
STARTED = re.compile(r"xqg: generate (\S+) started on node ([0-9a-f]+) by actor \S+:(\d+)")


@pytest.fixture(scope="module")
def s3():
    """A local S3 server (moto) on 127.0.0.1; the AWS_* variables that reach it, set for this process and the
    cluster's (pyarrow >= 15 takes the endpoint from AWS_ENDPOINT_URL)."""
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "rehearsal",
           "AWS_SECRET_ACCESS_KEY": "rehearsal", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], allow_bucket_creation=True).create_dir(BUCKET)
        yield f"s3://{BUCKET}"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture(scope="module")
def cluster(ray_local, s3, tmp_path_factory):
    # The session's local Ray first (ray_local): started after this cluster, ray.init() would join this one.
    parent = os.environ.get("RAY_TMPDIR") or "/tmp"
    os.makedirs(parent, exist_ok=True)
    temp_dir = tempfile.mkdtemp(prefix="rh", dir=parent)
    # Idle nodes go after 2 min (cluster.yaml: 5), not the helper's 6 s: on 2 busy cores a node can join before
    # the pool's next scaling round notices it, and the rerun finds the nodes up.
    c = PrivateAutoscalingCluster({"CPU": 0}, WORKERS, temp_dir, idle_timeout_minutes=2)
    claim = tmp_path_factory.mktemp("broken") / "claim"
    c.broken_claim = claim
    try:
        # Units of 1 s on a fake GPU (so several actors share the work and a node dies mid-unit); the first generate
        # actor process of the cluster fails its start-up (the broken_start test hook), every later one starts.
        c.start(hooks={"fake_gpu_unit_s": 1, "broken_start": ["generate", str(claim)]})
        yield c
    finally:
        c.shutdown()


def install_models(run: RunDir, mt5: str, bert: str) -> None:
    """The run's generator and bi-encoder (models/qg, models/dr) as the training stages leave them."""
    run.publish_dir(mt5, "models/qg")
    run.publish_dir(bert, "models/dr")
    run.write_json("models/dr/xqg_dr.json", {"pooling": "cls", "shared_encoder": True, "q_max_len": 32,
                                             "p_max_len": 128, "passage_format": "title_text_concat"})


def write_config(path: Path, run: RunDir, use_gpu: bool) -> Path:
    path.write_text(yaml.safe_dump({
        "run_dir": run.uri, "languages": LANGS,
        "generate": {"backend": "hf", "num_queries": 2, "max_new_tokens": 4, "batch_size": 32, "use_gpu": use_gpu},
        "encode": {"use_gpu": False, "batch_size": 64, "max_actors": ENCODERS},
    }))
    return path


def markers(run: RunDir, stage: str) -> dict[str, dict]:
    return {u: run.read_marker(stage, u) for u in run.done_units(stage)}


def kill_a_gpu_node_mid_unit(run: RunDir, log: Path, job: subprocess.Popen) -> tuple[str, str]:
    """Wait for a generate unit that a GPU actor has started and not finished (no marker), kill its node (raylet
    and actor); (unit, node)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and job.poll() is None:
        started = STARTED.findall(log.read_text(errors="replace"))
        if len({s[0] for s in started}) >= 2:  # past the start: units flow
            unit, node, pid = started[-1]
            if unit not in run.done_units("generate"):
                raylet = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                for p in (raylet, int(pid)):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                return unit, node
        time.sleep(0.2)
    raise AssertionError(f"no generate unit seen running on a GPU node:\n{log.read_text(errors='replace')[-4000:]}")


def reference_run(run: RunDir, config) -> None:
    """Every unit of the rehearsal generated and encoded in this process by the stages' own actor classes."""
    from xqg.encode.actor import EncodeActor
    from xqg.encode.model import load_encoder_spec
    from xqg.generate.actor import GenerateActor
    from xqg.generate.stage import start_generate
    from xqg.layout import GENERATED, generated_sum_unit, generated_variant

    import torch

    job = start_generate(config)  # the actors' settings, as the stage makes them
    job.runner.close()
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    try:
        # One torch thread, as the cluster's actors have (OMP_NUM_THREADS=1, which the generate actor reads): on
        # 2 busy cores two threads per matrix product cost more than they give.
        os.environ["OMP_NUM_THREADS"] = "1"
        generator = GenerateActor(**job.ctor)
        spec = load_encoder_spec(config, run).to_dict()
        encoder = EncodeActor(run.worker_uri, spec, batch_size=64, preload=("queries",), threads=1)
        for unit in job.plan.todo:
            lang, shard = unit.payload["lang"], unit.payload["shard"]
            assert generator.process(lang, shard)["error"] == ""
            name = generated_sum_unit(generated_variant(None), lang, shard)
            assert encoder.unit(name, GENERATED, shard, lang, "")["error"] == ""
    finally:
        torch.set_num_threads(threads)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp


def most_alive_at_once(address: str) -> dict[str, int]:
    """Per actor class, the most actors of one job alive at the same time (from the GCS actor table)."""
    code = ("import json, ray; ray.init(address=%r, logging_level='ERROR'); "
            "print('ACTORS' + json.dumps(list(ray._private.state.actors().values()), default=str))" % address)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    actors = json.loads(out.split("ACTORS", 1)[1])
    events: dict[tuple[str, str], list[tuple[int, int]]] = {}
    now = int(time.time() * 1000) + 1
    for a in actors:
        name = str(a["ActorClassName"])
        if a["StartTime"]:
            events.setdefault((a["JobID"], name), []).extend([(int(a["StartTime"]), 1), (int(a["EndTime"]) or now, -1)])
    most: dict[str, int] = {}
    for (_, name), ev in events.items():
        alive = peak = 0
        for _, step in sorted(ev, key=lambda e: (e[0], e[1])):
            alive += step
            peak = max(peak, alive)
        most[name] = max(most.get(name, 0), peak)
    return most


def test_rehearsal_s3_run_cpu_less_head_autoscaled_gpus_a_node_lost_and_a_broken_actor(
    cluster, s3, tmp_path, tiny_mt5_dir, tiny_bert_dir, make_corpus_run, demo_passage_rows
):
    from xqg.config import load_config

    started = time.monotonic()
    rows = demo_passage_rows[:PASSAGES]
    assert len(rows) == PASSAGES
    run = make_corpus_run(rows, num_shards=SHARDS, run_dir=f"{s3}/run")
    assert not run.is_local
    install_models(run, tiny_mt5_dir, tiny_bert_dir)
    config = write_config(tmp_path / "c.yaml", run, use_gpu=True)
    gen_units = {f"lang={lang}/{shard_name(s)}" for lang in LANGS for s in range(SHARDS)}
    enc_units = {f"generated/{u}" for u in gen_units}

    log = tmp_path / "first.log"
    job = cluster.job("generate.py", config, log, "--encode")
    killed_unit, killed_node = kill_a_gpu_node_mid_unit(run, log, job)
    first = wait(job, log, 300)
    phases = {"first job": time.monotonic() - started}
    text = log.read_text(errors="replace")
    assert first == 1, text[-4000:]
    assert "use_gpu is true and this Ray cluster has no GPU yet" in text  # it waited for the autoscaler
    # Pools sized by config and the autoscaler's node types, not by the 64 units; the planning lines say so.
    assert f"generate: pool of 1-{GPU_NODES} GPU actor(s)" in text, text[:6000]
    assert f"max: {GPU_NODES} GPU(s) of the autoscaler's node types" in text
    assert f"encode: pool of 1-{ENCODERS} CPU actor(s)" in text and "max: configured" in text
    # The broken actor cost its units only: each named with the reason, unmarked; every other unit marked.
    failed = set(re.findall(r"generate (lang=\w+/shard=\d+) left unmarked: ActorStartError: generate actor on node "
                            r"\w+ could not start after 3 attempts", text))
    assert failed and len(failed) <= 4, text[-4000:]
    assert "simulated start-up failure" in text
    gen_first = markers(run, "generate")
    assert set(gen_first) == gen_units - failed
    assert set(markers(run, "encode")) == {f"generated/{u}" for u in gen_units - failed}
    # The unit that was running on the killed node was redone, on another node.
    assert killed_unit in gen_first or killed_unit in failed
    if killed_unit in gen_first:
        assert gen_first[killed_unit]["node"] != killed_node
    assert {m["device"] for m in gen_first.values()} == {"fake-gpu"}  # GPU actors only, never the CPU path

    log = tmp_path / "rerun.log"
    second = wait(cluster.job("generate.py", config, log, "--encode"), log, 240)
    phases["rerun"] = time.monotonic() - started - sum(phases.values())
    assert second == 0, log.read_text(errors="replace")[-4000:]
    gen, enc = markers(run, "generate"), markers(run, "encode")
    assert set(gen) == gen_units and set(enc) == enc_units
    assert {u: gen[u] for u in gen_first} == gen_first  # nothing done twice
    if killed_unit not in gen_first:
        assert gen[killed_unit]["node"] != killed_node

    # No pool ever held more actors than its maximum.
    most = most_alive_at_once(cluster.address)
    gen_actors = [n for n in most if "GenerateActor" in n]
    enc_actors = [n for n in most if "EncodeGeneratedAfter" in n]
    assert gen_actors and enc_actors, most
    assert max(most[n] for n in gen_actors) <= GPU_NODES and max(most[n] for n in enc_actors) <= ENCODERS, most
    assert max(most[n] for n in gen_actors) >= 2, most  # it grew as GPU nodes came

    # The same units on a local run, by the same actor classes in this process (CPU path, no cluster): the same
    # rows, nothing lost or doubled.
    reference = make_corpus_run(rows, num_shards=SHARDS, run_dir=tmp_path / "reference")
    install_models(reference, tiny_mt5_dir, tiny_bert_dir)
    reference_run(reference, load_config(write_config(tmp_path / "ref.yaml", reference, use_gpu=False)))
    phases["reference"] = time.monotonic() - started - sum(phases.values())
    for u in sorted(gen_units):
        got, want = run.read_dir(f"generated/{u}"), reference.read_dir(f"generated/{u}")
        assert got.num_rows == len(set(got.column("docid").to_pylist())) == want.num_rows  # every passage once
        assert got.sort_by("docid").equals(want.sort_by("docid")), u
        got, want = run.read_dir(f"embeddings/generated/{u}"), reference.read_dir(f"embeddings/generated/{u}")
        got, want = got.sort_by("docid"), want.sort_by("docid")
        assert got.column("docid").equals(want.column("docid")) and got.column("n").equals(want.column("n")), u
        a = np.stack(got.column("embedding_sum").to_numpy(zero_copy_only=False))
        b = np.stack(want.column("embedding_sum").to_numpy(zero_copy_only=False))
        assert np.abs(a - b).max() < 1e-4, u
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
    print(f"rehearsal: {time.monotonic() - started:.0f} s ({timings}), killed {killed_unit} on node {killed_node}, "
          f"failed then redone: {sorted(failed)}, most actors alive at once: {most}")
