"""Markdown, JSON and PNG reports of baseline vs +xQG."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xqg.evaluate.report import format_lead_table, format_table, make_results, p_text, write_report
from xqg.evaluate.xor import XorResult

LANGS = ("ar", "bn", "fi", "ja", "ko", "ru", "te")


@pytest.fixture
def results():
    rng = np.random.default_rng(0)
    sizes = {lang: 40 + 10 * i for i, lang in enumerate(LANGS)}
    qids = {lang: tuple(f"{lang}{i}" for i in range(n)) for lang, n in sizes.items()}
    base = {k: {lang: rng.random(n) < 0.3 + 0.1 * (k == 5) for lang, n in sizes.items()} for k in (2, 5)}
    xqg = {k: {lang: h | (rng.random(len(h)) < 0.3) for lang, h in by_lang.items()} for k, by_lang in base.items()}
    runs = {
        "baseline": XorResult(ks=(2, 5), langs=LANGS, qids=qids, hits=base, n_skipped=3),
        "+xQG": XorResult(ks=(2, 5), langs=LANGS, qids=qids, hits=xqg, n_skipped=3),
    }
    return make_results(runs, ir={"baseline": {"recall@100": 0.5}, "+xQG": {"recall@100": 0.6}}, n_permutations=2000)


def test_format_table_rows_and_marks(results):
    lines = format_table(results).splitlines()
    assert lines[0].startswith("| Lang")
    assert len(lines) == 2 + len(LANGS) + 1  # header, rule, languages, avg
    assert [line.split("|")[1].strip() for line in lines[2:]] == [*LANGS, "Avg"]
    avg = results["runs"]["+xQG"].scores(2)["avg"]
    assert f"{avg:.1f}†‡" in lines[-1]  # +30% fixed misses: significant on both tests
    cells = [cell.strip() for cell in lines[-1].split("|")[1:-1]]
    assert cells[1] == str(sum(40 + 10 * i for i in range(len(LANGS))))  # n: all counted questions
    base_avg = results["runs"]["baseline"].scores(2)["avg"]
    assert cells[2:5] == [f"{base_avg:.1f}", f"{avg:.1f}†‡", f"{avg - base_avg:+.1f}"]


def test_write_report_files(results, tmp_path):
    paths = write_report(str(tmp_path / "reports"), "xor_dev", results, {"alpha": 0.01, "model": "mbert|cased"})
    assert set(paths) == {"md", "json", "png"}
    md = (tmp_path / "reports" / "xor_dev.md").read_text()
    for lang in LANGS:
        assert sum(line.startswith(f"| {lang} ") for line in md.splitlines()) == 1
    assert "| Avg " in md and "R@2kt +xQG" in md and "R@5kt baseline" in md
    assert "mbert\\|cased" in md  # escaped, so the config table keeps two columns
    assert "![R@kt per language](xor_dev.png)" in md

    doc = json.loads((tmp_path / "reports" / "xor_dev.json").read_text())
    assert doc["runs"]["baseline"]["counts"]["ar"] == 40
    assert set(doc["runs"]["+xQG"]["metrics"]) == {"R@2kt", "R@5kt"}
    assert doc["significance"]["+xQG"]["R@2kt"]["avg"]["t_p"] < 0.05
    assert doc["config"]["alpha"] == 0.01
    assert doc["ir"]["+xQG"]["recall@100"] == 0.6

    png = (tmp_path / "reports" / "xor_dev.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 1024


def test_single_run_report(results, tmp_path):
    one = make_results({"baseline": results["runs"]["baseline"]})
    assert one["significance"] == {}
    paths = write_report(str(tmp_path), "only", one, {})
    assert "| ar " in open(paths["md"]).read()


def test_report_shows_every_setting_and_the_generated_queries(results, tmp_path):
    base = results["runs"]["baseline"]
    zero_shot = make_results({"baseline": base, "+xQG": base}, n_permutations=200)  # +xQG changes nothing here
    generated = {"limit": 2000, "by_lang": {"ar": {"shard": 0, "passages": 3, "queries": 9, "with_entity": 44.4,
                                                   "samples": [{"docid": "d1", "title": "Velmora", "entity": "Velmora",
                                                                "query": "متى تأسست Velmora؟"}]}}}
    paths = write_report(str(tmp_path), "xqg", results, {}, settings={"zero_shot": zero_shot}, generated=generated)
    doc = json.loads(open(paths["json"], encoding="utf-8").read())
    # the main setting keeps its keys; the other setting is compared with its own baseline
    assert set(doc["runs"]) == {"baseline", "+xQG"}
    assert doc["settings"]["zero_shot"]["significance"]["+xQG"]["R@2kt"]["avg"]["t_p"] == 1.0
    assert doc["runs"]["+xQG"]["metrics"] != doc["settings"]["zero_shot"]["runs"]["+xQG"]["metrics"]
    assert doc["generated_queries"]["by_lang"]["ar"]["with_entity"] == 44.4
    md = open(paths["md"], encoding="utf-8").read()
    assert "## Setting: zero_shot" in md and "## Generated queries" in md
    assert "| ar" in md and "44.4" in md and "متى تأسست Velmora؟" in md


def test_entity_keys_are_the_rarest_title_words():
    from xqg.evaluate.generated import entity_keys

    titles = ["Mount Velmora", "Mount Sorith", "Yutova Festival", "Brenna Festival", "Trara Geildiley", "Tedor (river)"]
    assert entity_keys(titles) == ["Velmora", "Sorith", "Yutova", "Brenna", "Geildiley", "Tedor"]


def test_the_report_leads_with_every_setting_and_its_p_values(results, tmp_path):
    other = make_results(dict(results["runs"]), ir={"baseline": {"mrr@10": 0.25}, "+xQG": {"mrr@10": 0.5}},
                         n_permutations=2000)
    lead = format_lead_table({"supervised": results, "zero-shot": other},
                             {"zero-shot": {"+xQG": "+xQG tuned (norm, alpha 0.1)"}})
    lines = lead.splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == [
        "Setting", "Run", "R@2kt", "R@5kt", "MRR@10", "p R@2kt", "p R@5kt"]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    assert [(r[0], r[1]) for r in rows] == [("supervised", "baseline"), ("supervised", "+xQG"),
                                            ("zero-shot", "baseline"), ("zero-shot", "+xQG tuned (norm, alpha 0.1)")]
    test = results["significance"]["+xQG"]["R@2kt"]["avg"]
    assert rows[1][2] == f"{results['runs']['+xQG'].scores(2)['avg']:.1f}" and rows[1][5] == p_text(test.perm_p)
    assert rows[0][5:] == ["", ""] and rows[0][4] == "" and rows[2][4] == "0.250" and rows[3][4] == "0.500"
    md = write_report(str(tmp_path), "r", results, {}, lead=lead)["md"]
    text = open(md).read()
    assert text.index(lead) < text.index("| Lang")  # the answer first, the per-language tables after


def test_a_p_value_that_rounds_to_zero_is_written_as_below_a_thousandth() -> None:
    assert p_text(0.0) == p_text(0.0004) == "< 0.001"
    assert p_text(0.0005) == "0.001" and p_text(0.0451) == "0.045" and p_text(1.0) == "1.000"
