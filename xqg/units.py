"""Run a stage's pending units of work through Ray Data actor pools, marking each as it completes.

Device and pool size come from the config (use_gpu: auto | true | false), not only from what happens to be up at
job start: a GPU pool asks for one actor per unit to do (at most <stage>.concurrency), so on an autoscaling
cluster the autoscaler brings GPU nodes up and the pool's actors start as they join; with use_gpu: true and no
GPU yet the job says so and waits, it never falls back to the CPU. Actors are restarted and their unit retried
as often as Ray Data's defaults allow (unlimited: a preempted spot node is not an error); an exception inside a
unit is caught in the actor and comes back as a failed manifest (see failed_manifest), so one bad unit costs
one unit.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tqdm import tqdm

log = logging.getLogger(__name__)

# Test clusters (ray.cluster_utils.AutoscalingCluster) advertise GPUs on nodes that have none. With this set to 1
# in a node's environment, an actor that holds such a fake GPU computes on the CPU and says so in its manifest
# (device "fake-gpu"); without it, an actor given a GPU that CUDA cannot see fails its unit instead.
FAKE_GPU_ENV = "XQG_FAKE_GPU"
FAKE_GPU_UNIT_SECONDS_ENV = "XQG_FAKE_GPU_UNIT_SECONDS"

UseGpuSetting = Literal["auto", True, False] | bool | None


def cluster_gpus() -> int:
    """GPUs in the connected Ray cluster now (0 on CPU-only clusters and before GPU nodes join)."""
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def resolve_use_gpu(setting: UseGpuSetting, stage: str = "") -> bool:
    """A stage's use_gpu setting as a decision: true/false as configured; auto (or None) = the cluster has GPUs now."""
    if setting is True or setting is False:
        if setting and cluster_gpus() == 0:
            log.warning("%s: use_gpu is true and this Ray cluster has no GPU yet: GPU work is requested and waits "
                        "for the autoscaler to add GPU nodes (no CPU fallback)", stage or "stage")
        return setting
    if setting not in ("auto", None):
        raise ValueError(f"{stage or 'stage'}: use_gpu must be auto, true or false, got {setting!r}")
    return cluster_gpus() > 0


def gpu_options(setting: UseGpuSetting, stage: str = "") -> dict[str, float]:
    """Ray task/actor options for a stage's GPU use (e.g. index shards as tasks): num_gpus=1 when it uses GPUs."""
    return {"num_gpus": 1} if resolve_use_gpu(setting, stage) else {}


def pool_size(requested: int | None, use_gpu: bool, pending: int) -> int:
    """Most actors: as configured, else one per unit (GPU: the pool grows as GPU nodes join) or per CPU; never more than units."""
    import ray

    if requested is None:
        requested = pending if use_gpu else max(1, int(ray.cluster_resources().get("CPU", 1)) - 1)
    return max(1, min(requested, pending))


@dataclass(frozen=True)
class Pool:
    """One actor pool of a pipeline: its device and its most actors."""

    use_gpu: bool
    size: int
    stage: str = ""

    def map_batches_args(self) -> dict[str, Any]:
        """Non-deprecated Ray Data map_batches arguments: an autoscaling pool, its resources (Ray's retry defaults)."""
        import ray

        compute = ray.data.ActorPoolStrategy(
            min_size=1, max_size=self.size,
            # Ask for every actor at once so the cluster autoscaler sees the demand and adds GPU nodes; actors start as
            # nodes join, and the pool shrinks back once the inputs run out.
            initial_size=self.size,
            # A unit can take an hour: one at a time per actor, so queued units go to actors that join later.
            max_tasks_in_flight_per_actor=1,
        )
        if self.use_gpu:
            return {"compute": compute, "num_gpus": 1}
        return {"compute": compute, "num_cpus": 1}


def make_pool(setting: UseGpuSetting, concurrency: int | None, pending: int, stage: str) -> Pool:
    """The actor pool of a stage from its use_gpu and concurrency settings."""
    use_gpu = resolve_use_gpu(setting, stage)
    size = pool_size(concurrency, use_gpu, pending)
    if use_gpu:
        log.info("%s: up to %d GPU actor(s) (%d GPU(s) in the cluster now)", stage, size, cluster_gpus())
    return Pool(use_gpu, size, stage)


def actor_device(use_gpu: bool) -> str:
    """An actor's torch device: cuda only when it was given a GPU (a CPU actor never touches one), else cpu.

    Returns "fake-gpu" (compute on the CPU) only on test clusters whose nodes advertise GPUs they do not have
    (XQG_FAKE_GPU=1); anywhere else a GPU actor without CUDA is an error, never a silent CPU run.
    """
    if not use_gpu:
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    import ray

    if os.environ.get(FAKE_GPU_ENV) == "1" and ray.get_gpu_ids():
        return "fake-gpu"
    raise RuntimeError(
        f"this actor was given GPU {ray.get_gpu_ids()} but CUDA is not available on node "
        f"{ray.get_runtime_context().get_node_id()[:12]} (CUDA torch/driver missing?): refusing to compute on the CPU"
    )


def actor_device_or_refusal(use_gpu: bool) -> tuple[str, RuntimeError | None]:
    """(device, None), or ("cpu", the refusal) for a GPU actor without CUDA: it fails each unit it gets with the
    reason (an actor that raised in __init__ would be restarted over and over), never computing on the CPU."""
    try:
        return actor_device(use_gpu), None
    except RuntimeError as e:
        return "cpu", e


def fake_gpu_pause(device: str, started: float) -> None:
    """On a test cluster's fake GPU, stretch a unit to XQG_FAKE_GPU_UNIT_SECONDS (tiny units would otherwise all be
    done by the first actor before the autoscaler's next node is up); a no-op on every real device."""
    if device != "fake-gpu":
        return
    import time

    rest = float(os.environ.get(FAKE_GPU_UNIT_SECONDS_ENV) or 0) - (time.perf_counter() - started)
    if rest > 0:
        time.sleep(rest)


def torch_device(device: str) -> str:
    """The torch device string for an actor_device() answer."""
    return "cpu" if device == "fake-gpu" else device


def where() -> dict[str, str]:
    """Which actor and node run this unit (recorded in the unit's marker)."""
    import socket

    import ray

    return {"actor": f"{socket.gethostname()}:{os.getpid()}", "node": ray.get_runtime_context().get_node_id()}


def failed_manifest(unit: str, error: BaseException, template: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest of a unit whose work raised: the template's numbers zeroed, the unit named, the reason kept."""
    blank = {k: (type(v)() if isinstance(v, (int, float)) else v) for k, v in template.items()}
    where_ = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    at = f" (at {os.path.basename(where_.filename)}:{where_.lineno})" if where_ else ""
    return {**blank, "unit": unit, "error": f"{type(error).__name__}: {error}"[:2000] + at}


def run_units(
    units: list[dict[str, Any]],
    actor_cls: type,
    constructor_kwargs: dict[str, Any],
    *,
    pool: Pool,
    on_result: Callable[[dict[str, Any]], None],
    desc: str,
    rate_key: str = "rows_out",
    rate_unit: str = "rows",
    then: list[tuple[type, dict[str, Any], Pool]] | None = None,
) -> float:
    """Stream units (one dict each) through `actor_cls` actors (then through each `then` pool in the same pipeline);
    call on_result for each finished unit; return seconds.

    Each actor's __call__ gets a batch of one unit (columns of length 1), writes the unit's output itself and
    returns a small manifest (with an "error" column, empty unless the unit failed); the driver writes the
    completion marker, so a killed job loses only the units in flight. Actors that die are restarted and their
    unit retried (Ray Data's defaults).
    """
    import ray

    start = time.perf_counter()
    if not units:
        return 0.0
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    for cls, kwargs, stage_pool in [(actor_cls, constructor_kwargs, pool), *(then or [])]:
        ds = ds.map_batches(cls, batch_size=1, fn_constructor_kwargs=kwargs, **stage_pool.map_batches_args())
    total = 0
    with tqdm(total=len(units), desc=desc, unit="unit", dynamic_ncols=True) as bar:
        for row in ds.iter_rows():
            on_result(row)
            total += int(row.get(rate_key, 0) or 0)
            elapsed = time.perf_counter() - start
            bar.set_postfix_str(f"{total:,} {rate_unit}, {total / max(elapsed, 1e-9):,.1f} {rate_unit}/s")
            bar.update(1)
    return time.perf_counter() - start
