"""train_qg end to end on a real local Ray (2 CPU workers) with a tiny mT5; the result feeds generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xqg.config import load_config
from xqg.rundir import RunDir
from xqg.train.qg import STAGE, format_prompt, run_train_qg


@pytest.fixture(scope="module")
def qg_run(ray_local, tiny_mt5_dir: str, demo_train_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """96 demo examples; the run's 7 paper languages are trained, English questions are not."""
    run_dir = tmp_path_factory.mktemp("qg") / "run"
    config = load_config(None, [
        f"run_dir={run_dir}", f"train_qg.model={tiny_mt5_dir}", f"train_qg.train_files=[{demo_train_file}]",
        "train_qg.batch_size=16", "train_qg.epochs=4", "train_qg.lr=0.003", "train_qg.max_input_len=128",
        "train_qg.max_target_len=32", "train_qg.checkpoint_every_steps=100", "train_qg.log_every_steps=2",
    ])
    return config, run_train_qg(config)


def english_rows(path: Path) -> int:
    return sum(json.loads(line)["lang"] == "en" for line in path.read_text(encoding="utf-8").splitlines())


@pytest.mark.slow
def test_qg_loss_falls_and_counts_add_up(qg_run, demo_train_file: Path) -> None:
    config, summary = qg_run
    rows = [json.loads(x) for x in (Path(config.run_dir) / "metrics" / "train_qg.jsonl").read_text().splitlines()]
    epochs = [r["mean_loss"] for r in rows if r["event"] == "epoch"]
    assert len(epochs) == 4 and epochs[-1] < 0.8 * epochs[0]
    n_en = english_rows(demo_train_file)
    assert 0 < n_en < 96
    assert (summary.rows_in, summary.rows_out, summary.rejected) == (96, 96 - n_en, n_en) and summary.balanced
    assert "en" not in summary.extra["pairs_per_language"]
    rejects = RunDir(config.run_dir).read_rejects(STAGE)
    assert rejects.num_rows == n_en
    assert all("'en' not in train_qg languages" in r for r in rejects.column("reason").to_pylist())


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
    stage = pytest.importorskip("xqg.generate.stage")
    config, _ = qg_run
    run = make_corpus_run(demo_passage_rows[:6], num_shards=1, run_dir=config.run_dir)
    gen_config = load_config(None, [
        f"run_dir={config.run_dir}", "generate.backend=hf", "generate.num_queries=2", "generate.max_new_tokens=8",
        "generate.max_input_len=128", "generate.batch_size=8", "generate.concurrency=1",
    ])
    summary = stage.run_generate(gen_config, languages=["ja"])
    assert summary.balanced and summary.rows_out + summary.rejected == 6
    table = run.read_dir("generated/lang=ja")
    assert table.num_rows == summary.rows_out and all(len(q) == 2 for q in table.column("queries").to_pylist())
