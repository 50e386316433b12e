"""train_dr end to end on a real local Ray (2 CPU workers, gloo) with a tiny BERT, plus its data preparation."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from xqg.config import load_config
from xqg.rundir import RunDir, shard_name
from xqg.train.dr import STAGE, prepare_dr_data, run_train_dr, xqg_pair_examples
from xqg.models.encoder import BiEncoder, tokenize_passages, tokenize_queries
from xqg.train.readers import TrainExample, read_training_file

FAIL_AT = 5  # after the checkpoint of step 4: the restarted workers resume there


@pytest.fixture(scope="module")
def dr_run(ray_local, tiny_bert_dir: str, demo_train_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """One training: 96 examples, batch 16 (6 steps/epoch), 6 epochs, negatives gathered across the 2 workers;
    one worker process dies at step 5 (FailureConfig restarts the group from the step-4 checkpoint)."""
    run_dir = tmp_path_factory.mktemp("dr") / "run"
    config = load_config(None, [
        f"run_dir={run_dir}", f"train_dr.model={tiny_bert_dir}", f"train_dr.train_files=[{demo_train_file}]",
        "train_dr.batch_size=16", "train_dr.epochs=6", "train_dr.lr=0.005",
        "train_dr.checkpoint_every_steps=4", "train_dr.log_every_steps=2", "train_dr.gather_negatives=true",
        f"train_dr.fail_at_step={FAIL_AT}", "train_dr.max_failures=1", "p_max_len=64",
    ])
    start = time.perf_counter()
    summary = run_train_dr(config)
    return config, summary, time.perf_counter() - start


def metrics(run_dir: str) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics" / "train_dr.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_dr_loss_falls_over_the_epochs(dr_run) -> None:
    config, summary, _ = dr_run
    epochs = [r for r in metrics(config.run_dir) if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2, 3, 4, 5]
    assert epochs[-1]["mean_loss"] < 0.85 * epochs[0]["mean_loss"]
    assert summary.extra["last_epoch_loss"] < summary.extra["first_epoch_loss"]
    assert summary.balanced and summary.rows_in == summary.rows_out == 96 and summary.extra["steps"] == 36


def positive_wins(model_dir: str, examples: list[TrainExample]) -> float:
    """Share of (positive, hard negative) pairs where the positive scores higher."""
    from transformers import AutoTokenizer

    model = BiEncoder.from_pretrained(model_dir, "cls", shared=True).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    groups = [ex.positives[:1] + ex.negatives for ex in examples]
    passages = [p for g in groups for p in g]
    with torch.no_grad():
        q = tokenize_queries(tok, [ex.query for ex in examples], 32)
        qv = model.encode(model.query_model, q["input_ids"], q["attention_mask"], q.get("token_type_ids"))
        pv = []
        for i in range(0, len(passages), 256):
            chunk = passages[i : i + 256]
            p = tokenize_passages(tok, [x.title for x in chunk], [x.text for x in chunk], 64)
            pv.append(model.encode(model.query_model, p["input_ids"], p["attention_mask"], p.get("token_type_ids")))
    pv_all = torch.cat(pv)
    wins, start = [], 0
    for i, g in enumerate(groups):
        scores = pv_all[start : start + len(g)] @ qv[i]
        wins.extend((scores[0] > scores[1:]).tolist())
        start += len(g)
    return float(np.mean(wins))


@pytest.mark.slow
def test_trained_encoder_ranks_positives_above_negatives_more_often_than_untrained(
    dr_run, tiny_bert_dir: str, demo_train_file: Path
) -> None:
    config, _, _ = dr_run
    examples = [e for e in read_training_file(str(demo_train_file)) if isinstance(e, TrainExample)]
    before = positive_wins(tiny_bert_dir, examples)
    after = positive_wins(str(Path(config.run_dir) / "models" / "dr"), examples)
    assert after > before + 0.1, (before, after)


@pytest.mark.slow
def test_killed_worker_is_replaced_and_training_resumes_from_the_last_checkpoint(dr_run) -> None:
    config, summary, _ = dr_run
    run_dir = Path(config.run_dir)
    sentinel = json.loads((run_dir / "train" / "dr" / f"fault_injected_step={FAIL_AT}.json").read_text())
    assert sentinel["rank"] == 1 and sentinel["pid"] != os.getpid()
    assert summary.extra["attempts"] == 2 and summary.extra["resumed_from_steps"] == [4]
    rows = metrics(config.run_dir)
    starts = [r for r in rows if r["event"] == "start"]
    assert [r["step"] for r in starts] == [0, 4] and all(r["world_size"] == 2 for r in starts)
    # the log is the trajectory of the final model: step 5 of the dead attempt was dropped, each step once
    steps = [r["step"] for r in rows if r["event"] == "step"]
    assert steps == sorted(set(steps)) and steps[-1] == 36


@pytest.mark.slow
def test_final_bi_encoder_is_a_hugging_face_folder_with_its_encode_settings(dr_run) -> None:
    config, _, _ = dr_run
    out = Path(config.run_dir) / "models" / "dr"
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert (out / "tokenizer.json").is_file() or (out / "vocab.txt").is_file()
    meta = json.loads((out / "xqg_dr.json").read_text())
    assert meta["pooling"] == "cls" and meta["shared_encoder"] is True
    assert (meta["q_max_len"], meta["p_max_len"]) == (32, 64) and meta["passage_format"] == "title_text_pair"
    marker = RunDir(config.run_dir).read_marker(STAGE, "model")
    assert marker["rows_out"] == 96 and marker["world_size"] == 2
    assert marker["examples_per_s"] > 0


@pytest.mark.slow
def test_rerun_of_a_finished_training_does_nothing(dr_run) -> None:
    config, _, _ = dr_run
    model = Path(config.run_dir) / "models" / "dr" / "model.safetensors"
    mtime = model.stat().st_mtime_ns
    again = run_train_dr(config)
    assert again.units_skipped == 1 and again.units_done == 0 and again.rows_out == 96 and again.balanced
    assert model.stat().st_mtime_ns == mtime


# ---- data preparation (no Ray) --------------------------------------------------------------------------


def write_generated(run: RunDir, lang: str, shard: int, rows: list[dict]) -> None:
    table = pa.table({
        "docid": [r["docid"] for r in rows], "lang": [lang] * len(rows),
        "queries": pa.array([r["queries"] for r in rows], type=pa.list_(pa.string())),
    })
    run.write_table(f"generated/lang={lang}/{shard_name(shard)}/part-00000.parquet", table)
    run.mark_done("generate", f"lang={lang}/{shard_name(shard)}", rows_out=len(rows))


@pytest.fixture
def generated_run(make_corpus_run, demo_passage_rows, tmp_path: Path) -> RunDir:
    """A run with a 2-shard corpus (first 20 demo passages) and generated queries in ja (2 shards) and ru."""
    passages = demo_passage_rows[:20]
    run = make_corpus_run(passages, num_shards=2, run_dir=tmp_path / "run")
    d = [p["docid"] for p in passages]
    write_generated(run, "ja", 0, [{"docid": x, "queries": [f"ja q {x} a", f"ja q {x} b"]} for x in d[:10]])
    write_generated(run, "ja", 1, [{"docid": x, "queries": [f"ja q {x}"]} for x in d[10:18]]
                    + [{"docid": "missing-doc", "queries": ["orphan"]}, {"docid": d[19], "queries": ["", "  "]}])
    write_generated(run, "ru", 0, [{"docid": x, "queries": [f"ru q {x}"]} for x in d[:10]])
    return run


def test_xqg_pairs_come_from_generated_queries_with_their_source_passages(generated_run: RunDir) -> None:
    run = generated_run
    examples, rejects, drawn = xqg_pair_examples(run, 30, None, seed=3)  # every generated row exactly once
    assert drawn == 30 and len(examples) == 28
    assert sorted(r["reason"] for r in rejects) == ["no non-empty generated query", "source passage not in corpus shard 1"]
    corpus = {r["docid"]: r for t in run.iter_corpus() for r in t.to_pylist()}
    for ex in examples:
        p = ex.positives[0]
        assert ex.source == "xqg" and ex.negatives == [] and ex.lang in ("ja", "ru")
        assert ex.query.startswith(f"{ex.lang} q {p.docid}") and p.text == corpus[p.docid]["text"]
    again, _, _ = xqg_pair_examples(run, 30, None, seed=3)
    assert [e.query for e in again] == [e.query for e in examples]  # seeded
    only_ru, _, _ = xqg_pair_examples(run, 5, ["ru"], seed=3)
    assert len(only_ru) == 5 and {e.lang for e in only_ru} == {"ru"}


def test_prepared_data_adds_xqg_pairs_by_ratio_and_counts_balance(generated_run: RunDir, demo_train_file: Path) -> None:
    run = generated_run
    config = load_config(None, [
        f"run_dir={run.root}", f"train_dr.train_files=[{demo_train_file}]", "train_dr.xqg_pairs.enabled=true",
        "train_dr.xqg_pairs.ratio=0.25", "train_dr.xqg_pairs.languages=[ru]",
    ])
    data = prepare_dr_data(config, run, has_checkpoints=False)
    assert data.extra == {"training_examples": 96, "xqg_pairs": 24}
    assert (data.rows_in, data.rows_out, data.rejected) == (96 + 24, 96 + 24, 0)
    table = run.read_dir("train/dr_data")
    assert table.num_rows == 120 and table.column("source").to_pylist().count("xqg") == 24
    assert set(table.column("lang").to_pylist()[96:]) == {"ru"}  # 24 draws from 10 rows: with replacement
    # the same settings reuse the prepared file; other settings with checkpoints present are refused
    assert prepare_dr_data(config, run, has_checkpoints=True).rows_out == 120
    changed = load_config(None, [f"run_dir={run.root}", f"train_dr.train_files=[{demo_train_file}]"])
    with pytest.raises(ValueError, match="settings changed"):
        prepare_dr_data(changed, run, has_checkpoints=True)


def test_xqg_pairs_without_generated_queries_is_a_clear_error(make_corpus_run, demo_passage_rows, tmp_path: Path) -> None:
    run = make_corpus_run(demo_passage_rows[:4], num_shards=1, run_dir=tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="run jobs/generate.py first"):
        xqg_pair_examples(run, 3, None, seed=0)


def test_separate_encoders_and_mean_pooling_save_and_load(tiny_bert_dir: str, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = BiEncoder.from_pretrained(tiny_bert_dir, "mean", shared=False)
    assert not model.shared and not any("pooler" in n for n, _ in model.named_parameters())
    with torch.no_grad():
        model.passage_model.embeddings.word_embeddings.weight.mul_(1.5)  # make the two sides differ
    model.save(str(tmp_path / "dr"), tok, {"q_max_len": 32, "p_max_len": 64})
    assert (tmp_path / "dr" / "query" / "model.safetensors").is_file()
    assert (tmp_path / "dr" / "passage" / "tokenizer.json").is_file() or (tmp_path / "dr" / "passage" / "vocab.txt").is_file()
    meta = json.loads((tmp_path / "dr" / "xqg_dr.json").read_text())
    assert meta["shared_encoder"] is False and meta["pooling"] == "mean"
    loaded = BiEncoder.from_pretrained(str(tmp_path / "dr"), "mean", shared=False).eval()
    model.eval()
    q = tokenize_queries(tok, ["Where is Hithal?"], 32)
    p = tokenize_passages(tok, ["Hithal", ""], ["Hithal is a town.", "No title here."], 64)
    with torch.no_grad():
        args = (q["input_ids"], q["attention_mask"], p["input_ids"], p["attention_mask"], None, p["token_type_ids"])
        a, b = model(*args), loaded(*args)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
