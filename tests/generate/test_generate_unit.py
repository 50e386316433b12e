"""One unit of generation without Ray: prompts, truncation, empty and failing rows become rejects."""

from __future__ import annotations

import pyarrow as pa
import pytest

from xqg.generate.backends import SamplingSettings, make_backend
from xqg.generate.backends.base import GeneratorBackend
from xqg.generate.prompts import build_prompt, check_template, is_empty_passage, stable_seed
from xqg.generate.unit import EMPTY_PASSAGE, OUTPUT_SCHEMA, generate_unit, prompt_token_ids

PAPER = "Generate a {language} question for this passage: {title} {text}"


@pytest.fixture(scope="module")
def hf(tiny_mt5_dir):
    return make_backend("hf", tiny_mt5_dir, SamplingSettings(num_queries=2, max_new_tokens=5, max_input_len=48), threads=1)


class PoisonBackend(GeneratorBackend):
    """The real HF backend, except that any batch holding a prompt with the word POISON fails."""

    name = "poison"

    def __init__(self, inner: GeneratorBackend) -> None:  # noqa: D107 - wraps, loads nothing
        self.inner, self.sampling, self.tokenizer = inner, inner.sampling, inner.tokenizer
        self.encoder_decoder, self.calls = inner.encoder_decoder, []

    def tokenize(self, prompts, truncate=True):
        return self.inner.tokenize(prompts, truncate)

    def generate(self, token_ids, seeds):
        self.calls.append(len(token_ids))
        if any("POISON" in self.tokenizer.decode(ids) for ids in token_ids):
            raise RuntimeError("CUDA out of memory (simulated)")
        return self.inner.generate(token_ids, seeds)


def table(rows: list[tuple[str, str | None, str | None]]) -> pa.Table:
    return pa.table({"docid": [r[0] for r in rows], "title": [r[1] for r in rows], "text": [r[2] for r in rows]})


def test_paper_prompt_uses_the_english_language_name_and_collapses_an_empty_title():
    assert build_prompt(PAPER, "ar", "Velvoness", "A town.") == "Generate a Arabic question for this passage: Velvoness A town."
    assert build_prompt(PAPER, "te", None, " A river. ") == "Generate a Telugu question for this passage: A river."
    assert build_prompt(PAPER, "ja", "T", "x" * 100, max_chars=10).endswith("T " + "x" * 10)
    assert is_empty_passage(" ", None) and not is_empty_passage("Title only", "")


def test_template_with_unknown_fields_is_rejected():
    with pytest.raises(ValueError, match="unknown fields.*docid"):
        check_template("Q in {language} for {docid}: {text}")


def test_stable_seed_depends_on_every_part_only():
    assert stable_seed(42, "ar", 3) == stable_seed(42, "ar", 3)
    assert len({stable_seed(42, "ar", 3), stable_seed(42, "ar", 4), stable_seed(42, "bn", 3), stable_seed(7, "ar", 3)}) == 4
    assert 0 <= stable_seed("x", bits=32) < 2**32


def test_text_before_the_template_tail_is_shortened_so_the_tail_survives(hf):
    template = "Passage: {title} {text} Now write one {language} question:"
    ids = prompt_token_ids(hf, template, "fi", ["Title"], ["river " * 3000])[0]
    assert len(ids) <= 48
    assert hf.tokenizer.decode(ids, skip_special_tokens=True).endswith("Now write one Finnish question")  # ":" is unknown to the tiny vocabulary


def test_empty_and_50k_character_passages_finish_and_counts_add_up(hf):
    rows = [("d0", "A title", "Some text about a town."), ("d1", "", ""), ("d2", None, None),
            ("d3", "Long", "word " * 10_000), ("d4", "Title only", ""), ("d5", "T", "x" * 50_000)]
    res = generate_unit(hf, table(rows), lang="ko", shard=0, template=PAPER, seed=1, batch_size=4)
    assert res.table.schema == OUTPUT_SCHEMA
    assert res.table.column("docid").to_pylist() == ["d0", "d3", "d4", "d5"]  # corpus order kept
    assert all(len(q) == 2 for q in res.table.column("queries").to_pylist())
    assert set(res.table.column("lang").to_pylist()) == {"ko"}
    assert [(r["key"], r["reason"]) for r in res.rejects] == [("d1", EMPTY_PASSAGE), ("d2", EMPTY_PASSAGE)]
    assert res.table.num_rows + len(res.rejects) == res.rows_in == len(rows)


def test_a_failing_row_is_rejected_with_its_error_and_the_rest_of_the_unit_goes_on(hf):
    rows = [(f"d{i}", f"Title {i}", f"Passage number {i} about a ship.") for i in range(8)]
    rows[4] = ("d4", "Bad", "POISON passage, longer than the others: it shares a batch of three")
    flaky = PoisonBackend(hf)
    res = generate_unit(flaky, table(rows), lang="ru", shard=2, template=PAPER, seed=1, batch_size=3)
    assert [r["key"] for r in res.rejects] == ["d4"]
    assert res.rejects[0]["reason"].startswith("generation failed: RuntimeError: CUDA out of memory")
    assert "POISON" in res.rejects[0]["raw"]
    assert res.table.column("docid").to_pylist() == [f"d{i}" for i in range(8) if i != 4]
    assert res.batches_failed == 1
    assert sorted(flaky.calls) == [1, 1, 1, 2, 3, 3], "only the failed batch's rows are retried one by one"


def test_a_unit_gives_the_same_queries_when_redone(hf):
    rows = [(f"d{i}", f"Title {i}", f"Some passage {i} " * (i + 1)) for i in range(9)]
    run = lambda: generate_unit(hf, table(rows), lang="bn", shard=1, template=PAPER, seed=3, batch_size=4).table  # noqa: E731
    assert run().equals(run())


def test_a_unit_is_worked_through_in_chunks_keeping_corpus_order_and_reporting_progress(hf):
    rows = [(f"d{i}", f"T{i}", "text " * (9 - i) if i != 4 else "") for i in range(9)]
    rows[4] = ("d4", "", "")
    seen: list[tuple[int, int]] = []
    res = generate_unit(hf, table(rows), lang="ar", shard=0, template=PAPER, seed=1, batch_size=2, chunk_rows=4,
                        progress=lambda done, total: seen.append((done, total)))
    assert seen == [(4, 9), (8, 9), (9, 9)]
    assert res.table.column("docid").to_pylist() == [f"d{i}" for i in range(9) if i != 4]
    assert [r["key"] for r in res.rejects] == ["d4"] and res.rows_in == 9
