"""Paired t-test and randomization test between two R@kt runs."""

from __future__ import annotations

import numpy as np
import pytest

from xqg.evaluate.significance import compare, paired_t_test, randomization_test
from xqg.evaluate.xor import XorResult

LANGS = ("ar", "fi", "te")


def make_result(hits_by_k: dict[int, dict[str, np.ndarray]]) -> XorResult:
    """An XorResult over fixed question ids with the given hits."""
    first = hits_by_k[min(hits_by_k)]
    return XorResult(
        ks=tuple(sorted(hits_by_k)),
        langs=tuple(first),
        qids={lang: tuple(f"{lang}{i}" for i in range(len(h))) for lang, h in first.items()},
        hits=hits_by_k,
    )


@pytest.fixture
def runs() -> tuple[XorResult, XorResult]:
    """A baseline and a run that fixes ~15% of its misses and breaks ~2% of its hits."""
    rng = np.random.default_rng(3)
    sizes = {"ar": 300, "fi": 250, "te": 200}
    base = {k: {lang: rng.random(n) < 0.4 + 0.1 * (k == 5) for lang, n in sizes.items()} for k in (2, 5)}
    better = {
        k: {lang: (h | (rng.random(len(h)) < 0.15)) & (rng.random(len(h)) > 0.02) for lang, h in by_lang.items()}
        for k, by_lang in base.items()
    }
    return make_result(base), make_result(better)


def test_identical_runs_give_p_one(runs):
    base, _ = runs
    tests = compare(base, base)
    for by_lang in tests.values():
        for test in by_lang.values():
            assert test.t_p == 1.0 and test.perm_p == 1.0
            assert test.delta == 0.0


def test_clearly_better_run_is_significant(runs):
    base, better = runs
    tests = compare(base, better, n_permutations=5000, seed=1)
    assert set(tests) == {"R@2kt", "R@5kt"}
    for by_lang in tests.values():
        assert set(by_lang) == {*LANGS, "avg"}
        for test in by_lang.values():
            assert test.delta > 0
            assert test.t_p < 0.05 and test.perm_p < 0.05
        assert by_lang["avg"].n == 750
        assert by_lang["avg"].delta == pytest.approx(np.mean([by_lang[lang].delta for lang in LANGS]))


def test_seeded_results_are_reproducible(runs):
    base, _ = runs
    rng = np.random.default_rng(11)
    # A small, noisy difference so the p-value is neither 0 nor 1.
    noisy = make_result({k: {l: h ^ (rng.random(len(h)) < 0.05) for l, h in b.items()} for k, b in base.hits.items()})
    first = compare(base, noisy, n_permutations=2000, seed=5)
    assert first == compare(base, noisy, n_permutations=2000, seed=5)
    p_values = [t.perm_p for by_lang in first.values() for t in by_lang.values()]
    assert any(0.01 < p < 1.0 for p in p_values)


def test_randomization_matches_exact_enumeration():
    # 6 discordant pairs, 5 in favour of b: exact two-sided p = 2 * (1 + 6) / 64 = 0.21875.
    a = np.array([0, 0, 0, 0, 0, 1, 1, 0, 1])
    b = np.array([1, 1, 1, 1, 1, 0, 1, 0, 1])
    p = randomization_test([a], [b], n_permutations=20_000, seed=0)
    assert p == pytest.approx(0.21875, abs=0.015)


def test_macro_statistic_weights_languages_equally():
    # A big language with a tiny gain and a small one with a big gain: the macro test
    # sees the small language's gain at full weight.
    a = [np.zeros(1000), np.zeros(20)]
    b = [np.r_[np.ones(10), np.zeros(990)], np.r_[np.ones(15), np.zeros(5)]]
    assert randomization_test(a, b, n_permutations=2000, seed=0) < 0.01


def test_t_test_edge_cases():
    assert paired_t_test(np.ones(5), np.ones(5)) == 1.0
    assert paired_t_test(np.zeros(5), np.ones(5)) == 0.0  # all improve: zero variance
    assert paired_t_test(np.zeros(1), np.ones(1)) == 1.0
    with pytest.raises(ValueError):
        paired_t_test(np.zeros(3), np.zeros(4))


def test_unpaired_runs_are_refused(runs):
    base, _ = runs
    other = make_result({k: {l: h[:-1] for l, h in b.items()} for k, b in base.hits.items()})
    with pytest.raises(ValueError, match="same counted questions"):
        compare(base, other)


def test_p_values_equal_scipy_on_real_xor_tydi_dev_questions(shared_data):
    """xqg's t-test p equals scipy.stats.ttest_rel, its sign-flip p scipy.stats.permutation_test (paired), on
    per-question hits of the real dev questions scored through recall_at_kt."""
    import json
    import random
    import re

    from scipy.stats import permutation_test, ttest_rel

    from xqg.evaluate.xor import recall_at_kt

    def plain(answer: str) -> bool:
        """Words and single spaces only, none that NLTK splits (cannot -> can not): a passage that is the answer
        tokenizes back to it, so it is a sure hit (the official script matches raw answers against tokens)."""
        return bool(re.fullmatch(r"\w+( \w+)*", answer)) and not re.search(
            r"(?i)\b(cannot|d'ye|gimme|gonna|gotta|lemme|more'n|wanna)\b", answer)

    with (shared_data / "xor_tydi" / "xor_dev_retrieve_eng_span_v1_1.jsonl").open(encoding="utf-8") as f:
        questions = [q for q in map(json.loads, f) if set(q["answers"]) - {"yes", "no"} and all(map(plain, q["answers"]))]
    assert len(questions) > 1000
    rng = random.Random(4)
    # Per question and run: the retrieved passage is a counted answer itself (a sure hit) or filler (a miss); the
    # +xQG run hits more often in some languages than others, so the p-values spread from tiny to large.
    gain = {"ar": 0.2, "bn": 0.1, "fi": 0.05, "ja": 0.0, "ko": 0.03, "ru": -0.05, "te": 0.15}
    hits: dict[str, dict[str, list[int]]] = {"base": {}, "xqg": {}}
    preds: dict[str, dict[str, list[str]]] = {"base": {}, "xqg": {}}
    for q in questions:
        answer = next(a for a in q["answers"] if a not in ("yes", "no"))
        for run, p in (("base", 0.4), ("xqg", 0.4 + gain[q["lang"]])):
            hit = rng.random() < p
            hits[run].setdefault(q["lang"], []).append(int(hit))
            preds[run][q["id"]] = [answer if hit else "qqqq"]
    base, xqg = recall_at_kt(questions, preds["base"]), recall_at_kt(questions, preds["xqg"])
    tests = compare(base, xqg, n_permutations=200, seed=0)["R@2kt"]
    langs = sorted(gain)
    for lang in langs:
        b, a = np.array(hits["xqg"][lang]), np.array(hits["base"][lang])
        assert tests[lang].n == len(a) and tests[lang].delta == pytest.approx(100 * (b.mean() - a.mean()))
        assert tests[lang].t_p == pytest.approx(ttest_rel(b, a).pvalue, rel=1e-9), lang
    pooled = [np.concatenate([np.array(hits[run][lang]) for lang in langs]) for run in ("xqg", "base")]
    assert tests["avg"].t_p == pytest.approx(ttest_rel(*pooled).pvalue, rel=1e-9)
    p_values = sorted(tests[lang].t_p for lang in langs)
    assert p_values[0] < 1e-4 and p_values[-1] > 0.1  # both ends of the scale are checked

    # The randomization test on one language: scipy's exact paired permutation test (every sign flip of the
    # discordant pairs; ties cannot change sign) against xqg's 20,000 random flips.
    a, b = np.array(hits["base"]["fi"]), np.array(hits["xqg"]["fi"])
    end = np.flatnonzero(a != b)[13] + 1  # the first 14 discordant pairs and the ties between them: 2^14 flips
    a, b = a[:end], b[:end]
    discordant = a != b
    exact = permutation_test(
        (b[discordant], a[discordant]), lambda x, y: np.mean(x - y), permutation_type="samples",
        n_resamples=np.inf, alternative="two-sided",
    ).pvalue
    assert randomization_test([a], [b], n_permutations=20_000, seed=0) == pytest.approx(exact, abs=0.01)
