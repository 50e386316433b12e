"""Tiny from-scratch models: real architectures that round-trip through save/load."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer, MT5ForConditionalGeneration

from xqg.config import ScratchModel
from xqg.models.resolve import resolve_model, scratch_dir
from xqg.rundir import RunDir

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


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
