"""Units of a stage as Ray tasks on the workers, each with an explicit memory (and GPU) request.

The driver runs on the head node next to Ray's control plane: an out-of-memory there takes the cluster down.
So the heavy per-unit work of fuse and index (reading shards of vectors, building FAISS shards) runs in tasks
whose `memory=` request is sized from the manifests (rows x dim x bytes), and the driver only plans, waits and
marks. Ray's scheduler then never packs more of them on a node than its memory holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
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
    option: str = "the stage's shard size",
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
    from xqg.capacity import check_fits

    # A request no node type can meet is a config error now, not a task that waits for ever.
    check_fits(max(need for _, _, need in items), gpus=num_gpus, option=option, what=desc)
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
    waiting = WaitLog(desc, num_gpus=num_gpus, memory=max(need for _, _, need in items))
    with tqdm(total=len(items), desc=desc, unit="unit", disable=len(items) < 2, mininterval=1.0) as bar:
        for ref in waiting.ready(list(pending)):
            name = pending.pop(ref)
            try:
                result = ray.get(ref)
            except (FileNotFoundError, ValueError, OSError, RuntimeError, ray.exceptions.RayError) as e:
                cause = getattr(e, "cause", None) or e  # a task's own exception, without Ray's traceback wrapper
                on_result(name, None, f"{type(cause).__name__}: {cause}")
            else:
                on_result(name, result, None)
            bar.update(1)


class WaitLog:
    """Once a minute without a finished unit: what the stage waits for (its requests, the cluster's resources
    now) and for how long, so a job waiting for nodes that never come (spot capacity, quotas) says so."""

    def __init__(self, desc: str, *, num_gpus: float, memory: int, every_s: float = 60.0) -> None:
        self.desc, self.num_gpus, self.memory, self.every_s = desc, num_gpus, memory, every_s
        self.since = time.monotonic()

    def timeout(self) -> float:
        """How long the next wait may block before saying something."""
        return max(0.1, self.every_s - (time.monotonic() - self.since) % self.every_s)

    def progress(self) -> None:
        """A unit finished: the clock restarts."""
        self.since = time.monotonic()

    def say(self, pending: int, total: int) -> str:
        """Log (and return) the waiting line."""
        import ray

        waited = time.monotonic() - self.since
        try:
            have = ray.available_resources()
            now = (f"free now: {have.get('CPU', 0):g} CPU, {have.get('GPU', 0):g} GPU, "
                   f"{have.get('memory', 0) / 2**30:.1f} GiB memory")
        except Exception:  # noqa: BLE001 - only for the message
            now = "cluster resources unknown"
        gpu = f" + {self.num_gpus:g} GPU" if self.num_gpus else ""
        asks = f"up to {self.memory / 2**30:.1f} GiB memory{gpu}" if self.memory else f"1 {'GPU' if self.num_gpus else 'CPU'}"
        line = (f"{self.desc}: {pending} of {total} unit(s) not finished; no unit finished for {waited / 60:.0f} min. "
                f"Each asks {asks}; {now}. Waiting for workers that "
                f"can run them (autoscaler: `ray status` on the head says what it is starting)")
        log.warning("%s", line)
        return line

    def ready(self, refs: list[Any]) -> Iterator[Any]:
        """Each Ray object ref as it finishes; the waiting line whenever a minute passes without one."""
        import ray

        pending, total = list(refs), len(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=self.timeout())
            if not done:
                self.say(len(pending), total)
                continue
            self.progress()
            yield done[0]

    def watch(self, pending: Callable[[], int], total: int, stop: threading.Event) -> threading.Thread:
        """A daemon thread that says the waiting line whenever a minute passes without progress, until stop is set
        (for loops that block inside a streaming iterator, such as the Ray Data actor pools)."""

        def run() -> None:
            while not stop.wait(self.timeout()):
                if time.monotonic() - self.since >= self.every_s * 0.99:
                    self.say(pending(), total)

        thread = threading.Thread(target=run, name=f"xqg-wait-{self.desc}", daemon=True)
        thread.start()
        return thread
