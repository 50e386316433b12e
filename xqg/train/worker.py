"""The per-worker training function of both trainings (given to Ray Train's TorchTrainer).

A training contributes a task (xqg.train.dr.DRTask, xqg.train.qg.QGTask), named by its import path
"module:Class" and built inside each worker: it knows the data, the model, the batches, the loss and how to save
the model. This module owns everything else:
- the data order of xqg.train.order (the data position is (epoch, step in epoch), whatever the world size) and
  the seed of each step's dropout (step_seed), so a resumed training repeats the uninterrupted one exactly;
- AdamW, linear warm-up then linear decay to 0, gradient clipping at 1.0 (HF Trainer's default), autocast
  bf16/fp16 on GPU (fp16 with a GradScaler);
- the length of the training: `epochs` passes, or exactly `max_steps` optimizer steps when it is set (epochs
  repeat as needed; the learning-rate schedule spans max_steps);
- a checkpoint (xqg.train.checkpoints) every `checkpoint_every_steps` optimizer steps, at the last step and (without
  max_steps) at the end of every epoch, through ray.train.report(checkpoint=..., checkpoint_dir_name="step=NNNNNNNN");
- evaluation, for a task with evaluation pairs (num_eval_examples() > 0): at every checkpoint the eval loss
  (summed target-token cross-entropy over the whole eval set / its target tokens; every rank takes its
  np.array_split part, the sums are all-reduced, so the value does not depend on the batch size and every rank
  sees the same one); the checkpoint's state and Ray's metrics carry it, the state also the best checkpoint so
  far (lowest eval loss, the earliest of equals), which survives a resume;
- resume: the newest of ray.train.get_checkpoint() (Ray Train V2 restores its checkpoint list from
  <storage>/<name>/checkpoint_manager_snapshot.json on a rerun with the same RunConfig(storage_path, name), and
  hands the latest one to restarted workers after a worker failure) and a scan of the step=* folders (covers a
  driver killed between a checkpoint upload and Ray's snapshot write);
- the metrics log (xqg.train.metrics), written by rank 0 (an "eval" line per evaluation).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import posixpath
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from xqg.rundir import filesystem_for
from xqg.train.checkpoints import checkpoint_name, latest_checkpoint, read_valid_state, write_state
from xqg.train.metrics import MetricsLog, metrics_rel
from xqg.train.order import epoch_order, local_indices, lr_factor, step_seed, steps_per_epoch

MAX_GRAD_NORM = 1.0


@dataclass
class LoopSettings:
    """Everything the worker loop needs besides the task (plain values: travels in train_loop_config)."""

    stage: str
    name: str
    run_uri: str
    experiment_uri: str
    epochs: int
    global_batch: int
    lr: float
    warmup_ratio: float
    seed: int
    checkpoint_every_steps: int
    log_every_steps: int
    precision: str = "auto"
    fp16_ok: bool = True
    weight_decay: float = 0.0
    max_steps: int | None = None
    driver_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


class Task(Protocol):
    """What a training contributes to the loop: data, model, loss, saving."""

    find_unused_parameters: bool

    def num_examples(self) -> int: ...

    def build_model(self, checkpoint_model_dir: str | None) -> Any: ...

    def make_batch(self, indices: np.ndarray, epoch: int) -> dict[str, Any]: ...

    def compute_loss(self, model: Any, batch: dict[str, Any], device: Any) -> tuple[Any, Any]: ...

    def save_model(self, model: Any, out_dir: str) -> None: ...


class EvalTask(Task, Protocol):
    """A task with evaluation pairs (optional: the loop evaluates when a task has these methods)."""

    def num_eval_examples(self) -> int: ...

    def make_eval_batch(self, indices: np.ndarray) -> dict[str, Any]: ...

    def eval_loss_sum(self, model: Any, batch: dict[str, Any], device: Any) -> tuple[float, int]: ...


def load_task(path: str, args: dict[str, Any]) -> Task:
    """The task object named by its import path ("xqg.train.dr:DRTask"), built inside the worker."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)(**args)


def _resume_point(s: LoopSettings) -> tuple[Any, dict[str, Any]]:
    """(checkpoint, state) to resume from: the newest of Ray's checkpoint and the folder scan; (None, {}) if none."""
    import ray.train

    candidates: list[tuple[int, Any, dict[str, Any]]] = []
    ray_ckpt = ray.train.get_checkpoint()
    if ray_ckpt is not None:
        name = posixpath.basename(ray_ckpt.path.rstrip("/"))
        state = read_valid_state(s.experiment_uri, name)
        if state is not None:
            candidates.append((int(state["global_step"]), ray_ckpt, state))
    found = latest_checkpoint(s.experiment_uri)
    if found is not None:
        name, state = found
        fs, root = filesystem_for(s.experiment_uri)
        candidates.append((int(state["global_step"]), ray.train.Checkpoint(posixpath.join(root, name), fs), state))
    if not candidates:
        return None, {}
    _, ckpt, state = max(candidates, key=lambda c: c[0])
    return ckpt, state


def _autocast_dtype(s: LoopSettings, device: Any) -> Any:
    import torch

    if device.type != "cuda" or s.precision == "fp32":
        return None
    if s.precision == "bf16" or (s.precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    if s.precision == "fp16" or s.fp16_ok:
        return torch.float16
    return None


def _all_agree(value: int, device: Any) -> bool:
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        return True
    t = torch.tensor([value, -value], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t[0]) == value and int(-t[1]) == value


def _mean_over_ranks(value: float, device: Any) -> float:
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def num_eval_examples(task: Any) -> int:
    """Evaluation pairs of a task (0 for a task without evaluation)."""
    return int(task.num_eval_examples()) if hasattr(task, "num_eval_examples") else 0


def evaluate(task: Any, model: Any, device: Any, dtype: Any, rank: int, world: int, batch_size: int) -> float:
    """Eval loss over the whole eval set: summed target-token cross-entropy / target tokens, across ranks."""
    import torch
    import torch.distributed as dist

    mine = np.array_split(np.arange(num_eval_examples(task)), world)[rank]
    loss_sum, tokens = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(mine), batch_size):
                batch = task.make_eval_batch(mine[i : i + batch_size])
                amp = torch.autocast(device_type=device.type, dtype=dtype) if dtype else contextlib.nullcontext()
                with amp:
                    part, count = task.eval_loss_sum(model, batch, device)
                loss_sum, tokens = loss_sum + float(part), tokens + int(count)
    finally:
        model.train(was_training)
    if dist.is_initialized():
        t = torch.tensor([loss_sum, float(tokens)], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        loss_sum, tokens = float(t[0]), int(round(float(t[1])))
    return loss_sum / max(tokens, 1)


def _say(message: str) -> None:
    """A progress line on the worker's real stdout (Ray forwards it to the driver once; Train's patched
    print would tee it to a logger as well and show it twice)."""
    print(message, file=sys.__stdout__, flush=True)


@dataclass
class Position:
    """Where a training stands: the data position, the running sums and the best checkpoint (a checkpoint's state)."""

    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    epoch_loss: float = 0.0
    epoch_steps: int = 0
    train_seconds: float = 0.0
    examples_seen: int = 0
    last_loss: float = float("nan")
    best: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Position:
        """The position a checkpoint's state records (the start of the training for an empty state)."""
        return cls(
            global_step=int(state.get("global_step", 0)), epoch=int(state.get("epoch", 0)),
            step_in_epoch=int(state.get("step_in_epoch", 0)), epoch_loss=float(state.get("epoch_loss_sum", 0.0)),
            epoch_steps=int(state.get("epoch_steps", 0)), train_seconds=float(state.get("train_seconds", 0.0)),
            examples_seen=int(state.get("examples_seen", 0)), last_loss=float(state.get("loss", float("nan"))),
            best={k: state[k] for k in ("best_step", "best_eval_loss", "best_checkpoint") if k in state},
        )


@dataclass
class Window:
    """Steps since the last progress line (their mean loss and speed)."""

    loss: float = 0.0
    steps: int = 0
    examples: int = 0
    since: float = field(default_factory=time.perf_counter)


class TrainLoop:
    """One worker's training: resume, step, evaluate, checkpoint, each a method; run() drives them to the end."""

    def __init__(self, config: dict[str, Any]) -> None:
        import ray.train
        import ray.train.torch
        import torch

        self.s = s = LoopSettings(**config["loop"])
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        torch.manual_seed(s.seed * 1000 + self.rank)
        self.task = load_task(config["task"], config["task_args"])
        self.n, self.n_eval = self.task.num_examples(), num_eval_examples(self.task)
        self.spe = steps_per_epoch(self.n, s.global_batch, self.world)
        self.total = s.max_steps if s.max_steps is not None else self.spe * s.epochs
        self.epochs_shown = s.epochs if s.max_steps is None else math.ceil(self.total / self.spe)
        self.dtype = _autocast_dtype(s, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        self.metrics = MetricsLog(s.run_uri, metrics_rel(s.stage)) if self.rank == 0 else None
        self.pos = self.resume()
        self.t_start = time.perf_counter()

    def resume(self) -> Position:
        """Build model, optimizer and schedule, restored from the newest checkpoint if any; its position."""
        ckpt, state = _resume_point(self.s)
        if not _all_agree(int(state.get("global_step", 0)), self.device):
            raise RuntimeError("workers disagree on the checkpoint to resume from")
        with ckpt.as_directory() if ckpt is not None else contextlib.nullcontext(None) as cdir:
            self._build(cdir)
        pos = Position.from_state(state)
        if pos.step_in_epoch >= self.spe:  # the world size changed since the checkpoint and the epoch got shorter
            pos.epoch, pos.step_in_epoch = pos.epoch + 1, 0
        if state and int(state.get("world_size", self.world)) != self.world:
            _say(f"[{self.s.stage}] resuming a checkpoint of {state['world_size']} workers on {self.world}")
        self._log_start(pos)
        return pos

    def _build(self, cdir: str | None) -> None:
        """The model (DDP-wrapped on several workers), AdamW and the schedule; their states from a checkpoint folder."""
        import torch
        from torch.nn.parallel import DistributedDataParallel

        s, device = self.s, self.device
        self.model = model = self.task.build_model(os.path.join(cdir, "model") if cdir else None).to(device)
        self.ddp = model
        if self.world > 1:
            self.ddp = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=self.task.find_unused_parameters,
            )
        decay = [p for nm, p in model.named_parameters() if p.ndim > 1 and "norm" not in nm.lower()]
        no_decay = [p for nm, p in model.named_parameters() if not (p.ndim > 1 and "norm" not in nm.lower())]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=s.lr
        )
        total = self.total
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda st: lr_factor(st, total, s.warmup_ratio))
        if cdir:
            self.opt.load_state_dict(
                torch.load(os.path.join(cdir, "optimizer.pt"), map_location=device, weights_only=True)
            )
            self.sched.load_state_dict(torch.load(os.path.join(cdir, "scheduler.pt"), weights_only=True))
            if self.scaler is not None and os.path.exists(os.path.join(cdir, "scaler.pt")):
                self.scaler.load_state_dict(torch.load(os.path.join(cdir, "scaler.pt"), weights_only=True))

    def _log_start(self, pos: Position) -> None:
        """Rank 0: the metrics log cut back to the resume step, a start line, and one line on the console."""
        if self.metrics is None:
            return
        s, total, spe = self.s, self.total, self.spe
        self.metrics.truncate_after(pos.global_step)
        self.metrics.append({
            "event": "start", "step": pos.global_step, "epoch": pos.epoch, "step_in_epoch": pos.step_in_epoch,
            "world_size": self.world, "total_steps": total, "steps_per_epoch": spe, "examples": self.n,
            "eval_examples": self.n_eval, "max_steps": s.max_steps, "driver_id": s.driver_id, "time": time.time(),
        })
        what = f"resuming at step {pos.global_step}" if pos.global_step else "starting"
        length = f"{s.epochs} epochs x {spe} steps" if s.max_steps is None else f"max_steps, {spe} steps per epoch"
        evals = f", {self.n_eval} eval examples" if self.n_eval else ""
        _say(f"[{s.stage}] {what} of {total} ({length}, {self.n} examples{evals}, {self.world} workers)")

    def train_step(self, batch: dict[str, Any]) -> float:
        """One optimizer step on this rank's batch; the step's loss averaged over ranks."""
        import torch

        self.ddp.train()
        # Dropout draws from a seed of (seed, step, rank), not from a generator that has run since the worker
        # started: a training resumed at a checkpoint then takes exactly the uninterrupted steps.
        torch.manual_seed(step_seed(self.s.seed, self.pos.global_step, self.rank))
        amp = torch.autocast(device_type=self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()
        with amp:
            loss, value = self.task.compute_loss(self.ddp, batch, self.device)
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), MAX_GRAD_NORM)
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), MAX_GRAD_NORM)
            self.opt.step()
        self.sched.step()
        self.pos.global_step += 1
        return _mean_over_ranks(float(value), self.device)

    def evaluate(self, step: int, epoch: int) -> float:
        """The eval loss at this step (every rank gets the same value); updates the best; rank 0 logs it."""
        value = evaluate(self.task, self.model, self.device, self.dtype, self.rank, self.world,
                         max(1, math.ceil(self.s.global_batch / self.world)))
        best = self.pos.best
        if "best_eval_loss" not in best or value < float(best["best_eval_loss"]):
            best.update(best_step=step, best_eval_loss=value, best_checkpoint=checkpoint_name(step))
        if self.metrics is not None:
            self.metrics.append({
                "event": "eval", "step": step, "epoch": epoch, "eval_loss": value, "examples": self.n_eval,
                "best_step": best["best_step"], "best_eval_loss": best["best_eval_loss"], "time": time.time(),
            })
            _say(f"[{self.s.stage}] step {step}/{self.total} eval loss {value:.4f} (best "
                 f"{best['best_eval_loss']:.4f} at step {best['best_step']})")
        return value

    def checkpoint(self, epoch: int, step_in_epoch: int, epoch_loss: float, epoch_steps: int) -> None:
        """Evaluate (a task with eval pairs), then report a checkpoint that resumes at (epoch, step_in_epoch)."""
        import ray.train
        import torch

        pos, step = self.pos, self.pos.global_step
        eval_loss = self.evaluate(step, epoch) if self.n_eval else None
        st = {
            "global_step": step, "epoch": epoch, "step_in_epoch": step_in_epoch, "world_size": self.world,
            "total_steps": self.total, "steps_per_epoch": self.spe, "epoch_loss_sum": epoch_loss,
            "epoch_steps": epoch_steps, "train_seconds": pos.train_seconds + (time.perf_counter() - self.t_start),
            "examples_seen": pos.examples_seen, "finished": step >= self.total, "loss": pos.last_loss,
            "seed": self.s.seed, "time": time.time(),
            **({"eval_loss": eval_loss, **pos.best} if eval_loss is not None else {}),
        }
        report = {"step": step, "loss": pos.last_loss, **({"eval_loss": eval_loss} if eval_loss is not None else {})}
        name = checkpoint_name(step)
        if self.rank != 0:
            ray.train.report(report, checkpoint=None, checkpoint_dir_name=name)
            return
        tmp = tempfile.mkdtemp(prefix=f"xqg-{self.s.name}-ckpt-")
        try:
            self.task.save_model(self.model, os.path.join(tmp, "model"))
            torch.save(self.opt.state_dict(), os.path.join(tmp, "optimizer.pt"))
            torch.save(self.sched.state_dict(), os.path.join(tmp, "scheduler.pt"))
            if self.scaler is not None:
                torch.save(self.scaler.state_dict(), os.path.join(tmp, "scaler.pt"))
            write_state(tmp, st)
            ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        assert self.metrics is not None
        self.metrics.append({"event": "checkpoint", "step": step, "epoch": epoch, "name": name, "time": time.time()})

    def _log_step(self, win: Window, epoch: int) -> Window:
        """Rank 0: a progress line for the window of steps since the last one; the next, empty window."""
        dt = max(time.perf_counter() - win.since, 1e-9)
        row = {
            "event": "step", "step": self.pos.global_step, "epoch": epoch, "loss": win.loss / win.steps,
            "lr": self.sched.get_last_lr()[0], "steps_per_s": win.steps / dt, "examples_per_s": win.examples / dt,
            "time": time.time(),
        }
        assert self.metrics is not None
        self.metrics.append(row)
        _say(
            f"[{self.s.stage}] step {self.pos.global_step}/{self.total} epoch {epoch + 1}/{self.epochs_shown} "
            f"loss {row['loss']:.4f} lr {row['lr']:.2e} {row['steps_per_s']:.2f} steps/s "
            f"{row['examples_per_s']:.1f} examples/s"
        )
        return Window()

    def run_epoch(self, epoch: int, first: int, pool: ThreadPoolExecutor) -> None:
        """The steps of one epoch from step `first` on, until its end or the last step of the training."""
        s, pos, spe, rank, world = self.s, self.pos, self.spe, self.rank, self.world
        order = epoch_order(self.n, s.seed, epoch)
        win = Window()
        nxt = pool.submit(self.task.make_batch, local_indices(order, first, s.global_batch, rank, world), epoch)
        for step in range(first, spe):
            batch = nxt.result()
            if step + 1 < spe and pos.global_step + 1 < self.total:  # tokenizes the next batch while this one trains
                nxt = pool.submit(
                    self.task.make_batch, local_indices(order, step + 1, s.global_batch, rank, world), epoch
                )
            step_loss = self.train_step(batch)
            examples = len(order[step * s.global_batch : (step + 1) * s.global_batch])
            pos.examples_seen += examples
            pos.epoch_loss, pos.epoch_steps, pos.last_loss = pos.epoch_loss + step_loss, pos.epoch_steps + 1, step_loss
            win.loss, win.steps, win.examples = win.loss + step_loss, win.steps + 1, win.examples + examples
            end_of_epoch, last = step == spe - 1, pos.global_step >= self.total
            if rank == 0 and (pos.global_step % s.log_every_steps == 0 or end_of_epoch or last):
                win = self._log_step(win, epoch)
            if end_of_epoch and self.metrics is not None:
                self.metrics.append({
                    "event": "epoch", "step": pos.global_step, "epoch": epoch,
                    "mean_loss": pos.epoch_loss / pos.epoch_steps, "steps": pos.epoch_steps, "time": time.time(),
                })
            # Under max_steps, no extra checkpoint per epoch: the data position inside an epoch resumes as well.
            if pos.global_step % s.checkpoint_every_steps == 0 or last or (end_of_epoch and s.max_steps is None):
                if end_of_epoch:  # the resumed run starts a fresh epoch
                    self.checkpoint(epoch + 1, 0, 0.0, 0)
                else:
                    self.checkpoint(epoch, step + 1, pos.epoch_loss, pos.epoch_steps)
            if last:
                return

    def run(self) -> None:
        """Train from the resume position to the last step (epochs repeat as needed under max_steps)."""
        import torch.distributed as dist

        pos = self.pos
        epoch, first = pos.epoch, pos.step_in_epoch
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            while pos.global_step < self.total:
                self.run_epoch(epoch, first, pool)
                epoch, first = epoch + 1, 0
                pos.epoch_loss, pos.epoch_steps = 0.0, 0
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if dist.is_initialized():
            dist.barrier()


def train_worker(config: dict[str, Any]) -> None:
    """The per-worker training function given to TorchTrainer."""
    TrainLoop(config).run()
