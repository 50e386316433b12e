"""Tests for the synthetic demo-data generator and the committed data/demo files."""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from helpers.paths import DEMO
from xqg.demo.data import DEV_LANGS, TRAIN_LANGS, make_demo_data, make_passages
from xqg.train.readers import TrainExample, read_training_file

FILES = ("passages.jsonl", "dev.jsonl", "heldout.jsonl", "train.jsonl", "train_qg.json", "README.md")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _qg_examples(demo: Path) -> list[TrainExample]:
    """The generator's pairs as the training readers see them (every qa of the gp_squad file an example)."""
    rows = list(read_training_file(str(demo / "train_qg.json")))
    assert all(isinstance(r, TrainExample) for r in rows)
    return rows  # type: ignore[return-value]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    make_demo_data(str(out))
    return out


def test_counts(demo: Path) -> None:
    counts = make_demo_data(str(demo))  # rewriting the same data is harmless and returns counts
    assert counts == {
        "passages": len(_read_jsonl(demo / "passages.jsonl")),
        "dev": len(_read_jsonl(demo / "dev.jsonl")),
        "heldout": len(_read_jsonl(demo / "heldout.jsonl")),
        "train": len(_read_jsonl(demo / "train.jsonl")),
        "train_qg": len(_qg_examples(demo)),
    }
    assert counts["passages"] == 2000
    assert counts["dev"] == counts["heldout"] == 280 and counts["train"] == 500
    assert counts["train_qg"] == (2000 - 560) * len(TRAIN_LANGS)


def test_deterministic(demo: Path, tmp_path: Path) -> None:
    make_demo_data(str(tmp_path))
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (demo / name).read_bytes(), name


def test_other_seed_differs(demo: Path, tmp_path: Path) -> None:
    make_demo_data(str(tmp_path), seed=1)
    assert (tmp_path / "passages.jsonl").read_bytes() != (demo / "passages.jsonl").read_bytes()


def test_passages(demo: Path) -> None:
    passages = _read_jsonl(demo / "passages.jsonl")
    docids = [p["docid"] for p in passages]
    assert len(set(docids)) == len(docids)
    assert len({p["title"] for p in passages}) == len(passages)
    for p in passages:
        assert set(p) == {"docid", "title", "text"}
        assert 85 <= len(p["text"].split()) <= 130, p["docid"]
    # about as long as DPR's 100-word passages, so that R@2kt's window holds about as many passages as on XOR-TyDi
    assert 95 <= sum(len(p["text"].split()) for p in passages) / len(passages) <= 110


def test_dev(demo: Path) -> None:
    texts = {p["docid"]: p["text"] for p in _read_jsonl(demo / "passages.jsonl")}
    dev = _read_jsonl(demo / "dev.jsonl")
    assert len({d["id"] for d in dev}) == len(dev)
    per_lang = Counter(d["lang"] for d in dev)
    assert set(per_lang) == set(DEV_LANGS)
    assert min(per_lang.values()) >= 40
    for d in dev:
        assert set(d) == {"id", "question", "answers", "lang", "docid"}
        assert d["answers"] and all(a in texts[d["docid"]] for a in d["answers"]), d["id"]


def test_train(demo: Path) -> None:
    texts = {p["docid"]: p["text"] for p in _read_jsonl(demo / "passages.jsonl")}
    dev = _read_jsonl(demo / "dev.jsonl")
    heldout = _read_jsonl(demo / "heldout.jsonl")
    train = _read_jsonl(demo / "train.jsonl")
    assert len({t["query_id"] for t in train}) == len(train)
    langs = Counter(t["lang"] for t in train)
    assert set(langs) == set(TRAIN_LANGS)
    # half English (the zero-shot bi-encoder's training set), half the paper languages in turn
    assert langs["en"] == len(train) // 2 and min(langs[lang] for lang in DEV_LANGS) >= len(train) // 2 // 7
    # no training question is about a dev or held-out passage: those are unseen in training
    evaluated = {d["docid"] for d in dev + heldout}
    assert not evaluated & {t["positive_passages"][0]["docid"] for t in train}
    assert not {d["docid"] for d in dev} & {d["docid"] for d in heldout}
    dev_pairs = {(d["docid"], d["answers"][0]) for d in dev}
    for t in train:
        (pos,) = t["positive_passages"]
        assert pos["text"] == texts[pos["docid"]]
        assert all(a in pos["text"] for a in t["answers"]), t["query_id"]
        neg_ids = [n["docid"] for n in t["negative_passages"]]
        assert len(neg_ids) >= 7 and len(set(neg_ids)) == len(neg_ids)
        assert pos["docid"] not in neg_ids
        assert all(n["text"] == texts[n["docid"]] for n in t["negative_passages"])
        # Train asks about different facts than dev, so dev is not a copy of train.
        assert (pos["docid"], t["answers"][0]) not in dev_pairs


def test_train_qg_asks_every_other_passage_in_every_training_language(demo: Path) -> None:
    passages = {p["docid"]: p for p in _read_jsonl(demo / "passages.jsonl")}
    by_text = {p["text"]: p for p in passages.values()}
    evaluated = {d["docid"] for d in _read_jsonl(demo / "dev.jsonl") + _read_jsonl(demo / "heldout.jsonl")}
    langs_of: dict[str, list[str]] = {}
    examples = _qg_examples(demo)
    assert len({e.query_id for e in examples}) == len(examples)
    for e in examples:
        (pos,) = e.positives
        corpus = by_text[pos.text]  # the corpus passage, title and text unchanged
        assert pos.title == corpus["title"] and not e.negatives
        langs_of.setdefault(corpus["docid"], []).append(e.lang or "")
    # every passage outside dev and held-out, none inside: the generator never sees an evaluated passage
    assert set(langs_of) == set(passages) - evaluated
    assert all(sorted(v) == sorted(TRAIN_LANGS) for v in langs_of.values())


def test_most_passages_have_near_duplicates_that_differ_only_in_names_and_numbers(demo: Path) -> None:
    passages = _read_jsonl(demo / "passages.jsonl")
    # names and numbers masked: near-duplicates read the same
    shape = Counter(re.sub(r"[A-Z][a-z]+|\d[\d,]*", "#", p["text"]) for p in passages)
    with_twin = sum(n for n in shape.values() if n > 1)
    assert with_twin >= 0.5 * len(passages)
    # ... yet no two passages are equal
    assert len({p["text"] for p in passages}) == len(passages)


def test_generator_is_linear_in_passages() -> None:
    start = time.process_time()  # CPU seconds: the test's own work, whatever else shares the cores
    passages = make_passages(20_000, random.Random(0))
    seconds = time.process_time() - start
    assert len({p.title for p in passages}) == 20_000
    # The quadratic name bank took 10 s for 2,000 passages and did not finish 20,000 in 5 minutes.
    assert seconds < 30, f"20,000 passages took {seconds:.1f} CPU s"


def test_names_unique_to_passage(demo: Path) -> None:
    passages = _read_jsonl(demo / "passages.jsonl")
    dev = _read_jsonl(demo / "dev.jsonl") + _read_jsonl(demo / "heldout.jsonl")
    for d in dev:
        # The entity name is the Latin-script run in the question; it must occur in the gold passage only.
        name = next(p["title"] for p in passages if p["docid"] == d["docid"]).split(" (")[0]
        name = name.removeprefix("Mount ").removesuffix(" Library").removesuffix(" Festival")
        assert name in d["question"], d["id"]
        assert [p["docid"] for p in passages if name in p["text"]] == [d["docid"]], d["id"]


def test_committed_data_matches_generator(demo: Path) -> None:
    for name in FILES:
        committed = DEMO / name
        assert committed.exists(), f"{committed} missing: run python -m xqg.demo.data --out data/demo"
        assert committed.read_bytes() == (demo / name).read_bytes(), (
            f"data/demo/{name} drifted from the generator: run python -m xqg.demo.data --out data/demo"
        )


def test_name_bank_stops_with_an_error_when_its_names_run_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name space that yields nothing new ends in a RuntimeError naming the cause, not an endless loop."""
    from xqg.demo.data import NameBank

    bank = NameBank(random.Random(0))
    monkeypatch.setattr(NameBank, "MAX_DRAWS", 50)
    monkeypatch.setattr(bank, "_word", lambda endings: "Velmora")  # a space of one name
    assert bank.place() == "Velmora"
    with pytest.raises(RuntimeError, match="exhausted"):
        bank.place()
