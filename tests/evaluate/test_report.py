"""Markdown, JSON and PNG reports of baseline vs +xQG."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xqg.evaluate.report import format_table, make_results, write_report
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
