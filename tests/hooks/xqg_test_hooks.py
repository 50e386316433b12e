"""Test-only behaviour for processes that pytest cannot monkeypatch: jobs started as subprocesses, the actors of a
test cluster, Ray Train workers.

Subprocesses: env(...) gives the environment that installs hooks (this folder first on PYTHONPATH, so its
sitecustomize runs at start-up, and XQG_TEST_HOOKS naming the hooks as JSON). Each hook wraps a real function of
xqg right after its module is imported, so the code around it (a job's driver, an actor's start-up and units)
runs unchanged:

- hold [stage, n, file]: the job stops for good right before it marks its n-th unit of stage (the unit's output
  written, its marker not), after creating file, so a kill test kills it mid-stage at a known point.
- fake_gpu_unit_s seconds: on a test cluster whose nodes advertise GPUs they do not have
  (ray.cluster_utils.AutoscalingCluster), an actor given such a GPU computes on the CPU, records device "fake-gpu"
  and stretches each unit to that many seconds (tiny units would otherwise all be done by the first actor before
  the autoscaler's next node is up).
- broken_start [stage, file]: the first actor process of stage to create file fails every start-up attempt (a
  model that does not load on one node); every other actor starts normally.

Ray Train workers: training_fails_once_at(step) makes the trainings this process starts use FailOnce, a task that
wraps the stage's own, by its import path (tasks are built inside the workers).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ENV = "XQG_TEST_HOOKS"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def env(**hooks: Any) -> dict[str, str]:
    """Environment variables that install hooks (e.g. hold=["index", 3, "/tmp/held"]) in a subprocess."""
    return {"PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)]), ENV: json.dumps(hooks)}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs patches on a module right after it executes, before any importer sees it."""

    def __init__(self) -> None:
        self.patches: dict[str, list[Callable[[Any], None]]] = {}

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in self.patches:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None:
                break
        else:
            return None
        patches, run_module = self.patches.pop(name), spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run_module(module)
            for patch in patches:
                patch(module)

        spec.loader.exec_module = exec_module
        return spec


_after_import = _AfterImport()


def after_import(name: str, patch: Callable[[Any], None]) -> None:
    """patch(module) once module name is imported (at once if it already is)."""
    if name in sys.modules:
        patch(sys.modules[name])
        return
    if _after_import not in sys.meta_path:
        sys.meta_path.insert(0, _after_import)
    _after_import.patches.setdefault(name, []).append(patch)


def install_from_env() -> None:
    """Install the hooks XQG_TEST_HOOKS names."""
    hooks = json.loads(os.environ[ENV])
    if "hold" in hooks:
        after_import("xqg.rundir", lambda rundir: hold_before_marking(rundir.RunDir, *hooks["hold"]))
    if "fake_gpu_unit_s" in hooks:
        after_import("xqg.units", fake_gpu)
        for module, (cls, method) in FAKE_GPU_UNITS.items():
            after_import(module, lambda m, c=cls, u=method: fake_gpu_units(getattr(m, c), u, hooks["fake_gpu_unit_s"]))
    if "broken_start" in hooks:
        after_import("xqg.units", lambda units: broken_start(units, *hooks["broken_start"]))


# ---- hold: a job that stops mid-stage -------------------------------------------------------------------------
def hold_before_marking(run_dir_class: type, stage: str, n: int, file: str) -> None:
    """RunDir.mark_done of stage's n-th unit in this process never returns: it creates file and sleeps."""
    real, count = run_dir_class.mark_done, [0]

    def mark_done(self: Any, marked_stage: str, unit: str, *args: Any, **kwargs: Any) -> Any:
        if marked_stage == stage:
            count[0] += 1
            if count[0] == n:
                print(f"test hook: holding before marking {stage} {unit} until killed", file=sys.stderr, flush=True)
                Path(file).write_text(f"{stage} {unit}\n", encoding="utf-8")
                while True:
                    time.sleep(60)
        return real(self, marked_stage, unit, *args, **kwargs)

    run_dir_class.mark_done = mark_done


# ---- fake GPUs of a test cluster ------------------------------------------------------------------------------
FAKE_GPU_UNITS = {"xqg.generate.actor": ("GenerateActor", "process"), "xqg.encode.actor": ("EncodeActor", "unit")}


def on_fake_gpu() -> bool:
    """True in an actor that Ray gave a GPU which CUDA cannot see (a test cluster's fake one)."""
    import ray
    import torch

    return not torch.cuda.is_available() and bool(ray.get_gpu_ids())


def fake_gpu(units: Any) -> None:
    """xqg.units.actor_device: an actor given a fake GPU computes on the CPU (elsewhere: unchanged)."""
    real = units.actor_device

    def actor_device(use_gpu: bool) -> str:
        return "cpu" if use_gpu and on_fake_gpu() else real(use_gpu)

    units.actor_device = actor_device


def fake_gpu_units(cls: type, method: str, seconds: float) -> None:
    """A unit of cls done on a fake GPU records device "fake-gpu" and takes at least `seconds`."""
    real = getattr(cls, method)

    def unit(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        started = time.perf_counter()
        manifest = real(self, *args, **kwargs)
        if self.device == "cpu" and on_fake_gpu():
            manifest["device"] = "fake-gpu"
            if not manifest.get("error"):
                time.sleep(max(0.0, seconds - (time.perf_counter() - started)))
        return manifest

    setattr(cls, method, unit)


# ---- an actor that cannot start -------------------------------------------------------------------------------
def broken_start(units: Any, stage: str, claim: str) -> None:
    """xqg.units.start_or_refusal: the first actor process of stage to create claim raises at every attempt."""
    real = units.start_or_refusal

    def start_or_refusal(actor_stage: str, load: Callable[[], Any]) -> Any:
        if actor_stage != stage:
            return real(actor_stage, load)

        def broken_load() -> Any:
            with contextlib.suppress(FileExistsError):
                fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
            if Path(claim).read_text(encoding="utf-8").strip() == str(os.getpid()):
                raise RuntimeError("test hook: simulated start-up failure of this actor")
            return load()

        return real(actor_stage, broken_load)

    units.start_or_refusal = start_or_refusal


# ---- a training worker that dies -----------------------------------------------------------------------------
class FailOnce:
    """The stage's training task, except that the last worker exits (os._exit: a real process death) once, when
    it computes the loss of global step `step`, before that step's optimizer step and checkpoint; a sentinel file
    in the experiment folder (fault_injected_step=N.json) keeps the restarted workers from failing again. Counts
    the steps of a fresh training (the first attempt starts at step 0)."""

    def __init__(self, task: str, task_args: dict[str, Any], step: int, experiment_uri: str) -> None:
        from xqg.train.worker import load_task

        self.inner, self.step, self.experiment_uri, self.steps = load_task(task, task_args), step, experiment_uri, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def compute_loss(self, model: Any, batch: dict[str, Any], device: Any) -> Any:
        import ray.train

        from xqg.rundir import RunDir

        self.steps += 1
        ctx = ray.train.get_context()
        rank, last = ctx.get_world_rank(), ctx.get_world_size() - 1
        exp, sentinel = RunDir(self.experiment_uri), f"fault_injected_step={self.step}.json"
        if self.steps == self.step and rank == last and not exp.exists(sentinel):
            exp.write_json(sentinel, {"step": self.step, "rank": rank, "pid": os.getpid(), "time": time.time()})
            print(f"test hook: rank {rank} exits at step {self.step}", file=sys.__stdout__, flush=True)
            os._exit(17)
        return self.inner.compute_loss(model, batch, device)


@contextlib.contextmanager
def training_fails_once_at(step: int) -> Iterator[None]:
    """Within: trainings that this process starts (xqg.train.driver.fit) run their task wrapped in FailOnce."""
    import pytest

    from xqg.train import driver

    real = driver.fit

    def fit(task: str, task_args: dict[str, Any], settings: Any, **kwargs: Any) -> Any:
        args = {"task": task, "task_args": task_args, "step": step, "experiment_uri": settings.experiment_uri}
        return real("tests.hooks.xqg_test_hooks:FailOnce", args, settings, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(driver, "fit", fit)
        yield
