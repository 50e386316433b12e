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


# --- item 7: queries are stored in sampling order ----------------------------------------------------------


class SortedFakeBackend(GeneratorBackend):
    """No model: each prompt's n "samples" are i.i.d. Uniform(0, 1) scores drawn from its row seed, returned
    sorted by score (best first) like CTranslate2's num_hypotheses; the text is the score."""

    name = "sorted-fake"

    def __init__(self, n: int) -> None:  # noqa: D107 - loads nothing
        self.sampling = SamplingSettings(num_queries=n, max_input_len=16)

    def tokenize(self, prompts, truncate=True):
        return [[len(p)] for p in prompts]

    def generate(self, token_ids, seeds):
        import random

        n = self.sampling.num_queries
        rngs = [random.Random(seed) for seed in seeds]
        return [[f"{s:.9f}" for s in sorted((rng.random() for _ in range(n)), reverse=True)] for rng in rngs]


def fake_rows(count: int) -> pa.Table:
    return table([(f"p{i}", f"T{i}", f"passage {i}") for i in range(count)])


def chi_square_uniform(counts: list[int]) -> float:
    expected = sum(counts) / len(counts)
    return sum((c - expected) ** 2 / expected for c in counts)


def test_stored_order_puts_the_top_scored_sample_at_a_uniform_position():
    n, rows = 5, 3000
    res = generate_unit(SortedFakeBackend(n), fake_rows(rows), lang="ja", shard=0, template=PAPER, seed=11, batch_size=64)
    stored = [[float(q) for q in qs] for qs in res.table.column("queries").to_pylist()]
    assert len(stored) == rows and all(len(qs) == n for qs in stored)
    top_at = [0] * n
    first_rank = [0] * n  # rank (0 = best) of the stored first query among its row's n samples
    for qs in stored:
        top_at[qs.index(max(qs))] += 1
        first_rank[sorted(qs, reverse=True).index(qs[0])] += 1
    # chi-square with n - 1 = 4 degrees of freedom: 18.47 is the 0.1% critical value; backend order would give 12,000
    assert chi_square_uniform(top_at) < 18.47, top_at
    assert chi_square_uniform(first_rank) < 18.47, first_rank
    assert sum(qs == sorted(qs, reverse=True) for qs in stored) < rows / 20  # sorted rows: 1/120 by chance


def test_the_first_k_stored_queries_are_distributed_like_k_fresh_samples():
    from scipy import stats

    n, rows = 5, 3000
    res = generate_unit(SortedFakeBackend(n), fake_rows(rows), lang="fi", shard=3, template=PAPER, seed=5, batch_size=50)
    stored = [[float(q) for q in qs] for qs in res.table.column("queries").to_pylist()]
    # A fresh sample is Uniform(0, 1); the backend's first is the max of 5 (Beta(5, 1)), its last the min.
    for k in (1, 2, 4):
        values = [v for qs in stored for v in qs[:k]]
        assert stats.kstest(values, "uniform").pvalue > 0.001, k
        # and the best of the first k is distributed like the best of k fresh samples: Beta(k, 1)
        assert stats.kstest([max(qs[:k]) for qs in stored], stats.beta(k, 1).cdf).pvalue > 0.001, k
    assert stats.kstest([qs[0] for qs in stored], stats.beta(n, 1).cdf).pvalue < 1e-10  # not the backend's first


def test_stored_order_is_deterministic_and_independent_of_batching_and_chunking():
    backend = SortedFakeBackend(5)
    run = lambda **kw: generate_unit(backend, fake_rows(50), lang="ko", shard=2, template=PAPER, seed=3, **kw).table  # noqa: E731
    first = run(batch_size=8)
    assert first.equals(run(batch_size=8))
    assert first.equals(run(batch_size=3, chunk_rows=7))
    other_seed = generate_unit(backend, fake_rows(50), lang="ko", shard=2, template=PAPER, seed=4, batch_size=8).table
    assert not first.equals(other_seed)
    # the stored list is the backend's list reordered, nothing lost or duplicated
    raw = backend.generate([[0]] * 50, [stable_seed(3, "ko", f"p{i}") for i in range(50)])
    assert [sorted(q) for q in first.column("queries").to_pylist()] == [sorted(q) for q in raw]


def test_sampling_order_is_a_fixed_permutation_per_row_seed():
    from xqg.generate.prompts import in_sampling_order, sampling_order

    assert sampling_order(12345, 5) == sampling_order(12345, 5)
    assert sorted(sampling_order(12345, 5)) == list(range(5))
    assert len({tuple(sampling_order(s, 5)) for s in range(2000)}) == 120  # every permutation of 5 occurs
    assert in_sampling_order(["a", "b", "c"], 7) == ["abc"[j] for j in sampling_order(7, 3)]
    assert in_sampling_order([], 7) == [] and in_sampling_order(["x"], 7) == ["x"]


class RecordingBackend(GeneratorBackend):
    """Wraps a real backend and keeps the lists it returned, keyed by prompt token ids."""

    name = "recording"

    def __init__(self, inner: GeneratorBackend) -> None:  # noqa: D107 - wraps, loads nothing
        self.inner, self.sampling, self.tokenizer = inner, inner.sampling, inner.tokenizer
        self.encoder_decoder, self.raw = inner.encoder_decoder, {}

    def tokenize(self, prompts, truncate=True):
        return self.inner.tokenize(prompts, truncate)

    def begin_unit(self, seed):
        self.inner.begin_unit(seed)

    def generate(self, token_ids, seeds):
        out = self.inner.generate(token_ids, seeds)
        self.raw.update({tuple(ids): qs for ids, qs in zip(token_ids, out)})
        return out


def test_ctranslate2_returns_samples_sorted_by_score_and_the_unit_stores_them_in_sampling_order(
    tiny_mt5_dir, tmp_path_factory, demo_passage_rows
):
    import ctranslate2

    from xqg.generate.convert import ensure_ct2_model

    n = 5
    path = ensure_ct2_model(tiny_mt5_dir, tmp_path_factory.mktemp("ct2") / "tiny", "float32")
    sampling = SamplingSettings(num_queries=n, top_k=10, max_new_tokens=8, max_input_len=64)
    ct2 = make_backend("ctranslate2", tiny_mt5_dir, sampling, ct2_path=path, compute_type="float32", threads=1)

    # The premise: CTranslate2 hands back the num_hypotheses samples sorted by score, best first.
    translator = ctranslate2.Translator(path, device="cpu", compute_type="float32", intra_threads=1)
    ctranslate2.set_random_seed(1)
    prompts = [build_prompt(PAPER, "ar", r["title"], r["text"]) for r in demo_passage_rows[:20]]
    tokens = [ct2.tokenizer.convert_ids_to_tokens(ids) for ids in ct2.tokenize(prompts)]
    results = translator.translate_batch(tokens, beam_size=1, num_hypotheses=n, sampling_topk=10,
                                         max_decoding_length=8, return_scores=True)
    assert all(r.scores == sorted(r.scores, reverse=True) for r in results)

    rows = demo_passage_rows[:120]
    recording = RecordingBackend(ct2)
    res = generate_unit(recording, table([(r["docid"], r["title"], r["text"]) for r in rows]), lang="ar", shard=0,
                        template=PAPER, seed=1, batch_size=16)
    stored = res.table.column("queries").to_pylist()
    ids = prompt_token_ids(ct2, PAPER, "ar", [r["title"] for r in rows], [r["text"] for r in rows])
    top_at, distinct = [0] * n, 0
    for qs, row_ids in zip(stored, ids):
        raw = recording.raw[tuple(row_ids)]
        assert sorted(qs) == sorted(raw)  # the same samples, reordered
        if len(set(raw)) == n:  # the top-scored sample is raw[0]; find where it was stored
            distinct += 1
            top_at[qs.index(raw[0])] += 1
    assert distinct >= 100
    # Backend order would put the top-scored sample first in every row; sampling order puts it first in ~1/5.
    assert top_at[0] < 0.4 * distinct, top_at
    assert max(top_at) < 0.4 * distinct and min(top_at) > 0, top_at
    # and a redone unit stores the same order
    again = generate_unit(ct2, table([(r["docid"], r["title"], r["text"]) for r in rows]), lang="ar", shard=0,
                          template=PAPER, seed=1, batch_size=16)
    assert again.table.equals(res.table)


# --- per-row deterministic generation ------------------------------------------------------------


class FirstBatchFails(GeneratorBackend):
    """The real backend, except that its first multi-row batch fails: those rows are retried one by one."""

    name = "first-batch-fails"

    def __init__(self, inner: GeneratorBackend) -> None:  # noqa: D107 - wraps, loads nothing
        self.inner, self.sampling, self.tokenizer = inner, inner.sampling, inner.tokenizer
        self.encoder_decoder, self.failed = inner.encoder_decoder, False

    def tokenize(self, prompts, truncate=True):
        return self.inner.tokenize(prompts, truncate)

    def begin_unit(self, seed):
        self.inner.begin_unit(seed)

    def generate(self, token_ids, seeds):
        if len(token_ids) > 1 and not self.failed:
            self.failed = True
            raise RuntimeError("CUDA out of memory (simulated)")
        return self.inner.generate(token_ids, seeds)


@pytest.mark.parametrize("model", ["seq2seq", "causal"])
def test_hf_gives_a_passage_the_same_queries_whatever_the_batching_or_retry_path(
    model, tiny_mt5_dir, tiny_decoder_dir, demo_passage_rows,
):
    path = tiny_mt5_dir if model == "seq2seq" else tiny_decoder_dir
    b = make_backend("hf", path, SamplingSettings(num_queries=3, max_new_tokens=6, max_input_len=48), threads=1)
    rows = table([(r["docid"], r["title"], r["text"]) for r in demo_passage_rows[:10]])

    def run(backend: GeneratorBackend = b, **kw):
        return generate_unit(backend, rows, lang="te", shard=0, template=PAPER, seed=9, **kw)

    reference = run(batch_size=8).table
    queries = reference.column("queries").to_pylist()
    assert len({tuple(q) for q in queries}) >= 5 and any(x for q in queries for x in q), "samples must differ by row"
    assert run(batch_size=1).table.equals(reference)
    assert run(batch_size=3, chunk_rows=4).table.equals(reference)
    retried = FirstBatchFails(b)
    res = run(retried, batch_size=8)
    assert retried.failed and res.batches_failed == 1 and res.table.equals(reference)
    # a passage's queries are its own: generated among other passages or alone, the same
    alone = generate_unit(b, rows.slice(4, 1), lang="te", shard=5, template=PAPER, seed=9, batch_size=8).table
    assert alone.column("queries").to_pylist() == reference.column("queries").to_pylist()[4:5]
    other_seed = generate_unit(b, rows, lang="te", shard=0, template=PAPER, seed=10, batch_size=8).table
    assert other_seed.column("queries").to_pylist() != reference.column("queries").to_pylist()


def test_row_sampler_draws_top_k_with_temperature_from_each_rows_own_stream():
    import torch

    from xqg.generate.backends.hf import RowSampler

    vocab, k = 50, 5
    logits = torch.randn(1, vocab, generator=torch.Generator().manual_seed(0)).repeat(2, 1)
    sampler = RowSampler([1, 2], 1, top_k=k, temperature=0.5, max_steps=4000)
    top = set(logits[0].topk(k).indices.tolist())
    counts = torch.zeros(vocab)
    picks = []
    for step in range(4000):
        out = sampler(torch.zeros(2, 3 + step, dtype=torch.long), logits)
        assert ((out == 0).sum(-1) == 1).all() and torch.isinf(out).sum() == 2 * (vocab - 1)
        tok = out.argmax(-1)
        picks.append(tok.tolist())
        counts[tok[0]] += 1
    assert set(counts.nonzero().flatten().tolist()) <= top  # only top-k tokens
    want = torch.softmax(logits[0] / 0.5, -1)[sorted(top)]
    want = want / want.sum()
    got = counts[sorted(top)] / 4000
    assert torch.allclose(got, want, atol=0.03), (got, want)  # the top-k softmax at that temperature
    assert [p[0] for p in picks] != [p[1] for p in picks]  # same logits, other row seed: other draws
    again = RowSampler([1, 2], 1, top_k=k, temperature=0.5, max_steps=4000)
    replay = [again(torch.zeros(2, 3 + s, dtype=torch.long), logits).argmax(-1).tolist() for s in range(50)]
    assert replay == picks[:50]
