"""XOR-TyDi's official R@kt metric (XOR-Retrieve), with per-question hits kept."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import mean

import numpy as np

from xqg.evaluate.tokenize import word_tokenize

# The official script skips these answers (exact, case-sensitive match) and then
# every question left without an answer.
YES_NO = ("yes", "no")

# Characters NLTK's word tokenizer may rewrite: it turns '"' into `` or ''.
_QUOTES = str.maketrans("", "", "\"'`")


def metric_name(k: int) -> str:
    """Name of the R@kt metric for k thousand tokens, e.g. ``R@2kt``."""
    return f"R@{k}kt"


@dataclass(frozen=True)
class XorResult:
    """R@kt per language with the per-question hits behind it."""

    ks: tuple[int, ...]
    # Languages with at least one counted question, in order of first appearance.
    langs: tuple[str, ...]
    # lang -> ids of its counted questions (question order); hits align with them.
    qids: dict[str, tuple[str, ...]]
    # k -> lang -> bool array, True where a gold answer is in the first k*1000 tokens.
    hits: dict[int, dict[str, np.ndarray]]
    n_skipped: int = 0  # questions without a counted (non yes/no) answer
    n_missing: int = 0  # counted questions with no prediction (scored as misses)
    n_unknown: int = 0  # predictions for ids not in the questions (ignored)

    @property
    def counts(self) -> dict[str, int]:
        """Counted questions per language."""
        return {lang: len(self.qids[lang]) for lang in self.langs}

    def scores(self, k: int) -> dict[str, float]:
        """R@kt in percent per language plus ``avg``, the macro mean over languages."""
        per_lang = {lang: float(self.hits[k][lang].mean() * 100.0) for lang in self.langs}
        per_lang["avg"] = mean(per_lang.values()) if per_lang else 0.0
        return per_lang

    def metrics(self) -> dict[str, dict[str, float]]:
        """All scores as ``{"R@2kt": {"ar": .., "avg": ..}, "R@5kt": {...}}``."""
        return {metric_name(k): self.scores(k) for k in self.ks}


def counted_answers(answers: Iterable[str]) -> list[str]:
    """Answers the official script scores: all but the exact strings yes and no."""
    return [answer for answer in answers if answer not in YES_NO]


class TokenCache:
    """Per-passage-text results shared across questions (and runs): passages recur."""

    def __init__(self) -> None:
        # text -> (its tokens joined by single spaces, token count). A joined
        # string instead of a token list takes ~10x less memory for 100k
        # passages; tokens never contain whitespace, so split(" ") recovers them.
        self._tokens: dict[str, tuple[str, int]] = {}
        # text -> (text without whitespace and quote characters, word count).
        self._squashed: dict[str, tuple[str, int]] = {}

    def __len__(self) -> int:
        """Number of passages tokenized so far."""
        return len(self._tokens)

    def tokens(self, text: str) -> tuple[str, int]:
        """Space-joined NLTK tokens of a passage and their count."""
        entry = self._tokens.get(text)
        if entry is None:
            tokens = word_tokenize(text)
            entry = self._tokens[text] = (" ".join(tokens), len(tokens))
        return entry

    def squashed(self, text: str) -> tuple[str, int]:
        """The passage without whitespace and quote characters, and its word count."""
        entry = self._squashed.get(text)
        if entry is None:
            words = text.split()
            entry = self._squashed[text] = (squash("".join(words)), len(words))
        return entry


def squash(text: str) -> str:
    """Drop whitespace and the quote characters that tokenization may rewrite."""
    return "".join(text.split()).translate(_QUOTES)


def first_tokens(ctxs: Sequence[str], max_tokens: int, cache: TokenCache | None = None) -> str:
    """The official window: passages' tokens in rank order, cut to max_tokens, space-joined."""
    cache = TokenCache() if cache is None else cache
    parts: list[str] = []
    total = 0
    for text in ctxs:
        joined, n = cache.tokens(text)
        if n == 0:
            continue  # adds no token; skipping it avoids a doubled space in the join
        if total + n >= max_tokens:
            # The official script stops at the passage that reaches the limit and
            # cuts the token list there.
            parts.append(" ".join(joined.split(" ")[: max_tokens - total]))
            break
        parts.append(joined)
        total += n
    return " ".join(parts)


def _may_hit(ctxs: Sequence[str], answers: Sequence[str], max_tokens: int, cache: TokenCache) -> bool:
    """False only when no answer can be in the window; needs no tokenization."""
    # Tokenizing keeps every non-space character in order except that '"' turns
    # into `` or '', and a word never yields fewer than one token. So with
    # whitespace and quotes dropped, the window is a substring of the raw text of
    # the passages up to the one where the word count reaches max_tokens, and an
    # answer absent there is absent from the window (checked on XQuAD: 11k texts).
    squashed: list[str] = []
    words = 0
    for text in ctxs:
        chars, n = cache.squashed(text)
        squashed.append(chars)
        words += n
        if words >= max_tokens:
            break
    haystack = "".join(squashed)
    return any(squash(answer) in haystack for answer in answers)


def window_hit(ctxs: Sequence[str], answers: Sequence[str], max_tokens: int, cache: TokenCache) -> bool:
    """Whether any answer is a substring of ``first_tokens(ctxs, max_tokens)``, computed lazily."""
    if "" in answers:
        return True  # as in the official script: "" is in every string, even an empty window
    if not _may_hit(ctxs, answers, max_tokens, cache):
        return False
    # Build the window passage by passage and stop at the first hit: every
    # partial window is a prefix of the full one, so a hit there is a hit. Only
    # the new tail is searched (from len(answer) - 1 characters back, for
    # answers straddling a passage border): the part before had no hit.
    window = ""
    total = 0
    for text in ctxs:
        joined, n = cache.tokens(text)
        if n == 0:
            continue
        last = total + n >= max_tokens
        if last:
            joined = " ".join(joined.split(" ")[: max_tokens - total])
        start = len(window)
        window = f"{window} {joined}" if window else joined
        total += n
        if any(window.find(answer, max(0, start - len(answer) + 1)) >= 0 for answer in answers):
            return True
        if last:
            break
    return False


def recall_at_kt(
    questions: list[dict],
    predictions: dict[str, list[str]],
    ks: Sequence[int] = (2, 5),
    *,
    cache: TokenCache | None = None,
) -> XorResult:
    """Official XOR-Retrieve R@kt of ranked passage texts per question id."""
    cache = TokenCache() if cache is None else cache  # pass one in to share it across runs
    ks = tuple(ks)
    qids: dict[str, list[str]] = {}
    hits: dict[int, dict[str, list[bool]]] = {k: {} for k in ks}
    n_skipped = n_missing = 0
    known: set[str] = set()
    for question in questions:
        qid, lang = str(question["id"]), question["lang"]
        known.add(qid)
        answers = counted_answers(question["answers"])
        if not answers:
            n_skipped += 1
            continue
        ctxs = predictions.get(qid)
        if ctxs is None:
            # Unlike the official script (which loops over predictions and so never
            # sees such a question), a lost question must cost recall, not vanish.
            n_missing += 1
            ctxs = []
        qids.setdefault(lang, []).append(qid)
        for k in ks:
            hits[k].setdefault(lang, []).append(window_hit(ctxs, answers, k * 1000, cache))
    n_unknown = sum(1 for qid in predictions if qid not in known)
    if n_missing:
        warnings.warn(f"{n_missing} counted questions have no prediction; scored as misses", stacklevel=2)
    if n_unknown:
        warnings.warn(f"{n_unknown} predictions have ids not in the questions; ignored", stacklevel=2)
    langs = tuple(qids)
    return XorResult(
        ks=ks,
        langs=langs,
        qids={lang: tuple(qids[lang]) for lang in langs},
        hits={k: {lang: np.asarray(hits[k][lang], dtype=bool) for lang in langs} for k in ks},
        n_skipped=n_skipped,
        n_missing=n_missing,
        n_unknown=n_unknown,
    )


def read_questions(path: str) -> list[dict]:
    """Read an XOR-TyDi jsonl file (id, question, answers, lang per line)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_predictions(path: str, questions: Sequence[Mapping] = ()) -> dict[str, list[str]]:
    """Read an official prediction file (json list of {id, lang, ctxs}) as qid -> ctxs."""
    with open(path, encoding="utf-8") as f:
        items = json.load(f)
    langs = {str(q["id"]): q["lang"] for q in questions}
    predictions: dict[str, list[str]] = {}
    n_duplicate = n_lang_mismatch = 0
    for item in items:
        qid = str(item["id"])
        n_duplicate += qid in predictions
        # The official script takes lang from the prediction; we take it from
        # the questions, so say when the two disagree.
        n_lang_mismatch += qid in langs and item.get("lang", langs[qid]) != langs[qid]
        predictions[qid] = list(item["ctxs"])
    if n_duplicate:
        warnings.warn(f"{n_duplicate} duplicate prediction ids; the last one of each is used", stacklevel=2)
    if n_lang_mismatch:
        warnings.warn(f"{n_lang_mismatch} predictions name another lang than their question", stacklevel=2)
    return predictions


def format_official(result: XorResult) -> str:
    """The text the official eval_xor_retrieve.py prints, for these results."""
    lines: list[str] = []
    for k in result.ks:
        scores = result.scores(k)
        lines.append(f"Evaluating {metric_name(k)}")
        for lang in result.langs:
            lines.append(f"performance on {lang} ({result.counts[lang]} examples)")
            lines.append(str(scores[lang]))
        lines.append("Final macro averaged score: ")
        lines.append(",".join(result.langs))
        lines.append(str(scores["avg"]))
        lines.append("".join(f"{scores[lang]}," for lang in result.langs))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: score an official-format prediction file against XOR-TyDi questions."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data_file", required=True, help="XOR-TyDi jsonl (id, answers, lang)")
    parser.add_argument("--pred_file", required=True, help="json list of {id, lang, ctxs}")
    parser.add_argument("--json", action="store_true", help='print {"R@2kt": {...}, "R@5kt": {...}}')
    args = parser.parse_args(argv)
    questions = read_questions(args.data_file)
    result = recall_at_kt(questions, read_predictions(args.pred_file, questions))
    print(json.dumps(result.metrics()) if args.json else format_official(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
