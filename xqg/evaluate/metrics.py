"""Standard IR metrics (R@k, MRR@k, nDCG@k) from qrels and a run, computed by ranx."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from statistics import mean

Qrels = dict[str, dict[str, int]]  # qid -> docid -> relevance (> 0 is relevant)
RunScores = dict[str, dict[str, float]]  # qid -> docid -> score (higher ranks first)


def metric_names(ks: Sequence[int] = (10, 100)) -> list[str]:
    """ranx metric names for recall, MRR and nDCG at every k."""
    return [f"{metric}@{k}" for metric in ("recall", "mrr", "ndcg") for k in ks]


def ir_metrics(qrels: Qrels, run: RunScores, ks: Sequence[int] = (10, 100)) -> dict[str, float]:
    """Mean R@k, MRR@k and nDCG@k over the queries of qrels that have a relevant doc."""
    from ranx import Qrels as RanxQrels
    from ranx import Run as RanxRun
    from numba.core.errors import NumbaTypeSafetyWarning
    from ranx import evaluate

    # A query without any relevant passage has undefined recall and no ideal
    # ranking; like trec_eval we leave it out rather than count it as 0.
    judged = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items() if any(r > 0 for r in docs.values())}
    if not judged:
        raise ValueError("qrels hold no query with a relevant document")
    # Queries missing from the run score 0 (make_comparable adds them empty);
    # run queries without qrels are dropped.
    kept = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items() if q in judged and docs}
    if not kept:
        return dict.fromkeys(metric_names(ks), 0.0)  # ranx cannot build an empty Run
    with warnings.catch_warnings():
        # ranx's numba kernels warn about a harmless uint64 -> int64 cast.
        warnings.simplefilter("ignore", category=NumbaTypeSafetyWarning)
        scores = evaluate(
            RanxQrels(judged), RanxRun(kept), metric_names(ks), make_comparable=True, save_results_in_run=False
        )
    return {name: float(value) for name, value in scores.items()}


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
