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
from xqg.encode.vectors import vector_matrix
from xqg.index.build import MANIFEST, TRAINED, docids_file, effective_params, fill_index, index_file, train_index
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


def _outputs(name: str, unit: str) -> list[str]:
    """The files of an index unit (a FAISS shard, or the trained IVF-PQ template)."""
    folder, last = index_dir(name), unit.rsplit("/", 1)[-1]
    if last == "trained":
        return [posixpath.join(folder, TRAINED)]
    i = parse_shard(last)
    return [posixpath.join(folder, index_file(i)), posixpath.join(folder, docids_file(i))]


def run_index(config: Config, name: str) -> StageSummary:
    """Build index/<name>/ (index-NNNNN.faiss + docids-NNNNN.parquet + manifest.json) from its embeddings."""
    import faiss

    name = index_name(name)
    run = RunDir(config.run_dir)
    cfg = config.index
    folder = index_dir(name)
    runner = StageRunner(run, INDEX, label=f"index {name}", keep_stale=config.keep_stale,
                         outputs=lambda u: _outputs(name, u))
    source = index_source(runner, name)
    if source.total == 0:
        raise ValueError(f"index {name!r}: the input embeddings hold no vectors")
    use_gpu = gpu_enabled(cfg.use_gpu)
    dim = vector_matrix(run.read_dir(source.folders[0], ["embedding"]).slice(0, 1)["embedding"]).shape[1]
    ntrain = min(cfg.train_sample, source.total)
    params = effective_params(cfg, dim, ntrain)
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
        shards.append(Unit(index_unit(name, i), inputs, payload={"i": i, "lo": lo, "hi": hi}, expected=hi - lo))
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
    trained = None
    if trained_unit is not None:
        def train(unit: Unit) -> dict[str, Any]:
            t0 = time.perf_counter()
            write_index_file(run, posixpath.join(folder, TRAINED), train_index(params, sample_rows(run, source, ntrain), use_gpu))
            runner.summary.extra["train seconds"] = time.perf_counter() - t0
            return {"rows_in": 0, "rows_out": 0, "rejected": 0}

        runner.run_local([u for u in plan.todo if u is trained_unit], train)
        if trained_unit.name in runner.markers():
            trained = read_index_file(run, posixpath.join(folder, TRAINED))

    def build(unit: Unit) -> dict[str, Any]:
        if trained_unit is not None and trained is None:
            raise RuntimeError("the IVF-PQ template could not be trained")
        lo, hi, i = unit.payload["lo"], unit.payload["hi"], unit.payload["i"]
        docids, vectors = read_rows(run, source, lo, hi)
        index = fill_index(params, vectors, trained, use_gpu)
        run.write_table(posixpath.join(folder, docids_file(i)), pa.table({"docid": docids}))
        write_index_file(run, posixpath.join(folder, index_file(i)), index)
        return {"rows_in": hi - lo, "rows_out": int(index.ntotal), "rejected": 0, "written": hi - lo}

    runner.run_local([u for u in plan.todo if u is not trained_unit], build, desc=f"index {name}")
    encoders = sorted(set(source.encoders))
    if not runner.failed:
        manifest = {
            "name": name, "source": source.folders[0].rsplit("/", 1)[0], "metric": "inner_product", "dim": dim,
            "ntotal": source.total, "params": params, "trained": TRAINED if trained_unit else None,
            "shards": [{"index": index_file(u.payload["i"]), "docids": docids_file(u.payload["i"]),
                        "rows": u.payload["hi"] - u.payload["lo"], "offset": u.payload["lo"]} for u in shards],
            "fingerprint": manifest_fp, "encoder": encoders[0] if len(encoders) == 1 else encoders,
            "faiss_version": faiss.__version__, "built_at": time.time(),
        }
        run.write_json(manifest_rel, manifest)  # written last: its presence means complete
    runner.summary.extra.update({"index type": params["type"], "vectors": source.total, "index shards": n_shards,
                                 "device": "gpu" if use_gpu else "cpu"})
    return runner.close()


def read_manifest(run: RunDir, name: str) -> dict[str, Any]:
    """The manifest of a complete index, or a clear error."""
    rel = posixpath.join(index_dir(name), MANIFEST)
    if not run.exists(rel):
        raise FileNotFoundError(f"no complete index {index_name(name)!r} in {run.uri}: run jobs/index.py --name {name}")
    return run.read_json(rel)
