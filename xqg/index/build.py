"""FAISS index construction: flat inner product, IVF-PQ (trained once) or HNSW; file names of a shard."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from xqg.config import IndexConfig
from xqg.index.faiss_io import to_cpu, to_gpu
from xqg.layout import BASELINE, index_name

__all__ = ["BASELINE", "MANIFEST", "TRAINED", "index_name"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TRAINED = "trained.faiss"


def index_file(i: int) -> str:
    """index-NNNNN.faiss."""
    return f"index-{i:05d}.faiss"


def docids_file(i: int) -> str:
    """docids-NNNNN.parquet (row r = FAISS id r of the same index shard)."""
    return f"docids-{i:05d}.parquet"


def effective_params(cfg: IndexConfig, dim: int, ntrain: int, storage: str = "float32") -> dict[str, Any]:
    """The index parameters actually used (nlist shrinks to what the training sample supports; a flat index over
    float16 storage keeps its vectors in the source Parquet, "vectors": "source")."""
    if cfg.type == "flat":
        # A flat index is nothing but its vectors: a FAISS file would be a second copy of the embeddings (55 GB
        # in float32 at 18M x 768). Over compact storage search builds it in memory from the source rows instead.
        return {"type": "flat"} if storage == "float32" else {"type": "flat", "vectors": "source"}
    if cfg.type == "hnsw":
        return {"type": "hnsw", "hnsw_m": cfg.hnsw_m}
    if dim % cfg.pq_m:
        raise ValueError(f"index.pq_m={cfg.pq_m} must divide the embedding dimension {dim}")
    if ntrain < 2**cfg.pq_nbits:
        raise ValueError(
            f"IVF-PQ needs at least {2 ** cfg.pq_nbits} training vectors for pq_nbits={cfg.pq_nbits}, got {ntrain}; "
            "use index.type=flat for so few passages"
        )
    nlist = min(cfg.nlist, max(1, ntrain // 39))  # FAISS wants >= 39 training points per centroid
    if nlist < cfg.nlist:
        log.warning("index.nlist=%d lowered to %d for %d training vectors", cfg.nlist, nlist, ntrain)
    return {"type": "ivfpq", "nlist": nlist, "pq_m": cfg.pq_m, "pq_nbits": cfg.pq_nbits}


def empty_index(params: dict[str, Any], dim: int) -> Any:
    """A new (untrained) inner-product index of the given kind."""
    import faiss

    if params["type"] == "flat":
        return faiss.IndexFlatIP(dim)
    if params["type"] == "hnsw":
        return faiss.IndexHNSWFlat(dim, params["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
    # "np": no polysemous training (slow simulated annealing, only useful for Hamming-filtered search)
    spec = f"IVF{params['nlist']},PQ{params['pq_m']}x{params['pq_nbits']}np"
    return faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)


def train_index(params: dict[str, Any], sample: np.ndarray, use_gpu: bool = False) -> Any:
    """Train an empty index once on a sample (GPU when allowed); the result is cloned for every shard."""
    index = empty_index(params, sample.shape[1])
    if index.is_trained:
        return index
    if use_gpu:
        try:
            gpu = to_gpu(index)
            gpu.train(np.ascontiguousarray(sample, dtype=np.float32))
            return to_cpu(gpu)
        except RuntimeError as e:  # e.g. a PQ size the GPU kernels do not support
            log.warning("GPU training failed (%s); training on the CPU", e)
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def fill_index(params: dict[str, Any], vectors: np.ndarray, trained: Any | None = None, use_gpu: bool = False) -> Any:
    """A CPU index holding vectors (ids 0..n-1), cloned from the trained template when there is one."""
    import faiss

    index = faiss.clone_index(trained) if trained is not None else empty_index(params, vectors.shape[1])
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if use_gpu and params["type"] == "ivfpq":  # encoding PQ codes is the costly part; flat adds are copies
        try:
            gpu = to_gpu(index)
            gpu.add(x)
            return to_cpu(gpu)
        except RuntimeError as e:
            log.warning("GPU add failed (%s); adding on the CPU", e)
    index.add(x)
    return index


def is_view(params: dict[str, Any]) -> bool:
    """Whether an index keeps no vectors of its own (a flat index read from its source embeddings)."""
    return params.get("vectors") == "source"


def index_bytes(params: dict[str, Any], dim: int, rows: int) -> int:
    """About how many bytes an index of rows vectors holds in memory (vectors or codes, graph links, ids)."""
    if params["type"] == "ivfpq":
        return rows * (params["pq_m"] * params["pq_nbits"] // 8 + 8) + params["nlist"] * dim * 4
    links = rows * params["hnsw_m"] * 2 * 4 if params["type"] == "hnsw" else 0
    return rows * dim * 4 + links


def searcher_memory(params: dict[str, Any], dim: int, rows: int) -> int:
    """The memory= request of a search actor over one index shard: the index, a second copy while it is read
    from a remote run directory, and the docid map."""
    from xqg.tasks import task_memory

    return task_memory(index_bytes(params, dim, rows), copies=2) + rows * 64
