"""Units of a stage as Ray tasks on the workers, each with an explicit memory (and GPU) request.

The driver runs on the head node next to Ray's control plane: an out-of-memory there takes the cluster down.
So the heavy per-unit work of fuse and index (reading shards of vectors, building FAISS shards) runs in tasks
whose `memory=` request is sized from the manifests (rows x dim x bytes), and the driver only plans, waits and
marks. Ray's scheduler then never packs more of them on a node than its memory holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)

MiB = 1 << 20
# What a task process costs besides its data (Python, pyarrow, numpy, faiss imported).
TASK_BASE_BYTES = 512 * MiB


def task_memory(data_bytes: int | float, copies: float = 1.0) -> int:
    """The memory= request of a task holding `copies` copies of `data_bytes` at its peak, plus the process."""
    return int(TASK_BASE_BYTES + copies * float(data_bytes))


def _largest_node_memory() -> int:
    """The largest `memory` resource of a live node (0 when none is known yet, e.g. workers still to come)."""
    import ray

    try:
        return max((int(n["Resources"].get("memory", 0)) for n in ray.nodes() if n.get("Alive")), default=0)
    except Exception:  # noqa: BLE001 - only used for a warning
        return 0


def run_tasks(
    items: list[tuple[str, dict[str, Any], int]],
    work: Callable[..., dict[str, Any]],
    common: dict[str, Any],
    *,
    on_result: Callable[[str, dict[str, Any] | None, str | None], None],
    desc: str,
    num_cpus: float = 1,
    num_gpus: float = 0,
) -> None:
    """Run work(payload, **common) for every (unit name, payload, memory bytes) as a Ray task; on_result(name,
    result, error) as each ends.

    Each task asks for its memory bytes (and num_gpus GPUs) so that it lands on a worker that holds it. A
    task that raises, or whose worker dies (out of memory, a preempted node after Ray's retries), reports its
    error for its unit alone; the other units go on.
    """
    import ray

    if not items:
        return
    remote = ray.remote(work)
    largest, warned = _largest_node_memory(), False
    pending: dict[Any, str] = {}
    for name, payload, need in items:
        if largest and need > largest and not warned:
            # On an autoscaling cluster a larger worker type may still come; on a fixed one the task waits forever.
            log.warning("%s: unit %s asks for %.1f GiB of memory, more than any node now in the cluster has "
                        "(%.1f GiB): it waits for a larger worker", desc, name, need / 2**30, largest / 2**30)
            warned = True
        ref = remote.options(memory=need, num_cpus=num_cpus, num_gpus=num_gpus or None,
                             name=f"{desc}:{name}").remote(payload, **common)
        pending[ref] = name
    with tqdm(total=len(items), desc=desc, unit="unit", disable=len(items) < 2, mininterval=1.0) as bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            name = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except (FileNotFoundError, ValueError, OSError, RuntimeError, ray.exceptions.RayError) as e:
                cause = getattr(e, "cause", None) or e  # a task's own exception, without Ray's traceback wrapper
                on_result(name, None, f"{type(cause).__name__}: {cause}")
            else:
                on_result(name, result, None)
            bar.update(1)
