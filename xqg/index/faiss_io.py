"""FAISS files in the run directory (FAISS's own binary format, any filesystem) and GPU placement."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from xqg.rundir import RunDir

log = logging.getLogger(__name__)

UPLOAD_CHUNK = 64 << 20


def gpu_enabled(use_gpu: bool | str | None) -> bool:
    """True when faiss-gpu is installed, a GPU is visible and the config does not forbid it."""
    import faiss

    if use_gpu == "auto":  # the config's "auto" is the old None: whatever this process sees
        use_gpu = None
    if use_gpu is False:
        return False
    available = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if use_gpu and not available:
        log.warning("index.use_gpu is set but faiss sees no GPU (faiss-cpu installed?); using the CPU")
    return available


def to_gpu(index: Any) -> Any:
    """A GPU copy of a CPU index on the first visible GPU (float16 lookup tables so large PQ codes fit)."""
    import faiss

    res = faiss.StandardGpuResources()
    opts = faiss.GpuClonerOptions()
    opts.useFloat16LookupTables = True
    gpu = faiss.index_cpu_to_gpu(res, 0, index, opts)
    gpu.referenced_resources = res  # keep the resources alive as long as the index
    return gpu


def to_cpu(index: Any) -> Any:
    """The CPU copy of an index (no-op for CPU indexes)."""
    import faiss

    return faiss.index_gpu_to_cpu(index) if type(index).__name__.startswith("Gpu") else index


def write_index_file(run: RunDir, rel: str, index: Any) -> None:
    """Write an index with faiss.write_index to local disk, then move it into place (local run) or upload it in
    chunks (remote run): never a serialized copy of the whole index in memory."""
    import faiss

    path = run.path(rel)
    run.fs.create_dir(os.path.dirname(path), recursive=True)
    if isinstance(run.fs, pafs.LocalFileSystem):
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        faiss.write_index(to_cpu(index), tmp)
        os.replace(tmp, path)
        return
    with tempfile.TemporaryDirectory(prefix="xqg-index-") as local:
        tmp = os.path.join(local, os.path.basename(path))
        faiss.write_index(to_cpu(index), tmp)
        with open(tmp, "rb") as src, run.fs.open_output_stream(path) as dst:
            shutil.copyfileobj(src, dst, UPLOAD_CHUNK)


def read_index_file(run: RunDir, rel: str) -> Any:
    """Read an index written by write_index_file."""
    import faiss

    path = run.path(rel)
    if isinstance(run.fs, pafs.LocalFileSystem):
        return faiss.read_index(path)
    with run.fs.open_input_stream(path) as f:
        return faiss.deserialize_index(np.frombuffer(f.read(), dtype=np.uint8))


def set_search_params(index: Any, nprobe: int | None = None, ef_search: int | None = None) -> None:
    """Apply nprobe (IVF) or efSearch (HNSW) to whatever kind of index this is."""
    import faiss

    if nprobe is not None:
        try:
            faiss.extract_index_ivf(index).nprobe = nprobe
        except (RuntimeError, TypeError):
            if hasattr(index, "nprobe"):  # GPU IVF indexes
                index.nprobe = nprobe
    if ef_search is not None and hasattr(index, "hnsw"):
        index.hnsw.efSearch = ef_search
