"""R@k, MRR@k and nDCG@k on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from xqg.evaluate.metrics import ir_metrics, ir_metrics_by_lang

QRELS = {"q1": {"d1": 1, "d9": 1}, "q2": {"d2": 1}, "q3": {"d5": 0}}
RUN = {
    "q1": {"d1": 3.0, "d2": 2.0, "d9": 1.0},  # relevant at ranks 1 and 3
    "q2": {"d1": 3.0, "d3": 2.0, "d2": 1.0},  # relevant at rank 3
    "q4": {"d1": 1.0},  # not in qrels: ignored
}


def test_hand_computed_recall_mrr_ndcg():
    scores = ir_metrics(QRELS, RUN, ks=(1, 3))
    # q3 has no relevant document and is left out: the means are over q1 and q2.
    assert scores["recall@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert scores["recall@3"] == pytest.approx(1.0)
    assert scores["mrr@1"] == pytest.approx((1 + 0) / 2)
    assert scores["mrr@3"] == pytest.approx((1 + 1 / 3) / 2)
    ndcg_q1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    ndcg_q2 = (1 / math.log2(4)) / 1
    assert scores["ndcg@3"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2)


def test_query_missing_from_run_scores_zero():
    scores = ir_metrics(QRELS, {"q1": RUN["q1"]}, ks=(3,))
    assert scores["recall@3"] == pytest.approx(0.5)
    assert scores["mrr@3"] == pytest.approx(0.5)
    assert ir_metrics(QRELS, {}, ks=(10,)) == {"recall@10": 0.0, "mrr@10": 0.0, "ndcg@10": 0.0}


def test_no_relevant_document_is_an_error():
    with pytest.raises(ValueError):
        ir_metrics({"q": {"d": 0}}, {"q": {"d": 1.0}})


def test_per_language_breakdown_and_macro_average():
    by_lang = ir_metrics_by_lang(QRELS, RUN, {"q1": "ar", "q2": "fi", "q3": "fi"}, ks=(1, 3))
    assert set(by_lang) == {"ar", "fi", "avg"}
    assert by_lang["ar"]["mrr@3"] == pytest.approx(1.0)
    assert by_lang["fi"]["mrr@3"] == pytest.approx(1 / 3)
    assert by_lang["avg"]["mrr@3"] == pytest.approx((1 + 1 / 3) / 2)
    assert by_lang["ar"]["recall@1"] == pytest.approx(0.5)
