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
from xqg.encode.vectors import stored_width, vector_matrix
from xqg.index.build import (
    MANIFEST,
    TRAINED,
    docids_file,
    effective_params,
    fill_index,
    index_file,
    is_view,
    train_index,
)
from xqg.index.faiss_io import gpu_enabled, read_index_file, write_index_file
from xqg.layout import (
    ENCODE,
    FUSE,
    INDEX,
    baseline_setting,
    embeddings_dir,
    fused_dir,
    fused_unit,
    index_dir,
    index_name,
    index_unit,
    is_baseline,
    passages_unit,
)
from xqg.rundir import RunDir, parse_shard
from xqg.runner import StageRunner, Unit, fingerprint, marker_fingerprint
from xqg.summary import StageSummary
from xqg.tasks import task_memory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """The embedding shards an index is built from, with their markers' fingerprints and passage encoders."""

    name: str
    units: list[str]
    folders: list[str]
    rows: list[int]
    fingerprints: list[str]
    encoders: list[str]

    @property
    def total(self) -> int:
        """Vectors in all shards."""
        return sum(self.rows)

    def overlapping(self, lo: int, hi: int) -> dict[str, str]:
        """{source unit: fingerprint} of the shards holding global rows [lo, hi)."""
        out, offset = {}, 0
        for unit, n, fp in zip(self.units, self.rows, self.fingerprints):
            if offset < hi and lo < offset + n:
                out[unit] = fp
            offset += n
        return out


def index_source(runner: StageRunner, name: str) -> Source:
    """embeddings/passages (baseline) or fused/<name>, complete for every corpus shard, or a clear error."""
    shards = runner.run.corpus_shards()
    if is_baseline(name):
        stage, units = ENCODE, [passages_unit(s, baseline_setting(name)) for s in shards]
        folders = [embeddings_dir(u) for u in units]
        hint = "jobs/encode.py --target passages"
    else:
        stage, units = FUSE, [fused_unit(name, s) for s in shards]
        folders = [fused_dir(u) for u in units]
        hint = f"jobs/fuse.py --set fuse.name={name}"
    markers = runner.markers(stage)
    missing = [u for u in units if u not in markers]
    if missing:
        raise FileNotFoundError(f"index {name!r}: {len(missing)} input shard(s) incomplete, e.g. {missing[:3]}: run {hint}")
    ms = [markers[u] for u in units]
    encoders = [str(m.get("encoder") or (m.get("inputs") or {}).get("encoder") or "") for m in ms]
    return Source(name, units, folders, [int(m["rows_out"]) for m in ms], [marker_fingerprint(m) for m in ms], encoders)


def source_slices(source: Source, stage: str, lo: int, hi: int) -> list[dict[str, Any]]:
    """Where global rows [lo, hi) lie: {stage, unit, fingerprint, folder, lo, hi} per overlapping source shard
    (rows local to it): what a flat index over its source records instead of its vectors."""
    out, offset = [], 0
    for unit, folder, n, fp in zip(source.units, source.folders, source.rows, source.fingerprints):
        a, b = max(lo, offset), min(hi, offset + n)
        if a < b:
            out.append({"stage": stage, "unit": unit, "fingerprint": fp, "folder": folder, "lo": a - offset,
                        "hi": b - offset})
        offset += n
    return out


def source_stage(name: str) -> str:
    """The stage whose output an index is built from: encode (baseline) or fuse."""
    return ENCODE if is_baseline(name) else FUSE


def read_rows(run: RunDir, folders: list[str], rows: list[int], lo: int, hi: int) -> tuple[pa.Array, np.ndarray]:
    """(docids, vectors) of global rows [lo, hi) across the source shards, in shard order, reading only the row
    groups that hold them into one preallocated matrix."""
    docids: list[pa.Array] = []
    matrix: np.ndarray | None = None
    offset = 0
    for folder, n in zip(folders, rows):
        a, b = max(lo, offset), min(hi, offset + n)
        if a < b:
            table = run.read_rows(folder, a - offset, b - offset, columns=["docid", "embedding"])
            part = vector_matrix(table["embedding"])
            if matrix is None:
                matrix = np.empty((hi - lo, part.shape[1]), dtype=np.float32)
            matrix[a - lo:b - lo] = part
            docids.append(table["docid"].combine_chunks())
            del table, part
        offset += n
    assert matrix is not None
    return pa.concat_arrays(docids), matrix


def sample_picks(total: int, k: int, seed: int = 0) -> np.ndarray:
    """k global row numbers drawn uniformly without replacement (seeded), sorted."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=min(k, total), replace=False))


def sample_rows(run: RunDir, folders: list[str], rows: list[int], k: int, seed: int = 0) -> np.ndarray:
    """k vectors drawn uniformly without replacement from all source shards (seeded); only the row groups that
    hold a drawn row are read."""
    picks = sample_picks(sum(rows), k, seed)
    out, offset = [], 0
    for folder, n in zip(folders, rows):
        local = picks[(picks >= offset) & (picks < offset + n)] - offset
        if len(local):
            out.append(vector_matrix(run.take_rows(folder, local, columns=["embedding"])["embedding"]))
        offset += n
    return np.concatenate(out)


def shard_bytes(rows: int, dim: int) -> int:
    """Bytes of rows float32 vectors."""
    return rows * dim * 4


def train_task(payload: dict[str, Any], *, run_uri: str, folder: str, folders: list[str], rows: list[int],
               ntrain: int, params: dict[str, Any], use_gpu: bool | None) -> dict[str, Any]:
    """Train the IVF-PQ template on a sample (a Ray task on a worker) and write it to the index folder."""
    run = RunDir(run_uri)
    t0 = time.perf_counter()
    gpu = gpu_enabled(use_gpu)
    write_index_file(run, posixpath.join(folder, TRAINED), train_index(params, sample_rows(run, folders, rows, ntrain), gpu))
    return {"rows_in": 0, "rows_out": 0, "rejected": 0, "seconds_": time.perf_counter() - t0,
            "device_": "gpu" if gpu else "cpu"}


def build_task(payload: dict[str, Any], *, run_uri: str, folder: str, folders: list[str], rows: list[int],
               params: dict[str, Any], trained: str | None, use_gpu: bool | None) -> dict[str, Any]:
    """Build one index shard (a Ray task on a worker): read its rows, fill a FAISS index, write it and its docids."""
    run = RunDir(run_uri)
    lo, hi, i = payload["lo"], payload["hi"], payload["i"]
    template = read_index_file(run, posixpath.join(folder, trained)) if trained else None
    if is_view(params):  # the vectors stay in their source: only the docid map is written
        docids = pa.concat_arrays([run.read_rows(sl["folder"], sl["lo"], sl["hi"], columns=["docid"])["docid"]
                                   .combine_chunks() for sl in payload["slices"]])
        run.write_table(posixpath.join(folder, docids_file(i)), pa.table({"docid": docids}))
        return {"rows_in": hi - lo, "rows_out": len(docids), "rejected": 0, "written": hi - lo, "device_": "cpu"}
    gpu = gpu_enabled(use_gpu)
    docids, vectors = read_rows(run, folders, rows, lo, hi)
    index = fill_index(params, vectors, template, gpu)
    del vectors
    run.write_table(posixpath.join(folder, docids_file(i)), pa.table({"docid": docids}))
    write_index_file(run, posixpath.join(folder, index_file(i)), index)
    return {"rows_in": hi - lo, "rows_out": int(index.ntotal), "rejected": 0, "written": hi - lo,
            "device_": "gpu" if gpu else "cpu"}


def _outputs(name: str, unit: str) -> list[str]:
    """The files of an index unit (a FAISS shard, or the trained IVF-PQ template)."""
    folder, last = index_dir(name), unit.rsplit("/", 1)[-1]
    if last == "trained":
        return [posixpath.join(folder, TRAINED)]
    i = parse_shard(last)
    return [posixpath.join(folder, index_file(i)), posixpath.join(folder, docids_file(i))]


def run_index(config: Config, name: str, num_gpus: float | None = None) -> StageSummary:
    """Build index/<name>/ (index-NNNNN.faiss + docids-NNNNN.parquet + manifest.json) from its embeddings, one
    Ray task per index shard (each asking for num_gpus GPUs; default: one when index.use_gpu resolves to true)."""
    import faiss

    from xqg.units import gpu_options

    name = index_name(name)
    run = RunDir(config.run_dir)
    cfg = config.index
    if num_gpus is None:
        num_gpus = gpu_options(cfg.use_gpu, "index").get("num_gpus", 0)
    folder = index_dir(name)
    runner = StageRunner(run, INDEX, label=f"index {name}", keep_stale=config.keep_stale,
                         outputs=lambda u: _outputs(name, u))
    source = index_source(runner, name)
    if source.total == 0:
        raise ValueError(f"index {name!r}: the input embeddings hold no vectors")
    dim = stored_width(run.fs, run.parquet_files(source.folders[0]), "embedding")
    ntrain = min(cfg.train_sample, source.total)
    params = effective_params(cfg, dim, ntrain, config.storage.dtype)
    settings = {"params": params, "shard_size": cfg.shard_size}
    trained_unit = None
    if params["type"] == "ivfpq":  # one template trained on a sample of every source shard
        trained_unit = Unit(posixpath.join(name, "trained"), {"source": dict(zip(source.units, source.fingerprints)),
                                                               "train_sample": ntrain, **settings})
    n_shards = max(1, math.ceil(source.total / cfg.shard_size))
    shards = []
    for i in range(n_shards):
        lo, hi = i * cfg.shard_size, min(source.total, (i + 1) * cfg.shard_size)
        inputs = {"source": source.overlapping(lo, hi), "rows": [lo, hi], **settings,
                  "trained": trained_unit.fingerprint if trained_unit else None}
        payload = {"i": i, "lo": lo, "hi": hi, "slices": source_slices(source, source_stage(name), lo, hi)}
        shards.append(Unit(index_unit(name, i), inputs, payload=payload, expected=hi - lo))
    # Shards of an earlier, larger plan would otherwise linger next to the new ones.
    wanted = {u.name for u in shards} | ({trained_unit.name} if trained_unit else set())
    for old in sorted(u for u in runner.markers() if u.startswith(f"{name}/") and u not in wanted):
        runner.prepare(Unit(old, {}))
    plan = runner.plan(([trained_unit] if trained_unit else []) + shards)
    manifest_fp = fingerprint({u.name: u.fingerprint for u in shards})
    manifest_rel = posixpath.join(folder, MANIFEST)
    if not plan.todo and run.exists(manifest_rel) and run.read_json(manifest_rel).get("fingerprint") == manifest_fp:
        return runner.close(f"{folder} is complete and up to date")
    run.write_config(config, INDEX)
    run.remove(manifest_rel)  # absent while shards change: a half-rebuilt index is never searched
    devices: set[str] = set()

    def counted(unit: Unit, result: dict[str, Any]) -> None:
        devices.add(result.pop("device_"))  # for the summary, not the marker
        if "seconds_" in result:
            runner.summary.extra["train seconds"] = result.pop("seconds_")

    # The heavy work runs in Ray tasks on workers, each asking for the memory its rows need; the driver holds
    # manifests only. num_gpus is what a use_gpu setting would request for them.
    common = {"run_uri": run.worker_uri, "folder": folder, "folders": source.folders, "rows": source.rows,
              "params": params, "use_gpu": cfg.use_gpu}
    if trained_unit is not None and any(u is trained_unit for u in plan.todo):
        runner.run_tasks([trained_unit], train_task, {**common, "ntrain": ntrain},
                         memory=lambda u: task_memory(shard_bytes(ntrain, dim), copies=3), num_gpus=num_gpus,
                         desc=f"index {name} (train)", on_result=counted, option="index.train_sample")
    build_units = [u for u in plan.todo if u is not trained_unit]
    if trained_unit is not None and trained_unit.name not in runner.markers():
        for unit in build_units:
            runner.prepare(unit)
            runner.fail(unit, "RuntimeError: the IVF-PQ template could not be trained")
    else:
        # vectors, the Arrow rows they are read from, and the index (a flat index is a copy of the vectors)
        runner.run_tasks(build_units, build_task, {**common, "trained": TRAINED if trained_unit else None},
                         memory=lambda u: task_memory(int(u.expected or 0) * 64 if is_view(params)  # docids only
                                                      else shard_bytes(int(u.expected or 0), dim), copies=3),
                         num_gpus=num_gpus, desc=f"index {name}", on_result=counted, option="index.shard_size")
    encoders = sorted(set(source.encoders))
    if not runner.failed:
        manifest = {
            "name": name, "source": source.folders[0].rsplit("/", 1)[0], "metric": "inner_product", "dim": dim,
            "ntotal": source.total, "params": params, "trained": TRAINED if trained_unit else None,
            "shards": [{"index": None if is_view(params) else index_file(u.payload["i"]),
                        "docids": docids_file(u.payload["i"]), "rows": u.payload["hi"] - u.payload["lo"],
                        "offset": u.payload["lo"], **({"vectors": u.payload["slices"]} if is_view(params) else {})}
                       for u in shards],
            "fingerprint": manifest_fp, "encoder": encoders[0] if len(encoders) == 1 else encoders,
            "faiss_version": faiss.__version__, "built_at": time.time(),
        }
        run.write_json(manifest_rel, manifest)  # written last: its presence means complete
    runner.summary.extra.update({"index type": params["type"], "vectors": source.total, "index shards": n_shards,
                                 "device": ",".join(sorted(devices)) or "none (nothing built)"})
    return runner.close()


def read_manifest(run: RunDir, name: str) -> dict[str, Any]:
    """The manifest of a complete index, or a clear error."""
    rel = posixpath.join(index_dir(name), MANIFEST)
    if not run.exists(rel):
        raise FileNotFoundError(f"no complete index {index_name(name)!r} in {run.uri}: run jobs/index.py --name {name}")
    return run.read_json(rel)
