"""Resume: exact data position, complete-checkpoint detection, and a training driver killed and rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from xqg.train.checkpoints import (
    SNAPSHOT_FILE, checkpoint_name, clean_experiment, latest_checkpoint, prune_checkpoints, read_valid_state,
    write_state,
)
from xqg.train.metrics import MetricsLog
from xqg.train.order import epoch_order, local_indices, lr_factor, steps_per_epoch

REPO = Path(__file__).resolve().parents[2]


# ---- data position and schedule -------------------------------------------------------------------------


@pytest.mark.parametrize("world", [1, 2, 3])
def test_each_epoch_visits_every_example_once_whatever_the_world_size(world: int) -> None:
    n, batch = 50, 16
    spe = steps_per_epoch(n, batch, world)
    assert spe == (4 if world <= 2 else 3)  # the last 2 examples cannot feed 3 workers: dropped
    for epoch in range(2):
        order = epoch_order(n, seed=7, epoch=epoch)
        seen = np.concatenate([local_indices(order, s, batch, r, world) for s in range(spe) for r in range(world)])
        assert len(seen) == len(set(seen.tolist())) == min(n, spe * batch)
    assert not np.array_equal(epoch_order(n, 7, 0), epoch_order(n, 7, 1))
    assert np.array_equal(epoch_order(n, 7, 1), epoch_order(n, 7, 1))


def test_too_little_data_for_the_workers_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cannot feed"):
        steps_per_epoch(1, 16, 2)


def test_learning_rate_warms_up_then_decays_linearly_to_zero() -> None:
    f = [lr_factor(s, 20, 0.1) for s in range(20)]
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(1.0) == f[2]
    assert all(a > b for a, b in zip(f[2:], f[3:])) and lr_factor(20, 20, 0.1) == 0.0


# ---- checkpoint files -----------------------------------------------------------------------------------


def fake_checkpoint(exp: Path, step: int) -> Path:
    d = exp / checkpoint_name(step)
    (d / "model").mkdir(parents=True)
    (d / "model" / "model.safetensors").write_bytes(b"w" * (100 + step))
    (d / "optimizer.pt").write_bytes(b"o" * 50)
    write_state(str(d), {"global_step": step})
    return d


def test_a_checkpoint_cut_short_is_not_resumed_from_and_is_cleaned(tmp_path: Path) -> None:
    exp = tmp_path / "train" / "dr"
    fake_checkpoint(exp, 4)
    newest = fake_checkpoint(exp, 8)
    assert latest_checkpoint(str(exp))[0] == "step=00000008"
    (newest / "model" / "model.safetensors").write_bytes(b"w" * 10)  # a crash mid-upload
    assert read_valid_state(str(exp), "step=00000008") is None
    assert latest_checkpoint(str(exp)) == ("step=00000004", read_valid_state(str(exp), "step=00000004"))
    (exp / SNAPSHOT_FILE).write_text('{"checkpoint_results": [{"checkpoint_dir_na')  # killed mid-write
    clean_experiment(str(exp))
    assert not newest.exists() and not (exp / SNAPSHOT_FILE).exists() and (exp / "step=00000004").exists()


def test_pruning_keeps_the_best_checkpoint_beside_the_newest(tmp_path: Path) -> None:
    from xqg.train.driver import best_checkpoint

    exp = tmp_path / "train" / "qg"
    for step in (1, 2, 3, 4):
        fake_checkpoint(exp, step)
    final = {"global_step": 4, "best_checkpoint": "step=00000001", "best_eval_loss": 2.0}
    assert best_checkpoint(str(exp), final)[0] == "step=00000001"
    prune_checkpoints(str(exp), keep=2, keep_also="step=00000001")
    assert sorted(p.name for p in exp.iterdir()) == ["step=00000001", "step=00000003", "step=00000004"]
    (exp / "step=00000001" / "optimizer.pt").write_bytes(b"")  # cut short: never silently the final model instead
    with pytest.raises(RuntimeError, match="best checkpoint step=00000001"):
        best_checkpoint(str(exp), final)


def test_metrics_log_drops_lines_of_lost_steps(tmp_path: Path) -> None:
    log = MetricsLog(str(tmp_path / "run"), "metrics/train_dr.jsonl")
    log.append({"event": "start", "step": 0}, *({"event": "step", "step": s} for s in range(1, 8)))
    with open(tmp_path / "run" / "metrics" / "train_dr.jsonl", "a") as f:
        f.write('{"event": "step", "st')  # a line torn by a killed writer
    log.truncate_after(4)
    assert [r["step"] for r in log.read()] == [0, 1, 2, 3, 4]


# ---- a real driver, killed --------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, session id, state) of a process; None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[3]), fields[0]


def run_processes(root: int) -> set[int]:
    """Processes of the session `root` leads, plus every descendant of root (Ray's raylet, GCS, workers)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            table[int(entry)] = st
    found = {pid for pid, (_, sid, _) in table.items() if sid == root}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, _) in table.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                frontier.append(pid)
    return found | ({root} if root in table else set())


def alive(pids: set[int]) -> set[int]:
    return {p for p in pids if (st := _stat(p)) is not None and st[2] != "Z"}


def kill_all(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def checkpoint_events(metrics: Path) -> list[dict]:
    if not metrics.exists():
        return []
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    return [r for r in rows if r["event"] == "checkpoint"]


@pytest.mark.slow
def test_killed_driver_is_rerun_and_resumes_at_its_checkpoint(tiny_bert_dir: str, demo_train_file: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, str(REPO / "jobs" / "train_dr.py"),
        "--set", f"run_dir={run_dir}", "--set", f"train_dr.model={tiny_bert_dir}",
        "--set", f"train_dr.train_files=[{demo_train_file}]", "--set", "train_dr.batch_size=16",
        "--set", "train_dr.epochs=3", "--set", "train_dr.lr=0.005", "--set", "train_dr.checkpoint_every_steps=3",
        "--set", "train_dr.shared_encoder=false", "--set", "train_dr.pooling=mean", "--set", "p_max_len=64",
        "--set", "ray.num_cpus=2",
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray, never a shared one
    env["TOKENIZERS_PARALLELISM"] = "false"
    metrics = run_dir / "metrics" / "train_dr.jsonl"
    log1 = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log1, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not checkpoint_events(metrics):
            assert first.poll() is None, f"training ended before a checkpoint: {(tmp_path / 'first.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
        seen = checkpoint_events(metrics)[-1]["step"]
        procs = run_processes(first.pid)
        kill_all(procs)
        first.wait(timeout=30)
        deadline = time.monotonic() + 30
        while alive(procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(procs), f"processes of the killed run survive: {alive(procs)}"
    finally:
        kill_all(run_processes(first.pid))
        log1.close()
    assert not (run_dir / "_done" / "train_dr" / "model.json").exists()

    second = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True, text=True)
    try:
        out, _ = second.communicate(timeout=400)
    finally:
        kill_all(run_processes(second.pid))
    assert second.returncode == 0, out[-4000:]

    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    starts = [r for r in rows if r["event"] == "start"]
    assert len(starts) == 2 and starts[0]["step"] == 0
    assert starts[1]["step"] >= seen > 0  # not step 0: the rerun continued from the checkpoint
    assert f"resuming at step {starts[1]['step']}" in out
    steps = [r["step"] for r in rows if r["event"] == "step"]
    assert steps == sorted(set(steps)) and steps[-1] == 18
    marker = json.loads((run_dir / "_done" / "train_dr" / "model.json").read_text())
    assert marker["steps"] == 18 and marker["resumed_from_steps"] == [starts[1]["step"]]
    assert (run_dir / "models" / "dr" / "query" / "model.safetensors").is_file()
    assert (run_dir / "models" / "dr" / "passage" / "model.safetensors").is_file()
    assert json.loads((run_dir / "models" / "dr" / "xqg_dr.json").read_text())["shared_encoder"] is False
