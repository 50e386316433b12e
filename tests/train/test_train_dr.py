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

from tests.hooks.xqg_test_hooks import training_fails_once_at
from xqg.config import load_config
from xqg.rundir import RunDir, shard_name
from xqg.train.dr import STAGE, prepare_dr_data, run_train_dr, xqg_pair_examples
from xqg.models.encoder import BiEncoder, tokenize_passages, tokenize_queries
from xqg.train.readers import TrainExample, read_training_file

FAIL_AT = 5  # after the checkpoint of step 4: the restarted workers resume there


@pytest.fixture(scope="module")
def dr_run(ray_local, tiny_bert_dir: str, demo_train_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """One training with the default format and negatives (Tevatron's "title text" passages, negatives gathered
    across the 2 workers): 96 examples, batch 16 (6 steps/epoch), 6 epochs;
    one worker process dies at step 5 (FailureConfig restarts the group from the step-4 checkpoint)."""
    run_dir = tmp_path_factory.mktemp("dr") / "run"
    config = load_config(None, [
        f"run_dir={run_dir}", f"train_dr.model={tiny_bert_dir}", f"train_dr.train_files=[{demo_train_file}]",
        "train_dr.batch_size=16", "train_dr.epochs=6", "train_dr.lr=0.005",
        "train_dr.checkpoint_every_steps=4", "train_dr.log_every_steps=2",
        "train_dr.max_failures=1", "p_max_len=64",
    ])
    start = time.perf_counter()
    with training_fails_once_at(FAIL_AT):
        summary = run_train_dr(config)
    return config, summary, time.perf_counter() - start


def metrics(run_dir: str) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics" / "train_dr.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_dr_loss_falls_over_the_epochs(dr_run) -> None:
    config, summary, _ = dr_run
    epochs = [r for r in metrics(config.run_dir) if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2, 3, 4, 5]
    assert epochs[-1]["mean_loss"] < 0.9 * epochs[0]["mean_loss"]  # measured 0.88 with per-step dropout seeds
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
    assert (meta["q_max_len"], meta["p_max_len"]) == (32, 64) and meta["passage_format"] == "title_text_concat"
    marker = RunDir(config.run_dir).read_marker(STAGE, "model")
    assert marker["rows_out"] == 96 and marker["world_size"] == 2
    assert marker["examples_per_s"] > 0


@pytest.mark.slow
def test_encoding_the_trained_model_uses_its_recorded_format_and_refuses_another(dr_run) -> None:
    from xqg.config import ConfigError
    from xqg.encode.model import load_encoder_spec

    config, _, _ = dr_run
    run = RunDir(config.run_dir)
    spec = load_encoder_spec(config, run)
    assert spec.passage_format == "title_text_concat" and spec.p_max_len == 64
    same = load_config(None, [f"run_dir={config.run_dir}", "encode.passage_format=title_text_concat"])
    assert load_encoder_spec(same, run).passage_format == "title_text_concat"
    other = load_config(None, [f"run_dir={config.run_dir}", "encode.passage_format=title_text_pair"])
    with pytest.raises(ConfigError, match="title_text_pair.*title_text_concat"):
        load_encoder_spec(other, run)


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
    examples, rejects, drawn, excluded = xqg_pair_examples(run, 30, None, seed=3)  # every generated row exactly once
    assert drawn == 30 and len(examples) == 28 and excluded == 0
    assert sorted(r["reason"] for r in rejects) == ["no non-empty generated query", "source passage not in corpus shard 1"]
    corpus = {r["docid"]: r for t in run.iter_corpus() for r in t.to_pylist()}
    for ex in examples:
        p = ex.positives[0]
        assert ex.source == "xqg" and ex.negatives == [] and ex.lang in ("ja", "ru")
        assert ex.query.startswith(f"{ex.lang} q {p.docid}") and p.text == corpus[p.docid]["text"]
    again, _, _, _ = xqg_pair_examples(run, 30, None, seed=3)
    assert [e.query for e in again] == [e.query for e in examples]  # seeded
    only_ru, _, _, _ = xqg_pair_examples(run, 5, ["ru"], seed=3)
    assert len(only_ru) == 5 and {e.lang for e in only_ru} == {"ru"}


def test_prepared_data_adds_xqg_pairs_by_ratio_and_counts_balance(generated_run: RunDir, demo_train_file: Path) -> None:
    run = generated_run
    config = load_config(None, [
        f"run_dir={run.root}", f"train_dr.train_files=[{demo_train_file}]", "train_dr.xqg_pairs.enabled=true",
        "train_dr.xqg_pairs.ratio=0.25", "train_dr.xqg_pairs.languages=[ru]",
    ])
    data = prepare_dr_data(config, run, has_checkpoints=False)
    assert data.extra == {"training_examples": 96, "xqg_pairs": 24, "xqg_pairs_excluded_query_set_rows": 0}
    assert (data.rows_in, data.rows_out, data.rejected) == (96 + 24, 96 + 24, 0)
    table = run.read_dir("train/dr_data")
    assert table.num_rows == 120 and table.column("source").to_pylist().count("xqg") == 24
    assert set(table.column("lang").to_pylist()[96:]) == {"ru"}  # 24 draws from 10 rows: with replacement
    # the same settings reuse the prepared file; other settings with checkpoints present are refused
    assert prepare_dr_data(config, run, has_checkpoints=True).rows_out == 120
    changed = load_config(None, [f"run_dir={run.root}", f"train_dr.train_files=[{demo_train_file}]"])
    with pytest.raises(ValueError, match="settings changed"):
        prepare_dr_data(changed, run, has_checkpoints=True)


def write_query_set(run: RunDir, name: str, docids: list[str]) -> None:
    """An ingested query set whose questions have the given gold passages."""
    run.write_table(f"queries/{name}/part-00000.parquet", pa.table({
        "qid": [f"{name}{i}" for i in range(len(docids))], "docids": pa.array([[d] for d in docids], pa.list_(pa.string())),
    }))
    run.mark_done("ingest", f"queries={name}", rows_out=len(docids), docids=docids)


def test_xqg_pairs_never_come_from_the_query_sets_passages(generated_run: RunDir, demo_train_file: Path) -> None:
    run = generated_run
    d = [r["docid"] for t in run.iter_corpus() for r in t.to_pylist()]
    dev, heldout = d[0:3] + d[12:14], d[5:7]
    write_query_set(run, "dev", dev)
    write_query_set(run, "heldout", heldout)
    config = load_config(None, [
        f"run_dir={run.root}", f"train_dr.train_files=[{demo_train_file}]", "train_dr.xqg_pairs.enabled=true",
        "train_dr.xqg_pairs.ratio=1", "queries=[{name: dev, path: d.jsonl}, {name: heldout, path: h.jsonl}]",
    ])
    data = prepare_dr_data(config, run, has_checkpoints=False)
    # ja has rows for d[0:18] (+2 rejected rows), ru for d[0:10]: 5 + 2 ja rows and 3 + 2 ru rows are left out
    assert data.extra == {"training_examples": 96, "xqg_pairs": 96 - len(run.read_rejects(STAGE)),
                          "xqg_pairs_excluded_query_set_rows": 12}
    assert data.rows_in == data.rows_out + data.rejected
    table = run.read_dir("train/dr_data")
    pairs = [p[0]["docid"] for p, src in zip(table.column("positives").to_pylist(), table.column("source").to_pylist())
             if src == "xqg"]
    assert len(pairs) == 96 - len(run.read_rejects(STAGE)) and not set(pairs) & set(dev + heldout)
    assert set(pairs) == set(d[3:5] + d[7:12] + d[14:18])  # every other passage with a generated query is drawn
    # another held-out set is another exclusion: the prepared data is redone, not reused
    write_query_set(run, "heldout", d[7:9])
    again = prepare_dr_data(config, run, has_checkpoints=False)
    assert again.extra["xqg_pairs_excluded_query_set_rows"] == 12
    pairs = [p[0]["docid"] for p, src in zip(run.read_dir("train/dr_data").column("positives").to_pylist(),
                                             run.read_dir("train/dr_data").column("source").to_pylist()) if src == "xqg"]
    assert not set(pairs) & set(dev + d[7:9]) and set(d[5:7]) & set(pairs)


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
        args = (q["input_ids"], q["attention_mask"], p["input_ids"], p["attention_mask"], None, p.get("token_type_ids"))
        a, b = model(*args), loaded(*args)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)


# ---- the default settings: Tevatron's passages, and a global batch whose loss does not depend on the workers


def default_task(tiny_bert_dir: str, demo_train_file: Path, run_dir: Path, batch: int, *overrides: str):
    """(config, DRTask) of the default train_dr settings on the demo data, as a Ray Train worker builds it."""
    from xqg.train.dr import DRTask, dr_task_args

    config = load_config(None, [
        f"run_dir={run_dir}", f"train_dr.model={tiny_bert_dir}", f"train_dr.train_files=[{demo_train_file}]",
        f"train_dr.batch_size={batch}", "p_max_len=64", *overrides,
    ])
    data = prepare_dr_data(config, RunDir(str(run_dir)), has_checkpoints=False)
    args = dr_task_args(config, tiny_bert_dir)
    return config, DRTask(data_uri=data.uri, model_path=tiny_bert_dir, trust_remote_code=False, **args)


def test_default_training_batch_has_tevatron_passages_without_token_types(
    tiny_bert_dir: str, demo_train_file: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    config, task = default_task(tiny_bert_dir, demo_train_file, tmp_path / "run", 4)
    assert config.train_dr.passage_format == "title_text_concat" and task.meta["passage_format"] == "title_text_concat"
    batch = task.make_batch(np.arange(4), epoch=0)
    assert "p_types" not in batch and "q_types" not in batch, "one segment each: no token type ids, as Tevatron"
    rows = task.table.take(pa.array(np.arange(4))).to_pylist()
    passages = [task.sample_passages(r, i, 0) for i, r in enumerate(rows)]
    texts = [f"{p['title']} {p['text']}".strip() for pos, negs in passages for p in [pos, *negs]]
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    want = tok(texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
    assert torch.equal(batch["p_ids"], want["input_ids"]) and torch.equal(batch["p_mask"], want["attention_mask"])
    sep = tok.sep_token_id
    assert ((batch["p_ids"] == sep).sum(1) == 1).all(), "[CLS] title text [SEP]: one segment"
    # the other formats stay available: a pair has two segments and its segment ids
    _, pair_task = default_task(
        tiny_bert_dir, demo_train_file, tmp_path / "pair", 4, "train_dr.passage_format=title_text_pair"
    )
    pair = pair_task.make_batch(np.arange(4), epoch=0)
    assert "p_types" in pair and int(pair["p_types"].max()) == 1 and "q_types" not in pair
    assert pair_task.meta["passage_format"] == "title_text_pair"


def test_the_task_built_from_the_default_config_asks_the_loss_to_gather_negatives(
    tiny_bert_dir: str, demo_train_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's task hands the loss gather=True, so negatives cannot silently stay per worker (the gathered
    loss on two gloo processes: tests/train/test_loss.py; the whole training: the slow test below)."""
    from xqg.train import loss

    asked: list[object] = []
    real = loss.batch_loss

    def recording(*args: object, **kwargs: object) -> object:
        asked.append(kwargs.get("gather"))
        return real(*args, **kwargs)

    monkeypatch.setattr(loss, "batch_loss", recording)
    _, task = default_task(tiny_bert_dir, demo_train_file, tmp_path / "run", 4)
    task.compute_loss(task.build_model(None), task.make_batch(np.arange(4), epoch=0), torch.device("cpu"))
    assert asked == [True]


GLOBAL_BATCH = 7  # split 4 + 3 over two workers (np.array_split), uneven on purpose


def _ddp_worker(rank: int, port: int, model_dir: str, train_file: str, run_dir: str, out_dir: str) -> None:
    """One of two gloo workers: the default DRTask on its part of global batch 0, a DDP backward, its results saved."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from xqg.train.order import epoch_order, local_indices

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        _, task = default_task(model_dir, Path(train_file), Path(run_dir), GLOBAL_BATCH)
        model = task.build_model(None).eval().double()  # eval: no dropout; double: see the test
        ddp = DistributedDataParallel(model, find_unused_parameters=task.find_unused_parameters)
        order = epoch_order(task.num_examples(), task.seed, 0)
        batch = task.make_batch(local_indices(order, 0, GLOBAL_BATCH, rank, 2), 0)
        loss, value = task.compute_loss(ddp, batch, torch.device("cpu"))
        loss.backward()  # DDP averages the ranks' gradients
        grads = {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}
        np.savez(Path(out_dir) / f"grads{rank}.npz", **grads)
        task.gather = False  # the old semantics: each worker's queries only against its own passages
        with torch.no_grad():
            _, local = task.compute_loss(ddp, batch, torch.device("cpu"))
        np.save(Path(out_dir) / f"loss{rank}.npy", np.array([value.item(), local.item()]))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes importing torch + transformers: a minute on a busy 2-core machine
def test_default_two_workers_give_the_loss_and_gradients_of_one_worker_on_the_global_batch(
    tiny_bert_dir: str, demo_train_file: Path, tmp_path: Path
) -> None:
    """The paper's semantics (Tevatron: each query against every passage of the global batch) by
    default, so 2 DDP workers on halves of a global batch train exactly as 1 worker on the whole of it."""
    import socket

    import torch.multiprocessing as mp

    from xqg.train.order import epoch_order, local_indices

    config, task = default_task(tiny_bert_dir, demo_train_file, tmp_path / "run", GLOBAL_BATCH)
    assert config.train_dr.gather_negatives and task.gather and config.train_dr.num_workers > 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(_ddp_worker, args=(port, tiny_bert_dir, str(demo_train_file), str(tmp_path / "run"), str(out)),
             nprocs=2, join=True)

    # float64 on both sides: in float32 the tiny random BERT's gradients already differ by ~5e-4 (relative)
    # between one forward pass of the whole batch and two of its halves, each padded to its own length
    model = task.build_model(None).eval().double()
    order = epoch_order(task.num_examples(), task.seed, 0)
    batch = task.make_batch(local_indices(order, 0, GLOBAL_BATCH, 0, 1), 0)
    assert batch["pos_index"].numel() == GLOBAL_BATCH and batch["p_ids"].shape[0] > 2 * GLOBAL_BATCH
    loss, value = task.compute_loss(model, batch, torch.device("cpu"))
    loss.backward()
    want = {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}
    for rank in (0, 1):
        gathered, local = np.load(out / f"loss{rank}.npy")
        assert gathered == pytest.approx(value.item(), rel=1e-9)
        assert local != pytest.approx(value.item(), rel=1e-3), "without gathering, fewer negatives: another loss"
        got = np.load(out / f"grads{rank}.npz")
        assert sorted(got.files) == sorted(want)
        # equal up to float64 rounding, measured against the largest gradient (some are ~0 by construction,
        # e.g. attention key biases)
        scale = max(float(np.abs(g).max()) for g in want.values())
        for name, g in want.items():
            np.testing.assert_allclose(got[name], g, rtol=1e-7, atol=1e-9 * scale, err_msg=name)
        flat_got = np.concatenate([got[n].ravel() for n in want])
        flat_want = np.concatenate([g.ravel() for g in want.values()])
        assert np.linalg.norm(flat_got - flat_want) < 1e-9 * np.linalg.norm(flat_want)
