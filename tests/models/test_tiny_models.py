"""Tiny from-scratch models: real architectures that round-trip through save/load."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer, MT5ForConditionalGeneration

from helpers.paths import DEMO, REPO
from xqg.config import ScratchModel
from xqg.models.resolve import resolve_model, scratch_dir
from xqg.rundir import RunDir


def test_tiny_mt5_round_trip_and_generates(tiny_mt5_dir: str) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_mt5_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_mt5_dir)
    assert isinstance(model, MT5ForConditionalGeneration)
    assert (tok.pad_token_id, tok.eos_token_id) == (0, 1)
    # every script of the demo questions survives tokenisation without unknown pieces
    questions = [json.loads(line)["question"] for line in (DEMO / "dev.jsonl").read_text(encoding="utf-8").splitlines()]
    ids = tok(questions).input_ids
    assert all(tok.unk_token_id not in row for row in ids)
    assert tok.decode(ids[0], skip_special_tokens=True) == questions[0]
    batch = tok(["Generate a Finnish question for this passage: a b c", "x"], return_tensors="pt", padding=True)
    out = model.generate(**batch, do_sample=True, top_k=10, num_return_sequences=3, max_new_tokens=6)
    assert out.shape[0] == 6 and out.shape[1] <= 7


def test_tiny_bert_round_trip_shapes(tiny_bert_dir: str) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModel.from_pretrained(tiny_bert_dir, add_pooling_layer=False).eval()
    questions = [json.loads(line)["question"] for line in (DEMO / "dev.jsonl").read_text(encoding="utf-8").splitlines()]
    ids = [i for row in tok(questions).input_ids for i in row]
    assert ids.count(tok.unk_token_id) / len(ids) < 0.01  # the WordPiece vocabulary really is the trained one
    batch = tok(["Velmora was founded in 1743", "Милл"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        h = model(**batch).last_hidden_state
    assert h.shape == (2, batch["input_ids"].shape[1], model.config.hidden_size)
    again = AutoModel.from_pretrained(tiny_bert_dir, add_pooling_layer=False).eval()
    with torch.inference_mode():
        assert torch.equal(again(**batch).last_hidden_state, h)


def test_resolve_builds_a_scratch_spec_once(tmp_path: Path) -> None:
    run = RunDir(str(tmp_path / "run"))
    spec = ScratchModel(scratch="bert", vocab_size=300, d_model=16, num_heads=2, d_ff=32)
    calls = []

    def texts():
        calls.append(1)
        return ["alpha beta gamma", "дельта эпсилон", "ガンマ"] * 20

    path = resolve_model(spec, run, texts)
    assert path == scratch_dir(run, spec) and (Path(path) / "config.json").exists()
    assert resolve_model(spec, run, texts) == path and calls == [1]
    assert resolve_model("bert-base-multilingual-cased", run, texts) == "bert-base-multilingual-cased"


def test_tiny_llama_is_a_causal_lm_whose_prompts_start_with_bos_and_do_not_end_with_eos(tiny_decoder_dir: str) -> None:
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_decoder_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder_dir).eval()
    assert isinstance(model, LlamaForCausalLM) and not model.config.is_encoder_decoder
    assert model.config.vocab_size == len(tok) and model.config.eos_token_id == tok.eos_token_id
    questions = [json.loads(line)["question"] for line in (DEMO / "dev.jsonl").read_text(encoding="utf-8").splitlines()]
    ids = tok(questions).input_ids
    assert all(row[0] == tok.bos_token_id and row[-1] != tok.eos_token_id for row in ids)
    assert all(tok.unk_token_id not in row for row in ids)  # the demo vocabulary, every script covered
    assert tok.decode(ids[0], skip_special_tokens=True) == questions[0]
    batch = tok(["Generate a Finnish question for this passage: a b c"], return_tensors="pt")
    out = model.generate(**batch, do_sample=True, top_k=10, num_return_sequences=3, max_new_tokens=6)
    assert out.shape[0] == 3 and out.shape[1] <= batch["input_ids"].shape[1] + 6


BUILD_TWICE = """
import hashlib, sys
from pathlib import Path
from xqg.config import ScratchModel
from xqg.models.resolve import read_text_files
from xqg.models.tiny import build_scratch

demo, out = Path(sys.argv[1]), Path(sys.argv[2])
texts = list(read_text_files([str(demo / n) for n in ("passages.jsonl", "train.jsonl", "dev.jsonl")]))
small = dict(d_model=16, num_layers=1, num_heads=2, d_ff=32)
# The demo's bi-encoder vocabulary on all of the demo's text; SentencePiece (slower) on a part of it.
for kind, size, text, files in (
    ("bert", 4000, texts, ("_wordpiece/vocab.txt", "tokenizer.json", "model.safetensors")),
    ("mt5", 800, texts[:3000], ("_spm/spiece.model", "tokenizer.json", "model.safetensors")),
):
    build_scratch(ScratchModel(scratch=kind, vocab_size=size, **small), text, out / kind)
    for f in files:
        print(kind, f, hashlib.sha256((out / kind / f).read_bytes()).hexdigest())
"""


def test_scratch_vocabularies_and_weights_are_the_same_in_every_process(tmp_path: Path) -> None:
    # Two fresh interpreters (other hash seeds, as two demo runs) build the demo's scratch models from the same text:
    # the WordPiece vocabulary (HF's trainer gave a different one in each process), the SentencePiece model and the
    # initial weights must come out byte for byte the same.
    import os
    import subprocess
    import sys

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD_TWICE, str(DEMO), str(tmp_path / str(seed))],
            env={**os.environ, "PYTHONHASHSEED": str(seed), "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for seed in (1, 2)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        outs.append(out.splitlines())
    assert len(outs[0]) == 6 and outs[0] == outs[1]
    assert (tmp_path / "1" / "bert" / "_wordpiece" / "vocab.txt").read_bytes() == (
        tmp_path / "2" / "bert" / "_wordpiece" / "vocab.txt").read_bytes()
