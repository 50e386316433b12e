"""Paired significance tests between two R@kt runs over the same questions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xqg.evaluate.xor import XorResult, metric_name

# Permutations are drawn in blocks so memory stays flat (block x questions int8).
_BLOCK = 1000


@dataclass(frozen=True)
class PairedTest:
    """One baseline-vs-other comparison: scores in percent and two-sided p-values."""

    n: int  # paired questions
    baseline: float
    other: float
    delta: float  # other - baseline, percentage points
    t_p: float  # paired t-test
    perm_p: float  # paired randomization (sign-flip) test

    def to_dict(self) -> dict[str, float | int]:
        """Plain-JSON form."""
        return {
            "n": self.n,
            "baseline": self.baseline,
            "other": self.other,
            "delta": self.delta,
            "t_p": self.t_p,
            "perm_p": self.perm_p,
        }


def paired_t_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p of scipy's paired t-test on per-question scores; 1.0 when a == b."""
    from scipy.stats import ttest_rel

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"unpaired inputs: {a.shape} vs {b.shape}")
    diff = b - a
    if len(diff) < 2 or not diff.any():
        return 1.0  # no difference (or one pair): no evidence, and scipy would give NaN
    if np.all(diff == diff[0]):
        return 0.0  # every question moved the same way: zero variance, t is infinite
    return float(ttest_rel(b, a).pvalue)


def randomization_test(
    a_by_lang: Sequence[np.ndarray],
    b_by_lang: Sequence[np.ndarray],
    n_permutations: int = 10_000,
    seed: int = 0,
) -> float:
    """Two-sided p of a paired sign-flip test on the macro mean of per-language mean differences.

    Under the null the two runs are exchangeable per question, so each
    question's difference b - a flips sign at random (within its language, so
    every language keeps its weight in the macro mean). One language is the
    ordinary paired randomization test of the mean difference. The p-value
    counts the observed statistic as one of the permutations (never 0).
    """
    if len(a_by_lang) != len(b_by_lang) or not a_by_lang:
        raise ValueError("need the same, non-empty list of languages on both sides")
    diffs, weights = [], []
    for a, b in zip(a_by_lang, b_by_lang):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        if a.shape != b.shape or not len(a):
            raise ValueError(f"unpaired or empty language: {a.shape} vs {b.shape}")
        diffs.append(b - a)
        # Question weight in the macro mean: 1 / (languages * questions of its language).
        weights.append(np.full(len(a), 1.0 / (len(a_by_lang) * len(a))))
    weighted = np.concatenate(diffs) * np.concatenate(weights)
    # Ties (difference 0) do not change under a sign flip: leave them out.
    weighted = weighted[weighted != 0]
    if not len(weighted):
        return 1.0
    observed = abs(weighted.sum())
    rng = np.random.default_rng(seed)
    at_least = 0
    for start in range(0, n_permutations, _BLOCK):
        size = min(_BLOCK, n_permutations - start)
        signs = rng.integers(0, 2, size=(size, len(weighted)), dtype=np.int8) * 2 - 1
        # A relative tolerance so that float rounding does not decide ties.
        at_least += int(np.count_nonzero(np.abs(signs @ weighted) >= observed * (1 - 1e-9)))
    return (at_least + 1) / (n_permutations + 1)


def _check_paired(baseline: XorResult, other: XorResult) -> None:
    """Raise unless both results hold the same counted questions in the same order."""
    if baseline.langs != other.langs or baseline.qids != other.qids:
        raise ValueError("runs are not over the same counted questions (langs or qids differ)")
    missing = set(baseline.ks) - set(other.ks)
    if missing:
        raise ValueError(f"other run lacks k in {sorted(missing)}")


def compare(
    baseline: XorResult,
    other: XorResult,
    n_permutations: int = 10_000,
    seed: int = 0,
) -> dict[str, dict[str, PairedTest]]:
    """Tests per metric (``R@2kt``...) and per language plus ``avg``.

    Per language: paired t-test and randomization test of that language's
    hits. For ``avg`` (the macro mean the paper reports): the randomization
    test is on the macro-average statistic itself, flipping signs within each
    language; the t-test pools all questions of all languages, which tests the
    micro mean (the t-test has no macro form) and weights the languages by
    their question counts.
    """
    _check_paired(baseline, other)
    out: dict[str, dict[str, PairedTest]] = {}
    for k in baseline.ks:
        a_lang = [baseline.hits[k][lang] for lang in baseline.langs]
        b_lang = [other.hits[k][lang] for lang in baseline.langs]
        base_scores, other_scores = baseline.scores(k), other.scores(k)
        tests: dict[str, PairedTest] = {}
        for lang, a, b in zip(baseline.langs, a_lang, b_lang):
            tests[lang] = PairedTest(
                n=len(a),
                baseline=base_scores[lang],
                other=other_scores[lang],
                delta=other_scores[lang] - base_scores[lang],
                t_p=paired_t_test(a, b),
                perm_p=randomization_test([a], [b], n_permutations, seed),
            )
        tests["avg"] = PairedTest(
            n=sum(len(a) for a in a_lang),
            baseline=base_scores["avg"],
            other=other_scores["avg"],
            delta=other_scores["avg"] - base_scores["avg"],
            t_p=paired_t_test(np.concatenate(a_lang), np.concatenate(b_lang)),
            perm_p=randomization_test(a_lang, b_lang, n_permutations, seed),
        )
        out[metric_name(k)] = tests
    return out
