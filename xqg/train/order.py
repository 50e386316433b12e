"""Deterministic data order and learning-rate schedule of both trainings.

Epoch e visits the examples in permutation default_rng([seed, e]); global step s of the epoch takes the slice
[s*B, (s+1)*B) (B = global batch) and rank r its r-th part (np.array_split), so the data position is just
(epoch, step in epoch), whatever the world size. A last partial batch smaller than the world size is dropped.
The random draws of a step (dropout) come from step_seed(seed, global step, rank), so a training resumed from a
checkpoint takes the same steps as one never interrupted.
"""

from __future__ import annotations

import math

import numpy as np


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


def step_seed(seed: int, global_step: int, rank: int) -> int:
    """The torch seed of one optimizer step on one rank (dropout masks depend on nothing else)."""
    return int(np.random.SeedSequence([seed, global_step, rank]).generate_state(1, np.uint64)[0] >> 1)
