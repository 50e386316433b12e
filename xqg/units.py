"""Run a stage's pending units of work through a Ray Data actor pool, marking each as it completes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tqdm import tqdm


def cluster_gpus() -> int:
    """GPUs in the connected Ray cluster (0 on CPU-only clusters)."""
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def pool_size(requested: int | None, use_gpu: bool, pending: int) -> int:
    """Actors to start: as configured, else one per GPU (GPU) or per CPU (CPU); never more than units."""
    import ray

    if requested is None:
        res = ray.cluster_resources()
        requested = int(res.get("GPU", 0)) if use_gpu else max(1, int(res.get("CPU", 1)) - 1)
    return max(1, min(requested, pending))


def run_units(
    units: list[dict[str, Any]],
    actor_cls: type,
    constructor_kwargs: dict[str, Any],
    *,
    concurrency: int,
    num_gpus: float,
    on_result: Callable[[dict[str, Any]], None],
    desc: str,
    rate_key: str = "rows_out",
    rate_unit: str = "rows",
) -> float:
    """Stream units (one dict each) through `actor_cls` actors; call on_result for each finished unit; return seconds.

    The actor's __call__ gets a batch of one unit (columns of length 1), writes the unit's output itself and
    returns a small manifest; the driver writes the completion marker, so a killed job loses only the units
    in flight. Actors that die are restarted and their unit retried.
    """
    import ray

    start = time.perf_counter()
    if not units:
        return 0.0
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    ds = ds.map_batches(
        actor_cls,
        batch_size=1,
        fn_constructor_kwargs=constructor_kwargs,
        concurrency=concurrency,
        num_gpus=num_gpus or None,
        num_cpus=1 if not num_gpus else None,
        max_restarts=3,
        max_task_retries=3,
    )
    total = 0
    with tqdm(total=len(units), desc=desc, unit="unit", dynamic_ncols=True) as bar:
        for row in ds.iter_rows():
            on_result(row)
            total += int(row.get(rate_key, 0))
            elapsed = time.perf_counter() - start
            bar.set_postfix_str(f"{total:,} {rate_unit}, {total / max(elapsed, 1e-9):,.1f} {rate_unit}/s")
            bar.update(1)
    return time.perf_counter() - start
