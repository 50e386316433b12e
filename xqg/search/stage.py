"""The search stage: a query-embedding set against an index, one Ray task per index shard, merged top-k."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from xqg.config import Config
from xqg.encode.vectors import vector_matrix
from xqg.index.build import searcher_memory
from xqg.index.stage import read_manifest
from xqg.layout import (
    ENCODE,
    SEARCH,
    default_query_set,
    embeddings_dir,
    index_dir,
    index_name,
    queries_target,
    queries_unit,
    query_set_name,
    run_file,
    run_name,
)
from xqg.rundir import RunDir
from xqg.runner import StageRunner, Unit, marker_fingerprint
from xqg.summary import StageSummary

log = logging.getLogger(__name__)



def search_shards(
    run_uri: str, folder: str, shards: list[dict[str, Any]], queries: Any, depth: int, batch_size: int,
    nprobe: int, ef_search: int, use_gpu: bool | str | None, memory: list[int] | None = None,
) -> Any:
    """The merged top-depth over every shard (columns q, docid, score, rank), one Ray task per shard (asking for
    memory[i] bytes: Ray then never packs more shards on a node than it holds). Each shard's hits are merged
    into the running top-depth as they arrive, so the driver holds queries x depth hits, never every shard's.

    Tasks, not actors: a shard is searched once, and Ray reuses its worker processes for tasks, so a warm
    cluster imports FAISS once per worker, not once per shard (an actor per shard started a new process each).
    """
    import ray

    from xqg.capacity import check_fits
    from xqg.search.merge import RunningTopK
    from xqg.search.searcher import search_shard
    from xqg.tasks import WaitLog
    from xqg.units import resolve_use_gpu

    gpus = resolve_use_gpu(use_gpu, "search")  # true: the tasks wait for GPU nodes
    if memory:
        check_fits(max(memory), gpus=1 if gpus else 0, option="index.shard_size (of the index searched)",
                   what=f"search {folder}")
    # Retried as often as Ray allows when a worker or node dies (a preempted spot node is not an error); an
    # exception raised by the search itself is not retried.
    remote = ray.remote(search_shard)
    options = {"num_cpus": 0 if gpus else 1, "num_gpus": 1 if gpus else 0, "max_retries": -1}
    q_ref = ray.put(queries)
    refs = [
        remote.options(**options, memory=memory[i] if memory else None).remote(
            run_uri, folder, shard, nprobe, ef_search, gpus, q_ref, depth, batch_size)
        for i, shard in enumerate(shards)
    ]
    top = RunningTopK(depth)
    waiting = WaitLog(f"search {folder}", num_gpus=options["num_gpus"], memory=max(memory) if memory else 0)
    for ref in waiting.ready(refs):
        top.add(ray.get(ref))
    return top.result()


def changed_sources(runner: StageRunner, manifest: dict[str, Any]) -> list[str]:
    """Source units a flat index reads its vectors from whose markers changed since it was built (empty: current).
    An index with its own FAISS copies stays self-consistent; one that reads its source must match it."""
    changed = []
    for shard in manifest["shards"]:
        for sl in shard.get("vectors") or []:
            marker = runner.markers(sl["stage"]).get(sl["unit"])
            if marker is None or marker_fingerprint(marker) != sl["fingerprint"]:
                changed.append(f"{sl['stage']}/{sl['unit']}")
    return sorted(set(changed))


def run_search(config: Config, index_name_: str, query_set: str | None = None) -> StageSummary:
    """Search a query set's embeddings against index/<name>; write runs/<run name>.tsv and .trec."""
    from xqg.search.merge import write_run

    run = RunDir(config.run_dir)
    name = index_name(index_name_)
    runner = StageRunner(run, SEARCH, keep_stale=config.keep_stale)
    # the query sets encoded by this setting's query encoder
    target = queries_target(config.setting)
    encoded = sorted(u.split("/", 1)[1] for u in runner.markers(ENCODE) if u.startswith(f"{target}/"))
    default_set = default_query_set(config, encoded)
    qset = query_set or query_set_name(config, encoded)
    rname = run_name(name, qset, default_set)
    runner.summary.stage = f"search {rname}"
    runner.outputs = lambda u: [run_file(u, "tsv"), run_file(u, "trec")]
    manifest = read_manifest(run, name)
    qunit = queries_unit(qset, config.setting)
    if qunit not in runner.markers(ENCODE):
        raise FileNotFoundError(f"query set {qset!r} is not encoded: run jobs/encode.py --target queries")
    qmarker = runner.markers(ENCODE)[qunit]
    unit = Unit(rname, {
        "index": manifest.get("fingerprint") or manifest["built_at"], "queries": marker_fingerprint(qmarker),
        "depth": config.search.depth, "nprobe": config.index.nprobe, "ef_search": config.index.ef_search,
    })
    plan = runner.plan([unit])
    if not plan.todo:
        return runner.close(f"{run_file(rname)} is complete and up to date")
    from xqg.capacity import check_fits
    from xqg.units import resolve_use_gpu

    # before the old run file is removed: a shard no node type can hold is a config error, not a wait for ever
    check_fits(max((searcher_memory(manifest["params"], manifest["dim"], int(sh["rows"])) for sh in manifest["shards"]),
                   default=0), gpus=1 if resolve_use_gpu(config.search.use_gpu, "search") else 0,
               option="index.shard_size (of the index searched)", what=f"search {rname}")
    run.write_config(config, SEARCH)

    def search(unit: Unit) -> dict[str, Any]:
        changed = changed_sources(runner, manifest)
        if changed:
            raise RuntimeError(f"index {name!r} reads its vectors from {changed[:3]}, which changed since it was "
                               f"built: run jobs/index.py --name {name} first")
        table = run.read_dir(embeddings_dir(qunit), ["qid", "embedding"])
        queries = vector_matrix(table["embedding"])
        if queries.shape[1] != manifest["dim"]:
            raise ValueError(f"query embeddings have {queries.shape[1]} dimensions, index {name!r} has {manifest['dim']}")
        merged = search_shards(
            run.worker_uri, index_dir(name), manifest["shards"], queries, config.search.depth,
            config.search.batch_size, config.index.nprobe, config.index.ef_search, config.search.use_gpu,
            memory=[searcher_memory(manifest["params"], manifest["dim"], int(sh["rows"])) for sh in manifest["shards"]],
        )
        tsv, trec = write_run(run, rname, table["qid"].combine_chunks(), merged)
        answered = int(np.unique(merged["q"].to_numpy()).size)
        runner.summary.extra.update({
            "index": name, "query set": qset, "depth": config.search.depth, "index shards": len(manifest["shards"]),
            "run lines": merged.num_rows, "queries with no hit": table.num_rows - answered, "run file": tsv,
        })
        return {
            "rows_in": table.num_rows, "rows_out": table.num_rows, "rejected": 0, "lines": merged.num_rows, "tsv": tsv,
            "trec": trec, "index_name": name, "query_set": qset, "encoder": manifest.get("encoder"),
            "query_encoder": (qmarker.get("inputs") or {}).get("encoder"),
        }

    runner.run_local(plan.todo, search)
    return runner.close()
