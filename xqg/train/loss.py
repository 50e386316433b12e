"""Contrastive loss of the bi-encoder: each query against its positive, its hard negatives and every other
passage of the global batch (gather=True, train_dr.gather_negatives' default: the passages of every worker's part,
as Tevatron's one-GPU training of the paper; else only the worker's own part), as cross-entropy over dot-product
scores.

Passages of a batch form one block; each query names the index of its positive in that block, so examples may
bring any number of hard negatives (the xQG pairs bring none and are trained with in-batch negatives only).
Scores of a query against another copy of its own positive passage (the same docid elsewhere in the block: a
passage that is the positive of several queries, or a hard negative of one and the positive of another) are
masked out, since they are not negatives.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def contrastive_loss(
    q: torch.Tensor,
    p: torch.Tensor,
    pos_index: torch.Tensor,
    temperature: float = 1.0,
    q_pos_keys: torch.Tensor | None = None,
    p_keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of q[i] against all of p with target pos_index[i]; same-docid copies masked."""
    scores = q @ p.T
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32)) / temperature  # fp16/bf16 -> float32
    if q_pos_keys is not None and p_keys is not None:
        same = q_pos_keys[:, None] == p_keys[None, :]
        same[torch.arange(len(pos_index), device=same.device), pos_index] = False
        scores = scores.masked_fill(same, float("-inf"))
    return F.cross_entropy(scores, pos_index)


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    size = torch.tensor([n], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def gather_with_grad(t: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Concatenate a tensor from every rank (sizes may differ on dim 0); the own slice keeps its gradient.

    all_gather returns tensors without autograd history, so the local slice is put back as the local tensor:
    each rank then back-propagates through its own part only, and the sum over ranks of those gradients is the
    gradient of the loss on the whole concatenated batch.
    """
    sizes = _gather_sizes(t.shape[0], t.device)
    width = max(sizes)
    padded = t.detach()
    if t.shape[0] < width:
        pad = torch.zeros((width - t.shape[0], *t.shape[1:]), dtype=t.dtype, device=t.device)
        padded = torch.cat([padded, pad])
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    rank = dist.get_rank()
    chunks = [t if r == rank else parts[r][: sizes[r]] for r in range(len(sizes))]
    return torch.cat(chunks), sizes


def batch_loss(
    q: torch.Tensor,
    p: torch.Tensor,
    pos_index: torch.Tensor,
    *,
    temperature: float = 1.0,
    q_pos_keys: torch.Tensor | None = None,
    p_keys: torch.Tensor | None = None,
    gather: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss to back-propagate, loss value to log) on this worker's batch, negatives gathered across workers if asked.

    Gathered: every rank computes the loss of the whole global batch, through its own slice only; the
    back-propagated loss is scaled by the world size because DDP averages gradients over ranks, which makes the
    update equal to one process training on the whole concatenated batch (as Tevatron's negatives_x_device).
    """
    if not gather or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        loss = contrastive_loss(q, p, pos_index, temperature, q_pos_keys, p_keys)
        return loss, loss.detach()
    all_q, _ = gather_with_grad(q)
    all_p, p_sizes = gather_with_grad(p)
    rank = dist.get_rank()
    q_sizes = _gather_sizes(q.shape[0], q.device)
    # Positive indices are local to each rank's passage block: shift them by the blocks before it.
    offsets = [sum(p_sizes[:r]) for r in range(len(p_sizes))]
    all_pos = _gather_plain(pos_index + offsets[rank], q_sizes)
    keys_q = keys_p = None
    if q_pos_keys is not None and p_keys is not None:
        keys_q = _gather_plain(q_pos_keys, q_sizes)
        keys_p = _gather_plain(p_keys, p_sizes)
    loss = contrastive_loss(all_q, all_p, all_pos, temperature, keys_q, keys_p)
    return loss * dist.get_world_size(), loss.detach()


def _gather_plain(t: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Concatenate a tensor without gradient from every rank, given every rank's size on dim 0."""
    width = max(sizes)
    padded = torch.cat([t, t.new_zeros((width - t.shape[0], *t.shape[1:]))]) if t.shape[0] < width else t
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([parts[r][: sizes[r]] for r in range(len(sizes))])
