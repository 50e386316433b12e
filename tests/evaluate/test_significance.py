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
