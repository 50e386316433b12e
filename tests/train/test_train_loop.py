"""The training loop resumed from a checkpoint folder takes exactly the uninterrupted steps: weights, optimizer
moments and the learning-rate schedule. Ray Train's local mode (num_workers=0) runs the real loop in this
process, so no Ray cluster starts; a tiny linear model stands in for the networks."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from xqg.train.checkpoints import checkpoint_name, write_state
from xqg.train.worker import LoopSettings, TrainLoop, train_worker

N, BATCH, EPOCHS, DIM = 32, 4, 2, 3  # 8 steps per epoch, 16 in all
STOP = 5  # the interrupted training stops after this step, mid-epoch and past the warm-up (4 steps)


class Stopped(Exception):
    """The interrupted training's stand-in for a killed worker."""


class LinearTask:
    """A regression y = x . w on fixed data; make_batch raises Stopped from its call `stop_at` on (one call per step)."""

    find_unused_parameters = False

    def __init__(self, stop_at: int | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(N, DIM, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(N, generator=g)
        self.stop_at, self.calls = stop_at, 0

    def num_examples(self) -> int:
        return N

    def build_model(self, checkpoint_model_dir: str | None) -> torch.nn.Module:
        torch.manual_seed(1)
        model = torch.nn.Linear(DIM, 1)
        if checkpoint_model_dir:
            model.load_state_dict(torch.load(os.path.join(checkpoint_model_dir, "weights.pt"), weights_only=True))
        return model

    def make_batch(self, indices: np.ndarray, epoch: int) -> dict[str, Any]:
        self.calls += 1
        if self.stop_at is not None and self.calls >= self.stop_at:
            raise Stopped
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {"x": self.x[idx], "y": self.y[idx]}

    def compute_loss(self, model: Any, batch: dict[str, Any], device: Any) -> tuple[Any, Any]:
        loss = torch.nn.functional.mse_loss(model(batch["x"]).squeeze(-1), batch["y"])
        return loss, loss.detach()

    def save_model(self, model: Any, out_dir: str) -> None:
        os.makedirs(out_dir, exist_ok=True)
        torch.save(model.state_dict(), os.path.join(out_dir, "weights.pt"))


def loop_config(root: Path, stop_at: int | None = None) -> dict[str, Any]:
    """train_loop_config as the driver builds it, for the linear task (warm-up, then linear decay)."""
    settings = LoopSettings(
        stage="train_test", name="linear", run_uri=str(root / "run"), experiment_uri=str(root / "run" / "exp"),
        epochs=EPOCHS, global_batch=BATCH, lr=0.05, warmup_ratio=0.25, seed=3, checkpoint_every_steps=100,
        log_every_steps=1,
    )
    return {"loop": asdict(settings), "task": f"{__name__}:LinearTask", "task_args": {"stop_at": stop_at}}


def fit_locally(fn: Any, config: dict[str, Any]) -> None:
    """Run a training function through Ray Train in local mode: one worker, this process, no cluster."""
    import ray.train
    from ray.train.torch import TorchTrainer

    TorchTrainer(fn, train_loop_config=config, scaling_config=ray.train.ScalingConfig(num_workers=0)).fit()


def metrics(root: Path, event: str) -> list[dict[str, Any]]:
    """The metrics log's lines of one event."""
    rows = [json.loads(line) for line in (root / "run" / "metrics" / "train_test.jsonl").read_text().splitlines()]
    return [r for r in rows if r["event"] == event]


def steps(root: Path) -> list[tuple[int, float, float]]:
    """(step, loss, learning rate) of every step line of the metrics log."""
    return [(r["step"], r["loss"], r["lr"]) for r in metrics(root, "step")]


def stop_and_save(config: dict[str, Any]) -> None:
    """Train until the task stops the loop, then save a checkpoint of that step as the loop's checkpoint() does."""
    loop = TrainLoop(config)
    with pytest.raises(Stopped):
        loop.run()
    pos, step = loop.pos, loop.pos.global_step
    assert step == STOP
    out = os.path.join(loop.s.experiment_uri, checkpoint_name(step))
    loop.task.save_model(loop.model, os.path.join(out, "model"))
    torch.save(loop.opt.state_dict(), os.path.join(out, "optimizer.pt"))
    torch.save(loop.sched.state_dict(), os.path.join(out, "scheduler.pt"))
    write_state(out, {
        "global_step": step, "epoch": 0, "step_in_epoch": step, "world_size": 1, "epoch_loss_sum": pos.epoch_loss,
        "epoch_steps": pos.epoch_steps, "examples_seen": pos.examples_seen, "loss": pos.last_loss,
    })


def test_a_resumed_training_restores_the_schedule_and_the_optimizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray.train.v2._internal.execution import train_fn_utils

    # Local mode leaves its session set in this process (Ray Data would take the driver for a training worker):
    # back to none after the test.
    monkeypatch.setattr(train_fn_utils, "_train_fn_utils", None)
    fit_locally(train_worker, loop_config(tmp_path / "whole"))
    whole = steps(tmp_path / "whole")
    assert [s for s, _, _ in whole] == list(range(1, EPOCHS * N // BATCH + 1))
    lrs = [lr for _, _, lr in whole]
    assert max(lrs) == pytest.approx(0.05) and lrs[-1] == 0.0, "warm-up to lr, then decay to 0 at the last step"

    cut = tmp_path / "cut"
    fit_locally(stop_and_save, loop_config(cut, stop_at=STOP + 1))
    fit_locally(train_worker, loop_config(cut))  # a fresh loop: it finds the checkpoint and resumes there
    assert [r["step"] for r in metrics(cut, "start")] == [0, STOP]
    resumed = steps(cut)
    assert [s for s, _, _ in resumed] == [s for s, _, _ in whole]
    for (step, loss, lr), (_, want_loss, want_lr) in zip(resumed, whole):
        assert lr == want_lr, f"step {step}: learning rate {lr}, uninterrupted {want_lr}"
        assert loss == pytest.approx(want_loss, rel=1e-6, abs=1e-9), f"step {step}: loss {loss}, want {want_loss}"
