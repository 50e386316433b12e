"""Standard IR metrics (R@k, MRR@k, nDCG@k) from qrels and a run, as trec_eval and ranx define them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import mean

Qrels = dict[str, dict[str, int]]  # qid -> docid -> relevance (> 0 is relevant)
RunScores = dict[str, dict[str, float]]  # qid -> docid -> score (higher ranks first)


def metric_names(ks: Sequence[int] = (10, 100)) -> list[str]:
    """Metric names (ranx's) for recall, MRR and nDCG at every k."""
    return [f"{metric}@{k}" for metric in ("recall", "mrr", "ndcg") for k in ks]


def _query_scores(relevant: dict[str, int], ranked: list[str], ks: Sequence[int]) -> dict[str, float]:
    """One query's recall, reciprocal rank and nDCG (gain = relevance, log2 discount) at every k."""
    gains = [relevant.get(d, 0) for d in ranked]
    ideal = sorted((r for r in relevant.values() if r > 0), reverse=True)
    n_relevant = len(ideal)
    first = next((i for i, g in enumerate(gains) if g > 0), None)
    out = {}
    for k in ks:
        top = gains[:k]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(top) if g > 0)
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
        out[f"recall@{k}"] = sum(g > 0 for g in top) / n_relevant
        out[f"mrr@{k}"] = 1.0 / (first + 1) if first is not None and first < k else 0.0
        out[f"ndcg@{k}"] = dcg / idcg
    return out


def ir_metrics(qrels: Qrels, run: RunScores, ks: Sequence[int] = (10, 100)) -> dict[str, float]:
    """Mean R@k, MRR@k and nDCG@k over the queries of qrels that have a relevant doc.

    Plain Python, not ranx: ranx compiled its numba kernels on first use in every fresh environment (~45 s on 2
    cores, far more than these sums over a few thousand queries). The definitions are ranx's (and trec_eval's):
    a run's documents ranked by falling score (equal scores in the run's order), recall over all relevant
    documents, nDCG with the relevance as gain and a log2(rank + 1) discount.
    """
    # A query without any relevant passage has undefined recall and no ideal
    # ranking; like trec_eval we leave it out rather than count it as 0.
    judged = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items() if any(r > 0 for r in docs.values())}
    if not judged:
        raise ValueError("qrels hold no query with a relevant document")
    names = metric_names(ks)
    totals = dict.fromkeys(names, 0.0)
    for qid, relevant in judged.items():
        docs = run.get(qid) or {}  # a query missing from the run scores 0; run queries without qrels are dropped
        if not docs:
            continue
        ranked = sorted(docs, key=lambda d: -float(docs[d]))  # stable: equal scores keep the run's order
        for name, value in _query_scores(relevant, ranked, ks).items():
            totals[name] += value
    return {name: totals[name] / len(judged) for name in names}


def ir_metrics_by_lang(
    qrels: Qrels,
    run: RunScores,
    qid_lang: Mapping[str, str],
    ks: Sequence[int] = (10, 100),
) -> dict[str, dict[str, float]]:
    """``ir_metrics`` per language, plus ``avg``: the macro mean over languages."""
    by_lang: dict[str, Qrels] = {}
    for qid, docs in qrels.items():
        by_lang.setdefault(qid_lang[qid], {})[qid] = docs
    out: dict[str, dict[str, float]] = {}
    for lang, lang_qrels in by_lang.items():
        if any(r > 0 for docs in lang_qrels.values() for r in docs.values()):
            out[lang] = ir_metrics(lang_qrels, {q: run[q] for q in lang_qrels if q in run}, ks)
    if out:
        out["avg"] = {name: mean(scores[name] for scores in out.values()) for name in metric_names(ks)}
    return out
