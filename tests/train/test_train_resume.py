"""Resume: exact data position, complete-checkpoint detection, and a training driver killed and rerun."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from processes import kill_job, start_job_on, wait_for, wait_until_cluster_idle
from xqg.train.checkpoints import (
    SNAPSHOT_FILE, checkpoint_name, clean_experiment, latest_checkpoint, prune_checkpoints, read_valid_state,
    write_state,
)
from xqg.train.metrics import MetricsLog
from xqg.train.order import epoch_order, local_indices, lr_factor, steps_per_epoch


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


# ---- a real driver, killed ----------------------------------------------------------------------------------


def training_overrides(stage: str, run_dir: Path, model: str, train_file: Path) -> list[str]:
    """Tiny trainings of 18 (dr) / 12 (qg) steps, a checkpoint every 3, every step's loss logged."""
    common = [f"run_dir={run_dir}", f"{stage}.model={model}", f"{stage}.train_files=[{train_file}]",
              f"{stage}.batch_size=16", f"{stage}.checkpoint_every_steps=3", f"{stage}.log_every_steps=1"]
    if stage == "train_dr":  # 96 examples, 6 steps an epoch, 3 epochs; separate encoders (two models to resume)
        return common + ["train_dr.epochs=3", "train_dr.lr=0.005", "train_dr.shared_encoder=false",
                         "train_dr.pooling=mean", "p_max_len=64"]
    return common + ["train_qg.max_steps=12", "train_qg.lr=0.003", "train_qg.max_input_len=64",
                     "train_qg.max_target_len=16", "train_qg.eval_examples=8"]


def checkpoint_events(metrics: Path) -> list[dict]:
    """Checkpoint lines of a metrics log being written (a line cut mid-write is not one yet)."""
    rows = []
    for line in metrics.read_text().splitlines() if metrics.exists() else []:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return [r for r in rows if r["event"] == "checkpoint"]


def run_training_in_process(stage: str, overrides: list[str]):
    from xqg.config import load_config
    from xqg.train.dr import run_train_dr
    from xqg.train.qg import run_train_qg

    return (run_train_dr if stage == "train_dr" else run_train_qg)(load_config(None, overrides))


def metric_rows(run_dir: Path, stage: str) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics" / f"{stage}.jsonl").read_text().splitlines() if x.strip()]


def step_trajectory(run_dir: Path, stage: str) -> list[tuple]:
    """(step, epoch, loss, lr) of every optimizer step, and (step, eval loss) of every evaluation."""
    rows = metric_rows(run_dir, stage)
    return [(r["step"], r["epoch"], r["loss"], r["lr"]) for r in rows if r["event"] == "step"] + \
        [(r["step"], r["eval_loss"]) for r in rows if r["event"] == "eval"]


def model_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.rglob("*.safetensors")):
        out.update({f"{f.parent.relative_to(folder)}/{k}": v for k, v in load_file(f).items()})
    return out


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["train_dr", "train_qg"])
def test_killed_training_resumes_to_the_weights_and_losses_of_an_uninterrupted_one(
    stage: str, tiny_bert_dir: str, tiny_mt5_dir: str, demo_train_file: Path, tmp_path: Path, ray_local,
    ray_address: str,
) -> None:
    model = tiny_bert_dir if stage == "train_dr" else tiny_mt5_dir
    total = 18 if stage == "train_dr" else 12
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    run_training_in_process(stage, training_overrides(stage, reference, model, demo_train_file))

    overrides = training_overrides(stage, run_dir, model, demo_train_file)
    metrics = run_dir / "metrics" / f"{stage}.jsonl"
    log = tmp_path / "killed.log"
    args = [a for o in overrides for a in ("--set", o)]
    proc = start_job_on(ray_address, f"{stage}.py", None, log, *args)
    try:
        wait_for(lambda: checkpoint_events(metrics), proc, log, "a checkpoint")
    finally:
        kill_job(proc)
    seen = checkpoint_events(metrics)[-1]["step"]
    wait_until_cluster_idle(ray_local)
    assert not (run_dir / "_done" / stage / "model.json").exists()

    summary = run_training_in_process(stage, overrides)  # the rerun, on the same cluster
    assert summary.ok and summary.units_done == 1
    starts = [r for r in metric_rows(run_dir, stage) if r["event"] == "start"]
    assert [r["step"] for r in starts][:1] == [0] and len(starts) == 2
    assert total > starts[1]["step"] >= seen > 0, "the rerun continued from a checkpoint, before the end"
    marker = json.loads((run_dir / "_done" / stage / "model.json").read_text())
    assert marker["steps"] == total and marker["resumed_from_steps"] == [starts[1]["step"]]

    # the killed-and-resumed training is the uninterrupted one: every step's loss and learning rate, and every weight
    got, want = step_trajectory(run_dir, stage), step_trajectory(reference, stage)
    assert [r[0] for r in got if len(r) == 4] == list(range(1, total + 1))
    assert got == want, f"resumed at step {starts[1]['step']}: trajectories differ"
    name = "dr" if stage == "train_dr" else "qg"
    resumed, uninterrupted = model_tensors(run_dir / "models" / name), model_tensors(reference / "models" / name)
    assert resumed.keys() == uninterrupted.keys() and len(resumed) > 10
    differ = [k for k in resumed if not torch.equal(resumed[k], uninterrupted[k])]
    assert not differ, f"{len(differ)} of {len(resumed)} tensors differ, e.g. {differ[:3]}"
