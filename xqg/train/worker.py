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
- the metrics log (xqg.train.metrics), written by rank 0 (an "eval" line per evaluation);
- fault injection for tests (`fail_at_step`): the last rank hard-exits (os._exit) once at that step; a sentinel
  file in the experiment folder keeps the retry from failing again.
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

from xqg.rundir import RunDir, filesystem_for
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
    fail_at_step: int | None = None
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


def _inject_fault(s: LoopSettings, step: int, rank: int, world: int) -> None:
    """Testing hook: the last rank dies (a real process exit) once when it reaches fail_at_step."""
    if s.fail_at_step is None or step != s.fail_at_step or rank != world - 1:
        return
    exp = RunDir(s.experiment_uri)
    sentinel = f"fault_injected_step={step}.json"
    if exp.exists(sentinel):
        return
    exp.write_json(sentinel, {"step": step, "rank": rank, "pid": os.getpid(), "time": time.time()})
    _say(f"[{s.stage}] fail_at_step={step}: rank {rank} exits now (fault injection)")
    os._exit(17)


def train_worker(config: dict[str, Any]) -> None:
    """The per-worker training function given to TorchTrainer."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    s = LoopSettings(**config["loop"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(s.seed * 1000 + rank)
    task = load_task(config["task"], config["task_args"])
    n = task.num_examples()
    n_eval = num_eval_examples(task)
    spe = steps_per_epoch(n, s.global_batch, world)
    total = s.max_steps if s.max_steps is not None else spe * s.epochs
    epochs_shown = s.epochs if s.max_steps is None else math.ceil(total / spe)

    ckpt, state = _resume_point(s)
    start_step = int(state.get("global_step", 0))
    if not _all_agree(start_step, device):
        raise RuntimeError("workers disagree on the checkpoint to resume from")
    dtype = _autocast_dtype(s, device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    with ckpt.as_directory() if ckpt is not None else contextlib.nullcontext(None) as cdir:
        model = task.build_model(os.path.join(cdir, "model") if cdir else None).to(device)
        ddp = model
        if world > 1:
            ddp = DistributedDataParallel(
                model,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=task.find_unused_parameters,
            )
        decay = [p for nm, p in model.named_parameters() if p.ndim > 1 and "norm" not in nm.lower()]
        no_decay = [p for nm, p in model.named_parameters() if not (p.ndim > 1 and "norm" not in nm.lower())]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=s.lr
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda st: lr_factor(st, total, s.warmup_ratio))
        if cdir:
            opt.load_state_dict(torch.load(os.path.join(cdir, "optimizer.pt"), map_location=device, weights_only=True))
            sched.load_state_dict(torch.load(os.path.join(cdir, "scheduler.pt"), weights_only=True))
            if scaler is not None and os.path.exists(os.path.join(cdir, "scaler.pt")):
                scaler.load_state_dict(torch.load(os.path.join(cdir, "scaler.pt"), weights_only=True))

    epoch, step_in_epoch = int(state.get("epoch", 0)), int(state.get("step_in_epoch", 0))
    if step_in_epoch >= spe:  # the world size changed since the checkpoint and the epoch got shorter
        epoch, step_in_epoch = epoch + 1, 0
    epoch_loss, epoch_steps = float(state.get("epoch_loss_sum", 0.0)), int(state.get("epoch_steps", 0))
    elapsed0 = float(state.get("train_seconds", 0.0))
    examples_seen = int(state.get("examples_seen", 0))
    # the best checkpoint so far by eval loss (carried by every checkpoint's state, so it survives a resume)
    best: dict[str, Any] = {k: state[k] for k in ("best_step", "best_eval_loss", "best_checkpoint") if k in state}
    if state and int(state.get("world_size", world)) != world:
        _say(f"[{s.stage}] resuming a checkpoint of {state['world_size']} workers on {world}")

    metrics = MetricsLog(s.run_uri, metrics_rel(s.stage)) if rank == 0 else None
    if metrics is not None:
        metrics.truncate_after(start_step)
        metrics.append({
            "event": "start", "step": start_step, "epoch": epoch, "step_in_epoch": step_in_epoch,
            "world_size": world, "total_steps": total, "steps_per_epoch": spe, "examples": n,
            "eval_examples": n_eval, "max_steps": s.max_steps, "driver_id": s.driver_id, "time": time.time(),
        })
        what = f"resuming at step {start_step}" if start_step else "starting"
        length = f"{s.epochs} epochs x {spe} steps" if s.max_steps is None else f"max_steps, {spe} steps per epoch"
        evals = f", {n_eval} eval examples" if n_eval else ""
        _say(f"[{s.stage}] {what} of {total} ({length}, {n} examples{evals}, {world} workers)")

    def run_eval(step: int, ep: int) -> float:
        """The eval loss at this step (every rank gets the same value); updates `best`; rank 0 logs it."""
        value = evaluate(task, model, device, dtype, rank, world, max(1, math.ceil(s.global_batch / world)))
        if "best_eval_loss" not in best or value < float(best["best_eval_loss"]):
            best.update(best_step=step, best_eval_loss=value, best_checkpoint=checkpoint_name(step))
        if metrics is not None:
            metrics.append({
                "event": "eval", "step": step, "epoch": ep, "eval_loss": value, "examples": n_eval,
                "best_step": best["best_step"], "best_eval_loss": best["best_eval_loss"], "time": time.time(),
            })
            _say(f"[{s.stage}] step {step}/{total} eval loss {value:.4f} (best {best['best_eval_loss']:.4f} "
                 f"at step {best['best_step']})")
        return value

    def save_checkpoint(step: int, ep: int, sie: int, loss: float, e_loss: float, e_steps: int) -> None:
        eval_loss = run_eval(step, ep) if n_eval else None
        st = {
            "global_step": step, "epoch": ep, "step_in_epoch": sie, "world_size": world, "total_steps": total,
            "steps_per_epoch": spe, "epoch_loss_sum": e_loss, "epoch_steps": e_steps,
            "train_seconds": elapsed0 + (time.perf_counter() - t_start), "examples_seen": examples_seen,
            "finished": step >= total, "loss": loss, "seed": s.seed, "time": time.time(),
            **({"eval_loss": eval_loss, **best} if eval_loss is not None else {}),
        }
        report = {"step": step, "loss": loss, **({"eval_loss": eval_loss} if eval_loss is not None else {})}
        name = checkpoint_name(step)
        if rank == 0:
            tmp = tempfile.mkdtemp(prefix=f"xqg-{s.name}-ckpt-")
            try:
                task.save_model(model, os.path.join(tmp, "model"))
                torch.save(opt.state_dict(), os.path.join(tmp, "optimizer.pt"))
                torch.save(sched.state_dict(), os.path.join(tmp, "scheduler.pt"))
                if scaler is not None:
                    torch.save(scaler.state_dict(), os.path.join(tmp, "scaler.pt"))
                write_state(tmp, st)
                ray.train.report(
                    report, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name,
                )
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            assert metrics is not None
            metrics.append({"event": "checkpoint", "step": step, "epoch": ep, "name": name, "time": time.time()})
        else:
            ray.train.report(report, checkpoint=None, checkpoint_dir_name=name)

    t_start = time.perf_counter()
    global_step = start_step
    win_loss, win_steps, win_examples, win_t = 0.0, 0, 0, time.perf_counter()
    last_loss = float(state.get("loss", float("nan")))
    pool = ThreadPoolExecutor(max_workers=1)  # tokenizes the next batch while this one trains
    try:
        ep = epoch
        while global_step < total:  # epochs (repeating as needed under max_steps) until the last step
            order = epoch_order(n, s.seed, ep)
            first = step_in_epoch if ep == epoch else 0
            if ep != epoch:
                epoch_loss, epoch_steps = 0.0, 0
            nxt = pool.submit(task.make_batch, local_indices(order, first, s.global_batch, rank, world), ep) \
                if first < spe else None
            for step in range(first, spe):
                assert nxt is not None
                batch = nxt.result()
                if step + 1 < spe and global_step + 1 < total:
                    nxt = pool.submit(
                        task.make_batch, local_indices(order, step + 1, s.global_batch, rank, world), ep
                    )
                ddp.train()
                # Dropout draws from a seed of (seed, step, rank), not from a generator that has run since the
                # worker started: a training resumed at a checkpoint then takes exactly the uninterrupted steps.
                torch.manual_seed(step_seed(s.seed, global_step, rank))
                amp = torch.autocast(device_type=device.type, dtype=dtype) if dtype else contextlib.nullcontext()
                with amp:
                    loss, value = task.compute_loss(ddp, batch, device)
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
                    opt.step()
                sched.step()
                global_step += 1
                _inject_fault(s, global_step, rank, world)
                step_loss = _mean_over_ranks(float(value), device)
                g_examples = len(order[step * s.global_batch : (step + 1) * s.global_batch])
                examples_seen += g_examples
                epoch_loss += step_loss
                epoch_steps += 1
                last_loss = step_loss
                win_loss, win_steps, win_examples = win_loss + step_loss, win_steps + 1, win_examples + g_examples
                end_of_epoch = step == spe - 1
                last = global_step >= total
                if rank == 0 and (global_step % s.log_every_steps == 0 or end_of_epoch or last):
                    dt = max(time.perf_counter() - win_t, 1e-9)
                    row = {
                        "event": "step", "step": global_step, "epoch": ep, "loss": win_loss / win_steps,
                        "lr": sched.get_last_lr()[0], "steps_per_s": win_steps / dt, "examples_per_s": win_examples / dt,
                        "time": time.time(),
                    }
                    assert metrics is not None
                    metrics.append(row)
                    _say(
                        f"[{s.stage}] step {global_step}/{total} epoch {ep + 1}/{epochs_shown} loss {row['loss']:.4f} "
                        f"lr {row['lr']:.2e} {row['steps_per_s']:.2f} steps/s {row['examples_per_s']:.1f} examples/s"
                    )
                    win_loss, win_steps, win_examples, win_t = 0.0, 0, 0, time.perf_counter()
                if end_of_epoch and rank == 0:
                    assert metrics is not None
                    metrics.append({
                        "event": "epoch", "step": global_step, "epoch": ep, "mean_loss": epoch_loss / epoch_steps,
                        "steps": epoch_steps, "time": time.time(),
                    })
                # Under max_steps, no extra checkpoint per epoch: the data position inside an epoch resumes as well.
                if global_step % s.checkpoint_every_steps == 0 or last or (end_of_epoch and s.max_steps is None):
                    if end_of_epoch:  # the resumed run starts a fresh epoch
                        save_checkpoint(global_step, ep + 1, 0, last_loss, 0.0, 0)
                    else:
                        save_checkpoint(global_step, ep, step + 1, last_loss, epoch_loss, epoch_steps)
                if last:
                    break
            ep += 1
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if dist.is_initialized():
        dist.barrier()
