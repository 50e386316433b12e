"""The decoder-only route end to end: jobs/train_qg.py fine-tunes a tiny scratch Llama (prompt masked out of the
loss, question + EOS the target), then jobs/generate.py samples n queries per passage and language with it on hf
and on ctranslate2, seeded: the same seed gives the same queries.

The job scripts run as separate processes connected to the session's Ray (RAY_ADDRESS): no cluster of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.paths import REPO
from xqg.config import load_config
from xqg.rundir import RunDir, shard_name
from xqg.train.qg import causal_batch

N, LANGS, PASSAGES = 3, ("ja", "fi"), 6


def job(script: str, ray_address: str, *sets: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": ray_address, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "jobs" / script)]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def decoder_run(ray_local, tiny_decoder_dir: str, demo_train_file: Path, make_corpus_run, demo_passage_rows,
                tmp_path_factory: pytest.TempPathFactory):
    """The tiny Llama trained by jobs/train_qg.py for 20 steps of 16 pairs (2 workers); a 6-passage corpus."""
    run_dir = tmp_path_factory.mktemp("qg-decoder") / "run"
    address = ray_local.get_runtime_context().gcs_address
    out = job("train_qg.py", address, f"run_dir={run_dir}", f"train_qg.model={tiny_decoder_dir}",
              f"train_qg.train_files=[{demo_train_file}]", "train_qg.batch_size=16", "train_qg.max_steps=20",
              "train_qg.lr=0.003", "train_qg.max_input_len=64", "train_qg.max_target_len=24",
              "train_qg.log_every_steps=2", "train_qg.checkpoint_every_steps=100")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    make_corpus_run(demo_passage_rows[:PASSAGES], num_shards=1, run_dir=run_dir)
    return str(run_dir), address


def generate_sets(run_dir: str, backend: str, seed: int = 42) -> list[str]:
    return [
        f"run_dir={run_dir}", f"generate.backend={backend}", f"generate.num_queries={N}", "generate.max_new_tokens=10",
        "generate.max_input_len=64", "generate.batch_size=4", "generate.concurrency=1",
        "generate.compute_type=float32", f"generate.seed={seed}", f"languages=[{','.join(LANGS)}]",
    ]


@pytest.mark.slow
def test_the_job_script_trains_a_scratch_decoder_whose_loss_falls(decoder_run, tiny_decoder_dir: str) -> None:
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    run_dir, _ = decoder_run
    rows = [json.loads(x) for x in (Path(run_dir) / "metrics" / "train_qg.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["event"] == "step"]
    assert len(losses) == 10 and sum(losses[-3:]) < 0.85 * sum(losses[:3]), losses
    kept = AutoModelForCausalLM.from_pretrained(Path(run_dir) / "models" / "qg")
    base = AutoModelForCausalLM.from_pretrained(tiny_decoder_dir)
    assert isinstance(kept, LlamaForCausalLM) and not torch.equal(kept.lm_head.weight, base.lm_head.weight)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["hf", "ctranslate2"])
def test_generate_job_writes_n_seeded_queries_per_passage_and_language_with_the_decoder(decoder_run, backend) -> None:
    from xqg.generate.backends import SamplingSettings, make_backend
    from xqg.generate.convert import ensure_ct2_model
    from xqg.generate.unit import OUTPUT_SCHEMA, generate_unit

    run_dir, address = decoder_run
    sets = generate_sets(run_dir, backend)
    out = job("generate.py", address, *sets)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = RunDir(run_dir)
    corpus = run.read_dir(f"corpus/{shard_name(0)}")
    config = load_config(None, sets)
    model = str(Path(run_dir) / "models" / "qg")
    extra = {}
    if backend == "ctranslate2":  # the conversion the job made (and reuses: it is up to date)
        (ct2_dir,) = [p.parent for p in Path(run_dir, "models", "ct2").glob("qg-*/model.bin")]
        extra["ct2_path"] = ensure_ct2_model(model, ct2_dir, "float32")
    sampling = SamplingSettings.from_config(config.generate)
    b = make_backend(backend, model, sampling, compute_type="float32", threads=1, **extra)
    assert not b.encoder_decoder
    for lang in LANGS:
        table = run.read_dir(f"generated/lang={lang}/{shard_name(0)}")
        assert table.schema == OUTPUT_SCHEMA and table.num_rows == PASSAGES
        assert table.column("docid").to_pylist() == corpus.column("docid").to_pylist()
        queries = table.column("queries").to_pylist()
        assert all(len(q) == N for q in queries) and any(x for q in queries for x in q)
        # same seed, same queries: this process redoes the unit with the model the job used
        again = generate_unit(b, corpus, lang=lang, shard=0, template=config.generate.template, seed=42, batch_size=4)
        assert again.table.equals(table)
        other = generate_unit(b, corpus, lang=lang, shard=0, template=config.generate.template, seed=7, batch_size=4)
        assert other.table.column("queries").to_pylist() != queries


def test_causal_batch_masks_the_prompt_and_ends_the_question_with_eos(tiny_decoder_dir: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_decoder_dir)
    prompts = ["Generate a Finnish question for this passage: Braeholm The river flows.", "short"]
    batch = causal_batch(tok, prompts, ["Mikä joki?", "Where is the town of Velvoness and its market?"], 64, 12)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    for i, prompt in enumerate(prompts):
        p = tok(prompt)["input_ids"]  # as the generation stage tokenizes it: BOS first, no EOS at the end
        assert p[0] == tok.bos_token_id and p[-1] != tok.eos_token_id
        n = int(mask[i].sum())
        assert ids[i, :len(p)].tolist() == p and (labels[i, :len(p)] == -100).all()
        target = labels[i, len(p):n].tolist()
        assert target[-1] == tok.eos_token_id and target == ids[i, len(p):n].tolist() and len(target) <= 12
        assert (labels[i, n:] == -100).all() and (mask[i, n:] == 0).all()
    assert tok.decode(labels[0, labels[0] >= 0], skip_special_tokens=True) == "Mikä joki?"
    assert int((labels[1] >= 0).sum()) == 12  # the long question cut to max_target_len - 1 tokens, then EOS
