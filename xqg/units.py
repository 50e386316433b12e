"""Run a stage's pending units of work through Ray Data actor pools, marking each as it completes.

Device and pool bounds come from the config (use_gpu: auto | true | false; <stage>.min_actors, max_actors), not
from the number of units: a pool starts at min_actors and Ray Data adds actors while units wait, up to max_actors
(default: the most the cluster can ever hold of the pool's resource, from the autoscaler's node types when Ray
knows them). Each new actor's resource request is what makes the autoscaler add a node, so the pool grows as GPU
nodes join; with use_gpu: true and no GPU yet the job says so and waits, it never falls back to the CPU. Idle
actors are let go. Actors are restarted and their unit retried as often as Ray Data's defaults allow (unlimited:
a preempted spot node is not an error); an exception inside a unit is caught in the actor and comes back as a
failed manifest (see failed_manifest), so one bad unit costs one unit. An actor whose start-up (model load)
raises retries it a few times (start_or_refusal), then stays up and fails each unit it gets with the reason: it
costs its units, not the stage."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

from tqdm import tqdm

if TYPE_CHECKING:
    from xqg.config import ActorPoolSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
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


def autoscaler_config_path() -> str | None:
    """The cluster config file of the autoscaler of the connected cluster, when it runs on this node (the head, where
    `ray job submit` runs drivers): the --autoscaling-config of the Ray monitor process of this cluster's GCS."""
    import ray

    try:
        gcs = ray.get_runtime_context().gcs_address
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(os.path.join(entry.path, "cmdline"), "rb") as f:
                    args = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if f"--gcs-address={gcs}" in args and any(a.endswith("monitor.py") for a in args):
                for a in args:
                    if a.startswith("--autoscaling-config="):
                        return os.path.expanduser(a.split("=", 1)[1])
    except Exception:  # noqa: BLE001 - no /proc (not Linux), not connected: the config is just unknown
        return None
    return None


def autoscaler_capacity(config: Mapping[str, Any], resource: str) -> int:
    """The most of a resource an autoscaler cluster config can ever hold: the head's, plus its worker node types at
    their max_workers, picking the richest types first within the cluster's max_workers."""
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    total = float((types.get(head, {}).get("resources") or {}).get(resource, 0)) if head in types else 0.0
    nodes_left = int(config.get("max_workers", sys.maxsize))
    workers = sorted(
        ((float((t.get("resources") or {}).get(resource, 0)), int(t.get("max_workers", 0)))
         for name, t in types.items() if name != head),
        reverse=True,
    )
    for per_node, count in workers:
        take = min(count, nodes_left)
        total += per_node * take
        nodes_left -= take
    return int(total)


def cluster_capacity(resource: str) -> tuple[int, str]:
    """(most units of a resource the cluster can ever hold, where that number comes from).

    The autoscaler's node types (resources x max_workers within the cluster's max_workers) when Ray reports them
    (autoscaler v2, KubeRay) or the autoscaler's config file is on this node (`ray up`: the head's
    ray_bootstrap_config.yaml, whose node types have their resources filled in); else what the cluster holds
    now (a local Ray, a hand-made cluster). A node type whose resources the config leaves out counts as none.
    """
    import ray

    try:  # reported to the GCS by autoscaler v2 / KubeRay; absent otherwise (and a private API: never fatal)
        from ray._private.state import state

        limits = state.get_max_resources_from_cluster_config() or {}
    except Exception:  # noqa: BLE001
        limits = {}
    most = int(limits.get(resource) or 0)
    if most > 0:
        return most, "the autoscaler's node types" if most < sys.maxsize else "unbounded autoscaler node types"
    path = autoscaler_config_path()
    if path and os.path.exists(path):
        import yaml

        with open(path, encoding="utf-8") as f:
            most = autoscaler_capacity(yaml.safe_load(f) or {}, resource)  # JSON is YAML too
        if most > 0:
            return most, "the autoscaler's node types"
    return int(ray.cluster_resources().get(resource, 0)), "the cluster now"


def pool_bounds(min_actors: int, max_actors: int | None, use_gpu: bool, pending: int) -> tuple[int, int, str]:
    """(min, max, why) actors of a pool: max as configured (never above what the autoscaler can ever provide), else
    the cluster's capacity for one actor's resource; never more than the units to do, min never above max."""
    resource = "GPU" if use_gpu else "CPU"
    capacity, source = cluster_capacity(resource)
    autoscaler = source != "the cluster now"
    if max_actors is not None:
        most, why = max_actors, "configured"
        if autoscaler and capacity < most:  # more actors than the cluster can ever hold would wait forever
            most, why = capacity, f"configured {max_actors}, capped by {capacity} {resource}(s) of {source}"
    elif use_gpu:
        # No GPU up yet and no autoscaler config: one actor, whose request is what makes a GPU node come.
        most, why = max(1, capacity), f"{capacity} {resource}(s) of {source}"
    else:
        # A local cluster: leave a CPU for the driver and Ray Data's own tasks; an autoscaler's workers are all work.
        most = capacity if autoscaler else capacity - 1
        most, why = max(1, most), f"{capacity} {resource}(s) of {source}"
    most = max(1, min(most, pending))
    least = max(1, min(min_actors, most))
    if most == pending:
        why += f"; {pending} unit(s) to do"
    return least, most, why


@dataclass(frozen=True)
class Pool:
    """One actor pool of a pipeline: its device and its least and most actors."""

    use_gpu: bool
    max_size: int
    stage: str = ""
    min_size: int = 1

    @property
    def size(self) -> int:
        """Most actors."""
        return self.max_size

    def describe(self) -> str:
        """The bounds as the planning line says them: "1-16 GPU actors"."""
        span = str(self.max_size) if self.min_size == self.max_size else f"{self.min_size}-{self.max_size}"
        return f"{span} {'GPU' if self.use_gpu else 'CPU'} actor(s)"

    def map_batches_args(self) -> dict[str, Any]:
        """Non-deprecated Ray Data map_batches arguments: an autoscaling pool, its resources (Ray's retry defaults)."""
        import ray

        compute = ray.data.ActorPoolStrategy(
            min_size=self.min_size, max_size=self.max_size,
            # Every actor the cluster can hold is asked for at once: their pending resource requests are what makes
            # the cluster autoscaler add nodes (Ray Data's own scale-up is bounded by the resources already up, so a
            # pool started small on a cluster scaled to zero stays small). Actors start as nodes join; idle ones are
            # let go down to min_size.
            initial_size=self.max_size,
            # A unit can take an hour: one at a time per actor, so queued units go to actors that join later.
            max_tasks_in_flight_per_actor=1,
        )
        if self.use_gpu:
            return {"compute": compute, "num_gpus": 1}
        return {"compute": compute, "num_cpus": 1}


def make_pool(setting: UseGpuSetting, settings: ActorPoolSettings, pending: int, stage: str) -> Pool:
    """The actor pool of a stage from its use_gpu setting and its pool settings (min_actors, max_actors)."""
    import ray

    use_gpu = resolve_use_gpu(setting, stage)
    least, most, why = pool_bounds(settings.min_actors, settings.max_actors, use_gpu, pending)
    made = Pool(use_gpu, most, stage, least)
    resource = "GPU" if use_gpu else "CPU"
    log.info("%s: pool of %s, started as nodes join, %d kept when idle (max: %s; %d %s(s) in the cluster now)", stage,
             made.describe(), least, why, int(ray.cluster_resources().get(resource, 0)), resource)
    return made


def actor_device(use_gpu: bool) -> str:
    """An actor's torch device: cuda only when it was given a GPU (a CPU actor never touches one), else cpu; a GPU
    actor without CUDA is an error, never a silent CPU run."""
    if not use_gpu:
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    import ray

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


# An actor's start-up (model load) is tried this many times, BACKOFF_S apart (doubling), before the actor gives up
# and fails each unit it gets with the reason. A process that dies during start-up (a spot node lost) is replaced
# by Ray Data up to ACTOR_INIT_DEATHS times in a row (the count restarts whenever an actor starts).
START_ATTEMPTS, START_BACKOFF_S = 3, 2.0
ACTOR_INIT_DEATHS = 16
LEAVE_AFTER_S = 5.0  # how long an actor that could not start stays after failing a unit


class ActorStartError(RuntimeError):
    """An actor could not start (its model did not load) after START_ATTEMPTS tries: its units fail with this."""


def start_or_refusal(stage: str, load: Callable[[], T]) -> tuple[T | None, ActorStartError | None]:
    """(load(), None), retrying a load that raises; after START_ATTEMPTS failures (None, the reason), so the actor
    fails each unit it gets with it instead of dying in __init__ (Ray Data would end the whole stage)."""
    delay, last = START_BACKOFF_S, None
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return load(), None
        except Exception as e:  # noqa: BLE001 - whatever stops a model loading must cost units, not the stage
            last = e
            log.warning("%s actor start-up attempt %d/%d failed: %s: %s", stage, attempt, START_ATTEMPTS,
                        type(e).__name__, e)
            if attempt < START_ATTEMPTS:
                time.sleep(delay)
                delay *= 2
    import ray

    node = ray.get_runtime_context().get_node_id()
    return None, ActorStartError(
        f"{stage} actor on node {node} could not start after {START_ATTEMPTS} attempts: {type(last).__name__}: {last}"
    )


_leaving = threading.Event()


def refuse_unit(error: RuntimeError) -> NoReturn:
    """Raise an actor's refusal for the unit it got (the unit fails with the reason). An actor that could not start
    then leaves the pool a few seconds later (the process exits; Ray restarts it, maybe on another node, and it
    tries its start-up again), so a broken actor costs about one unit per start cycle instead of failing every unit
    of the queue at once (it answers faster than any healthy actor). A unit it gets meanwhile waits for that exit
    and is retried by Ray on another actor."""
    if isinstance(error, ActorStartError):
        if _leaving.is_set():
            time.sleep(3600)  # ended by the exit below: Ray Data retries this unit elsewhere
        _leaving.set()
        # Later than the reply carrying this unit's failed manifest; os._exit: no cleanup to wait for.
        threading.Timer(LEAVE_AFTER_S, os._exit, args=(1,)).start()
    raise error


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


# A pool that goes on from another stage's pool (run_units' `then`) returns each manifest row it gets with its own
# manifest's columns added under this prefix (see xqg.runner.Feed).
NEXT_PREFIX = "next_"


def tapped(cls: type) -> type:
    """cls as a pool's actor class that also sends each manifest it returns to the driver at once (a Ray queue,
    ctor kwarg xqg_tap), so the driver can mark the unit while later pools of the same pipeline still work on it."""

    class Tapped(cls):  # type: ignore[valid-type, misc]
        def __init__(self, *, xqg_tap: Any, **kwargs: Any) -> None:
            self._xqg_tap = xqg_tap
            super().__init__(**kwargs)

        def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
            out = super().__call__(batch)
            columns = {k: list(v) for k, v in out.items()}
            rows = [{k: _plain_value(v[i]) for k, v in columns.items()} for i in range(len(next(iter(columns.values()))))]
            try:
                self._xqg_tap.put(rows, timeout=60)
            except Exception as e:  # noqa: BLE001 - the manifest still reaches the driver through the pipeline
                log.warning("could not send %d manifest(s) to the driver early: %s", len(rows), e)
            return out

    # Ray names the pool's actors after the class (MapWorker(MapBatches(GenerateActor))): keep the name.
    Tapped.__name__, Tapped.__qualname__ = cls.__name__, cls.__qualname__
    return Tapped


def _plain_value(value: Any) -> Any:
    """A numpy scalar as a plain Python value (what a manifest column holds)."""
    return value.item() if hasattr(value, "item") else value


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
    on_first: Callable[[dict[str, Any]], None] | None = None,
) -> float:
    """Stream units (one dict each) through `actor_cls` actors (then through each `then` pool in the same pipeline);
    call on_result for each finished unit; return seconds.

    on_first (with `then`): called with each manifest of the first pool as soon as that pool returns it, from a
    driver thread (concurrently with on_result), so a unit's first stage can be marked while the next pools still
    work on it; the same manifest comes again, with the later pools' columns, through on_result.

    Each actor's __call__ gets a batch of one unit (columns of length 1), writes the unit's output itself and
    returns a small manifest (with an "error" column, empty unless the unit failed); the driver writes the
    completion marker, so a killed job loses only the units in flight. Actors that die are restarted and their
    unit retried (Ray Data's defaults).
    """
    import ray

    start = time.perf_counter()
    if not units:
        return 0.0
    from ray.data import DataContext

    # An actor that dies while starting (its node lost) is replaced, not the end of the stage (Ray's default: 0).
    context = DataContext.get_current()
    context.max_consecutive_actor_init_deaths = max(context.max_consecutive_actor_init_deaths, ACTOR_INIT_DEATHS)
    # Ray Data adds an actor when in-flight tasks / (actors x calls per actor) reaches this threshold (default 1.75).
    # With one unit in flight per actor the ratio never passes 1: at the default a pool would never grow past its
    # minimum. 1.0 = every actor busy and units waiting; it then grows by one actor as resources allow.
    # Downscaling at its default (utilisation <= 0.5) released actors that had just started while units still
    # waited (a pool throttled by the next stage dips under 0.5); 0.0 = an actor goes only when the pool is idle.
    context.autoscaling_config = dataclasses.replace(
        context.autoscaling_config, actor_pool_util_upscaling_threshold=1.0, actor_pool_util_downscaling_threshold=0.0,
    )
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    tap, stop = None, threading.Event()
    if on_first is not None and then:
        from ray.util.queue import Queue

        tap = Queue(actor_options={"num_cpus": 0})  # on any node, a CPU-less head included
        actor_cls, constructor_kwargs = tapped(actor_cls), {**constructor_kwargs, "xqg_tap": tap}
    for cls, kwargs, stage_pool in [(actor_cls, constructor_kwargs, pool), *(then or [])]:
        ds = ds.map_batches(cls, batch_size=1, fn_constructor_kwargs=kwargs, **stage_pool.map_batches_args())
    drain = None
    if tap is not None:
        assert on_first is not None

        def drain_tap() -> None:
            from ray.util.queue import Empty

            while True:
                try:
                    rows = tap.get(timeout=0.5)
                except Empty:
                    if stop.is_set():
                        return
                    continue
                except Exception:  # noqa: BLE001 - the queue is gone: the results still come through on_result
                    log.warning("early results of the first pool stopped", exc_info=True)
                    return
                for r in rows:
                    try:
                        on_first(r)
                    except Exception:  # noqa: BLE001 - the manifest comes again through on_result
                        log.exception("early result of %s", r.get("unit"))

        drain = threading.Thread(target=drain_tap, name="xqg-first-pool-results", daemon=True)
        drain.start()
    total, finished = 0, 0
    from xqg.tasks import WaitLog

    # GPU nodes that never come (spot capacity, quotas) must not look like a job that hangs.
    waiting = WaitLog(desc, num_gpus=1 if pool.use_gpu else 0, memory=0)
    waiting.watch(lambda: len(units) - finished, len(units), stop)
    try:
        with tqdm(total=len(units), desc=desc, unit="unit", dynamic_ncols=True) as bar:
            for row in ds.iter_rows():
                on_result(row)
                finished += 1
                waiting.progress()
                total += int(row.get(rate_key, 0) or 0)
                elapsed = time.perf_counter() - start
                bar.set_postfix_str(f"{total:,} {rate_unit}, {total / max(elapsed, 1e-9):,.1f} {rate_unit}/s")
                bar.update(1)
    finally:
        stop.set()
        if drain is not None:
            drain.join(timeout=30)
    return time.perf_counter() - start
