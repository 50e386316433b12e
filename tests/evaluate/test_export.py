"""runs/<name>.xor.json: the official XOR-TyDi prediction file, scored by the official logic, equals the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from functools import lru_cache
from statistics import mean

import pytest

from helpers.configs import demo_config
from helpers.paths import DEMO, REPO
from xqg.evaluate.export import export_runs
from xqg.evaluate.official import xor_file, xor_predictions
from xqg.evaluate.stage import run_evaluate
from xqg.evaluate.tokenize import word_tokenize
from xqg.ingest.stage import run_ingest
from xqg.rundir import RunDir

DEV = DEMO / "dev.jsonl"
PASSAGES = DEMO / "passages.jsonl"
DEPTH = 100


@lru_cache(maxsize=None)
def _tokens(text: str) -> tuple[str, ...]:
    return tuple(word_tokenize(text))  # a pure function of the text: cached only to keep the test fast


def official_scores(pred_file: Path, data_file: Path) -> dict[str, dict[str, float]]:
    """XOR-TyDi's evals/eval_xor_retrieve.py (AkariAsai/XORQA), step for step, as {"R@2kt": {lang: .., "avg": ..}}.

    Like the script: read the prediction file, map each data-file id to its answers, walk the predictions
    (lang from the prediction), skip ids not in the data and questions with only yes/no answers, concatenate
    each passage's NLTK word tokens until max_token_num is reached, cut there, join with spaces and look for any
    answer as a substring; per language hit / count * 100, then the plain mean over languages. The tokenizer
    is NLTK's word_tokenize with its English Punkt model (xqg.evaluate.tokenize: the same NLTK code, the model
    loaded without a download; tests/evaluate/test_xor.py checks it against NLTK's documented output). Nothing
    of xqg.evaluate.xor is used: not its window, its lazy hit test, its yes/no rule nor its averaging.
    """
    predictions = json.loads(pred_file.read_text(encoding="utf-8"))
    with data_file.open(encoding="utf-8") as f:
        qid2answers = {item["id"]: item["answers"] for item in map(json.loads, f)}
    out = {}
    for topk in (2, 5):
        max_token_num = topk * 1000
        per_lang: dict[str, dict[str, int]] = {}
        for item in predictions:
            q_id, lang = item["id"], item["lang"]
            per_lang.setdefault(lang, {"count": 0, "hit": 0})
            if q_id not in qid2answers:
                continue
            span_answers = [a for a in qid2answers[q_id] if a not in ["yes", "no"]]
            if not span_answers:
                continue
            per_lang[lang]["count"] += 1
            tokens: list[str] = []
            for ctx_text in item["ctxs"]:
                tokens += _tokens(ctx_text)
                if len(tokens) >= max_token_num:
                    break
            concat_string = " ".join(tokens[:max_token_num])
            if any(answer in concat_string for answer in span_answers):
                per_lang[lang]["hit"] += 1
        scores = {lang: r["hit"] / r["count"] * 100 for lang, r in per_lang.items() if r["count"] > 0}
        out[f"R@{topk}kt"] = {**scores, "avg": mean(scores.values())}
    return out


def _write_run(path: Path, ranked: dict[str, list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["qid\tdocid\trank\tscore"]
    for qid, docids in ranked.items():
        lines += [f"{qid}\t{d}\t{r}\t{1000.0 - r}" for r, d in enumerate(docids, 1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _ranking(question: dict, at: int, passages: dict[str, str], shift: int) -> list[str]:
    """DEPTH passages: ones without the answers, rotated by shift, and the gold one at rank `at` (none if >= DEPTH)."""
    others = [d for d in sorted(passages) if not any(a in passages[d] for a in question["answers"])]
    rest = others[shift % len(others):] + others[:shift % len(others)]
    return (rest[:at] + [question["docid"]] + rest[at:])[:DEPTH]


@pytest.fixture
def demo_like_run(tmp_path: Path):
    """An ingested demo run with two searched runs of depth 100 (~6,300 tokens per question: both windows bite).

    Gold passages sit at ranks spread over 1..120, so some are inside 2,000 tokens, some only inside 5,000 and
    some outside both or absent; the baseline has no ranking at all for a few questions.
    """
    config = demo_config(tmp_path / "run", "evaluate.permutations=200", "settings=[]", "tune.query_set=")
    run_ingest(config)
    dev = [json.loads(line) for line in DEV.read_text(encoding="utf-8").splitlines()]
    passages = {p["docid"]: p["text"] for p in map(json.loads, PASSAGES.read_text(encoding="utf-8").splitlines())}
    baseline = {q["id"]: _ranking(q, (i * 37) % 120, passages, i * 11) for i, q in enumerate(dev) if i % 25 != 3}
    xqg = {q["id"]: _ranking(q, (i * 37) % 120 * 4 // 5, passages, i * 13) for i, q in enumerate(dev)}
    _write_run(tmp_path / "run" / "runs" / "baseline.tsv", baseline)
    _write_run(tmp_path / "run" / "runs" / "xqg.tsv", xqg)
    run = RunDir(config.run_dir)
    for name in ("baseline", "xqg"):  # what the search stage records of each run
        run.mark_done("search", name, rows_in=len(dev), rows_out=len(dev), rejected=0, query_set="dev",
                      encoder="passage-encoder-1", query_encoder="query-encoder-1")
    return config, dev, baseline, xqg


def test_evaluate_writes_official_files_that_the_official_logic_scores_as_the_report(demo_like_run, tmp_path: Path):
    config, dev, baseline, _ = demo_like_run
    with pytest.warns(UserWarning, match="no prediction"):  # the baseline's questions without a ranking
        summary = run_evaluate(config)
    assert summary.ok
    report = json.loads((tmp_path / "run/reports/xqg.json").read_text(encoding="utf-8"))
    for label, name in (("baseline", "baseline"), ("+xQG", "xqg")):
        pred_file = tmp_path / "run" / xor_file(name)
        official = official_scores(pred_file, DEV)
        ours = report["runs"][label]["metrics"]
        for metric in ("R@2kt", "R@5kt"):
            assert set(official[metric]) == set(ours[metric]) == {"ar", "bn", "fi", "ja", "ko", "ru", "te", "avg"}
            for lang, value in ours[metric].items():
                assert official[metric][lang] == pytest.approx(value, abs=1e-9), (label, metric, lang)
        # the windows matter here: neither metric is saturated and 5,000 tokens find more than 2,000
        assert 10 < ours["R@2kt"]["avg"] < ours["R@5kt"]["avg"] < 95
    # every question is in the file, in the query set's order; a question without a ranking has no ctxs
    items = json.loads((tmp_path / "run" / xor_file("baseline")).read_text(encoding="utf-8"))
    assert [(i["id"], i["lang"]) for i in items] == [(q["id"], q["lang"]) for q in dev]
    assert sum(1 for i in items if i["ctxs"] == []) == len(dev) - len(baseline) > 0
    passages = {p["docid"]: p["text"] for p in map(json.loads, PASSAGES.read_text(encoding="utf-8").splitlines())}
    first = next(i for i in items if i["ctxs"])
    assert first["ctxs"] == [passages[d] for d in baseline[first["id"]]]  # texts in rank order (no title)
    assert "official predictions (+xQG)" in summary.extra


def test_export_job_writes_the_same_files_for_any_run(demo_like_run, tmp_path: Path):
    config = demo_like_run[0]
    with pytest.warns(UserWarning):
        run_evaluate(config)
    run_dir = tmp_path / "run"
    written = {name: (run_dir / xor_file(name)).read_bytes() for name in ("baseline", "xqg")}
    for name in written:
        (run_dir / xor_file(name)).unlink()

    summary = export_runs(config)  # default: the two runs evaluate scores
    assert summary.ok and summary.units_done == 2
    assert {name: (run_dir / xor_file(name)).read_bytes() for name in written} == written

    (run_dir / xor_file("xqg")).unlink()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "jobs/export.py", "--config", "configs/demo.yaml", "--set", f"run_dir={run_dir}", "--index", "xqg"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (run_dir / xor_file("xqg")).read_bytes() == written["xqg"]
    assert "eval_xor_retrieve.py" in out.stdout

    cmd[-1] = "nope"
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "runs/nope.tsv" in out.stderr


def test_xor_predictions_keep_rank_order_and_list_every_question():
    questions = [{"id": "q1", "lang": "ar"}, {"id": "q2", "lang": "fi"}]
    items = xor_predictions(questions, {"q1": ["b", "a", "zz"], "other": ["a"]}, {"a": "A text", "b": "B text"})
    assert items == [{"id": "q1", "lang": "ar", "ctxs": ["B text", "A text", ""]}, {"id": "q2", "lang": "fi", "ctxs": []}]


def test_xqg_scorer_equals_the_official_logic_on_real_xor_tydi_dev_ids(tmp_path: Path, shared_data: Path):
    """xqg's reading of an official file (python -m xqg.evaluate.xor) gives the official numbers on the real dev set:
    all 2,110 ids, answers with punctuation and quotes, placed around the 2,000 and 5,000 token borders."""
    import random

    from xqg.evaluate.xor import read_predictions, read_questions, recall_at_kt

    xor_dev = shared_data / "xor_tydi" / "xor_dev_retrieve_eng_span_v1_1.jsonl"
    questions = read_questions(str(xor_dev))
    rng = random.Random(12)
    pool = [a for q in questions for a in q["answers"]]
    # Shared filler passages (tokenized once), with other questions' answers and quote/period noise in them.
    blocks = [" ".join(rng.choice(["word", "x.", "it's", '"q"', rng.choice(pool)]) for _ in range(size))
              for size in (500, 495, 480)]
    items = []
    for q in questions:
        answer = rng.choice(q["answers"])
        wrap = rng.choice(["{}", '"{}"', "({}).", "{}'s", "the {} ,", "{}..."]).format(answer)
        ctxs = [blocks[0]] * rng.choice([0, 2, 3, 4, 8, 9, 10, 12]) + rng.sample(blocks, rng.randint(0, 2))
        ctxs.append(" ".join(["w"] * rng.randint(0, 30) + [wrap]))
        items.append({"id": q["id"], "lang": q["lang"], "ctxs": ctxs if rng.random() > 0.05 else []})
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    official = official_scores(pred, xor_dev)
    ours = recall_at_kt(questions, read_predictions(str(pred), questions)).metrics()
    assert set(official) == set(ours)
    for metric in ours:
        assert official[metric] == pytest.approx(ours[metric], abs=1e-9), metric
    assert 5 < ours["R@2kt"]["avg"] < ours["R@5kt"]["avg"] < 100  # both windows cut somewhere
