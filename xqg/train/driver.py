"""Driver side of both trainings: one function runs a training from its spec, on Ray Train.

run_training: skip a finished training whose inputs did not change (the stage runner decides), prepare the data once (the training's own
prepare_data), resolve the base model, fit on Ray Train (resuming from the newest checkpoint), copy the model of
the final checkpoint (or, for a training with an eval set, of the checkpoint with the lowest eval loss) to
<run>/models/<name>, mark it done with the step and eval loss of the checkpoint it came from.

fit: TorchTrainer with ScalingConfig(num_workers, use_gpu, 1 CPU per worker), RunConfig(storage_path=<run>/train,
name=<name>, FailureConfig(max_failures), CheckpointConfig(num_to_keep=2; with an eval set scored by eval_loss,
lowest first, so Ray keeps the best two and always the latest)); the Train V2 controller actor takes 0 CPUs, so
2 CPU workers fit a 2-CPU machine.
"""

from __future__ import annotations

import itertools
import logging
import os
import posixpath
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from xqg.config import Config
from xqg.layout import training_unit
from xqg.models.texts import corpus_texts
from xqg.rundir import RunDir, filesystem_for
from xqg.runner import StageRunner, Unit
from xqg.stamp import content_stamp
from xqg.summary import StageSummary
from xqg.train.checkpoints import (
    KEEP_CHECKPOINTS, checkpoint_names, clean_experiment, latest_checkpoint, prune_checkpoints, read_valid_state,
)
from xqg.train.data import PreparedData
from xqg.train.metrics import MetricsLog, metrics_rel, summarize_metrics
from xqg.train.readers import example_texts
from xqg.train.worker import LoopSettings, train_worker

log = logging.getLogger(__name__)


# Settings that change how a training runs, not the model it ends with (files count by content instead).
RUN_ONLY = frozenset({
    "model", "train_files", "eval_files", "num_workers", "use_gpu", "checkpoint_every_steps", "max_failures",
    "log_every_steps",
})


@dataclass(frozen=True)
class TrainingSpec:
    """What one training (train_dr, train_qg) contributes to run_training; everything else is shared.

    section: the config section (config.train_dr / config.train_qg): model, train_files, epochs, batch size,
      lr, warm-up, seed, checkpointing, logging, precision, workers, GPUs, failures, trust_remote_code.
    prepare_data(config, run, has_checkpoints): the prepared training data (see xqg.train.data).
    task: import path "module:Class" of the worker-side task (see xqg.train.worker.Task).
    task_args(model_path): the task's own constructor arguments, given the resolved base model; the common
      ones (data_uri, model_path, trust_remote_code, run_uri) are added by run_training.
    fp16_ok: whether autocast may fall back to fp16 where bf16 is not supported.
    upstream(runner): fingerprints of other stages' units the training data is made from (e.g. xQG pairs).
    run_only: section settings left out of the model's fingerprint (default RUN_ONLY); e.g. a training that keeps
      its best checkpoint by eval loss counts checkpoint_every_steps.
    """

    stage: str
    name: str
    section: Any
    prepare_data: Callable[[Config, RunDir, bool], PreparedData]
    task: str
    task_args: Callable[[str], dict[str, Any]]
    fp16_ok: bool
    upstream: Callable[[StageRunner], dict[str, Any]] | None = None
    run_only: frozenset[str] = RUN_ONLY


@dataclass
class FitOutcome:
    """What the driver learns from a finished training.

    checkpoint/state: the final checkpoint; model_checkpoint/model_state: the one whose model is kept (the final
    one, or the one with the lowest eval loss).
    """

    checkpoint: str
    state: dict[str, Any]
    seconds: float
    metrics: list[dict[str, Any]]
    model_checkpoint: str = ""
    model_state: dict[str, Any] = field(default_factory=dict)


def experiment_uri(run: RunDir, name: str) -> str:
    """<run>/train/<name>: Ray Train's storage_path/name for this training."""
    return posixpath.join(run.uri if "://" in run.uri else run.root, "train", name)


def fit(
    task: str,
    task_args: dict[str, Any],
    settings: LoopSettings,
    *,
    num_workers: int,
    use_gpu: bool | str | None,
    max_failures: int,
    best_by_eval: bool = False,
) -> FitOutcome:
    """Run the training on Ray Train (resuming from the newest checkpoint); return the final checkpoint and the one
    whose model is kept (best_by_eval: the lowest eval loss, the earliest of equals)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from xqg.units import resolve_use_gpu

    # true: the workers ask for GPUs and Ray Train waits for GPU nodes (no CPU fallback); auto: GPUs if up now.
    gpu = resolve_use_gpu(use_gpu, settings.stage)
    worker_group_start_timeout_s()
    # best_by_eval: Ray keeps the checkpoints with the lowest eval loss (and always the latest)
    scoring = {"checkpoint_score_attribute": "eval_loss", "checkpoint_score_order": "min"} if best_by_eval else {}
    storage, name = posixpath.split(settings.experiment_uri)
    clean_experiment(settings.experiment_uri)
    start = time.perf_counter()
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"task": task, "task_args": task_args, "loop": asdict(settings)},
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers, use_gpu=gpu, resources_per_worker={"CPU": 1, **({"GPU": 1} if gpu else {})}
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS, **scoring),
        ),
    )
    trainer.fit()
    seconds = time.perf_counter() - start
    found = latest_checkpoint(settings.experiment_uri)
    if found is None or not found[1].get("finished"):
        raise RuntimeError(f"{settings.stage}: training ended without a final checkpoint in {settings.experiment_uri}")
    model_name, model_state = found
    if best_by_eval:
        model_name, model_state = best_checkpoint(settings.experiment_uri, found[1])
    prune_checkpoints(settings.experiment_uri, keep=KEEP_CHECKPOINTS, keep_also=model_name)
    rows = MetricsLog(settings.run_uri, metrics_rel(settings.stage)).read()
    return FitOutcome(
        posixpath.join(settings.experiment_uri, found[0]), found[1], seconds, rows,
        model_checkpoint=posixpath.join(settings.experiment_uri, model_name), model_state=model_state,
    )


# Ray Train (2.60, Train V2) gives a worker group 60 s to start, then fails the attempt: less than a spot GPU node
# takes to boot, pull the image and run its set-up (5-15 minutes). The driver propagates this variable to Ray
# Train's controller; a value in the environment (cluster.yaml sets one on every node) wins.
WORKER_GROUP_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
DEFAULT_WORKER_GROUP_START_TIMEOUT_S = 1800.0


def worker_group_start_timeout_s() -> float:
    """The worker-group start timeout this job's trainings use (set in the environment when it is not)."""
    os.environ.setdefault(WORKER_GROUP_START_TIMEOUT_ENV, f"{DEFAULT_WORKER_GROUP_START_TIMEOUT_S:g}")
    return float(os.environ[WORKER_GROUP_START_TIMEOUT_ENV])


def best_checkpoint(experiment_uri: str, final_state: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(name, state) of the checkpoint with the lowest eval loss, as the workers recorded it in the final state."""
    name = final_state.get("best_checkpoint")
    if not name:
        raise RuntimeError(f"the final checkpoint in {experiment_uri} records no evaluated checkpoint")
    state = read_valid_state(experiment_uri, name)
    if state is None:
        raise RuntimeError(
            f"the best checkpoint {name} (eval loss {final_state.get('best_eval_loss')}) is missing or incomplete "
            f"in {experiment_uri}"
        )
    return name, state


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


FINGERPRINT_FILE = "xqg_fingerprint.json"


def model_unit(runner: StageRunner, spec: TrainingSpec, model_path: str) -> Unit:
    """The trained model as a unit: made from the base model's content, the training files' content and settings."""
    from xqg.models.fingerprint import model_fingerprint

    cfg = spec.section

    def stamps(paths: list[str]) -> list[Any]:
        return [content_stamp(f) if os.path.exists(f) else f for f in paths]  # hub datasets by name

    task = {k: v for k, v in spec.task_args(model_path).items() if k != "meta"}
    inputs = {
        "base_model": model_fingerprint(model_path, runner.run), "train_files": stamps(cfg.train_files),
        **({"eval_files": stamps(cfg.eval_files)} if getattr(cfg, "eval_files", None) else {}),
        "settings": cfg.model_dump(mode="json", exclude=set(spec.run_only)), "task": task,
        **(spec.upstream(runner) if spec.upstream else {}),
    }
    return Unit(training_unit("model", spec.name), inputs)


def start_fresh_if_changed(run: RunDir, exp: str, stage: str, unit: Unit) -> None:
    """Checkpoints (and prepared data) of a training with other inputs are dropped: resuming them would mix two."""
    exp_dir = RunDir(exp)
    if exp_dir.exists(FINGERPRINT_FILE) and exp_dir.read_json(FINGERPRINT_FILE).get("fingerprint") != unit.fingerprint:
        log.warning("%s: the inputs changed since the checkpoints in %s were written; training from the start",
                    stage, exp)
        exp_dir.remove()
        run.unmark(stage, training_unit("data", posixpath.basename(exp)))
    exp_dir.write_json(FINGERPRINT_FILE, {"fingerprint": unit.fingerprint, "inputs": unit.inputs})


def run_training(config: Config, spec: TrainingSpec) -> StageSummary:
    """Train on Ray Train (resuming from checkpoints); save <run>/models/<name>; mark done; redo when inputs change."""
    from xqg.models.resolve import resolve_model

    cfg = spec.section
    run = RunDir(config.run_dir)
    runner = StageRunner(run, spec.stage, keep_stale=config.keep_stale)
    model_path = resolve_model(
        cfg.model, run,
        lambda: itertools.chain(example_texts(cfg.train_files), corpus_texts(run, missing_ok=True)),
    )
    unit = model_unit(runner, spec, model_path)
    plan = runner.plan([unit])
    model_rel = posixpath.join("models", spec.name)
    if not plan.todo:
        info = runner.markers()[unit.name]
        s = runner.summary
        s.rows_in, s.rows_out, s.rejected = int(info["rows_in"]), int(info["rows_out"]), int(info["rejected"])
        s.extra["model"] = run.path(model_rel)
        return runner.close(f"already trained: {run.path(model_rel)}")
    run.write_config(config, spec.stage)
    runner.prepare(unit)
    exp = experiment_uri(run, spec.name)
    start_fresh_if_changed(run, exp, spec.stage, unit)
    data = spec.prepare_data(config, run, bool(checkpoint_names(exp)))
    settings = LoopSettings(
        stage=spec.stage, name=spec.name, run_uri=run.worker_uri, experiment_uri=exp, epochs=cfg.epochs,
        global_batch=cfg.batch_size, lr=cfg.lr, warmup_ratio=cfg.warmup_ratio, seed=cfg.seed,
        checkpoint_every_steps=cfg.checkpoint_every_steps, log_every_steps=cfg.log_every_steps,
        precision=cfg.precision, fp16_ok=spec.fp16_ok,
        max_steps=getattr(cfg, "max_steps", None),
    )
    task_args = {
        "data_uri": data.uri, "model_path": model_path, "trust_remote_code": cfg.trust_remote_code,
        "run_uri": run.worker_uri, **({"eval_uri": data.eval_uri} if data.eval_uri else {}),
        **spec.task_args(model_path),
    }
    best_by_eval = data.eval_uri is not None
    outcome = fit(spec.task, task_args, settings, num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                  max_failures=cfg.max_failures, best_by_eval=best_by_eval)
    copy_model(outcome.model_checkpoint, run, model_rel)
    extra = {
        **data.extra, "steps": int(outcome.state["global_step"]), "epochs": cfg.epochs,
        **({"max_steps": settings.max_steps} if settings.max_steps is not None else {}),
        "world_size": int(outcome.state["world_size"]), "train_seconds": round(float(outcome.state["train_seconds"]), 1),
        "examples_seen": int(outcome.state.get("examples_seen", 0)),
        **summarize_metrics(outcome.metrics, settings.driver_id), "model": run.path(model_rel),
    }
    if best_by_eval:  # the kept model: its step and eval loss, beside the final step's
        extra.update({
            "model_step": int(outcome.model_state["global_step"]),
            "model_eval_loss": round(float(outcome.model_state["eval_loss"]), 6),
            "model_checkpoint": posixpath.basename(outcome.model_checkpoint),
            "final_eval_loss": round(float(outcome.state["eval_loss"]), 6),
            "selected_by": "lowest eval loss",
        })
    runner.finish(unit, rows_in=data.rows_in, rows_out=data.rows_out, rejected=data.rejected, **extra)
    runner.summary.extra.update(extra)
    return runner.close()
