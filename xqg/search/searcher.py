"""One index shard loaded once (GPU when there is one); answers top-k for a query matrix."""

from __future__ import annotations

import posixpath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xqg.encode.vectors import vector_matrix
from xqg.index.faiss_io import gpu_enabled, read_index_file, set_search_params, to_gpu
from xqg.rundir import RunDir

GPU_MAX_K = 2048  # FAISS GPU k-selection limit


def flat_from_source(run: RunDir, slices: list[dict[str, Any]]) -> Any:
    """An exact inner-product index over source rows {folder, lo, hi} (float16 or float32 stored, float32 held),
    filled one source shard at a time so the peak is the index plus one shard's rows."""
    import faiss

    index = None
    for sl in slices:
        vectors = vector_matrix(run.read_rows(sl["folder"], sl["lo"], sl["hi"], columns=["embedding"])["embedding"])
        if index is None:
            index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors))
        del vectors
    if index is None:
        raise RuntimeError("a flat index shard without source rows")
    return index


class ShardSearcher:
    """One index shard: loads index + docid map in __init__, search() returns (q, docid, score)."""

    def __init__(self, run_uri: str, folder: str, shard: dict[str, Any], nprobe: int, ef_search: int,
                 use_gpu: bool | None = None) -> None:
        run = RunDir(run_uri)
        if shard.get("index") is None:  # a flat index over its source embeddings: built here, in float32
            self.cpu_index = flat_from_source(run, shard["vectors"])
        else:
            self.cpu_index = read_index_file(run, posixpath.join(folder, shard["index"]))
        set_search_params(self.cpu_index, nprobe=nprobe, ef_search=ef_search)
        self.gpu_index = None
        if gpu_enabled(use_gpu) and not hasattr(self.cpu_index, "hnsw"):  # FAISS has no GPU HNSW
            self.gpu_index = to_gpu(self.cpu_index)
            set_search_params(self.gpu_index, nprobe=nprobe)
        docids = pq.read_table(run.path(folder, shard["docids"]), columns=["docid"], filesystem=run.fs)
        self.docids = docids["docid"].combine_chunks()
        if len(self.docids) != self.cpu_index.ntotal:
            raise RuntimeError(f"{shard['docids']}: {len(self.docids)} docids for {self.cpu_index.ntotal} vectors")

    def search(self, queries: np.ndarray, k: int, batch_size: int = 1024) -> pa.Table:
        """Top-k of every query in this shard: columns q (query row), docid, score; missing hits are dropped."""
        k = min(k, self.cpu_index.ntotal)
        nq = len(queries)
        if k == 0 or nq == 0:
            return pa.table({"q": pa.array([], pa.int32()), "docid": pa.array([], pa.string()),
                             "score": pa.array([], pa.float32())})
        index = self.gpu_index if self.gpu_index is not None and k <= GPU_MAX_K else self.cpu_index
        scores = np.empty((nq, k), dtype=np.float32)
        ids = np.empty((nq, k), dtype=np.int64)
        for lo in range(0, nq, batch_size):
            hi = min(nq, lo + batch_size)
            scores[lo:hi], ids[lo:hi] = index.search(np.ascontiguousarray(queries[lo:hi], dtype=np.float32), k)
        hit = ids >= 0  # IVF / HNSW may return fewer than k (label -1)
        q = np.broadcast_to(np.arange(nq, dtype=np.int32)[:, None], ids.shape)[hit]
        return pa.table({"q": q, "docid": self.docids.take(pa.array(ids[hit])), "score": scores[hit]})


def search_shard(run_uri: str, folder: str, shard: dict[str, Any], nprobe: int, ef_search: int,
                 use_gpu: bool | None, queries: np.ndarray, k: int, batch_size: int) -> pa.Table:
    """One shard's top-k, as one Ray task: the shard is loaded, searched and freed when the task ends."""
    return ShardSearcher(run_uri, folder, shard, nprobe, ef_search, use_gpu).search(queries, k, batch_size)
