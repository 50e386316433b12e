"""The index stage: a sharded FAISS index over embeddings/passages (baseline) or fused/<name>."""

from __future__ import annotations

import logging
import math
import posixpath
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from xqg.config import Config
from xqg.encode.layout import STAGE as ENCODE, embeddings_dir, passages_unit
from xqg.encode.vectors import vector_matrix
from xqg.index.build import (
    BASELINE,
    MANIFEST,
    PLAN,
    STAGE,
    TRAINED,
    docids_file,
    effective_params,
    fill_index,
    index_file,
    index_name,
    train_index,
)
from xqg.index.faiss_io import gpu_enabled, read_index_file, write_index_file
from xqg.rundir import RunDir, shard_name
from xqg.summary import StageSummary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """The embedding shards an index is built from."""

    name: str
    stage: str
    units: list[str]
    folders: list[str]
    rows: list[int]

    @property
    def total(self) -> int:
        """Vectors in all shards."""
        return sum(self.rows)


def index_source(run: RunDir, name: str) -> Source:
    """embeddings/passages (baseline) or fused/<name>, complete for every corpus shard, or a clear error."""
    shards = run.corpus_shards()
    if name == BASELINE:
        stage, units = ENCODE, [passages_unit(s) for s in shards]
        folders = [embeddings_dir(u) for u in units]
        hint = "jobs/encode.py --target passages"
    else:
        stage, units = "fuse", [posixpath.join(name, shard_name(s)) for s in shards]
        folders = [posixpath.join("fused", u) for u in units]
        hint = f"jobs/fuse.py --set fuse.name={name}"
    done = run.done_units(stage)
    missing = [u for u in units if u not in done]
    if missing:
        raise FileNotFoundError(f"index {name!r}: {len(missing)} input shard(s) incomplete, e.g. {missing[:3]}: run {hint}")
    rows = [int(run.read_marker(stage, u)["rows_out"]) for u in units]
    return Source(name, stage, units, folders, rows)


def read_rows(run: RunDir, source: Source, lo: int, hi: int) -> tuple[pa.Array, np.ndarray]:
    """(docids, vectors) of global rows [lo, hi) across the source shards, in shard order."""
    docids, mats = [], []
    offset = 0
    for folder, n in zip(source.folders, source.rows):
        a, b = max(lo, offset), min(hi, offset + n)
        if a < b:
            table = run.read_dir(folder, columns=["docid", "embedding"]).slice(a - offset, b - a)
            docids.append(table["docid"].combine_chunks())
            mats.append(vector_matrix(table["embedding"]))
        offset += n
    return pa.concat_arrays(docids), np.concatenate(mats)


def sample_rows(run: RunDir, source: Source, k: int, seed: int = 0) -> np.ndarray:
    """k vectors drawn uniformly without replacement from all source shards (seeded)."""
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(source.total, size=min(k, source.total), replace=False))
    out, offset = [], 0
    for folder, n in zip(source.folders, source.rows):
        local = picks[(picks >= offset) & (picks < offset + n)] - offset
        if len(local):
            table = run.read_dir(folder, columns=["embedding"]).take(pa.array(local))
            out.append(vector_matrix(table["embedding"]))
        offset += n
    return np.concatenate(out)


def run_index(config: Config, name: str) -> StageSummary:
    """Build index/<name>/ (index-NNNNN.faiss + docids-NNNNN.parquet + manifest.json) from its embeddings."""
    import faiss

    name = index_name(name)
    run = RunDir(config.run_dir)
    cfg = config.index
    start = time.perf_counter()
    source = index_source(run, name)
    if source.total == 0:
        raise ValueError(f"index {name!r}: the input embeddings hold no vectors")
    folder = posixpath.join("index", name)
    finished = [run.read_marker(source.stage, u).get("finished_at") for u in source.units]
    plan = {
        "name": name, "source": source.folders[0].rsplit("/", 1)[0], "source_rows": source.rows,
        "source_finished": finished, "index": cfg.model_dump(exclude={"use_gpu", "nprobe", "ef_search"}),
    }
    summary = StageSummary(stage=f"index {name}")
    n_shards = max(1, math.ceil(source.total / cfg.shard_size))
    if run.exists(folder, MANIFEST) and run.read_json(posixpath.join(folder, MANIFEST)).get("plan") == plan:
        summary.units_skipped = n_shards
        summary.message = "index is complete and up to date"
        return summary
    if not run.exists(folder, PLAN) or run.read_json(posixpath.join(folder, PLAN)) != plan:
        run.remove(folder)  # inputs or parameters changed: earlier shards are stale
        run.remove("_done", STAGE, name)
        run.write_json(posixpath.join(folder, PLAN), plan)
    run.write_config(config, STAGE)
    use_gpu = gpu_enabled(cfg.use_gpu)
    dim = vector_matrix(run.read_dir(source.folders[0], ["embedding"]).slice(0, 1)["embedding"]).shape[1]
    ntrain = min(cfg.train_sample, source.total)
    params = effective_params(cfg, dim, ntrain)
    trained = None
    if params["type"] == "ivfpq":
        if run.exists(folder, TRAINED):
            trained = read_index_file(run, posixpath.join(folder, TRAINED))
        else:
            t0 = time.perf_counter()
            trained = train_index(params, sample_rows(run, source, ntrain), use_gpu)
            write_index_file(run, posixpath.join(folder, TRAINED), trained)
            summary.extra["train seconds"] = time.perf_counter() - t0
    shards = []
    for i in range(n_shards):
        lo, hi = i * cfg.shard_size, min(source.total, (i + 1) * cfg.shard_size)
        unit = posixpath.join(name, shard_name(i))
        entry = {"index": index_file(i), "docids": docids_file(i), "rows": hi - lo, "offset": lo}
        shards.append(entry)
        if run.is_done(STAGE, unit):
            summary.units_skipped += 1
            continue
        docids, vectors = read_rows(run, source, lo, hi)
        index = fill_index(params, vectors, trained, use_gpu)
        if index.ntotal != hi - lo:
            raise RuntimeError(f"index shard {i}: {index.ntotal} vectors added, expected {hi - lo}")
        run.write_table(posixpath.join(folder, entry["docids"]), pa.table({"docid": docids}))
        write_index_file(run, posixpath.join(folder, entry["index"]), index)
        run.mark_done(STAGE, unit, rows_out=hi - lo)
        summary.units_done += 1
        summary.rows_in += hi - lo
        summary.rows_out += hi - lo
    manifest = {
        "name": name, "source": plan["source"], "metric": "inner_product", "dim": dim, "ntotal": source.total,
        "params": params, "shards": shards, "trained": TRAINED if trained is not None else None, "plan": plan,
        "faiss_version": faiss.__version__, "built_at": time.time(),
    }
    run.write_json(posixpath.join(folder, MANIFEST), manifest)  # written last: its presence means complete
    summary.seconds = time.perf_counter() - start
    summary.extra.update({"index type": params["type"], "vectors": source.total, "index shards": n_shards,
                          "device": "gpu" if use_gpu else "cpu"})
    return summary


def read_manifest(run: RunDir, name: str) -> dict[str, Any]:
    """The manifest of a complete index, or a clear error."""
    rel = posixpath.join("index", index_name(name), MANIFEST)
    if not run.exists(rel):
        raise FileNotFoundError(f"no complete index {index_name(name)!r} in {run.uri}: run jobs/index.py --name {name}")
    return run.read_json(rel)
