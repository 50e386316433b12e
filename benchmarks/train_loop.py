"""xqg's training loop (TrainLoop) against Hugging Face's Trainer on the same work: speed, checkpoint cost, exact resume.

One process on the CPU, no Ray cluster: TrainLoop runs as in production, a Ray Train TorchTrainer training function,
in Ray Train's local mode (num_workers=0: the loop in this process); Trainer runs as it would inside such a function.
Both train the same tiny scratch mT5 (built from the demo text, dropout 0.1) on the same pairs (the first --pairs
questions of data/demo/train_qg.json with their paragraphs), tokenized by the same QGTask.make_batch, with AdamW,
the same learning rate, linear warm-up then decay to 0, gradient clipping at 1.0 and no evaluation. A bare PyTorch loop
(batch, forward, backward, clip, step; no prefetch) on the same batches is the floor: a loop's per-step overhead is its
time per step minus the bare loop's.

Parts:
- speed: --warmup steps untimed, then --steps timed (the time between the end of warm-up's last step and the end of
  the last step; each loop's own step end: TrainLoop.train_step's return, Trainer's on_step_end);
- resume: a --resume-steps training with a checkpoint every 5 steps, then a fresh loop resumed from the step-5
  checkpoint; the loss and the learning rate of every step after it are compared to the uninterrupted training's
  (exact: ==). Checkpoint cost is the save (TrainLoop.checkpoint: save to a temporary folder, then Ray's upload,
  here a local copy into the experiment folder as Ray Train makes it for local storage; Trainer._save_checkpoint),
  resume cost the time from the loop's start to its first step minus the same for a fresh start;
- eval: the eval loss of one model at two eval batch sizes, xqg's evaluate() and Trainer.evaluate();
- best after restart: whether Trainer keeps its best-by-eval checkpoint when resumed from a checkpoint in another
  folder, as a restarted Ray Train worker is (xqg's best lives in the checkpoint's state.json: tests/train).

  python benchmarks/train_loop.py --out /tmp/xqg-train-loop            # prints a Markdown table + JSON
  python benchmarks/train_loop.py --steps 2 --warmup 1 --repeats 1 --resume-steps 7  # a quick check that every part runs

Trainer needs the accelerate package (pip install accelerate), which xqg itself does not depend on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH"):  # this checkout, unless PYTHONPATH names another one
    os.environ["PYTHONPATH"] = str(REPO)
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
DEMO = REPO / "data" / "demo"
RESUME_AT = 5  # the resumed training starts from the checkpoint of this step (past the warm-up, mid-epoch)
LR, WARMUP_RATIO, SEED = 5e-4, 0.1, 7


def write_pairs(path: Path, n: int) -> Path:
    """The first n (paragraph, question, language) pairs of the demo's train_qg.json, as QGTask reads them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from xqg.train.qg import QG_SCHEMA

    rows: list[dict[str, str]] = []
    for article in json.loads((DEMO / "train_qg.json").read_text(encoding="utf-8"))["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                rows.append({"query_id": qa["id"], "lang": qa.get("lang", "en"), "query": qa["question"],
                             "title": article.get("title", ""), "text": para["context"]})
    pq.write_table(pa.Table.from_pylist(rows[:n], schema=QG_SCHEMA), path)
    return path


def build_model(out: Path) -> Path:
    """The tiny scratch mT5 of the tests (vocabulary 2,000 trained on the demo text), built once into out."""
    from xqg.config import ScratchModel
    from xqg.models.resolve import read_text_files
    from xqg.models.tiny import build_scratch

    if (out / "config.json").exists():
        return out
    files = [str(DEMO / n) for n in ("passages.jsonl", "train.jsonl", "dev.jsonl")]
    return Path(build_scratch(ScratchModel(scratch="mt5", vocab_size=2000), read_text_files(files), out))


def task_args(data: Path, model: Path) -> dict[str, Any]:
    """QGTask's arguments (the generation stage's default prompt template)."""
    from xqg.config import GenerateConfig

    return {"data_uri": str(data), "model_path": str(model), "template": GenerateConfig().template,
            "max_input_len": 128, "max_target_len": 32, "trust_remote_code": False}


def make_task(args: dict[str, Any]) -> Any:
    """The generator training's task (xqg.train.qg.QGTask) on the benchmark's pairs and model."""
    from xqg.train.qg import QGTask

    return QGTask(**args)


def per_step(times: list[float], warmup: int) -> float:
    """Seconds per step from the end of step `warmup` to the end of the last one."""
    return (times[-1] - times[warmup - 1]) / (len(times) - warmup)


# ---- the bare loop (the floor) -------------------------------------------------------------------------------------


def bare(targs: dict[str, Any], batch: int, warmup: int, steps: int) -> dict[str, Any]:
    """Batch, forward, backward, clip, step, schedule: no prefetch, no logging, no framework."""
    import numpy as np
    import torch

    from xqg.train.order import epoch_order, lr_factor

    task = make_task(targs)
    torch.manual_seed(SEED)
    model = task.build_model(None)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    total = warmup + steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, WARMUP_RATIO))
    order = epoch_order(task.num_examples(), SEED, 0)
    ends = []
    for step in range(total):
        idx = np.take(order, range(step * batch, (step + 1) * batch), mode="wrap")
        loss, _ = task.compute_loss(model, task.make_batch(idx, 0), torch.device("cpu"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ends.append(time.perf_counter())
    return {"s_per_step": per_step(ends, warmup)}


# ---- xqg's TrainLoop under Ray Train (local mode) ------------------------------------------------------------------


def _persisting_report(experiment: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """ray.train.report that also copies the checkpoint into the experiment folder, as Ray Train's upload to a local
    storage_path does (local mode keeps only a reference to a folder the loop then deletes)."""

    def report(metrics: dict[str, Any], checkpoint: Any = None, checkpoint_dir_name: str | None = None,
               **kwargs: Any) -> None:
        if checkpoint is not None and checkpoint_dir_name:
            shutil.copytree(checkpoint.path, os.path.join(experiment, checkpoint_dir_name))
        original(metrics, checkpoint=checkpoint, checkpoint_dir_name=checkpoint_dir_name, **kwargs)

    return report


def xqg_run(root: Path, targs: dict[str, Any], batch: int, total: int, checkpoint_every: int) -> dict[str, Any]:
    """A TrainLoop training of `total` steps in Ray Train's local mode: step end times, losses, learning rates,
    checkpoint save times, the time from the start to the first step."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.execution import train_fn_utils

    from xqg.train.worker import LoopSettings, TrainLoop

    settings = LoopSettings(
        stage="train_bench", name="bench", run_uri=str(root), experiment_uri=str(root / "exp"), epochs=1,
        global_batch=batch, lr=LR, warmup_ratio=WARMUP_RATIO, seed=SEED, checkpoint_every_steps=checkpoint_every,
        log_every_steps=10**9, max_steps=total,
    )
    (root / "exp").mkdir(parents=True, exist_ok=True)
    config = {"loop": asdict(settings), "task": f"{__name__}:make_task_from", "task_args": {"args": targs}}
    rec: dict[str, Any] = {"ends": [], "losses": [], "lrs": [], "steps": [], "saves": []}

    def fn(cfg: dict[str, Any]) -> None:
        original_report = ray.train.report
        ray.train.report = _persisting_report(settings.experiment_uri, original_report)
        try:
            t0 = time.perf_counter()
            loop = TrainLoop(cfg)
            rec["start_step"] = loop.pos.global_step
            step, save = loop.train_step, loop.checkpoint

            def timed_step(b: dict[str, Any]) -> float:
                if not rec["ends"]:
                    rec["to_first_step_s"] = time.perf_counter() - t0
                value = step(b)
                rec["ends"].append(time.perf_counter())
                rec["steps"].append(loop.pos.global_step)
                rec["losses"].append(value)
                rec["lrs"].append(loop.sched.get_last_lr()[0])
                return value

            def timed_save(*a: Any) -> None:
                t = time.perf_counter()
                save(*a)
                rec["saves"].append(time.perf_counter() - t)

            loop.train_step, loop.checkpoint = timed_step, timed_save  # type: ignore[method-assign]
            loop.run()
        finally:
            ray.train.report = original_report

    TorchTrainer(fn, train_loop_config=config, scaling_config=ray.train.ScalingConfig(num_workers=0)).fit()
    train_fn_utils._train_fn_utils = None  # local mode leaves its session set in this process
    return rec


def make_task_from(args: dict[str, Any]) -> Any:
    """The QGTask of the benchmark (named by import path in the loop's config)."""
    return make_task(args)


# ---- Hugging Face's Trainer ----------------------------------------------------------------------------------------


class Indices:
    """Trainer's map-style dataset: example i is its index (the collator tokenizes a batch of them, as make_batch)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def hf_run(root: Path, targs: dict[str, Any], batch: int, total: int, save_every: int | None,
           resume_from: str | None = None) -> dict[str, Any]:
    """A Trainer training of `total` steps on the same task: as xqg_run's record."""
    import numpy as np
    from transformers import Trainer, TrainerCallback, TrainingArguments

    task = make_task(targs)
    rec: dict[str, Any] = {"ends": [], "losses": [], "lrs": [], "steps": [], "saves": []}
    t0 = time.perf_counter()

    class Record(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if "to_first_step_s" not in rec:
                rec["to_first_step_s"] = time.perf_counter() - t0
                rec["start_step"] = state.global_step

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            rec["ends"].append(time.perf_counter())
            rec["steps"].append(state.global_step)
            rec["lrs"].append(kw["lr_scheduler"].get_last_lr()[0])

    class Timed(Trainer):
        def compute_loss(self, model: Any, inputs: dict[str, Any], *a: Any, **kw: Any) -> Any:
            out = super().compute_loss(model, inputs, *a, **kw)
            rec["losses"].append(float((out[0] if isinstance(out, tuple) else out).detach()))
            return out

        def _save_checkpoint(self, *a: Any, **kw: Any) -> None:
            t = time.perf_counter()
            super()._save_checkpoint(*a, **kw)
            rec["saves"].append(time.perf_counter() - t)

    args = TrainingArguments(
        output_dir=str(root), per_device_train_batch_size=batch, learning_rate=LR, lr_scheduler_type="linear",
        warmup_steps=math.ceil(total * WARMUP_RATIO), weight_decay=0.0, max_grad_norm=1.0, max_steps=total,
        optim="adamw_torch", seed=SEED, data_seed=SEED, logging_steps=10**9, report_to="none", use_cpu=True,
        dataloader_num_workers=0, save_strategy="steps" if save_every else "no", save_steps=save_every or 500,
        disable_tqdm=True, remove_unused_columns=False, eval_strategy="no",
    )
    model = task.build_model(None)
    trainer = Timed(model=model, args=args, train_dataset=Indices(task.num_examples()), callbacks=[Record()],
                    data_collator=lambda idx: task.make_batch(np.asarray(idx), 0))
    trainer.train(resume_from_checkpoint=resume_from)
    return rec


# ---- the parts -----------------------------------------------------------------------------------------------------


def folder_mb(path: Path) -> float:
    """Megabytes of the files under a folder."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def compare(whole: dict[str, Any], resumed: dict[str, Any]) -> dict[str, Any]:
    """Steps after the resume point whose loss and learning rate equal the uninterrupted training's exactly."""
    by_step = {s: (loss, lr) for s, loss, lr in zip(whole["steps"], whole["losses"], whole["lrs"])}
    rows = list(zip(resumed["steps"], resumed["losses"], resumed["lrs"]))
    loss_eq = sum(1 for s, loss, _ in rows if by_step[s][0] == loss)
    lr_eq = sum(1 for s, _, lr in rows if by_step[s][1] == lr)
    worst = max((abs(by_step[s][0] - loss) for s, loss, _ in rows), default=0.0)
    return {"resumed_at": resumed.get("start_step"), "steps_after": len(rows), "loss_equal": loss_eq,
            "lr_equal": lr_eq, "max_abs_loss_diff": worst}


def speed(out: Path, targs: dict[str, Any], batch: int, warmup: int, steps: int, repeats: int) -> list[dict[str, Any]]:
    """Seconds per step of each loop: `repeats` rounds, the loops interleaved in each (a shared machine's load
    changes), the median and the fastest round."""
    import statistics

    total = warmup + steps
    runs: dict[str, list[float]] = {"bare PyTorch loop": [], "xqg TrainLoop (Ray Train local mode)": [],
                                    "transformers Trainer": []}
    for i in range(repeats):
        runs["bare PyTorch loop"].append(bare(targs, batch, warmup, steps)["s_per_step"])
        x = xqg_run(out / f"speed-xqg-{i}", targs, batch, total, checkpoint_every=10**9)
        runs["xqg TrainLoop (Ray Train local mode)"].append(per_step(x["ends"], warmup))
        h = hf_run(out / f"speed-hf-{i}", targs, batch, total, save_every=None)
        runs["transformers Trainer"].append(per_step(h["ends"], warmup))
    floor = statistics.median(runs["bare PyTorch loop"])
    rows = []
    for loop, times in runs.items():
        med = statistics.median(times)
        rows.append({"loop": loop, "s_per_step": med, "fastest_s_per_step": min(times), "rounds": times,
                     "steps_per_s": 1.0 / med, "overhead_ms": (med - floor) * 1000})
    return rows


def resume(out: Path, targs: dict[str, Any], batch: int, total: int) -> list[dict[str, Any]]:
    """Each loop: a training checkpointed every RESUME_AT steps, then one resumed at RESUME_AT; costs and equality."""
    rows = []
    whole = xqg_run(out / "xqg-whole", targs, batch, total, checkpoint_every=RESUME_AT)
    cut = out / "xqg-cut"
    (cut / "exp").mkdir(parents=True)
    ckpt = out / "xqg-whole" / "exp" / f"step={RESUME_AT:08d}"
    shutil.copytree(ckpt, cut / "exp" / ckpt.name)
    again = xqg_run(cut, targs, batch, total, checkpoint_every=RESUME_AT)
    rows.append({"loop": "xqg TrainLoop", "save_s": sum(whole["saves"]) / len(whole["saves"]),
                 "checkpoint_mb": folder_mb(ckpt),
                 "resume_extra_s": again["to_first_step_s"] - whole["to_first_step_s"], **compare(whole, again)})

    hf_whole = hf_run(out / "hf-whole", targs, batch, total, save_every=RESUME_AT)
    hf_ckpt = out / "hf-whole" / f"checkpoint-{RESUME_AT}"
    hf_again = hf_run(out / "hf-cut", targs, batch, total, save_every=RESUME_AT, resume_from=str(hf_ckpt))
    rows.append({"loop": "transformers Trainer", "save_s": sum(hf_whole["saves"]) / len(hf_whole["saves"]),
                 "checkpoint_mb": folder_mb(hf_ckpt),
                 "resume_extra_s": hf_again["to_first_step_s"] - hf_whole["to_first_step_s"],
                 **compare(hf_whole, hf_again)})
    return rows


def eval_loss(out: Path, targs: dict[str, Any], batches: tuple[int, ...] = (3, 8)) -> list[dict[str, Any]]:
    """The eval loss of one model on 24 pairs at two eval batch sizes: xqg's evaluate() (summed target-token
    cross-entropy / target tokens) and Trainer.evaluate() (its eval_loss)."""
    import numpy as np
    import torch
    from transformers import Trainer, TrainingArguments

    from xqg.train.worker import evaluate

    task = make_task({**targs, "eval_uri": targs["data_uri"]})
    torch.manual_seed(SEED)
    model = task.build_model(None)
    n = 24
    task.eval_table = task.eval_table.slice(0, n)

    rows = []
    for b in batches:
        mine = evaluate(task, model, torch.device("cpu"), None, 0, 1, b)
        args = TrainingArguments(output_dir=str(out / f"eval-hf-{b}"), per_device_eval_batch_size=b, use_cpu=True,
                                 report_to="none", remove_unused_columns=False, disable_tqdm=True)
        hf = Trainer(model=model, args=args, data_collator=lambda idx: task.make_eval_batch(np.asarray(idx)))
        rows.append({"eval_batch": b, "xqg": mine, "trainer": hf.evaluate(Indices(n))["eval_loss"]})
    return rows


def best_after_restart(out: Path, targs: dict[str, Any], batch: int) -> dict[str, Any]:
    """Trainer's best-by-eval checkpoint across a restart on a fresh worker: a 10-step training evaluated and saved
    every 2 steps, then the same training resumed from its step-6 checkpoint in another folder (as a restarted Ray
    Train worker gets it from get_checkpoint().as_directory()) with the first folder gone. greater_is_better on a
    falling eval loss makes the first evaluation the best, so the best is not the last checkpoint."""
    import numpy as np
    import torch
    from transformers import Trainer, TrainingArguments

    task = make_task({**targs, "eval_uri": targs["data_uri"]})
    task.eval_table = task.eval_table.slice(0, 16)

    def trainer(folder: Path) -> Any:
        args = TrainingArguments(
            output_dir=str(folder), per_device_train_batch_size=batch, per_device_eval_batch_size=batch,
            learning_rate=LR, max_steps=10, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
            metric_for_best_model="eval_loss", greater_is_better=True, load_best_model_at_end=True, use_cpu=True,
            report_to="none", remove_unused_columns=False, disable_tqdm=True, seed=SEED, logging_steps=10**9,
        )
        torch.manual_seed(SEED)
        return Trainer(model=task.build_model(None), args=args, train_dataset=Indices(task.num_examples()),
                       eval_dataset=Indices(16), data_collator=lambda idx: task.make_batch(np.asarray(idx), 0))

    whole = trainer(out / "best-whole")
    whole.train()
    weights = {k: v.clone() for k, v in whole.model.state_dict().items()}
    download = out / "best-download" / "checkpoint"
    shutil.copytree(out / "best-whole" / "checkpoint-6", download)
    shutil.move(out / "best-whole", out / "best-whole-moved")
    again = trainer(out / "best-restarted")
    again.train(resume_from_checkpoint=str(download))
    return {
        "uninterrupted_best": whole.state.best_model_checkpoint, "restarted_best": again.state.best_model_checkpoint,
        "restarted_best_metric_kept": again.state.best_metric == whole.state.best_metric,
        "restarted_final_is_best_model": all(torch.equal(weights[k], v) for k, v in again.model.state_dict().items()),
    }


def markdown(result: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    lines = ["| loop | ms/step (median) | fastest round | steps/s | overhead over bare (ms/step) |",
             "|---|---:|---:|---:|---:|"]
    for r in result["speed"]:
        lines.append(f"| {r['loop']} | {r['s_per_step'] * 1000:.1f} | {r['fastest_s_per_step'] * 1000:.1f} | "
                     f"{r['steps_per_s']:.1f} | {r['overhead_ms']:+.1f} |")
    lines += ["", "| loop | save (s) | checkpoint (MB) | resume extra (s) | steps after resume | loss == | lr == |"
              " max loss diff |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["resume"]:
        lines.append(f"| {r['loop']} | {r['save_s']:.2f} | {r['checkpoint_mb']:.1f} | {r['resume_extra_s']:+.2f} | "
                     f"{r['steps_after']} | {r['loss_equal']} | {r['lr_equal']} | {r['max_abs_loss_diff']:.2e} |")
    lines += ["", "| eval batch | xqg evaluate() | Trainer eval_loss |", "|---:|---:|---:|"]
    lines += [f"| {r['eval_batch']} | {r['xqg']:.6f} | {r['trainer']:.6f} |" for r in result["eval"]]
    lines += ["", f"Trainer's best checkpoint after a restart on a fresh worker: {result['trainer_best_after_restart']}"]
    return "\n".join(lines)


def main() -> None:
    """Build the model and the pairs, run every part, write train_loop.json and train_loop.md to --out."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="/tmp/xqg-train-loop", help="work folder (model, data, checkpoints, results)")
    p.add_argument("--pairs", type=int, default=256, help="training pairs of the demo's train_qg.json")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before the timed ones")
    p.add_argument("--steps", type=int, default=100, help="timed optimizer steps")
    p.add_argument("--repeats", type=int, default=3, help="rounds of the speed part (median reported)")
    p.add_argument("--resume-steps", type=int, default=12, help="length of the resume trainings (> 5)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on a shared machine 2 threads spin-wait on a busy core, 10-40x slower)")
    a = p.parse_args()
    if a.resume_steps <= RESUME_AT:
        p.error(f"--resume-steps must be more than {RESUME_AT}")
    try:
        import accelerate  # Trainer's requirement: fail before any work
    except ImportError:
        sys.exit("benchmarks/train_loop.py needs accelerate for transformers' Trainer: pip install accelerate")
    import ray
    import torch
    import transformers

    torch.set_num_threads(a.threads)
    out = Path(a.out)
    model = build_model(out / "tiny-mt5")
    for sub in out.glob("*-*"):  # the trainings of an earlier run (the model and the pairs stay)
        if sub.is_dir() and sub.name != "tiny-mt5":
            shutil.rmtree(sub)
    targs = task_args(write_pairs(out / "pairs.parquet", a.pairs), model)
    load_before = os.getloadavg()
    t = time.perf_counter()
    result: dict[str, Any] = {
        "speed": speed(out, targs, a.batch, a.warmup, a.steps, a.repeats),
        "resume": resume(out, targs, a.batch, a.resume_steps),
        "eval": eval_loss(out, targs),
        "trainer_best_after_restart": best_after_restart(out, targs, a.batch),
    }
    result.update({
        "seconds": time.perf_counter() - t, "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "cpus": os.cpu_count(), "threads": a.threads, "args": vars(a),
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "accelerate": accelerate.__version__,
                     "ray": ray.__version__},
    })
    (out / "train_loop.json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    (out / "train_loop.md").write_text(table + "\n")
    print(table)
    print(json.dumps({k: v for k, v in result.items() if k not in ("speed", "resume")}))


if __name__ == "__main__":
    main()
