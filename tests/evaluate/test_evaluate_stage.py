"""The evaluate stage on an ingested demo run with constructed run files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from helpers.configs import demo_config
from helpers.paths import DEMO
from xqg.evaluate.stage import run_evaluate
from xqg.ingest.stage import run_ingest
from xqg.rundir import RunDir


def _write_run(path: Path, ranked: dict[str, list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["qid\tdocid\trank\tscore"]
    for qid, docids in ranked.items():
        lines += [f"{qid}\t{d}\t{r}\t{10.0 - r}" for r, d in enumerate(docids, 1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def scored_run(tmp_path: Path):
    config = demo_config(tmp_path / "run", "evaluate.permutations=1000", "settings=[]", "tune.query_set=")
    run_ingest(config)
    dev = [json.loads(line) for line in (DEMO / "dev.jsonl").read_text(encoding="utf-8").splitlines()]
    passages = {
        p["docid"]: p for p in map(json.loads, (DEMO / "passages.jsonl").read_text(encoding="utf-8").splitlines())
    }
    wrong = {q["id"]: next(d for d in sorted(passages) if q["answers"][0] not in passages[d]["text"]) for q in dev}
    # baseline: the gold passage for the first 10 questions of each language only; +xQG: gold for all
    per_lang = Counter(q["lang"] for q in dev)
    seen: Counter = Counter()
    first = set()
    for q in dev:  # the first quarter of each language's questions
        seen[q["lang"]] += 1
        if seen[q["lang"]] <= per_lang[q["lang"]] // 4:
            first.add(q["id"])
    baseline = {q["id"]: [q["docid"] if q["id"] in first else wrong[q["id"]]] for q in dev}
    xqg = {q["id"]: [q["docid"]] for q in dev}
    _write_run(tmp_path / "run" / "runs" / "baseline.tsv", baseline)
    _write_run(tmp_path / "run" / "runs" / "xqg.tsv", xqg)
    run = RunDir(config.run_dir)
    for name in ("baseline", "xqg"):  # what the search stage records of each run
        run.mark_done("search", name, rows_in=len(dev), rows_out=len(dev), rejected=0, query_set="dev",
                      encoder="passage-encoder-1", query_encoder="query-encoder-1")
    return config, dev, passages, baseline, xqg


def _expected_hits(dev: list[dict], passages: dict, ranked: dict[str, list[str]]) -> dict[str, list[int]]:
    """lang -> 1/0 per question: its one retrieved passage (a few dozen words, far inside 2,000 tokens) contains
    its answer. A plain substring test, independent of xqg's tokenizer (the demo answers are whole words)."""
    out: dict[str, list[int]] = {}
    for q in dev:
        (docid,) = ranked[q["id"]]
        out.setdefault(q["lang"], []).append(int(any(a in passages[docid]["text"] for a in q["answers"])))
    return out


def test_scores_report_and_rerun(scored_run, tmp_path: Path) -> None:
    from scipy.stats import ttest_rel

    config, dev, passages, baseline, xqg = scored_run
    summary = run_evaluate(config)
    assert summary.units_done == 1 and summary.balanced
    report = json.loads((tmp_path / "run/reports/xqg.json").read_text(encoding="utf-8"))
    hits = {label: _expected_hits(dev, passages, ranked) for label, ranked in (("baseline", baseline), ("+xQG", xqg))}
    for label, by_lang in hits.items():
        expected = {lang: 100.0 * sum(h) / len(h) for lang, h in by_lang.items()}
        expected["avg"] = sum(expected.values()) / len(by_lang)
        for metric in ("R@2kt", "R@5kt"):
            assert report["runs"][label]["metrics"][metric] == pytest.approx(expected), (label, metric)
        assert report["runs"][label]["counts"] == {lang: len(h) for lang, h in by_lang.items()}
    # The fixture's design, seen through the independent count: baseline a quarter per language, +xQG all.
    assert {round(sum(h) / len(h), 6) for h in hits["baseline"].values()} == {0.25}
    assert all(all(h) for h in hits["+xQG"].values())
    # Paired t-tests pinned to scipy on these per-question hits: per language, and pooled over all questions for avg.
    tests = report["significance"]["+xQG"]["R@2kt"]
    for lang in hits["baseline"]:
        p = ttest_rel(hits["+xQG"][lang], hits["baseline"][lang]).pvalue
        assert tests[lang]["t_p"] == pytest.approx(p, rel=1e-9, abs=1e-300), lang
    pooled = [sum((by_lang[lang] for lang in sorted(by_lang)), []) for by_lang in (hits["+xQG"], hits["baseline"])]
    assert tests["avg"]["t_p"] == pytest.approx(ttest_rel(*pooled).pvalue, rel=1e-9, abs=1e-300)
    assert tests["avg"]["t_p"] < 0.05
    assert report["ir"]["+xQG"]["mrr@10"] == pytest.approx(1.0)
    assert (tmp_path / "run/reports/xqg.png").stat().st_size > 1000
    assert "| Lang" in summary.message

    again = run_evaluate(config)
    assert again.units_done == 0 and again.units_skipped == 1
    assert summary.message in again.message

    # a new run file is scored again
    _write_run(tmp_path / "run" / "runs" / "xqg.tsv", baseline)
    third = run_evaluate(config)
    assert third.units_done == 1
    report = json.loads((tmp_path / "run/reports/xqg.json").read_text(encoding="utf-8"))
    assert report["significance"]["+xQG"]["R@2kt"]["avg"]["t_p"] == 1.0


def test_missing_run_file_is_a_clear_error(scored_run, tmp_path: Path) -> None:
    config = scored_run[0]
    (tmp_path / "run/runs/xqg.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="run jobs/search.py first"):
        run_evaluate(config)


def test_runs_from_different_encoders_are_not_compared(scored_run, tmp_path: Path) -> None:
    config = scored_run[0]
    run = RunDir(config.run_dir)
    run.mark_done("search", "xqg", rows_in=210, rows_out=210, rejected=0, query_set="dev",
                  encoder="passage-encoder-2", query_encoder="query-encoder-1")
    with pytest.raises(ValueError, match="different passage encoders") as e:
        run_evaluate(config)
    assert "passage-encoder-1" in str(e.value) and "passage-encoder-2" in str(e.value)
    run.mark_done("search", "xqg", rows_in=210, rows_out=210, rejected=0, query_set="dev",
                  encoder="passage-encoder-1", query_encoder="query-encoder-2")
    with pytest.raises(ValueError, match="different query encoders"):
        run_evaluate(config)
    assert not (tmp_path / "run/reports/xqg.md").exists()
