"""The contrastive loss against a direct computation, and its cross-worker gathered form on 2 gloo processes."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from xqg.config import TrainDRConfig
from xqg.train.loss import batch_loss, contrastive_loss

D_IN, D = 6, 4


def direct_loss(q: np.ndarray, p: np.ndarray, pos: list[int], temperature: float, masked: set[tuple[int, int]]) -> float:
    """Cross-entropy written out with loops: -log softmax(q_i . p / t)[pos_i], masked pairs left out."""
    total = 0.0
    for i in range(len(q)):
        scores = [float(q[i] @ p[j]) / temperature for j in range(len(p)) if (i, j) not in masked]
        target = float(q[i] @ p[pos[i]]) / temperature
        top = max(scores)
        total += -(target - top - math.log(sum(math.exp(s - top) for s in scores)))
    return total / len(q)


def fixed_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """5 queries, 11 passages with variable passages per query; passage 7 is a copy of query 0's positive."""
    g = torch.Generator().manual_seed(seed)
    xp = torch.randn(11, D_IN, generator=g)
    xp[7] = xp[0]  # the same passage again (on the other rank in the 2-worker test)
    return {
        "xq": torch.randn(5, D_IN, generator=g),
        "xp": xp,
        "pos": torch.tensor([0, 3, 5, 6, 8]),
        # docid keys: query i's positive key, passage keys; passage 7 repeats docid 100 (query 0's positive)
        "q_keys": torch.tensor([100, 103, 105, 106, 108]),
        "p_keys": torch.tensor([100, 101, 102, 103, 104, 105, 106, 100, 108, 109, 110]),
    }


def test_loss_matches_direct_computation_with_temperature_and_duplicate_masking() -> None:
    g = torch.Generator().manual_seed(1)
    q, p = torch.randn(3, D, generator=g), torch.randn(8, D, generator=g)
    pos = torch.tensor([0, 3, 5])
    got = contrastive_loss(q, p, pos, temperature=0.5)
    assert got.item() == pytest.approx(direct_loss(q.numpy(), p.numpy(), [0, 3, 5], 0.5, set()), rel=1e-5)
    # passage 6 is another copy of query 1's positive: it must not count as query 1's negative
    qk, pk = torch.tensor([10, 13, 15]), torch.tensor([10, 11, 12, 13, 14, 15, 13, 17])
    got = contrastive_loss(q, p, pos, temperature=1.0, q_pos_keys=qk, p_keys=pk)
    assert got.item() == pytest.approx(direct_loss(q.numpy(), p.numpy(), [0, 3, 5], 1.0, {(1, 6)}), rel=1e-5)
    assert got.item() != pytest.approx(contrastive_loss(q, p, pos).item(), rel=1e-3)


def test_batch_loss_without_workers_is_the_plain_loss() -> None:
    b = fixed_batch()
    w = torch.randn(D_IN, D)
    q, p = b["xq"] @ w, b["xp"] @ w
    loss, value = batch_loss(q, p, b["pos"], temperature=0.7, q_pos_keys=b["q_keys"], p_keys=b["p_keys"], gather=True)
    assert loss.item() == pytest.approx(contrastive_loss(q, p, b["pos"], 0.7, b["q_keys"], b["p_keys"]).item())
    assert value.item() == pytest.approx(loss.item())


def init_weight() -> torch.nn.Parameter:
    """The shared "encoder" of the gathered test: small weights keep the softmax away from saturation."""
    return torch.nn.Parameter(0.3 * torch.randn(D_IN, D, generator=torch.Generator().manual_seed(42)))


# ---- two gloo processes ---------------------------------------------------------------------------------

# Rank 0 holds queries 0-2 with passages 0-6, rank 1 queries 3-4 with passages 7-10 (uneven on purpose).
SPLIT_Q, SPLIT_P = 3, 7


def _worker(rank: int, port: int, out_dir: str, gather: bool) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        w = init_weight()
        b = fixed_batch()
        qs = slice(0, SPLIT_Q) if rank == 0 else slice(SPLIT_Q, None)
        ps = slice(0, SPLIT_P) if rank == 0 else slice(SPLIT_P, None)
        pos = b["pos"][qs] - (0 if rank == 0 else SPLIT_P)  # positive index local to this rank's passages
        q, p = b["xq"][qs] @ w, b["xp"][ps] @ w
        q.retain_grad()
        p.retain_grad()
        loss, value = batch_loss(
            q, p, pos, temperature=0.5, q_pos_keys=b["q_keys"][qs], p_keys=b["p_keys"][ps], gather=gather,
        )
        loss.backward()
        grad = w.grad.detach().clone()
        dist.all_reduce(grad)
        grad /= 2  # what DDP does: average the ranks' gradients
        np.save(Path(out_dir) / f"grad{rank}.npy", grad.numpy())
        # the embeddings' gradients as DDP scales them (the 1/2 of its average): this rank's rows of the
        # single-process gradient
        np.save(Path(out_dir) / f"qgrad{rank}.npy", q.grad.numpy() / 2)
        np.save(Path(out_dir) / f"pgrad{rank}.npy", p.grad.numpy() / 2)
        np.save(Path(out_dir) / f"loss{rank}.npy", np.array([value.item()]))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gathered_loss_on_two_workers_equals_one_worker_with_the_whole_batch(tmp_path: Path) -> None:
    """With the default train_dr.gather_negatives, the loss of a global batch and its gradients
    (of the weights after DDP's average, and of every query and passage embedding) do not depend on how the
    batch is split across workers."""
    gather = TrainDRConfig().gather_negatives
    assert gather is True, "the paper's semantics (Tevatron: every passage of the global batch) is the default"
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), gather), nprocs=2, join=True)
    w = init_weight()
    b = fixed_batch()
    q, p = b["xq"] @ w, b["xp"] @ w
    q.retain_grad()
    p.retain_grad()
    loss = contrastive_loss(q, p, b["pos"], 0.5, b["q_keys"], b["p_keys"])
    loss.backward()
    for rank in (0, 1):
        qs = slice(0, SPLIT_Q) if rank == 0 else slice(SPLIT_Q, None)
        ps = slice(0, SPLIT_P) if rank == 0 else slice(SPLIT_P, None)
        assert np.load(tmp_path / f"loss{rank}.npy")[0] == pytest.approx(loss.item(), rel=1e-5)
        np.testing.assert_allclose(np.load(tmp_path / f"grad{rank}.npy"), w.grad.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.load(tmp_path / f"qgrad{rank}.npy"), q.grad[qs].numpy(), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(np.load(tmp_path / f"pgrad{rank}.npy"), p.grad[ps].numpy(), rtol=1e-4, atol=1e-7)
    # and the masking is real: without the duplicate keys the loss differs
    plain = contrastive_loss(b["xq"] @ w, b["xp"] @ w, b["pos"], 0.5)
    assert plain.item() != pytest.approx(loss.item(), rel=1e-4)
