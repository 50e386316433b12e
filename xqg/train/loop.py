"""Shared Ray Train scaffolding of both trainings: DDP loop, checkpoints, resume, metrics log, progress.

Worker side (`train_worker`): builds a task (xqg.train.dr.DRTask or xqg.train.qg.QGTask) that knows the model,
the batches and the loss; this module owns everything else:
- deterministic data order: epoch e visits the examples in permutation default_rng([seed, e]); global step s of
  the epoch takes the slice [s*B, (s+1)*B) (B = global batch) and rank r its r-th part (np.array_split), so the
  data position is just (epoch, step in epoch), whatever the world size. A last partial batch smaller than the
  world size is dropped.
- AdamW, linear warm-up then linear decay to 0, gradient clipping at 1.0 (HF Trainer's default), autocast
  bf16/fp16 on GPU (fp16 with a GradScaler).
- a checkpoint every `checkpoint_every_steps` optimizer steps and at the end of every epoch through
  ray.train.report(checkpoint=..., checkpoint_dir_name="step=NNNNNNNN"): model/ (save_pretrained, safetensors),
  optimizer.pt / scheduler.pt / scaler.pt (torch.save of tensor-only state dicts, loaded with weights_only=True)
  and state.json (step, epoch, step in epoch, world size, loss sums, elapsed time, and a manifest of the other
  files with their sizes, so a checkpoint cut short by a crash is recognised and skipped).
- resume: the newest of ray.train.get_checkpoint() (Ray Train V2 restores its checkpoint list from
  <storage>/<name>/checkpoint_manager_snapshot.json on a rerun with the same RunConfig(storage_path, name), and
  hands the latest one to restarted workers after a worker failure) and a scan of the step=* folders (covers a
  driver killed between a checkpoint upload and Ray's snapshot write).
- metrics as JSON lines in <run>/metrics/<stage>.jsonl (rank 0): "start" (step resumed from), "step" (loss,
  lr, steps/s, examples/s), "epoch" (mean loss of the epoch), "checkpoint"; on resume, lines past the resumed
  step (work lost with the crash) are removed so the log is the trajectory of the final model.
- fault injection for tests (`fail_at_step`): the last rank hard-exits (os._exit) once at that step; a sentinel
  file in the experiment folder keeps the retry from failing again.

Driver side (`fit`): TorchTrainer with ScalingConfig(num_workers, use_gpu, 1 CPU per worker), RunConfig(
storage_path=<run>/train, name=<name>, FailureConfig(max_failures), CheckpointConfig(num_to_keep=2)); the
Train V2 controller actor takes 0 CPUs, so 2 CPU workers fit a 2-CPU machine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import posixpath
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from xqg.rundir import RunDir, filesystem_for
from xqg.summary import StageSummary

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
MAX_GRAD_NORM = 1.0
KEEP_CHECKPOINTS = 2


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
    driver_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


class Task(Protocol):
    """What a training contributes to the loop: data, model, loss, saving."""

    find_unused_parameters: bool

    def num_examples(self) -> int: ...

    def build_model(self, checkpoint_model_dir: str | None) -> Any: ...

    def make_batch(self, indices: np.ndarray, epoch: int) -> dict[str, Any]: ...

    def compute_loss(self, model: Any, batch: dict[str, Any], device: Any) -> tuple[Any, Any]: ...

    def save_model(self, model: Any, out_dir: str) -> None: ...


# ---- data order -----------------------------------------------------------------------------------------


def steps_per_epoch(n: int, global_batch: int, world_size: int) -> int:
    """Optimizer steps per epoch; a last partial batch smaller than the world size is dropped."""
    full, rem = divmod(n, global_batch)
    steps = full + (1 if rem >= world_size else 0)
    if steps == 0:
        raise ValueError(f"{n} training examples cannot feed {world_size} workers; add data or use fewer workers")
    return steps


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which an epoch visits the examples."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def local_indices(order: np.ndarray, step: int, global_batch: int, rank: int, world_size: int) -> np.ndarray:
    """Example indices of this rank at a step of the epoch."""
    glob = order[step * global_batch : (step + 1) * global_batch]
    return np.array_split(glob, world_size)[rank]


def lr_factor(step: int, total: int, warmup_ratio: float) -> float:
    """Linear warm-up over warmup_ratio * total steps, then linear decay to 0 at total."""
    warm = int(math.ceil(total * warmup_ratio))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


# ---- checkpoints ----------------------------------------------------------------------------------------


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint at a global step."""
    return f"step={step:08d}"


def _manifest(root: str) -> dict[str, int]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root).replace(os.sep, "/")] = os.path.getsize(p)
    return out


def write_state(ckpt_dir: str, state: dict[str, Any]) -> None:
    """state.json with a manifest of every other file of the checkpoint (written last)."""
    state = {**state, "files": _manifest(ckpt_dir)}
    with open(os.path.join(ckpt_dir, STATE_FILE), "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1, sort_keys=True)


def read_valid_state(experiment_uri: str, name: str) -> dict[str, Any] | None:
    """state.json of a checkpoint folder when every file of its manifest is there with its size, else None."""
    import pyarrow.fs as pafs

    fs, root = filesystem_for(experiment_uri)
    base = posixpath.join(root, name)
    try:
        with fs.open_input_stream(posixpath.join(base, STATE_FILE)) as f:
            state = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    files = state.get("files") or {}
    infos = fs.get_file_info([posixpath.join(base, rel) for rel in files])
    for info, size in zip(infos, files.values()):
        if info.type != pafs.FileType.File or info.size != size:
            return None
    return state


def checkpoint_names(experiment_uri: str) -> list[str]:
    """step=* folders of an experiment, oldest first."""
    return [n for n in RunDir(experiment_uri).listdir() if n.startswith("step=")]


def latest_checkpoint(experiment_uri: str) -> tuple[str, dict[str, Any]] | None:
    """(folder name, state) of the newest complete checkpoint of an experiment."""
    for name in reversed(checkpoint_names(experiment_uri)):
        state = read_valid_state(experiment_uri, name)
        if state is not None:
            return name, state
    return None


def prune_checkpoints(experiment_uri: str, keep: int) -> None:
    """Keep the newest `keep` checkpoint folders (Ray prunes only those it registered; a checkpoint written just
    before a driver was killed is not)."""
    exp = RunDir(experiment_uri)
    for name in checkpoint_names(experiment_uri)[:-keep]:
        exp.remove(name)


def clean_experiment(experiment_uri: str) -> None:
    """Before a (re)run: drop incomplete checkpoint folders and a Ray snapshot that is unreadable or stale.

    A driver killed while writing either would otherwise stop the rerun (Ray refuses a snapshot that names
    missing checkpoints); complete checkpoints are always found again by the step=* scan.
    """
    exp = RunDir(experiment_uri)
    for name in checkpoint_names(experiment_uri):
        if read_valid_state(experiment_uri, name) is None:
            log.warning("removing incomplete checkpoint %s", exp.path(name))
            exp.remove(name)
    if not exp.exists(SNAPSHOT_FILE):
        return
    try:
        snap = exp.read_json(SNAPSHOT_FILE)
        names = [r["checkpoint_dir_name"] for r in snap.get("checkpoint_results", [])]
        if snap.get("latest_checkpoint_result"):
            names.append(snap["latest_checkpoint_result"]["checkpoint_dir_name"])
        ok = all(exp.exists(n) for n in names)
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        log.warning("removing unusable Ray Train snapshot %s", exp.path(SNAPSHOT_FILE))
        exp.remove(SNAPSHOT_FILE)


# ---- metrics log ----------------------------------------------------------------------------------------


class MetricsLog:
    """JSON lines under the run directory (appends locally; rewrites the small file on object stores)."""

    def __init__(self, run_uri: str, rel: str) -> None:
        self.run = RunDir(run_uri)
        self.rel = rel

    def read(self) -> list[dict[str, Any]]:
        """Every complete line so far (a line torn by a crash mid-write is skipped)."""
        if not self.run.exists(self.rel):
            return []
        rows = []
        for line in self.run.read_text(self.rel).splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return rows

    def truncate_after(self, step: int) -> None:
        """Drop lines of steps after `step` (work a crash lost and the resumed run redoes)."""
        rows = self.read()
        keep = [r for r in rows if int(r.get("step", 0)) <= step]
        if len(keep) != len(rows):
            self.run.write_text(self.rel, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))

    def append(self, *rows: dict[str, Any]) -> None:
        """Add lines."""
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if not self.run.is_local:
            self.run.write_text(self.rel, (self.run.read_text(self.rel) if self.run.exists(self.rel) else "") + text)
            return
        path = self.run.path(self.rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)


# ---- worker loop ----------------------------------------------------------------------------------------


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
    task = make_task(config["task"], config["task_args"], rank)
    n = task.num_examples()
    spe = steps_per_epoch(n, s.global_batch, world)
    total = spe * s.epochs

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
    if state and int(state.get("world_size", world)) != world:
        _say(f"[{s.stage}] resuming a checkpoint of {state['world_size']} workers on {world}")

    metrics = MetricsLog(s.run_uri, f"metrics/{s.stage}.jsonl") if rank == 0 else None
    if metrics is not None:
        metrics.truncate_after(start_step)
        metrics.append({
            "event": "start", "step": start_step, "epoch": epoch, "step_in_epoch": step_in_epoch,
            "world_size": world, "total_steps": total, "steps_per_epoch": spe, "examples": n,
            "driver_id": s.driver_id, "time": time.time(),
        })
        what = f"resuming at step {start_step}" if start_step else "starting"
        _say(f"[{s.stage}] {what} of {total} ({s.epochs} epochs x {spe} steps, {n} examples, {world} workers)")

    def save_checkpoint(step: int, ep: int, sie: int, loss: float, e_loss: float, e_steps: int) -> None:
        st = {
            "global_step": step, "epoch": ep, "step_in_epoch": sie, "world_size": world, "total_steps": total,
            "steps_per_epoch": spe, "epoch_loss_sum": e_loss, "epoch_steps": e_steps,
            "train_seconds": elapsed0 + (time.perf_counter() - t_start), "examples_seen": examples_seen,
            "finished": step >= total, "loss": loss, "seed": s.seed, "time": time.time(),
        }
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
                    {"step": step, "loss": loss}, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                    checkpoint_dir_name=name,
                )
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            assert metrics is not None
            metrics.append({"event": "checkpoint", "step": step, "epoch": ep, "name": name, "time": time.time()})
        else:
            ray.train.report({"step": step, "loss": loss}, checkpoint=None, checkpoint_dir_name=name)

    t_start = time.perf_counter()
    global_step = start_step
    win_loss, win_steps, win_examples, win_t = 0.0, 0, 0, time.perf_counter()
    last_loss = float(state.get("loss", float("nan")))
    pool = ThreadPoolExecutor(max_workers=1)  # tokenizes the next batch while this one trains
    try:
        for ep in range(epoch, s.epochs):
            order = epoch_order(n, s.seed, ep)
            first = step_in_epoch if ep == epoch else 0
            if ep != epoch:
                epoch_loss, epoch_steps = 0.0, 0
            nxt = pool.submit(task.make_batch, local_indices(order, first, s.global_batch, rank, world), ep) \
                if first < spe else None
            for step in range(first, spe):
                assert nxt is not None
                batch = nxt.result()
                if step + 1 < spe:
                    nxt = pool.submit(
                        task.make_batch, local_indices(order, step + 1, s.global_batch, rank, world), ep
                    )
                ddp.train()
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
                if rank == 0 and (global_step % s.log_every_steps == 0 or end_of_epoch or global_step == total):
                    dt = max(time.perf_counter() - win_t, 1e-9)
                    row = {
                        "event": "step", "step": global_step, "epoch": ep, "loss": win_loss / win_steps,
                        "lr": sched.get_last_lr()[0], "steps_per_s": win_steps / dt, "examples_per_s": win_examples / dt,
                        "time": time.time(),
                    }
                    assert metrics is not None
                    metrics.append(row)
                    _say(
                        f"[{s.stage}] step {global_step}/{total} epoch {ep + 1}/{s.epochs} loss {row['loss']:.4f} "
                        f"lr {row['lr']:.2e} {row['steps_per_s']:.2f} steps/s {row['examples_per_s']:.1f} examples/s"
                    )
                    win_loss, win_steps, win_examples, win_t = 0.0, 0, 0, time.perf_counter()
                if end_of_epoch and rank == 0:
                    assert metrics is not None
                    metrics.append({
                        "event": "epoch", "step": global_step, "epoch": ep, "mean_loss": epoch_loss / epoch_steps,
                        "steps": epoch_steps, "time": time.time(),
                    })
                if global_step % s.checkpoint_every_steps == 0 or end_of_epoch:
                    if end_of_epoch:  # the resumed run starts a fresh epoch
                        save_checkpoint(global_step, ep + 1, 0, last_loss, 0.0, 0)
                    else:
                        save_checkpoint(global_step, ep, step + 1, last_loss, epoch_loss, epoch_steps)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if dist.is_initialized():
        dist.barrier()


def make_task(kind: str, args: dict[str, Any], rank: int) -> Task:
    """The task object of a training kind, built inside the worker."""
    if kind == "dr":
        from xqg.train.dr import DRTask

        return DRTask(**args)
    if kind == "qg":
        from xqg.train.qg import QGTask

        return QGTask(**args)
    raise ValueError(f"unknown training task {kind!r}")


# ---- driver ---------------------------------------------------------------------------------------------


@dataclass
class FitOutcome:
    """What the driver learns from a finished training."""

    checkpoint: str
    state: dict[str, Any]
    seconds: float
    metrics: list[dict[str, Any]]


def experiment_uri(run: RunDir, name: str) -> str:
    """<run>/train/<name>: Ray Train's storage_path/name for this training."""
    return posixpath.join(run.uri if "://" in run.uri else run.root, "train", name)


def fit(
    kind: str,
    task_args: dict[str, Any],
    settings: LoopSettings,
    *,
    num_workers: int,
    use_gpu: bool | None,
    max_failures: int,
) -> FitOutcome:
    """Run the training on Ray Train (resuming from the newest checkpoint); return the final checkpoint."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from xqg.units import cluster_gpus

    gpu = cluster_gpus() > 0 if use_gpu is None else use_gpu
    storage, name = posixpath.split(settings.experiment_uri)
    clean_experiment(settings.experiment_uri)
    start = time.perf_counter()
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"task": kind, "task_args": task_args, "loop": asdict(settings)},
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers, use_gpu=gpu, resources_per_worker={"CPU": 1, **({"GPU": 1} if gpu else {})}
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
        ),
    )
    trainer.fit()
    seconds = time.perf_counter() - start
    found = latest_checkpoint(settings.experiment_uri)
    if found is None or not found[1].get("finished"):
        raise RuntimeError(f"{settings.stage}: training ended without a final checkpoint in {settings.experiment_uri}")
    prune_checkpoints(settings.experiment_uri, keep=KEEP_CHECKPOINTS)
    rows = MetricsLog(settings.run_uri, f"metrics/{settings.stage}.jsonl").read()
    return FitOutcome(posixpath.join(settings.experiment_uri, found[0]), found[1], seconds, rows)


def copy_model(checkpoint_uri: str, run: RunDir, rel: str) -> None:
    """Copy a checkpoint's model/ folder to <run>/<rel> (replacing what was there)."""
    import pyarrow.fs as pafs

    src_fs, src = filesystem_for(posixpath.join(checkpoint_uri, "model"))
    run.remove(rel)
    if not isinstance(run.fs, pafs.LocalFileSystem):  # object stores cannot rename folders: copy in place
        pafs.copy_files(src, run.path(rel), source_filesystem=src_fs, destination_filesystem=run.fs)
        return
    tmp = f"{rel}.tmp-{uuid.uuid4().hex[:8]}"
    run.makedirs(tmp)
    pafs.copy_files(src, run.path(tmp), source_filesystem=src_fs, destination_filesystem=run.fs)
    run.fs.move(run.path(tmp), run.path(rel))


def finished_training(run: RunDir, stage: str, name: str, started: float) -> StageSummary | None:
    """The skip summary of a training whose model is already saved and marked; None when it must run."""
    if not run.is_done(stage, "model"):
        return None
    info = run.read_marker(stage, "model")
    model = run.path("models", name)
    return StageSummary(
        stage, rows_in=info["rows_in"], rows_out=info["rows_out"], rejected=info["rejected"], units_skipped=1,
        seconds=time.perf_counter() - started, extra={"model": model},
        message=f"already trained: {model} (remove {run.path('_done', stage)} to retrain)",
    )


def summarize_metrics(rows: list[dict[str, Any]], driver_id: str) -> dict[str, Any]:
    """Loss by epoch, throughput and resumes of the training, from its metrics log."""
    epochs = [r for r in rows if r.get("event") == "epoch"]
    steps = [r for r in rows if r.get("event") == "step"]
    starts = [r for r in rows if r.get("event") == "start" and r.get("driver_id") == driver_id]
    out: dict[str, Any] = {}
    if epochs:
        out["first_epoch_loss"] = round(float(epochs[0]["mean_loss"]), 4)
        out["last_epoch_loss"] = round(float(epochs[-1]["mean_loss"]), 4)
    if steps:
        out["final_loss"] = round(float(steps[-1]["loss"]), 4)
        eps = [float(r["examples_per_s"]) for r in steps]
        out["examples_per_s"] = round(float(np.median(eps)), 1)
        out["steps_per_s"] = round(float(np.median([float(r["steps_per_s"]) for r in steps])), 3)
    out["attempts"] = len(starts)
    out["resumed_from_steps"] = [int(r["step"]) for r in starts if int(r["step"]) > 0]
    return out
