"""The tune stage: per setting, the fusion (alpha, reduction) that scores best on a held-out query set, never dev.

The paper's alpha (0.01 on a raw sum) belongs to mBERT's embedding scale; another encoder needs its own. For each
candidate of tune.alphas x tune.reductions (and the configured fusion, listed first so that it wins ties) one Ray
task fuses the setting's passage embeddings with its generated-query sums exactly as the fuse stage does, searches
the held-out questions exhaustively (FAISS, inner product, search.depth) and scores R@kt and MRR@10 as evaluate
does. The choice and every candidate's held-out scores go to tune/<fused set>.json and the unit's marker; the fuse
stage then builds a second fused set, '<fuse name>-tuned', with the chosen fusion in its fingerprint, so a new
choice redoes that set, its index, its search and the report. The evaluated query set is never read here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from xqg.config import Config
from xqg.encode.vectors import vector_matrix
from xqg.layout import (
    ENCODE,
    INGEST,
    TUNE,
    embeddings_dir,
    generated_sum_unit,
    query_set_dir,
    query_set_unit,
    queries_unit,
    tune_file,
    tune_unit,
    tuned_set,
)
from xqg.rundir import RunDir
from xqg.runner import StageRunner, Unit, marker_fingerprint
from xqg.summary import StageSummary
from xqg.tasks import task_memory

METRICS = ("R@2kt", "R@5kt", "mrr@10")


def candidates(config: Config) -> list[tuple[str, float]]:
    """(reduce, alpha) pairs to try: the configured fusion first (it wins ties), then the grid in order."""
    out = [(config.fuse.reduce, config.fuse.alpha)]
    out += [(r, a) for r in config.tune.reductions for a in config.tune.alphas if (r, a) not in out]
    return out


def ranking_key(scores: dict[str, float], metric: str) -> tuple[float, ...]:
    """What the choice maximises: the configured metric, then R@5kt, R@2kt and MRR@10 to break ties."""
    return (scores[metric], scores["R@5kt"], scores["R@2kt"], scores["mrr@10"])


def choose(grid: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The first candidate with the highest ranking key (the grid's order breaks exact ties)."""
    return max(grid, key=lambda row: ranking_key(row["scores"], metric))


def score_rankings(
    run: RunDir, rankings: dict[tuple[str, float] | None, tuple[list[str], np.ndarray]], questions: pa.Table,
    kt: list[int], include_title: bool,
) -> dict[tuple[str, float] | None, dict[str, float]]:
    """R@kt (macro average over languages) and MRR@10 of each ranking of the held-out questions, as evaluate scores."""
    from xqg.evaluate.metrics import ir_metrics
    from xqg.evaluate.stage import passage_texts
    from xqg.evaluate.xor import TokenCache, recall_at_kt

    qids = questions["qid"].to_pylist()
    qs = [{"id": q, "lang": lang, "answers": a}
          for q, lang, a in zip(qids, questions["lang"].to_pylist(), questions["answers"].to_pylist())]
    qrels = {q: {d: 1 for d in ds} for q, ds in zip(qids, questions["docids"].to_pylist()) if ds}
    every = np.unique(np.concatenate([ids for _, ids in rankings.values()]).ravel())
    docids_all = next(iter(rankings.values()))[0]
    texts = passage_texts(run, pa.array([docids_all[i] for i in every], pa.string()), include_title)
    cache = TokenCache()
    out = {}
    for key, (docids, ids) in rankings.items():
        ranked = {q: [docids[i] for i in row if i >= 0] for q, row in zip(qids, ids)}
        xor = recall_at_kt(qs, {q: [texts.get(d, "") for d in ds] for q, ds in ranked.items()}, ks=tuple(kt), cache=cache)
        scores = {name: round(v["avg"], 6) for name, v in xor.metrics().items()}
        run_scores = {q: {d: float(len(ds) - r) for r, d in enumerate(ds)} for q, ds in ranked.items()}
        ir = ir_metrics(qrels, run_scores, ks=(10,)) if qrels else {}
        scores["mrr@10"] = round(float(ir.get("mrr@10", float("nan"))), 6)
        out[key] = scores
    return out


def tune_fusion(payload: dict[str, Any], *, run_uri: str, shards: list[dict[str, Any]], languages: list[str],
                variant: str, query_unit: str, query_set: str, grid: list[tuple[str, float]], metric: str,
                depth: int, kt: list[int], include_title: bool, out_file: str) -> dict[str, Any]:
    """Score every candidate fusion on the held-out questions (a Ray task on a worker); write the choice."""
    import faiss

    from xqg.fuse import fuse_vectors, gather_generated

    run = RunDir(run_uri)
    emb, sums, counts, docids = [], [], [], []
    for shard in shards:
        table = run.read_dir(embeddings_dir(shard["passages"]), ["docid", "embedding"])
        e = vector_matrix(table["embedding"]).astype(np.float32, copy=False)
        ids = table["docid"].combine_chunks()
        gen = (run.read_dir(embeddings_dir(generated_sum_unit(variant, lang, shard["shard"])), ["docid", "n", "embedding_sum"])
               for lang in languages)
        s, n, _ = gather_generated(ids, gen, e.shape[1])
        emb.append(e)
        sums.append(s)
        counts.append(n)
        docids.extend(ids.to_pylist())
    e, s, n = np.concatenate(emb), np.concatenate(sums), np.concatenate(counts)
    qtable = run.read_dir(embeddings_dir(query_unit), ["qid", "embedding"])
    questions = run.read_dir(query_set_dir(query_set), ["qid", "lang", "answers", "docids"])
    # the questions in the query set's order, each with its embedding
    pos = {q: i for i, q in enumerate(qtable["qid"].to_pylist())}
    qvec = vector_matrix(qtable["embedding"]).astype(np.float32, copy=False)
    qvec = np.ascontiguousarray(qvec[[pos[q] for q in questions["qid"].to_pylist()]])
    k = min(depth, len(docids))

    def search(vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return docids, index.search(qvec, k)[1]

    rankings: dict[tuple[str, float] | None, tuple[list[str], np.ndarray]] = {None: search(e)}
    for reduce, alpha in grid:
        rankings[(reduce, alpha)] = search(fuse_vectors(e, s, n, alpha, reduce))
    scores = score_rankings(run, rankings, questions, kt, include_title)
    rows = [{"reduce": r, "alpha": a, "scores": scores[(r, a)]} for r, a in grid]
    best = choose(rows, metric)
    doc = {"query_set": query_set, "metric": metric, "questions": questions.num_rows,
           "choice": {"alpha": best["alpha"], "reduce": best["reduce"]}, "choice_scores": best["scores"],
           "baseline_scores": scores[None], "paper": rows[0], "grid": rows}
    run.write_json(out_file, doc)
    return {"rows_in": questions.num_rows, "rows_out": questions.num_rows, "rejected": 0, "choice": doc["choice"],
            "choice_scores": best["scores"], "baseline_scores": scores[None], "candidates": len(rows)}


def plan_unit(runner: StageRunner, config: Config) -> tuple[Unit, dict[str, Any]]:
    """The setting's one tune unit, made from its passage and generated-query embeddings and the held-out set only."""
    from xqg.fuse import plan_units

    qset = config.tune.query_set
    assert qset is not None
    fused, languages, variant = plan_units(runner, config)  # the fuse stage's inputs, checked the same way
    qunit = queries_unit(qset, config.setting)
    grid = candidates(config)
    inputs = {
        "shards": [{"passages": u.inputs["passages"], "generated": u.inputs["generated"]} for u in fused],
        "query_embeddings": marker_fingerprint(runner.upstream(ENCODE, qunit)),
        "query_set": runner.upstream_fingerprint(INGEST, query_set_unit(qset)),
        "grid": [list(c) for c in grid], "metric": config.tune.metric, "depth": config.search.depth,
        "kt": config.evaluate.kt, "include_title": config.evaluate.include_title, "variant": variant,
        "languages": languages, "num_queries": config.fuse.num_queries,
    }
    rows = sum(int(u.expected or 0) for u in fused)
    common = {"shards": [{"shard": u.payload["shard"], "passages": u.payload["passages"]} for u in fused],
              "languages": languages, "variant": variant, "query_unit": qunit, "query_set": qset, "grid": grid,
              "metric": config.tune.metric, "depth": config.search.depth, "kt": config.evaluate.kt,
              "include_title": config.evaluate.include_title, "out_file": tune_file(config)}
    return Unit(tune_unit(config), inputs, payload={"rows": rows}), common


def run_tune(config: Config) -> StageSummary:
    """Choose the setting's fusion on tune.query_set (a Ray task); record it in tune/<fused set>.json and the marker."""
    run = RunDir(config.run_dir)
    if config.tune.query_set is None:
        return StageSummary(stage=TUNE, message="skipped: no tune.query_set configured (fusion stays fuse.alpha / reduce)")
    runner = StageRunner(run, TUNE, label=f"tune {tune_unit(config)}", keep_stale=config.keep_stale,
                         outputs=lambda u: [tune_file(config)])
    unit, common = plan_unit(runner, config)
    plan = runner.plan([unit])
    if plan.todo:
        run.write_config(config, TUNE)
        dim_bytes = 4 * 1024  # an upper bound of a vector's bytes (1,024 float32 dimensions), for the memory request
        runner.run_tasks(plan.todo, tune_fusion, {"run_uri": run.worker_uri, **common},
                         memory=lambda u: task_memory(int(u.payload["rows"]) * dim_bytes, copies=6), desc="tune")
    marker = runner.markers().get(unit.name)
    if marker is not None:
        runner.summary.extra.update({
            "held-out set": config.tune.query_set, "choice": marker["choice"], "held-out scores": marker["choice_scores"],
            "held-out baseline": marker["baseline_scores"], "tuned fused set": tuned_set(config),
        })
    return runner.close()


def tuned_choice(config: Config) -> dict[str, Any]:
    """The setting's recorded choice {alpha, reduce}, or a clear error naming the stage to run."""
    run = RunDir(config.run_dir)
    name = tune_unit(config)
    if not run.is_done(TUNE, name):
        raise FileNotFoundError(f"no tuned fusion for {name!r} in {run.uri}: run jobs/tune.py first")
    return dict(run.read_marker(TUNE, name)["choice"])


def tuned_config(config: Config) -> Config:
    """The config whose fuse section makes the tuned fused set: '<fuse name>-tuned' with the recorded choice."""
    choice = tuned_choice(config)
    fuse = config.fuse.model_copy(update={
        "name": tuned_set(config.model_copy(update={"setting": None})), "alpha": float(choice["alpha"]),
        "reduce": choice["reduce"],
    })
    return config.model_copy(update={"fuse": fuse})



def run_fuse_sets(config: Config) -> list[StageSummary]:
    """The paper's fused set (fuse.alpha, fuse.reduce) and, when tune.query_set is configured, the tuned one."""
    from xqg.fuse import run_fuse

    summaries = [run_fuse(config)]
    if config.tune.query_set is not None:
        summaries.append(run_fuse(tuned_config(config)))
    return summaries
