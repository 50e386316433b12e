"""The search stage: a query-embedding set against an index, one Ray actor per index shard, merged top-k."""

from __future__ import annotations

import logging
import posixpath
import time
from typing import Any

import numpy as np

from xqg.config import Config
from xqg.encode.layout import STAGE as ENCODE, embeddings_dir, queries_unit
from xqg.encode.vectors import vector_matrix
from xqg.index.build import index_name
from xqg.index.stage import read_manifest
from xqg.rundir import RunDir
from xqg.summary import StageSummary

log = logging.getLogger(__name__)

STAGE = "search"


def default_query_set(run: RunDir, config: Config) -> str:
    """search.query_set, else the first configured query set, else the only encoded one."""
    if config.search.query_set:
        return config.search.query_set
    if config.queries:
        return config.queries[0].name
    encoded = sorted(u.split("/", 1)[1] for u in run.done_units(ENCODE) if u.startswith("queries/"))
    if len(encoded) == 1:
        return encoded[0]
    raise ValueError(f"which query set? none is configured and {len(encoded)} are encoded ({encoded}): pass --queries")


def run_name(index: str, query_set: str, default_set: str) -> str:
    """The run's file name: the index name for the default query set, '<index>.<set>' for another."""
    return index if query_set == default_set else f"{index}.{query_set}"


def search_shards(
    run_uri: str, folder: str, shards: list[dict[str, Any]], queries: Any, depth: int, batch_size: int,
    nprobe: int, ef_search: int, use_gpu: bool | None,
) -> list[Any]:
    """Top-depth per shard from one actor each; an actor is killed as soon as its answer is in (frees its slot)."""
    import ray

    from xqg.search.searcher import ShardSearcher
    from xqg.units import cluster_gpus

    gpus = cluster_gpus() if use_gpu is not False else 0
    remote = ray.remote(ShardSearcher).options(num_cpus=0 if gpus else 1, num_gpus=1 if gpus else 0, max_restarts=1)
    q_ref = ray.put(queries)
    actors, pending = {}, {}
    for shard in shards:
        actor = remote.remote(run_uri, folder, shard, nprobe, ef_search, use_gpu)
        ref = actor.search.options(max_task_retries=1).remote(q_ref, depth, batch_size)
        actors[ref], pending[ref] = actor, shard["index"]
    results = {}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            results[pending.pop(ref)] = ray.get(ref)
            ray.kill(actors.pop(ref))
    finally:
        for actor in actors.values():
            ray.kill(actor)
    return [results[s["index"]] for s in shards]


def run_search(config: Config, index_name_: str, query_set: str | None = None) -> StageSummary:
    """Search a query set's embeddings against index/<name>; write runs/<run name>.tsv and .trec."""
    from xqg.search.merge import merge_topk, write_run

    run = RunDir(config.run_dir)
    start = time.perf_counter()
    name = index_name(index_name_)
    manifest = read_manifest(run, name)
    default_set = default_query_set(run, config)
    qset = query_set or default_set
    rname = run_name(name, qset, default_set)
    qunit = queries_unit(qset)
    if not run.is_done(ENCODE, qunit):
        raise FileNotFoundError(f"query set {qset!r} is not encoded: run jobs/encode.py --target queries")
    params = {
        "index": name, "index_built_at": manifest["built_at"], "query_set": qset,
        "queries_encoded_at": run.read_marker(ENCODE, qunit)["finished_at"], "depth": config.search.depth,
        "nprobe": config.index.nprobe, "ef_search": config.index.ef_search,
    }
    summary = StageSummary(stage=f"search {rname}")
    if run.is_done(STAGE, rname) and run.read_marker(STAGE, rname).get("params") == params:
        summary.units_skipped = 1
        summary.message = f"runs/{rname}.tsv is complete and up to date"
        return summary
    run.write_config(config, STAGE)
    table = run.read_dir(embeddings_dir(qunit), ["qid", "embedding"])
    queries = vector_matrix(table["embedding"])
    if queries.shape[1] != manifest["dim"]:
        raise ValueError(f"query embeddings have {queries.shape[1]} dimensions, index {name!r} has {manifest['dim']}")
    parts = search_shards(
        config.run_dir, posixpath.join("index", name), manifest["shards"], queries, config.search.depth,
        config.search.batch_size, config.index.nprobe, config.index.ef_search, config.index.use_gpu,
    )
    merged = merge_topk(parts, config.search.depth)
    tsv, trec = write_run(run, rname, table["qid"].combine_chunks(), merged)
    answered = int(np.unique(merged["q"].to_numpy()).size)
    run.mark_done(STAGE, rname, params=params, rows_in=table.num_rows, lines=merged.num_rows, tsv=tsv, trec=trec)
    summary.rows_in = summary.rows_out = table.num_rows
    summary.units_done = 1
    summary.seconds = time.perf_counter() - start
    summary.extra.update({
        "index": name, "query set": qset, "depth": config.search.depth, "index shards": len(manifest["shards"]),
        "run lines": merged.num_rows, "queries with no hit": table.num_rows - answered, "run file": tsv,
    })
    return summary
