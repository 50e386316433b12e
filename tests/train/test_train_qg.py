"""train_qg end to end on a real local Ray (2 CPU workers) with a tiny mT5; the result feeds generation.

Two small trainings: 96 demo examples (Tevatron JSONL) for 22 steps with 12 pairs held out; and gold-paragraph
(gp_squad) files with an eval file, a learning rate that wrecks the model after its first step (so the last
checkpoint is not the best), a worker killed on the way, and the best checkpoint by eval loss kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.hooks.xqg_test_hooks import training_fails_once_at
from xqg.config import ConfigError, load_config
from xqg.rundir import RunDir
from xqg.train.data import held_out_indices
from xqg.train.qg import STAGE, format_prompt, prepare_qg_data, run_train_qg

HELD_OUT, MAX_STEPS, BATCH = 12, 22, 16


@pytest.fixture(scope="module")
def qg_run(ray_local, tiny_mt5_dir: str, demo_train_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """96 demo examples; the run's 7 paper languages are trained, English questions are not; 12 pairs held out;
    22 steps of 16: 72 training pairs make 5 steps an epoch, so 4 epochs and 2 steps of a fifth."""
    run_dir = tmp_path_factory.mktemp("qg") / "run"
    config = load_config(None, [
        f"run_dir={run_dir}", f"train_qg.model={tiny_mt5_dir}", f"train_qg.train_files=[{demo_train_file}]",
        f"train_qg.batch_size={BATCH}", f"train_qg.max_steps={MAX_STEPS}", f"train_qg.eval_examples={HELD_OUT}",
        "train_qg.lr=0.003", "train_qg.max_input_len=128", "train_qg.max_target_len=32",
        "train_qg.checkpoint_every_steps=100", "train_qg.log_every_steps=2",
    ])
    return config, run_train_qg(config)


def english_rows(path: Path) -> int:
    return sum(json.loads(line)["lang"] == "en" for line in path.read_text(encoding="utf-8").splitlines())


def metrics_rows(run_dir: str) -> list[dict]:
    return [json.loads(x) for x in (Path(run_dir) / "metrics" / "train_qg.jsonl").read_text().splitlines()]


def marker(run_dir: str) -> dict:
    return json.loads((Path(run_dir) / "_done" / STAGE / "model.json").read_text())


@pytest.mark.slow
def test_qg_loss_falls_and_counts_add_up(qg_run, demo_train_file: Path) -> None:
    config, summary = qg_run
    rows = metrics_rows(config.run_dir)
    epochs = [r["mean_loss"] for r in rows if r["event"] == "epoch"]
    assert len(epochs) == 4 and epochs[-1] < 0.8 * epochs[0]
    n_en = english_rows(demo_train_file)
    assert 0 < n_en < 96
    # held-out pairs are output (the eval set), not rejects
    assert (summary.rows_in, summary.rows_out, summary.rejected) == (96, 96 - n_en, n_en) and summary.balanced
    assert summary.extra["train_pairs"] + summary.extra["eval_pairs"] == 96 - n_en
    assert "en" not in summary.extra["pairs_per_language"]
    rejects = RunDir(config.run_dir).read_rejects(STAGE)
    assert rejects.num_rows == n_en
    assert all("'en' not in train_qg languages" in r for r in rejects.column("reason").to_pylist())


@pytest.mark.slow
def test_max_steps_stops_at_exactly_that_step_with_epochs_repeated(qg_run, demo_train_file: Path) -> None:
    config, _ = qg_run
    rows = metrics_rows(config.run_dir)
    steps = [r for r in rows if r["event"] == "step"]
    assert steps[-1]["step"] == MAX_STEPS and max(r["step"] for r in rows) == MAX_STEPS
    assert steps[-1]["epoch"] == 4  # the fifth pass over the pairs, cut short
    # no warm-up, linear decay to 0 over max_steps (not over the epochs)
    assert steps[0]["step"] == 2 and steps[0]["lr"] == pytest.approx(0.003 * (MAX_STEPS - 2) / MAX_STEPS)
    assert steps[-1]["lr"] == 0.0
    m = marker(config.run_dir)
    n_train = 96 - english_rows(demo_train_file) - HELD_OUT
    assert m["steps"] == MAX_STEPS and m["max_steps"] == MAX_STEPS and m["train_pairs"] == n_train == 72
    assert m["examples_seen"] == 4 * n_train + 2 * BATCH
    # evaluated at its one checkpoint (the last step): that is the model kept
    evals = [r for r in rows if r["event"] == "eval"]
    assert [r["step"] for r in evals] == [MAX_STEPS] and evals[0]["examples"] == HELD_OUT
    assert m["model_step"] == MAX_STEPS and m["model_eval_loss"] == pytest.approx(evals[0]["eval_loss"], rel=1e-5)


@pytest.mark.slow
def test_held_out_pairs_are_never_trained_on(qg_run) -> None:
    config, _ = qg_run
    data = Path(config.run_dir) / "train" / "qg_data"
    train = pq.read_table(data / "part-00000.parquet").column("query_id").to_pylist()
    held = pq.read_table(data / "eval-00000.parquet").column("query_id").to_pylist()
    assert len(held) == HELD_OUT and len(train) == 72 and not set(train) & set(held)
    start = next(r for r in metrics_rows(config.run_dir) if r["event"] == "start")
    assert (start["examples"], start["eval_examples"]) == (72, HELD_OUT)  # the workers index the training file only


@pytest.mark.slow
def test_saved_generator_loads_and_generates_questions(qg_run, tiny_mt5_dir: str) -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    config, _ = qg_run
    out = Path(config.run_dir) / "models" / "qg"
    model = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    prompt = format_prompt(config.generate.template, "ja", "Hithal", "Hithal is a market town on a river.", 128)
    assert prompt.startswith("Generate a Japanese question for this passage: Hithal Hithal is")
    batch = tok([prompt], return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**batch, do_sample=True, top_k=10, num_return_sequences=2, max_new_tokens=12)
    assert ids.shape[0] == 2 and any(t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True))
    # the saved weights are the trained ones, not the base model's
    base = AutoModelForSeq2SeqLM.from_pretrained(tiny_mt5_dir)
    assert not torch.equal(base.lm_head.weight, model.lm_head.weight)


@pytest.mark.slow
def test_trained_generator_is_picked_up_by_the_generation_stage(qg_run, make_corpus_run, demo_passage_rows) -> None:
    from xqg.generate import stage

    config, _ = qg_run
    run = make_corpus_run(demo_passage_rows[:6], num_shards=1, run_dir=config.run_dir)
    gen_config = load_config(None, [
        f"run_dir={config.run_dir}", "generate.backend=hf", "generate.num_queries=2", "generate.max_new_tokens=8",
        "generate.max_input_len=128", "generate.batch_size=8", "generate.concurrency=1",
    ])
    summary = stage.run_generate(gen_config, languages=["ja"])
    assert summary.balanced and (summary.rows_in, summary.rows_out, summary.rejected) == (6, 6, 0)
    table = run.read_dir("generated/lang=ja")
    assert sorted(table["docid"].to_pylist()) == sorted(r["docid"] for r in demo_passage_rows[:6])
    queries = table.column("queries").to_pylist()
    # n queries per row; a tiny generator may end a sample at once (an empty query), but not most samples
    assert all(len(q) == 2 for q in queries) and sum(bool(x.strip()) for q in queries for x in q) >= 6, queries


# ---- gold-paragraph files, an eval file, the best checkpoint by eval loss ----------------------------------


def gp_squad_files(demo_train_file: Path, out: Path) -> tuple[Path, Path, int]:
    """(train file, eval file, training qas) in XOR-TyDi's gold-paragraph layout, from the demo examples.

    Training: the 84 non-English demo questions, 3 of them repeated under their id (duplicates). Eval: 8 questions
    on the same passages, and one more that reuses a training id (a duplicate, as DSI-QG's shared id set makes it).
    """
    rows = [json.loads(x) for x in demo_train_file.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r["lang"] != "en"]

    def element(r: dict, question: str, qid: str) -> dict:
        p = r["positive_passages"][0]
        return {"title": p["title"], "paragraphs": [{"context": p["text"], "qas": [
            {"id": qid, "question": question, "answers": r.get("answers", []), "lang": r["lang"]}]}]}

    train = [element(r, r["query"], r["query_id"]) for r in rows]
    train += [element(r, r["query"] + " (again)", r["query_id"]) for r in rows[:3]]
    english = "the town was established in the old river valley when the stone bridge was built across it"
    evals = [element(r, english, f"eval-{i}") for i, r in enumerate(rows[:8])]
    evals.append(element(rows[10], english, rows[10]["query_id"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "gp_squad_train_data.json").write_text(json.dumps({"data": train, "version": "1.1"}), encoding="utf-8")
    (out / "gp_squad_dev_data.json").write_text(json.dumps({"data": evals}), encoding="utf-8")
    return out / "gp_squad_train_data.json", out / "gp_squad_dev_data.json", len(train)


@pytest.fixture(scope="module")
def best_run(ray_local, tiny_mt5_dir: str, demo_train_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """4 steps of 8 at lr 2.0, a checkpoint and an evaluation every step, the last worker killed once at step 3.

    Adam moves every weight by ~lr per step: the first step already wrecks the from-scratch mT5 (eval loss ~57), the
    next ones blow its weights up further (> 75 at every later step), so step 1 is the best and the last is not.
    """
    root = tmp_path_factory.mktemp("qg-best")
    train, dev, n_qas = gp_squad_files(demo_train_file, root / "data")
    config = load_config(None, [
        f"run_dir={root / 'run'}", f"train_qg.model={tiny_mt5_dir}", f"train_qg.train_files=[{train}]",
        f"train_qg.eval_files=[{dev}]", "train_qg.batch_size=8", "train_qg.max_steps=4", "train_qg.lr=2.0",
        "train_qg.max_input_len=64", "train_qg.max_target_len=24", "train_qg.checkpoint_every_steps=1",
        "train_qg.log_every_steps=1",
    ])
    with training_fails_once_at(3):
        return config, run_train_qg(config), n_qas


@pytest.mark.slow
def test_the_checkpoint_with_the_lowest_eval_loss_is_the_model_kept(best_run) -> None:
    config, summary, n_qas = best_run
    run_dir = Path(config.run_dir)
    rows = metrics_rows(config.run_dir)
    evals = {r["step"]: r["eval_loss"] for r in rows if r["event"] == "eval"}
    assert sorted(evals) == [1, 2, 3, 4]
    best = min(evals, key=lambda k: (evals[k], k))
    assert best == 1 and evals[4] > evals[best]  # the scenario: the last checkpoint is not the best one
    m = marker(config.run_dir)
    assert m["model_step"] == best and m["model_eval_loss"] == pytest.approx(evals[best], rel=1e-5)
    assert m["steps"] == 4 and m["final_eval_loss"] == pytest.approx(evals[4], rel=1e-5)
    assert summary.extra["model_step"] == best
    # the saved model is that checkpoint's, not the last one's
    kept = (run_dir / "models" / "qg" / "model.safetensors").read_bytes()
    assert kept == (run_dir / "train" / "qg" / f"step={best:08d}" / "model" / "model.safetensors").read_bytes()
    assert kept != (run_dir / "train" / "qg" / "step=00000004" / "model" / "model.safetensors").read_bytes()
    # the worker killed at step 3 resumed from step 2, with the best so far (step 1) carried in the checkpoint
    assert m["resumed_from_steps"] == [2]
    # counts: every qa of both files is a pair or a reject; the duplicates are rejects with the reason
    assert summary.balanced and summary.rows_in == n_qas + 9
    reasons = RunDir(config.run_dir).read_rejects(STAGE).column("reason").to_pylist()
    assert reasons.count("duplicate question id") == 4 and summary.rejected == 4
    assert (m["train_pairs"], m["eval_pairs"]) == (n_qas - 3, 8)


@pytest.mark.slow
def test_a_finished_best_by_eval_training_is_not_redone(best_run) -> None:
    config, _, _ = best_run
    again = run_train_qg(config)
    assert again.message.startswith("already trained") and again.extra["model"].endswith("models/qg")


def test_held_out_split_is_seeded_and_disjoint() -> None:
    a = held_out_indices(100, 10, 0.0, seed=7)
    assert np.array_equal(a, held_out_indices(100, 10, 0.0, seed=7)) and len(set(a.tolist())) == 10
    assert not np.array_equal(a, held_out_indices(100, 10, 0.0, seed=8))
    assert len(held_out_indices(100, 0, 0.05, seed=7)) == 5 and len(held_out_indices(10, 0, 0.01, seed=7)) == 1
    assert len(held_out_indices(100, 0, 0.0, seed=7)) == 0
    with pytest.raises(ValueError, match="cannot hold out"):
        held_out_indices(5, 5, 0.0, seed=7)


def test_eval_set_options_are_exclusive_and_defaults_follow_dsi_qg() -> None:
    with pytest.raises(ConfigError, match="one of eval_files, eval_examples, eval_ratio"):
        load_config(None, ["train_qg.eval_files=[dev.json]", "train_qg.eval_examples=10"])
    cfg = load_config(None, []).train_qg
    assert (cfg.max_input_len, cfg.lr, cfg.warmup_ratio, cfg.batch_size, cfg.max_steps) == (128, 1e-4, 0.0, 128, 2000)
    assert cfg.checkpoint_every_steps == 100 and not cfg.has_eval


def test_eval_file_pairs_with_training_ids_are_rejected_and_splits_are_disjoint(
    demo_train_file: Path, tmp_path: Path,
) -> None:
    train, dev, n_qas = gp_squad_files(demo_train_file, tmp_path / "data")
    config = load_config(None, [
        f"run_dir={tmp_path / 'run'}", f"train_qg.train_files=[{train}]", f"train_qg.eval_files=[{dev}]",
    ])
    data = prepare_qg_data(config, RunDir(config.run_dir), has_checkpoints=False)
    assert (data.rows_in, data.rows_out, data.rejected) == (n_qas + 9, n_qas - 3 + 8, 4)
    train_ids = set(pq.read_table(data.uri).column("query_id").to_pylist())
    eval_ids = pq.read_table(data.eval_uri).column("query_id").to_pylist()
    assert len(eval_ids) == 8 and not train_ids & set(eval_ids)
    units = RunDir(config.run_dir).read_rejects(STAGE).column("unit").to_pylist()
    assert sorted(units) == ["eval_file=00000"] + ["file=00000"] * 3
