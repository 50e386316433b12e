"""What the cluster's nodes can hold, so that a task no node type can ever run is a config error at plan time.

A task asking for more memory (or GPUs) than any node type has waits for ever on an autoscaling cluster: the
autoscaler finds no type to start for it and says nothing to the job. The node types come from the autoscaler's
config (on a `ray up` head: ~/ray_bootstrap_config.yaml, whose worker types carry the CPU, GPU and memory Ray
detected for their instance type; elsewhere XQG_AUTOSCALER_CONFIG may name it, e.g. cluster.yaml) together with
the nodes alive now. Without an autoscaler config the types that may still come are unknown: then nothing is
refused (a warning only), since a larger worker may join.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

GiB = 1 << 30
CONFIG_ENV = "XQG_AUTOSCALER_CONFIG"
BOOTSTRAP = "~/ray_bootstrap_config.yaml"
# Ray's `memory` resource of a node is what is left besides its object store (30% by default).
RAY_MEMORY_SHARE = 0.7
# (RAM GiB, GPUs) of instance types, for a config whose types leave resources to detection (cluster.yaml).
INSTANCE_TYPES: dict[str, tuple[int, int]] = {
    "m6i.2xlarge": (32, 0), "m6i.4xlarge": (64, 0), "r6i.2xlarge": (64, 0), "r6i.4xlarge": (128, 0),
    "r6i.8xlarge": (256, 0), "r6i.16xlarge": (512, 0), "g5.xlarge": (16, 1), "g5.2xlarge": (32, 1),
    "g5.4xlarge": (64, 1), "g5.8xlarge": (128, 1), "g5.12xlarge": (192, 4), "g5.48xlarge": (768, 8),
    "g6.2xlarge": (32, 1), "g6e.2xlarge": (64, 1), "p4d.24xlarge": (1152, 8), "p5.48xlarge": (2048, 8),
}


@dataclass(frozen=True)
class NodeKind:
    """A node type (or a live node): the `memory` resource bytes and GPUs it offers to tasks."""

    name: str
    memory: int
    gpus: float


def autoscaler_config() -> dict[str, Any] | None:
    """The autoscaler's config: XQG_AUTOSCALER_CONFIG, else the `ray up` head's bootstrap config; None if neither."""
    import yaml

    path = os.environ.get(CONFIG_ENV) or os.path.expanduser(BOOTSTRAP)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    return config if isinstance(config, dict) and config.get("available_node_types") else None


def config_node_kinds(config: dict[str, Any]) -> list[NodeKind]:
    """The worker node types of an autoscaler config that can run a task (not a head with CPU 0)."""
    kinds = []
    for name, t in config["available_node_types"].items():
        res = dict(t.get("resources") or {})
        if name == config.get("head_node_type") and res.get("CPU") == 0:
            continue  # cluster.yaml's head runs no task
        if t.get("max_workers", 1) == 0 and name != config.get("head_node_type"):
            continue
        ram, gpus = INSTANCE_TYPES.get(str((t.get("node_config") or {}).get("InstanceType")), (0, 0))
        memory = int(res.get("memory") or ram * GiB * RAY_MEMORY_SHARE)
        kinds.append(NodeKind(f"{name} ({(t.get('node_config') or {}).get('InstanceType', '?')})", memory,
                              float(res.get("GPU", gpus))))
    return kinds


def live_node_kinds() -> list[NodeKind]:
    """The nodes alive in the Ray cluster now (none when Ray is not initialised)."""
    import ray

    if not ray.is_initialized():
        return []
    return [NodeKind(f"node {n.get('NodeManagerAddress', '?')}", int(n["Resources"].get("memory", 0)),
                     float(n["Resources"].get("GPU", 0))) for n in ray.nodes() if n.get("Alive")]


def check_fits(need: int, *, gpus: float, option: str, what: str,
               kinds: list[NodeKind] | None = None) -> None:
    """A ValueError naming the option and the largest node when no node type can give `need` bytes of memory
    (with `gpus` GPUs); nothing when one can, or when the node types that may come are unknown."""
    if kinds is None:
        config = autoscaler_config()
        if config is None:
            return
        kinds = config_node_kinds(config) + live_node_kinds()
    usable = [k for k in kinds if k.gpus >= gpus]
    if not usable:
        raise ValueError(f"{what} asks for {gpus:g} GPU(s) per task, and no node type has any: set use_gpu "
                         f"to false, or add a GPU worker type to the cluster")
    largest = max(usable, key=lambda k: k.memory)
    if need > largest.memory:
        where = "GPU node" if gpus else "node"
        raise ValueError(
            f"{what} asks for {need / GiB:.1f} GiB of memory per task, more than any {where} type can give "
            f"(largest: {largest.name}, {largest.memory / GiB:.1f} GiB for tasks): such a task would wait for ever. "
            f"Lower {option}, or add a larger worker type to the cluster")
